//! Which lifecycle the upstream speaks: the `initialize` handshake (every revision up to
//! 2025-11-25) or only 2026-07-28's `server/discover` with per-request `_meta`.
//!
//! **Why the gateway asks.** A server that speaks only 2026-07-28 refuses `initialize` with
//! -32022, and rmcp's stdio server then ends its whole session (the process exits): one
//! legacy client's `initialize` passed upstream would restart the server under everyone. So
//! when a mux starts on a server whose lifecycle is not known yet, the gateway sends its own
//! `server/discover` first, as the 2026-07-28 backward-compatibility rules have clients do
//! (discover does not commit the server to either lifecycle). A client `initialize` arriving
//! meanwhile is held until the answer.
//!
//! **What the answer means.** A result whose `supportedVersions` are all 2026-07-28 or later:
//! discover-only; every client `initialize` is then answered by the gateway with the
//! server's own -32022 refusal (`requested`, `supported`), never sent upstream, and clients of
//! 2026-07-28 (no initialize, `_meta` on each request) pass through. Anything else — an
//! older version in the list, no list, any error (a legacy server answers -32601, or -32602
//! from the Python SDK), or no answer within [`DISCOVER_TIMEOUT`] (a server that ignores
//! unknown methods): the `initialize` lifecycle, as before.
//!
//! **What is remembered.** One [`UpstreamLifecycle`] per server outlives its muxes (the
//! bridge and the `per_client` pool hold it), so a re-attach does not ask again. It also
//! learns from the other side: an `initialize` refused with -32022 by a server whose
//! supported versions are all 2026-07-28 or later makes it discover-only; an upstream that
//! ended while the gateway's discover was in flight (an old server that crashes on an unknown
//! method) makes it `initialize`, so the restarted server is not asked again.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::state::{Init, InitWaiter, MuxState, Waiting};
use crate::gateway::call_event::CallOutcome;
use crate::gateway::jsonrpc::{self, Call, ErrorCode, ErrorData};

/// How long the gateway waits for its `server/discover` (rmcp's `Auto` client waits as long).
pub const DISCOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// The first revision without `initialize`. Revisions are dates, so they compare as text.
const FIRST_DISCOVER_ONLY_REVISION: &str = "2026-07-28";

/// What is known of a server's lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Lifecycle {
    /// Not asked yet: the next mux sends `server/discover` first.
    #[default]
    Unknown,
    /// `initialize` works (the server may speak 2026-07-28 too).
    Initialize,
    /// Only 2026-07-28 or later; the versions the server listed.
    DiscoverOnly(Vec<String>),
}

/// A server's [`Lifecycle`], shared by every mux on it. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct UpstreamLifecycle(Arc<Mutex<Lifecycle>>);

impl UpstreamLifecycle {
    /// Starts from what is already known (tests, and servers pinned by configuration).
    pub fn known(lifecycle: Lifecycle) -> UpstreamLifecycle {
        UpstreamLifecycle(Arc::new(Mutex::new(lifecycle)))
    }

    pub fn get(&self) -> Lifecycle {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, lifecycle: Lifecycle) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = lifecycle;
    }
}

/// Versions kept from a server's list, and the longest kept: revisions are short dates, and
/// the list is echoed to every refused client, so a server cannot make it large.
const MAX_VERSIONS: usize = 16;
const MAX_VERSION_LEN: usize = 32;

/// The supported versions a discover result or a -32022 refusal lists, when every one of
/// them is 2026-07-28 or later (an empty list says nothing).
fn discover_only(versions: Option<&Value>) -> Option<Vec<String>> {
    let versions: Vec<String> = versions?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .filter(|v| v.len() <= MAX_VERSION_LEN)
        .take(MAX_VERSIONS)
        .map(str::to_owned)
        .collect();
    let modern = |v: &String| v.as_str() >= FIRST_DISCOVER_ONLY_REVISION;
    (!versions.is_empty() && versions.iter().all(modern)).then_some(versions)
}

/// -32022 as the server itself words it (rmcp's `unsupported_protocol_version`).
fn unsupported_version(requested: Value, supported: &[String]) -> ErrorData {
    let data = json!({"requested": requested, "supported": supported});
    ErrorData::new(
        ErrorCode(-32022),
        "Unsupported protocol version",
        Some(data),
    )
}

impl MuxState {
    /// Called once when the mux starts: asks `server/discover` unless the lifecycle is known.
    pub fn start(&mut self, now: Instant) {
        if self.lifecycle.get() != Lifecycle::Unknown {
            return;
        }
        let meta = json!({
            "io.modelcontextprotocol/protocolVersion": FIRST_DISCOVER_ONLY_REVISION,
            "io.modelcontextprotocol/clientInfo": {
                "name": "mcpwatch-gateway",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "io.modelcontextprotocol/clientCapabilities": {},
        });
        let call = Call {
            method: "server/discover".to_owned(),
            params: Some(json!({ "_meta": meta })),
        };
        let upstream = self.next_upstream_id();
        let deadline = now + DISCOVER_TIMEOUT.min(self.config.request_timeout);
        self.discovering = true;
        self.request_upstream(upstream, Waiting::Discover, call, None, now, deadline);
    }

    /// The gateway's `server/discover` was answered (`Some`) or timed out (`None`).
    pub fn on_discover_answer(&mut self, answer: Option<Result<Value, ErrorData>>, now: Instant) {
        self.discovering = false;
        let learned = match answer {
            Some(Ok(result)) => discover_only(result.get("supportedVersions"))
                .map_or(Lifecycle::Initialize, Lifecycle::DiscoverOnly),
            Some(Err(_)) | None => Lifecycle::Initialize,
        };
        self.lifecycle.set(learned);
        if let Init::Held(..) = self.init {
            let Init::Held(waiters, call) = std::mem::replace(&mut self.init, Init::Idle) else {
                return;
            };
            self.init = Init::InFlight(waiters);
            self.send_initialize(call, now);
        }
    }

    /// A client's `initialize` that no cached answer settles: refused at once for a
    /// discover-only server, held while the discover is out, else sent upstream.
    pub fn initialize_upstream(&mut self, waiter: InitWaiter, call: Call, now: Instant) {
        if let Lifecycle::DiscoverOnly(supported) = self.lifecycle.get() {
            self.refuse_initialize(waiter, &call, &supported, now);
        } else if self.discovering {
            self.init = Init::Held(Vec::new(), call);
            self.add_init_waiter(waiter);
        } else {
            self.init = Init::InFlight(Vec::new());
            self.add_init_waiter(waiter);
            self.send_initialize(call, now);
        }
    }

    /// Sends the held or new `initialize` upstream for the waiters in `Init::InFlight`, or
    /// refuses them all when the server turned out to be discover-only.
    fn send_initialize(&mut self, call: Call, now: Instant) {
        if let Lifecycle::DiscoverOnly(supported) = self.lifecycle.get() {
            for waiter in self.take_init_waiters() {
                self.refuse_initialize(waiter, &call, &supported, now);
            }
            return;
        }
        let upstream = self.next_upstream_id();
        let deadline = now + self.config.request_timeout;
        self.request_upstream(upstream, Waiting::Initialize, call, None, now, deadline);
    }

    fn refuse_initialize(
        &mut self,
        waiter: InitWaiter,
        call: &Call,
        supported: &[String],
        now: Instant,
    ) {
        // Echoed as the server would, but only a version-like string (the client's own
        // value, so at worst it gets its own bytes back; still no reason to copy a big one).
        let requested = jsonrpc::param(&call.params, "protocolVersion")
            .and_then(Value::as_str)
            .filter(|v| v.len() <= MAX_VERSION_LEN)
            .map_or(Value::Null, |v| Value::String(v.to_owned()));
        let error = unsupported_version(requested, supported);
        let message = jsonrpc::error_data(Some(waiter.client_id.clone()), error);
        self.reply(waiter.session, waiter.client_id, &message);
        let outcome = CallOutcome::JsonRpcError;
        self.record("initialize".to_owned(), None, outcome, waiter.started, now);
    }

    /// An `initialize` went upstream and was refused: a -32022 listing only 2026-07-28 or
    /// later means the server is discover-only, and no `initialize` goes up again.
    pub fn learn_from_initialize_error(&mut self, error: &ErrorData) {
        if error.code != ErrorCode(-32022) {
            return;
        }
        let supported = error.data.as_ref().and_then(|data| data.get("supported"));
        if let Some(versions) = discover_only(supported) {
            self.lifecycle.set(Lifecycle::DiscoverOnly(versions));
        }
    }

    /// The upstream's output ended. Ending while the gateway's discover was out is how an
    /// old server that dies on an unknown method behaves: the next mux goes straight to
    /// `initialize`.
    pub fn upstream_ended(&mut self) {
        if self.discovering && self.lifecycle.get() == Lifecycle::Unknown {
            self.lifecycle.set(Lifecycle::Initialize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lists_of_2026_07_28_or_later_are_discover_only() {
        let only = |v: Value| discover_only(Some(&v));
        assert_eq!(
            only(json!(["2026-07-28"])),
            Some(vec!["2026-07-28".to_owned()])
        );
        assert_eq!(only(json!(["2025-11-25", "2026-07-28"])), None);
        assert_eq!(only(json!([])), None);
        let long = "2026-07-28".repeat(10);
        assert_eq!(
            only(json!([long, "2026-07-28"])),
            Some(vec!["2026-07-28".to_owned()])
        );
        let many: Vec<String> = (0..100).map(|d| format!("2027-01-{d:02}")).collect();
        assert_eq!(only(json!(many)).map(|v| v.len()), Some(MAX_VERSIONS));
        assert_eq!(only(json!("2026-07-28")), None);
        assert_eq!(discover_only(None), None);
    }
}
