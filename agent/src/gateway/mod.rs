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
//! - `stdio_attach` — Docker attach of a supervised stdio container feeding one mux (not
//!   yet started by the agent).
//!
//! Still to come (see ARCHITECTURE.md): the Streamable HTTP front, `per_client` sessions, the HTTP reverse proxy,
//! metrics registration, configuration.

pub mod call_event;
pub mod jsonrpc;
pub mod session_mux;
pub mod stdio_attach;

pub use call_event::{CallEvent, CallOutcome, CallSink, NoCallSink};
pub use session_mux::{
    ClientMessage, ClientSession, MuxConfig, MuxError, MuxHandle, MuxStatsSnapshot, Route,
    SessionMux, SessionSender, Upstream,
};
