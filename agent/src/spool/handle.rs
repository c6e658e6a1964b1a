//! `SpoolHandle`: the one shared handle on the agent's spool. It owns the lock and the
//! "appended" notification, so the writer and the uplink share a spool without each holding
//! an `Arc<Mutex<Spool>>` and a separate `Notify`.

use std::sync::{Arc, Mutex, MutexGuard};

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

    /// Tells the reader that a batch was appended (a wake-up is kept if nobody waits yet).
    pub fn notify_appended(&self) {
        self.shared.appended.notify_one();
    }

    /// Resolves at the next append (or at once if one happened since the last wait).
    pub async fn appended(&self) {
        self.shared.appended.notified().await
    }
}
