//! What the mux counts: every line it drops or refuses, by reason, and the size of its
//! tables. Shared with the handle so the agent's metrics (and tests) can read it.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! mux_stats {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Counters (monotonic) and gauges (`in_flight`, `server_requests`, `upstream_queued`),
        /// updated by the mux task only.
        #[derive(Debug, Default)]
        pub struct MuxStats {
            $($(#[$doc])* pub(super) $name: AtomicU64,)*
        }

        /// A copy of [`MuxStats`] at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct MuxStatsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl MuxStats {
            pub fn snapshot(&self) -> MuxStatsSnapshot {
                MuxStatsSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

mux_stats! {
    /// Upstream lines that are not JSON-RPC messages.
    upstream_malformed,
    /// Upstream answers to ids the gateway never issued (or errors without an id).
    upstream_unknown,
    /// Upstream answers to requests no longer waited for (cancelled, timed out, duplicate).
    upstream_late,
    /// Upstream progress or cancel notifications that name no open request.
    upstream_unroutable,
    /// Server requests refused: no session, a duplicate id, or over the limit.
    server_requests_refused,
    /// Server requests a client did not answer within `request_timeout`.
    server_requests_timed_out,
    /// Client lines that are not JSON-RPC messages (answered with -32700 or -32600).
    client_malformed,
    /// Client requests refused: over a limit or a duplicate in-flight id.
    client_refused,
    /// Client answers and progress that match no server request of their session, and
    /// cancels that match no request in flight of their session (also the harmless race of a
    /// cancel crossing the answer).
    client_unroutable,
    /// Sessions ended because the client let its queue fill.
    session_overruns,
    /// Progress notifications dropped because the client's queue was full.
    progress_dropped,
    /// Lines to the upstream dropped because its queue was far over its bound.
    upstream_queue_dropped,
    /// Gauge: client requests waiting for an answer (initialize waiters included).
    in_flight,
    /// Gauge: server requests waiting for a client's answer.
    server_requests,
    /// Gauge: lines waiting for the upstream to take them.
    upstream_queued,
}

impl MuxStats {
    pub(super) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn set(gauge: &AtomicU64, value: usize) {
        gauge.store(value as u64, Ordering::Relaxed);
    }
}
