//! Typed queries, named by what they read: every read the API makes (and the few small
//! writes it makes through `Store::exec`) is a `Store` method defined here, so callers never
//! see a connection or SQL. Reads run on the pooled read-only connections of `pool`.
//!
//! The `&Connection` functions in `users` and `tokens` are public for the admin CLI, which
//! works on its own connection while the collector is stopped. Nothing here depends on the
//! API, the alert engine or the permission model beyond stored permission names.

pub mod alerts;
pub mod audit;
pub mod certificates;
pub mod changes;
pub mod enroll_tokens;
pub mod events;
pub mod fleet;
pub mod hosts;
pub mod login_attempts;
pub mod mfa;
pub mod oidc;
pub(crate) mod pool;
pub(crate) mod reader;
pub mod recent;
pub mod remote_write;
pub mod roles;
pub mod rules;
pub mod samples;
pub mod series;
pub mod servers;
pub mod silences;
pub mod tokens;
pub mod users;
