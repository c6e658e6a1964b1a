//! What the [`super::Store`] handle sends to the writer thread.

use super::exec::ExecFn;
use super::reply::Reply;
use super::{AgentSession, IngestBatch, Ingested, MaintenanceReport};

/// An agent's Hello, as the store records it.
pub(crate) struct Registration {
    /// The ingest connection registering; it counts as live until `Disconnected`.
    pub conn: u64,
    pub agent_id: String,
    pub hostname: String,
    pub agent_version: String,
    pub boot_id: String,
    pub now_ms: i64,
}

pub(crate) enum WriteRequest {
    Register {
        hello: Registration,
        reply: Reply<AgentSession>,
    },
    Ingest {
        batch: IngestBatch,
        reply: Reply<Ingested>,
    },
    Disconnected {
        host_id: i64,
        conn: u64,
        now_ms: i64,
        reply: Reply<()>,
    },
    SetRevoked {
        agent_id: String,
        revoked: bool,
        reply: Reply<bool>,
    },
    Flush {
        reply: Reply<()>,
    },
    /// Maintenance (and the hook's tick); runs between groups, not inside one.
    Tick {
        now_ms: i64,
        force: bool,
        reply: Option<Reply<MaintenanceReport>>,
    },
    /// A [`super::Store::exec`] job.
    Exec(ExecFn),
}

impl std::fmt::Debug for WriteRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            WriteRequest::Register { .. } => "Register",
            WriteRequest::Ingest { .. } => "Ingest",
            WriteRequest::Disconnected { .. } => "Disconnected",
            WriteRequest::SetRevoked { .. } => "SetRevoked",
            WriteRequest::Flush { .. } => "Flush",
            WriteRequest::Tick { .. } => "Tick",
            WriteRequest::Exec(_) => "Exec",
        };
        f.write_str(name)
    }
}

impl WriteRequest {
    pub(crate) fn samples(&self) -> usize {
        match self {
            WriteRequest::Ingest { batch, .. } => batch.samples.len(),
            _ => 0,
        }
    }
}
