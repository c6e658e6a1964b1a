//! Per-call measurement: one [`CallEvent`] for every client request the gateway settles
//! (answered, failed, timed out, cancelled), handed to a [`CallSink`]. Events carry the method
//! and the tool name but never arguments or results. `traffic::TrafficMetrics`
//! implements `CallSink`; the tool-name folding into `_other` belongs there, because only it
//! knows the server's current tool list.

use std::sync::Arc;
use std::time::Duration;

/// How a request ended; the `outcome` label of the traffic metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// A result (for `tools/call`, one without `isError: true`).
    Ok,
    /// A `tools/call` result with `isError: true`: the tool ran and reported a failure.
    ToolError,
    /// The server answered with a JSON-RPC error.
    JsonRpcError,
    /// No answer within the gateway's request timeout.
    Timeout,
    /// The upstream stream ended (or the gateway stopped) before the answer.
    TransportError,
    /// The client cancelled the request or its session ended first.
    Cancelled,
}

impl CallOutcome {
    pub const ALL: [CallOutcome; 6] = [
        CallOutcome::Ok,
        CallOutcome::ToolError,
        CallOutcome::JsonRpcError,
        CallOutcome::Timeout,
        CallOutcome::TransportError,
        CallOutcome::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::ToolError => "tool_error",
            CallOutcome::JsonRpcError => "jsonrpc_error",
            CallOutcome::Timeout => "timeout",
            CallOutcome::TransportError => "transport_error",
            CallOutcome::Cancelled => "cancelled",
        }
    }
}

/// One settled client request.
#[derive(Debug, Clone, PartialEq)]
pub struct CallEvent {
    /// The `[[mcp_server]]` name.
    pub server: Arc<str>,
    /// As the client sent it; unbounded here, bounded by whoever turns it into a label.
    pub method: String,
    /// The tool of a `tools/call` (its `params.name`), as the client sent it.
    pub tool: Option<String>,
    pub outcome: CallOutcome,
    /// From the gateway receiving the request to it settling.
    pub duration: Duration,
}

/// Receives every [`CallEvent`]. Called on the gateway's task for every request, so it must
/// be quick and must not block (atomic counters, a `try_send`).
pub trait CallSink: Send + Sync + 'static {
    fn record(&self, event: CallEvent);
}

/// A sink that drops everything, for a gateway nobody measures.
pub struct NoCallSink;

impl CallSink for NoCallSink {
    fn record(&self, _event: CallEvent) {}
}
