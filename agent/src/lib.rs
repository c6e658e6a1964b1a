//! mcpwatch agent: samples host metrics, spools every batch to disk under a sequence number
//! and streams the spool to the collector over mutual TLS. See ARCHITECTURE.md.

pub mod agent;
pub mod config;
pub mod enroll;
pub mod enroll_cli;
pub mod gateway;
pub mod http;
pub mod http_client;
pub mod mcp_servers;
pub mod metrics;
pub mod prepare_dir;
pub mod probe;
pub mod renewal;
pub mod sampler;
pub mod spool;
pub mod supervisor;
pub mod uplink;

pub use agent::{run, AgentError};
pub use config::AgentConfig;
