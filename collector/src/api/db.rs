//! Database access for handlers: reads on pooled read-only connections in the blocking pool,
//! writes through the store's single writer.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::store::{Reader, Store, StoreError};

use super::error::ApiError;

/// Idle read connections kept for reuse.
const POOL_MAX: usize = 8;
/// Reads running at once: more wait, so a burst of expensive queries cannot take every
/// blocking thread and connection.
const READS_MAX: usize = 8;

#[derive(Clone)]
pub struct Db {
    pub store: Store,
    path: PathBuf,
    pool: Arc<Mutex<Vec<Reader>>>,
    running: Arc<tokio::sync::Semaphore>,
}

impl Db {
    pub fn new(store: Store, path: PathBuf) -> Db {
        Db {
            store,
            path,
            pool: Arc::new(Mutex::new(Vec::new())),
            running: Arc::new(tokio::sync::Semaphore::new(READS_MAX)),
        }
    }

    /// Runs `f` on a read connection without blocking the async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Reader) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.pool.clone();
        let path = self.path.clone();
        let permit = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Unavailable("shutting down".into()))?;
        let joined = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // A poisoned pool only means another reader panicked; its connections are fine.
            let reader = pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let reader = match reader {
                Some(r) => r,
                None => Reader::open(&path)?,
            };
            let out = f(&reader);
            let mut idle = pool.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < POOL_MAX {
                idle.push(reader);
            }
            out
        })
        .await;
        match joined {
            Ok(r) => r.map_err(ApiError::from),
            Err(e) => Err(ApiError::Internal(format!("read task failed: {e}"))),
        }
    }
}
