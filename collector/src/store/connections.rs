//! The writer's in-memory series maps: each ingest connection's agent-local series ids →
//! database ids (or "refused": beyond the agent's series limit), the per-host series cache
//! and count, and the undo log that puts the connection maps back when a group's
//! transaction rolls back.
//!
//! Bounds: a host's cache entry lives while one of its connections does (it is dropped when
//! the last one closes, and the count is read again from the database at the next use), so
//! the cache holds at most the series of connected hosts, each held to
//! `max_series_per_agent` new series. A connection maps at most [`DENSE_SERIES_IDS`] dense
//! plus [`MAX_SPARSE_SERIES_IDS`] sparse local ids.

use std::collections::HashMap;

/// Local ids below this live in a dense vector; agents number series from 0 upwards.
const DENSE_SERIES_IDS: u32 = 1 << 16;
/// Local ids at or above [`DENSE_SERIES_IDS`] one connection may map; beyond, declarations
/// are not remembered (see [`ConnSeries::lenient`]).
const MAX_SPARSE_SERIES_IDS: usize = 1 << 16;
/// Stored for a refused local id (database ids start at 1; 0 means undeclared).
const REFUSED: i64 = -1;

/// What a connection's local series id stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Local {
    /// A stored series (database id).
    Series(i64),
    /// Declared beyond the agent's series limit: its samples are dropped.
    Refused,
}

impl Local {
    fn raw(self) -> i64 {
        match self {
            Local::Series(id) => id,
            Local::Refused => REFUSED,
        }
    }

    fn from_raw(raw: i64) -> Option<Local> {
        match raw {
            0 => None,
            REFUSED => Some(Local::Refused),
            id => Some(Local::Series(id)),
        }
    }
}

/// Per-connection map from the agent's series ids to database series ids.
pub(crate) struct ConnSeries {
    pub(crate) host_id: i64,
    /// Indexed by local id; 0 = undeclared, [`REFUSED`] = refused.
    dense: Vec<i64>,
    sparse: HashMap<u32, i64>,
    /// Set once a declaration could not be remembered (the sparse map is full): from then
    /// on samples of undeclared ids are dropped as refused instead of failing their batch,
    /// because they may belong to a series this connection was told about.
    pub(crate) lenient: bool,
    /// The host's event log already says this connection had series refused.
    pub(crate) limit_noticed: bool,
}

impl ConnSeries {
    pub(crate) fn new(host_id: i64) -> Self {
        ConnSeries {
            host_id,
            dense: Vec::new(),
            sparse: HashMap::new(),
            lenient: false,
            limit_noticed: false,
        }
    }

    pub(crate) fn get(&self, local: u32) -> Option<Local> {
        let raw = if local < DENSE_SERIES_IDS {
            self.dense.get(local as usize).copied().unwrap_or(0)
        } else {
            self.sparse.get(&local).copied().unwrap_or(0)
        };
        Local::from_raw(raw)
    }

    /// Sets (or with `None` clears) a mapping, returning the previous one for the undo log.
    /// A new sparse id beyond [`MAX_SPARSE_SERIES_IDS`] is not stored; the connection turns
    /// lenient instead.
    pub(crate) fn set(&mut self, local: u32, to: Option<Local>) -> Option<Local> {
        let raw = to.map_or(0, Local::raw);
        if local < DENSE_SERIES_IDS {
            let i = local as usize;
            if self.dense.len() <= i {
                self.dense.resize(i + 1, 0);
            }
            Local::from_raw(std::mem::replace(&mut self.dense[i], raw))
        } else if raw == 0 {
            self.sparse.remove(&local).and_then(Local::from_raw)
        } else if self.sparse.len() >= MAX_SPARSE_SERIES_IDS && !self.sparse.contains_key(&local) {
            self.lenient = true;
            None
        } else {
            self.sparse.insert(local, raw).and_then(Local::from_raw)
        }
    }
}

/// (series name, labels text) of one host's series.
pub(crate) type SeriesName = (String, String);

/// One host's series as the writer knows them.
#[derive(Debug, Default)]
pub(crate) struct HostSeries {
    /// Series rows the host has in the database: read when a batch first needs it (a
    /// series to create), then kept up to date.
    pub(crate) count: Option<u64>,
    /// Series resolved since the host's entry was made → database id.
    pub(crate) ids: HashMap<SeriesName, i64>,
}

/// In-memory state that must stay consistent with what is committed.
pub(crate) struct State {
    /// By host id, for hosts with a live connection.
    pub(crate) hosts: HashMap<i64, HostSeries>,
    pub(crate) conns: HashMap<u64, ConnSeries>,
    /// New series one host may have in all; declarations beyond are refused.
    pub(crate) max_series_per_agent: u64,
}

impl State {
    pub(crate) fn new(max_series_per_agent: u64) -> State {
        State {
            hosts: HashMap::new(),
            conns: HashMap::new(),
            max_series_per_agent,
        }
    }
}

/// What a group changed in the connection maps, to undo if its transaction rolls back
/// (the host caches are dropped then: they are re-read from the database).
#[derive(Default)]
pub(crate) struct Undo {
    pub(crate) conns_created: Vec<u64>,
    pub(crate) conn_sets: Vec<(u64, u32, Option<Local>)>,
    /// Connections whose limit notice this group wrote.
    pub(crate) noticed: Vec<u64>,
}

impl Undo {
    pub(crate) fn apply(self, state: &mut State) {
        for (conn, local, prev) in self.conn_sets.into_iter().rev() {
            if let Some(cs) = state.conns.get_mut(&conn) {
                cs.set(local, prev);
            }
        }
        for conn in self.noticed {
            if let Some(cs) = state.conns.get_mut(&conn) {
                cs.limit_noticed = false;
            }
        }
        for conn in self.conns_created {
            state.conns.remove(&conn);
        }
        // Ids and counts cached from the failed transaction may be wrong now.
        state.hosts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_conn_series_refused_ids_and_the_sparse_bound() {
        let mut cs = ConnSeries::new(1);
        assert_eq!(cs.set(3, Some(Local::Series(7))), None);
        assert_eq!(cs.set(4, Some(Local::Refused)), None);
        assert_eq!(cs.get(3), Some(Local::Series(7)));
        assert_eq!(cs.get(4), Some(Local::Refused));
        assert_eq!(cs.get(5), None);
        assert_eq!(cs.set(4, None), Some(Local::Refused));
        assert_eq!(cs.get(4), None);
        let sparse = DENSE_SERIES_IDS;
        for i in 0..MAX_SPARSE_SERIES_IDS as u32 {
            cs.set(sparse + i, Some(Local::Refused));
        }
        assert!(!cs.lenient);
        assert_eq!(cs.set(u32::MAX, Some(Local::Series(9))), None, "not stored");
        assert!(cs.lenient);
        assert_eq!(cs.get(u32::MAX), None);
        // Ids already mapped can still change.
        assert_eq!(cs.set(sparse, Some(Local::Series(2))), Some(Local::Refused));
    }
}
