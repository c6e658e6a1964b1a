//! On-demand backups of the database (`admin:backup`, unscoped only: a backup holds every
//! host's data, password and token hashes, and sealed secrets), and the list of backups in
//! `[backup] dir`. The answer names files, never the directory they live in.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::ApiState;
use crate::auth::Permission;
use crate::backup::BackupError;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(list_backups, create_backup))
}

/// One backup file.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BackupFile {
    /// File name inside `[backup] dir`.
    pub file: String,
    pub bytes: u64,
    /// Modification time of the file (when the backup was installed), ms since the epoch.
    pub modified_ms: i64,
}

/// A backup just taken.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BackupTaken {
    pub file: String,
    pub bytes: u64,
    pub schema_version: i64,
    /// Snapshot, integrity check and rename.
    pub duration_ms: u64,
}

fn api_error(e: BackupError) -> ApiError {
    match e {
        BackupError::NotConfigured => {
            ApiError::Conflict("no [backup] dir is configured on the collector".into())
        }
        BackupError::Busy => ApiError::Conflict("a backup is already running".into()),
        BackupError::Store(e) => ApiError::Internal(format!("backup failed: {e}")),
        BackupError::Task(e) => ApiError::Internal(format!("backup failed: {e}")),
    }
}

/// The backups in `[backup] dir`, newest first.
#[utoipa::path(get, path = "/backups",
    responses((status = 200, body = Vec<BackupFile>), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    tag = "admin")]
async fn list_backups(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<Vec<BackupFile>>, ApiError> {
    caller.require_global(Permission::AdminBackup)?;
    let files = state.backups.list().await.map_err(api_error)?;
    Ok(Json(
        files
            .into_iter()
            .map(|f| BackupFile {
                file: f.name,
                bytes: f.bytes,
                modified_ms: f.modified_ms,
            })
            .collect(),
    ))
}

/// Takes a backup now: a consistent snapshot while ingest goes on, checked and installed
/// atomically (0600) in `[backup] dir`; the oldest beyond `keep` are deleted.
#[utoipa::path(post, path = "/backups",
    responses((status = 201, body = BackupTaken), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 500, body = ErrorBody)),
    tag = "admin")]
async fn create_backup(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<(StatusCode, Json<BackupTaken>), ApiError> {
    caller.require_global(Permission::AdminBackup)?;
    let snap = state.backups.run_once().await.map_err(api_error)?;
    let file = snap
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    caller.note(format!("backup {file}, {} bytes", snap.bytes));
    Ok((
        StatusCode::CREATED,
        Json(BackupTaken {
            file,
            bytes: snap.bytes,
            schema_version: snap.schema_version,
            duration_ms: snap.duration.as_millis() as u64,
        }),
    ))
}
