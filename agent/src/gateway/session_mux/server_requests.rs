//! The server→client requests the mux holds open, each with the session it went to and a
//! deadline: a client that never answers cannot hold an entry (nor leave the server waiting)
//! longer than `request_timeout`.

use std::collections::{BTreeMap, HashMap};

use tokio::time::Instant;

use super::SessionId;
use crate::gateway::jsonrpc::RequestId;

pub(super) struct ServerRequest {
    pub session: SessionId,
    /// The server's progress token, if it asked for progress.
    pub progress: Option<RequestId>,
    deadline: Instant,
    /// Orders requests with the same deadline (ids have no order of their own).
    seq: u64,
}

#[derive(Default)]
pub(super) struct ServerRequests {
    open: HashMap<RequestId, ServerRequest>,
    deadlines: BTreeMap<(Instant, u64), RequestId>,
    next_seq: u64,
}

impl ServerRequests {
    pub fn len(&self) -> usize {
        self.open.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub fn contains(&self, id: &RequestId) -> bool {
        self.open.contains_key(id)
    }

    pub fn get(&self, id: &RequestId) -> Option<&ServerRequest> {
        self.open.get(id)
    }

    pub fn values(&self) -> impl Iterator<Item = &ServerRequest> {
        self.open.values()
    }

    /// Holds `id` open for `session` until `deadline` (the caller checked it is not open).
    pub fn open(
        &mut self,
        id: RequestId,
        session: SessionId,
        progress: Option<RequestId>,
        deadline: Instant,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.deadlines.insert((deadline, seq), id.clone());
        let request = ServerRequest {
            session,
            progress,
            deadline,
            seq,
        };
        self.open.insert(id, request);
    }

    pub fn remove(&mut self, id: &RequestId) -> Option<ServerRequest> {
        let request = self.open.remove(id)?;
        self.deadlines.remove(&(request.deadline, request.seq));
        Some(request)
    }

    /// The ids of the requests open for `session`.
    pub fn of_session(&self, session: SessionId) -> Vec<RequestId> {
        self.open
            .iter()
            .filter(|(_, request)| request.session == session)
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.keys().next().map(|(deadline, _)| *deadline)
    }

    /// Removes and returns the requests whose deadline has passed.
    pub fn take_expired(&mut self, now: Instant) -> Vec<(RequestId, ServerRequest)> {
        let mut expired = Vec::new();
        while let Some(entry) = self.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let id = entry.remove();
            if let Some(request) = self.open.remove(&id) {
                expired.push((id, request));
            }
        }
        expired
    }

    pub fn clear(&mut self) {
        self.open.clear();
        self.deadlines.clear();
    }
}
