//! The MCP gateway (issue 11): serves the agent's MCP servers to MCP clients, counts and
//! times every request. Built so far: the transport-independent core of the stdio bridge.
//!
//! - `jsonrpc` — JSON-RPC messages (rmcp's envelope types around raw JSON bodies) and the
//!   helpers that read and rewrite ids and progress tokens.
//! - `session_mux` — many client sessions over one upstream stream: id rewriting, the
//!   cached initialize, notification and server-request routing, cancellation, limits.
//! - `call_event` — one event per settled request (server, method, tool, outcome, duration)
//!   for the traffic metrics.
//!
//! - `stdio_attach` — Docker attach of a supervised stdio container feeding one mux.
//! - `stdio_bridge` — one task per stdio server keeping a mux attached to its running
//!   container (re-attached after restarts and adoption).
//! - `backends` — [`Backends`], the table of what serves each server now, and the gateway's
//!   per-server figures.
//! - `local_client` — an in-process session on a mux as a byte pipe (the probe's way in).
//! - `traffic` — [`TrafficMetrics`], the per-method and per-tool counters and histograms.
//!
//! - `config` — `[gateway]`; `http_front` — the Streamable HTTP handlers; `http_guard` —
//!   Host, Origin and token checks;
//!   `client_sessions` — `Mcp-Session-Id` sessions and where their messages go; `endpoint`
//!   — the listener (TLS, connection limits) that serves them.
//!
//! - `http_proxy` — the reverse proxy to Streamable HTTP servers, measured the same way.
//!
//! - `client_pool` — per-client containers (`sessions = "per_client"`) and their warm pool.

pub mod backends;
pub mod call_event;
pub mod client_pool;
pub mod client_sessions;
pub mod config;
pub mod endpoint;
pub mod http_front;
mod http_guard;
mod http_message;
pub mod http_proxy;
pub mod jsonrpc;
pub mod local_client;
pub mod session_mux;
pub mod stdio_attach;
pub mod stdio_bridge;
pub mod traffic;

pub use backends::Backends;
pub use call_event::{CallEvent, CallOutcome, CallSink, NoCallSink};
pub use session_mux::{
    ClientMessage, ClientSession, Lifecycle, MuxConfig, MuxError, MuxHandle, MuxStatsSnapshot,
    Route, SessionMux, SessionSender, Upstream, UpstreamLifecycle,
};
pub use stdio_bridge::{BridgeContext, StdioBridges};
pub use traffic::TrafficMetrics;
