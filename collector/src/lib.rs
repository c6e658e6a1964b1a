//! mcpwatch collector: accepts agent streams over mutual TLS, stores history in SQLite with
//! rollups and retention, and serves its own metrics. See ARCHITECTURE.md.

pub mod alert;
pub mod alerting;
pub mod api;
pub mod audit_watch;
pub mod auth;
pub mod backup;
pub mod collector;
pub mod command;
pub mod config;
pub mod console;
pub mod demo_server;
pub mod durability_metrics;
pub mod enroll_token;
pub mod feed;
pub mod fleet;
pub mod heartbeat;
pub mod host_labels;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod notify;
pub mod oidc;
pub mod pki;
pub mod polling;
pub mod quickstart;
pub mod refusal_log;
pub mod remote_write;
pub mod store;
pub mod token;

pub use collector::{run, run_with_router, CollectorError};

pub use mcpwatch_common::time::now_ms;
