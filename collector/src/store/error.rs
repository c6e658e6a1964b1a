//! The store's error type: every failure a caller of [`super::Store`] or
//! [`super::Reader`] can see.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("i/o on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The writer thread has stopped (all handles dropped, or it failed).
    #[error("store writer is closed")]
    Closed,
    /// A sample referenced a series id never declared on this connection; the whole batch
    /// was refused and nothing of it was written.
    #[error(
        "batch seq {seq}: sample references series id {series} not declared on this connection"
    )]
    UnknownSeries { seq: u64, series: u32 },
    /// The agent's certificate identity has been revoked by an operator.
    #[error("agent {0} is revoked")]
    Revoked(String),
    /// A stored sample blob could not be decoded.
    #[error("corrupt sample blob in raw row {row}: {reason}")]
    Corrupt { row: i64, reason: String },
    /// The caller broke the store's contract (unknown host id, connection reused for another
    /// host, sequence number beyond i64).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The group transaction this request was part of failed and was rolled back; nothing
    /// of the request is stored. Retrying (e.g. via the agent's replay) is safe.
    #[error("transaction rolled back: {0}")]
    Aborted(String),
    /// The change conflicts with what is stored (a name taken, a built-in role, a role in
    /// use).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The change would go beyond a configured limit (active silences overall or per
    /// user); nothing of it is stored.
    #[error("limit reached: {0}")]
    Limit(String),
    /// A value could not be (de)serialized as JSON for storage.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A read task ended without an answer (it panicked).
    #[error("read task failed: {0}")]
    ReadFailed(String),
    /// The database was written by a newer build.
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    /// A backup file (or a restore source) is unusable: unreadable, not an mcpwatch
    /// database, failed its integrity check, or already present.
    #[error("backup {path}: {reason}")]
    BadBackup {
        path: std::path::PathBuf,
        reason: String,
    },
    /// Another process holds the database (a running collector, or a restore).
    #[error("{db} is in use by {holder}; stop it first")]
    Locked {
        db: std::path::PathBuf,
        holder: String,
    },
}
