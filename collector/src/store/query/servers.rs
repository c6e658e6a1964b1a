//! The supervised MCP servers of one host as stored: their `mcpwatch_server_*` series with
//! the latest sample of each, the servers named by series or events, and each server's
//! newest state-changing event and newest events. The API derives the servers' state.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::events::{event_servers, latest_event_of_kinds, server_events, EventRecord};
use super::series::{host_series, latest_samples, newest_raw_ts, SeriesRecord};
use crate::store::{Store, StoreError};

/// What one servers read gathers.
#[derive(Debug, Default)]
pub struct ServerRows {
    pub series: Vec<SeriesRecord>,
    /// Latest `(ts_ms, value)` per series id.
    pub latest: HashMap<i64, (i64, f64)>,
    pub names: BTreeSet<String>,
    /// Newest state-changing event `(ts_ms, kind)` per server.
    pub state_events: HashMap<String, (i64, String)>,
    /// Newest events per server, newest first.
    pub events: HashMap<String, Vec<EventRecord>>,
}

/// Which rows a servers read gathers.
#[derive(Debug, Clone)]
pub struct ServersQuery {
    pub host_id: i64,
    /// Series whose name starts with this.
    pub series_prefix: String,
    /// Samples at most this long before the host's newest one.
    pub lookback_ms: i64,
    /// Event kinds that change a server's state.
    pub state_kinds: Vec<String>,
    /// Events listed per server.
    pub events_per_server: usize,
}

impl Store {
    /// The rows behind a host's servers view; `server_of` names the server a series
    /// belongs to (if any).
    pub async fn server_rows(
        &self,
        q: ServersQuery,
        server_of: impl Fn(&SeriesRecord) -> Option<String> + Send + 'static,
    ) -> Result<ServerRows, StoreError> {
        self.read(move |c| {
            let host_id = q.host_id;
            let series = host_series(c, host_id, &q.series_prefix, true)?;
            let ids: HashSet<i64> = series.iter().map(|s| s.id).collect();
            let latest = match newest_raw_ts(c, host_id)? {
                Some(newest) => latest_samples(
                    c,
                    Some(host_id),
                    newest.saturating_sub(q.lookback_ms),
                    newest,
                    |s| ids.contains(&s),
                )?,
                None => HashMap::new(),
            };
            let mut names: BTreeSet<String> = series
                .iter()
                .filter_map(&server_of)
                .filter(|n| !n.is_empty())
                .collect();
            names.extend(event_servers(c, host_id)?);
            let kinds: Vec<&str> = q.state_kinds.iter().map(String::as_str).collect();
            let mut state_events = HashMap::new();
            let mut events = HashMap::new();
            for n in &names {
                if let Some(e) = latest_event_of_kinds(c, host_id, n, &kinds)? {
                    state_events.insert(n.clone(), e);
                }
                let newest = server_events(c, host_id, n, q.events_per_server)?;
                events.insert(n.clone(), newest);
            }
            Ok(ServerRows {
                series,
                latest,
                names,
                state_events,
                events,
            })
        })
        .await
    }
}
