//! Shared by the mcpwatch agent and collector: the wire protocol, mutual TLS, the dev PKI,
//! config primitives, and the small helpers both sides need exactly once (clock, backoff,
//! secrets, the hardened HTTP server loop). Only [`wire`] defines what crosses the network
//! between the two.

pub mod backoff;
pub mod cert_info;
pub mod certs;
pub mod config;
pub mod csr;
pub mod durable_file;
pub mod exposition;
pub mod hex;
pub mod http_server;
pub mod lock_file;
pub mod logging;
pub mod revocation;
pub mod secret;
pub mod shutdown;
pub mod systemd;
pub mod time;
pub mod tls;
pub mod wire;
