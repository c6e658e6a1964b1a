//! The writer's in-memory series maps: each ingest connection's agent-local series ids →
//! database ids, the (host, name, labels) → id cache, and the undo log that puts both back
//! when a group's transaction rolls back.

use std::collections::HashMap;

/// Local ids below this live in a dense vector; agents number series from 0 upwards.
const DENSE_SERIES_IDS: u32 = 1 << 16;

/// Per-connection map from the agent's series ids to database series ids.
pub(crate) struct ConnSeries {
    pub(crate) host_id: i64,
    /// Indexed by local id; 0 = undeclared (database ids start at 1).
    dense: Vec<i64>,
    sparse: HashMap<u32, i64>,
}

impl ConnSeries {
    pub(crate) fn new(host_id: i64) -> Self {
        ConnSeries {
            host_id,
            dense: Vec::new(),
            sparse: HashMap::new(),
        }
    }

    pub(crate) fn get(&self, local: u32) -> Option<i64> {
        if local < DENSE_SERIES_IDS {
            self.dense
                .get(local as usize)
                .copied()
                .filter(|&id| id != 0)
        } else {
            self.sparse.get(&local).copied()
        }
    }

    /// Sets (or with `None` clears) a mapping, returning the previous one for the undo log.
    pub(crate) fn set(&mut self, local: u32, id: Option<i64>) -> Option<i64> {
        if local < DENSE_SERIES_IDS {
            let i = local as usize;
            if self.dense.len() <= i {
                self.dense.resize(i + 1, 0);
            }
            let prev = std::mem::replace(&mut self.dense[i], id.unwrap_or(0));
            (prev != 0).then_some(prev)
        } else {
            match id {
                Some(id) => self.sparse.insert(local, id),
                None => self.sparse.remove(&local),
            }
        }
    }
}

/// (host id, series name, labels text).
pub(crate) type SeriesCacheKey = (i64, String, String);

/// In-memory state that must stay consistent with what is committed.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) series: HashMap<SeriesCacheKey, i64>,
    pub(crate) conns: HashMap<u64, ConnSeries>,
}

/// What a group changed in [`State`], to undo if its transaction rolls back.
#[derive(Default)]
pub(crate) struct Undo {
    pub(crate) series: Vec<SeriesCacheKey>,
    pub(crate) conns_created: Vec<u64>,
    pub(crate) conn_sets: Vec<(u64, u32, Option<i64>)>,
}

impl Undo {
    pub(crate) fn apply(self, state: &mut State) {
        for key in self.series {
            state.series.remove(&key);
        }
        for (conn, local, prev) in self.conn_sets.into_iter().rev() {
            if let Some(cs) = state.conns.get_mut(&conn) {
                cs.set(local, prev);
            }
        }
        for conn in self.conns_created {
            state.conns.remove(&conn);
        }
    }
}
