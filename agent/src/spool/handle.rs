//! `SpoolHandle`: the one shared handle on the agent's spool. It owns the lock and the
//! "appended" notification, so the writer and the uplink share a spool without each holding
//! an `Arc<Mutex<Spool>>` and a separate `Notify`.

use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use tokio::sync::Notify;

use super::store::Spool;

/// Cheap to clone; every clone refers to the same spool.
#[derive(Clone)]
pub struct SpoolHandle {
    shared: Arc<Shared>,
}

struct Shared {
    spool: Mutex<Spool>,
    appended: Notify,
}

impl SpoolHandle {
    pub fn new(spool: Spool) -> SpoolHandle {
        SpoolHandle {
            shared: Arc::new(Shared {
                spool: Mutex::new(spool),
                appended: Notify::new(),
            }),
        }
    }

    /// Locks the spool (blocking: call from a blocking thread or for a short read). A
    /// poisoned lock means a panic while holding it, after which the spool's on-disk state
    /// is still the source of truth, so carry on with it.
    pub fn lock(&self) -> MutexGuard<'_, Spool> {
        self.shared
            .spool
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Runs `op` on the spool: at once on this thread when the lock is free (reads and acks
    /// take microseconds: a `pread` from the page cache, a 12-byte `pwrite`), on a blocking
    /// thread when the writer holds it (it may be waiting for a disk flush, which must not
    /// stall the runtime). The common cycle thus hands no work to another thread.
    pub async fn run<T, F>(&self, op: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&mut Spool) -> T + Send + 'static,
    {
        match self.shared.spool.try_lock() {
            Ok(mut spool) => return op(&mut spool),
            Err(TryLockError::Poisoned(poison)) => return op(&mut poison.into_inner()),
            Err(TryLockError::WouldBlock) => {}
        }
        let handle = self.clone();
        match tokio::task::spawn_blocking(move || op(&mut handle.lock())).await {
            Ok(value) => value,
            // The op panicked: carry the panic on, as an inline call would have.
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }

    /// Tells the reader that a batch was appended (a wake-up is kept if nobody waits yet).
    pub fn notify_appended(&self) {
        self.shared.appended.notify_one();
    }

    /// Resolves at the next append (or at once if one happened since the last wait).
    pub async fn appended(&self) {
        self.shared.appended.notified().await
    }
}
