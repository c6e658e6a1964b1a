//! Shared by the mcpwatch agent and collector: the wire protocol, mutual TLS, the dev PKI and
//! config primitives. Only [`wire`] defines what crosses the network between the two.

pub mod certs;
pub mod config;
pub mod exposition;
pub mod logging;
pub mod shutdown;
pub mod systemd;
pub mod tls;
pub mod wire;
