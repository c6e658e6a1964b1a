//! The read side of the store: `Store::read` runs a query on a pooled read-only connection
//! in the blocking pool, beside the single writer (WAL). Only the query modules call it;
//! everyone else calls their typed queries.

use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::Connection;

use super::reader::Reader;
use crate::store::{Store, StoreError};

/// Idle read connections kept for reuse.
const POOL_MAX: usize = 8;
/// Reads running at once: more wait, so a burst of expensive queries cannot take every
/// blocking thread and connection.
const READS_MAX: usize = 8;

/// Idle read connections of one database and the permits bounding reads in flight.
pub(crate) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Reader>>,
    running: std::sync::Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for ReadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadPool")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ReadPool {
    pub(crate) fn new(path: PathBuf) -> ReadPool {
        ReadPool {
            path,
            idle: Mutex::new(Vec::new()),
            running: std::sync::Arc::new(tokio::sync::Semaphore::new(READS_MAX)),
        }
    }

    fn take(&self) -> Result<Reader, StoreError> {
        // A poisoned pool only means another reader panicked; its connections are fine.
        let reader = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match reader {
            Some(r) => Ok(r),
            None => Reader::open(&self.path),
        }
    }

    fn give_back(&self, reader: Reader) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < POOL_MAX {
            idle.push(reader);
        }
    }
}

impl Store {
    /// Runs `f` on a read connection without blocking the async runtime. For the store's
    /// query modules, and for the alerting runtime's reads of its own tables (see
    /// `alerting::stored_receivers`); nothing above the domain passes SQL here.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.reads.clone();
        let permit = pool
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let joined = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let reader = pool.take()?;
            let out = reader.run(f);
            pool.give_back(reader);
            out
        })
        .await;
        joined.unwrap_or_else(|e| Err(StoreError::ReadFailed(e.to_string())))
    }
}
