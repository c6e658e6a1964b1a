//! The agent's outbound HTTP clients, one per purpose and built once. No redirects for
//! either: a server that redirects is misconfigured, and following one could leave the
//! intended host.

use std::sync::OnceLock;
use std::time::Duration;

/// What a client is for; each gets its own connection policy.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    /// MCP probes: no pooled idle connections, as rmcp's default (avoids delayed-ACK stalls
    /// on reuse). Building a client per probe (rmcp's default) costs CPU and leaves allocator
    /// fragmentation behind, 20 servers every 15 s.
    Probe,
    /// The gateway's reverse proxy: kept-alive connections.
    Proxy,
}

/// The shared client for `purpose`.
pub fn get(purpose: Purpose) -> Result<reqwest::Client, String> {
    static PROBE: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    static PROXY: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    let cell = match purpose {
        Purpose::Probe => &PROBE,
        Purpose::Proxy => &PROXY,
    };
    cell.get_or_init(|| build(purpose)).clone()
}

fn build(purpose: Purpose) -> Result<reqwest::Client, String> {
    // reqwest's `rustls-no-provider` feature (enabled by the collector in the same workspace
    // build; features unify) makes `build()` panic without a process-wide rustls provider.
    // Ours is ring; an Err only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    let builder = match purpose {
        Purpose::Probe => builder.pool_max_idle_per_host(0),
        Purpose::Proxy => builder.connect_timeout(Duration::from_secs(10)),
    };
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}
