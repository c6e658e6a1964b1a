//! `[[mcp_server]]` configuration: the raw TOML shape (serde, `deny_unknown_fields`, documented
//! defaults) and its validation into [`McpServerSpec`].
//!
//! Environment values may be secrets, so they live in
//! [`Secret`](mcpwatch_common::secret::Secret), whose `Debug` never shows
//! the value; neither the raw nor the validated types can leak one through `{:?}` or a log.
//!
//! Files: `raw` (the TOML shape), `server_spec` (the validated types), `validate` (raw →
//! validated). The config hash and the container built from a spec are in
//! `supervisor::container_template`.

mod raw;
mod server_spec;
#[cfg(test)]
mod tests;
mod validate;

pub use raw::{
    RawBackoff, RawBudget, RawEnvValue, RawLimits, RawMcpServer, RawMount, RawProbe,
    RawServerGateway, SessionsKind, TransportKind,
};
pub use server_spec::{
    BackoffSpec, BudgetSpec, GatewaySessions, Limits, McpServerSpec, MountSpec, ProbeSpec,
    RestartPolicy, Transport,
};
pub use validate::validate_servers;
