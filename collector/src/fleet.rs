//! The fleet summary behind `GET /api/v1/fleet`: per host, CPU / memory / disk sparklines
//! (per-minute figures over the last 30 minutes) and its MCP servers counted by state. One
//! task follows the committed raw rows (a cursor, as the live feed follows its tables) and
//! keeps only those few figures in memory, so the fleet page of 1,000 hosts is one lock
//! and no sample decoding per request.
//!
//! After a start the sparklines are warmed from the 1-minute rollups and the server states
//! from the last two minutes of raw rows, so the page is full at once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::CollectorMetrics;
use crate::store::query::fleet::TrackedSeries;
use crate::store::Store;

/// Minutes in a sparkline.
pub const SPARK_MINUTES: usize = 30;
const MINUTE_MS: i64 = 60_000;
/// A server whose newest sample is this much older than its host's newest server sample
/// is gone (removed from the agent's configuration).
const SERVER_STALE_MS: i64 = 10 * 60_000;
/// How far back the server states are read after a start.
const WARM_RAW_MS: i64 = 2 * 60_000;
/// Samples further ahead of the collector's clock are ignored: a wrong agent clock must not
/// hold a sparkline slot or a server's state forever.
const FUTURE_MS: i64 = 60_000;
/// Raw rows read per poll; a full read polls again at once.
const READ_ROWS: usize = 2000;

const CPU: &str = "mcpwatch_host_cpu_usage_ratio";
const MEMORY_USED: &str = "mcpwatch_host_memory_used_bytes";
const MEMORY_TOTAL: &str = "mcpwatch_host_memory_total_bytes";
const DISK_USED: &str = "mcpwatch_host_disk_used_bytes";
const DISK_TOTAL: &str = "mcpwatch_host_disk_total_bytes";
const SERVER_STATE: &str = "mcpwatch_server_state";
const SERVER_HEALTHY: &str = "mcpwatch_server_healthy";
const SERVER_DRIFT: &str = "mcpwatch_server_tool_drift";
const SERVER_GAVE_UP: &str = "mcpwatch_server_gave_up";
const FOLLOWED: [&str; 9] = [
    CPU,
    MEMORY_USED,
    MEMORY_TOTAL,
    DISK_USED,
    DISK_TOTAL,
    SERVER_STATE,
    SERVER_HEALTHY,
    SERVER_DRIFT,
    SERVER_GAVE_UP,
];

/// A host's MCP servers by state. Every server is in exactly one of running, unhealthy,
/// crash_looping, gave_up and other; `drift` counts servers whose tools drifted, in any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ServerCounts {
    pub total: u32,
    /// Running and not reported unhealthy.
    pub running: u32,
    /// Running, but its health check or probe fails.
    pub unhealthy: u32,
    /// Exited and waiting to be restarted (backing off).
    pub crash_looping: u32,
    /// Restarts exhausted; left stopped until an operator acts.
    pub gave_up: u32,
    /// Pending, stopped, exited or not yet reported.
    pub other: u32,
    pub drift: u32,
}

/// One host's figures. Sparklines hold [`SPARK_MINUTES`] per-minute values, oldest first,
/// the last being the current minute; `None` where no sample came.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostFigures {
    /// Mean CPU busy ratio (0–1).
    pub cpu: Vec<Option<f64>>,
    /// Mean used / total memory (0–1).
    pub memory: Vec<Option<f64>>,
    /// Used / total of the fullest filesystem (0–1).
    pub disk: Vec<Option<f64>>,
    pub servers: ServerCounts,
}

/// Per-minute figures: mean or maximum of what was added in each minute.
#[derive(Debug, Default)]
struct Spark {
    /// `(minute start, sum, count, max)`, oldest first.
    minutes: VecDeque<(i64, f64, u32, f64)>,
    /// Minutes up to this one came from rollups: raw samples re-read for them are ignored.
    warmed_through: i64,
}

impl Spark {
    fn add(&mut self, ts_ms: i64, v: f64) {
        // Saturating: a hostile agent's timestamp near i64::MIN must not overflow.
        let minute = ts_ms.saturating_sub(ts_ms.rem_euclid(MINUTE_MS));
        if !v.is_finite() || minute <= self.warmed_through {
            return;
        }
        match self.minutes.iter_mut().rev().find(|m| m.0 == minute) {
            Some(m) => {
                m.1 += v;
                m.2 += 1;
                m.3 = m.3.max(v);
            }
            None => {
                let at = self.minutes.partition_point(|m| m.0 < minute);
                self.minutes.insert(at, (minute, v, 1, v));
                while self.minutes.len() > SPARK_MINUTES {
                    self.minutes.pop_front();
                }
            }
        }
    }

    fn values(&self, now_ms: i64, max: bool) -> Vec<Option<f64>> {
        let last = now_ms.saturating_sub(now_ms.rem_euclid(MINUTE_MS));
        (0..SPARK_MINUTES as i64)
            .rev()
            .map(|back| {
                let minute = last - back * MINUTE_MS;
                self.minutes.iter().find(|m| m.0 == minute).map(|m| {
                    if max {
                        m.3
                    } else {
                        m.1 / f64::from(m.2)
                    }
                })
            })
            .collect()
    }
}

/// What one followed series is.
#[derive(Debug, Clone)]
enum Figure {
    Cpu,
    MemoryUsed,
    MemoryTotal,
    DiskUsed(String),
    DiskTotal(String),
    State { server: String, state: String },
    Healthy(String),
    Drift(String),
    GaveUp(String),
}

impl Figure {
    fn of(s: &TrackedSeries) -> Option<Figure> {
        let label = |k: &str| {
            s.labels
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        let server = || label("server").filter(|v| !v.is_empty());
        Some(match s.name.as_str() {
            CPU if label("cpu").as_deref() == Some("total") => Figure::Cpu,
            MEMORY_USED => Figure::MemoryUsed,
            MEMORY_TOTAL => Figure::MemoryTotal,
            DISK_USED => Figure::DiskUsed(label("mountpoint").unwrap_or_default()),
            DISK_TOTAL => Figure::DiskTotal(label("mountpoint").unwrap_or_default()),
            SERVER_STATE => Figure::State {
                server: server()?,
                state: label("state")?,
            },
            SERVER_HEALTHY => Figure::Healthy(server()?),
            SERVER_DRIFT => Figure::Drift(server()?),
            SERVER_GAVE_UP => Figure::GaveUp(server()?),
            _ => return None,
        })
    }
}

#[derive(Debug, Default)]
struct ServerFlags {
    /// Newest `state == 1` sample: (ts, state).
    state: Option<(i64, String)>,
    healthy: Option<bool>,
    drift: bool,
    gave_up: bool,
    last_ms: i64,
}

/// The server's flags, noting that it reported at `ts`.
fn server_flags<'a>(
    servers: &'a mut BTreeMap<String, ServerFlags>,
    name: &str,
    ts: i64,
) -> &'a mut ServerFlags {
    let s = servers.entry(name.to_owned()).or_default();
    s.last_ms = s.last_ms.max(ts);
    s
}

#[derive(Debug, Default)]
struct HostTrack {
    cpu: Spark,
    memory: Spark,
    disk: Spark,
    memory_total: Option<f64>,
    disk_total: HashMap<String, f64>,
    servers: BTreeMap<String, ServerFlags>,
}

impl HostTrack {
    fn apply(&mut self, figure: &Figure, ts: i64, v: f64) {
        match figure {
            Figure::Cpu => self.cpu.add(ts, v),
            Figure::MemoryTotal => self.memory_total = Some(v),
            Figure::MemoryUsed => {
                if let Some(total) = self.memory_total.filter(|t| *t > 0.0) {
                    self.memory.add(ts, v / total);
                }
            }
            Figure::DiskTotal(m) => {
                self.disk_total.insert(m.clone(), v);
            }
            Figure::DiskUsed(m) => {
                if let Some(total) = self.disk_total.get(m).filter(|t| **t > 0.0) {
                    self.disk.add(ts, v / total);
                }
            }
            Figure::State { server, state } => {
                let s = server_flags(&mut self.servers, server, ts);
                let newer = s.state.as_ref().is_none_or(|(t, _)| ts >= *t);
                if v == 1.0 && newer {
                    s.state = Some((ts, state.clone()));
                }
            }
            Figure::Healthy(server) => {
                server_flags(&mut self.servers, server, ts).healthy =
                    (!v.is_nan()).then_some(v != 0.0);
            }
            Figure::Drift(server) => server_flags(&mut self.servers, server, ts).drift = v == 1.0,
            Figure::GaveUp(server) => {
                server_flags(&mut self.servers, server, ts).gave_up = v == 1.0
            }
        }
    }

    fn counts(&self) -> ServerCounts {
        let newest = self.servers.values().map(|s| s.last_ms).max().unwrap_or(0);
        let mut c = ServerCounts::default();
        for s in self.servers.values() {
            if s.last_ms < newest.saturating_sub(SERVER_STALE_MS) {
                continue;
            }
            c.total += 1;
            let state = s.state.as_ref().map(|(_, st)| st.as_str());
            match state {
                _ if s.gave_up || state == Some("gave_up") => c.gave_up += 1,
                Some("backing_off") => c.crash_looping += 1,
                Some("running") if s.healthy == Some(false) => c.unhealthy += 1,
                Some("running") => c.running += 1,
                _ => c.other += 1,
            }
            c.drift += u32::from(s.drift);
        }
        c
    }
}

#[derive(Debug, Default)]
struct Summary {
    series: HashMap<i64, (Arc<str>, Figure)>,
    hosts: HashMap<Arc<str>, HostTrack>,
    newest_series: i64,
    /// The first poll after a start has run (before it, the page has no figures).
    ready: bool,
}

impl Summary {
    fn follow(&mut self, list: Vec<TrackedSeries>) {
        for s in list {
            self.newest_series = self.newest_series.max(s.id);
            if let Some(figure) = Figure::of(&s) {
                let host: Arc<str> = match self.hosts.get_key_value(s.agent_id.as_str()) {
                    Some((k, _)) => k.clone(),
                    None => {
                        let k: Arc<str> = s.agent_id.into();
                        self.hosts.insert(k.clone(), HostTrack::default());
                        k
                    }
                };
                self.series.insert(s.id, (host, figure));
            }
        }
    }

    fn apply(&mut self, samples: &[(i64, i64, f64)], now_ms: i64) {
        let latest = now_ms.saturating_add(FUTURE_MS);
        for &(id, ts, v) in samples {
            if ts > latest {
                continue;
            }
            if let Some((host, figure)) = self.series.get(&id) {
                if let Some(track) = self.hosts.get_mut(host) {
                    track.apply(figure, ts, v);
                }
            }
        }
    }
}

/// The handle to the summary: cheap to clone; the task writes, the API reads.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    summary: Arc<Mutex<Summary>>,
}

impl Fleet {
    pub fn new() -> Fleet {
        Fleet::default()
    }

    fn lock(&self) -> MutexGuard<'_, Summary> {
        // A panic mid-update leaves figures at worst one sample off; keep serving them.
        self.summary.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the summary has read the store once since the start.
    pub fn ready(&self) -> bool {
        self.lock().ready
    }

    /// The figures of the hosts `wanted` names, as of `now_ms` (hosts with no figures
    /// are left out).
    pub fn figures<'a>(
        &self,
        wanted: impl IntoIterator<Item = &'a str>,
        now_ms: i64,
    ) -> HashMap<String, HostFigures> {
        let summary = self.lock();
        wanted
            .into_iter()
            .filter_map(|h| {
                let t = summary.hosts.get(h)?;
                Some((
                    h.to_owned(),
                    HostFigures {
                        cpu: t.cpu.values(now_ms, false),
                        memory: t.memory.values(now_ms, false),
                        disk: t.disk.values(now_ms, true),
                        servers: t.counts(),
                    },
                ))
            })
            .collect()
    }
}

/// Follows the committed raw rows until `stop`, every `poll`.
pub async fn run(
    store: Store,
    fleet: Fleet,
    metrics: Arc<CollectorMetrics>,
    poll: Duration,
    stop: CancellationToken,
) {
    let mut cursor = loop {
        match warm(&store, &fleet, crate::now_ms()).await {
            Ok(c) => break c,
            Err(e) => {
                metrics.fleet_failures.inc();
                tracing::warn!(error = %e, "fleet summary: warming up failed");
            }
        }
        if !crate::polling::pause(poll, &stop).await {
            return;
        }
    };
    loop {
        let more = match step(&store, &fleet, cursor).await {
            Ok((next, unreadable, full)) => {
                cursor = next;
                metrics.fleet_failures.inc_by(unreadable as u64);
                full
            }
            Err(e) => {
                metrics.fleet_failures.inc();
                tracing::warn!(error = %e, "fleet summary: reading new samples failed");
                false
            }
        };
        if !crate::polling::next(more, poll, &stop).await {
            return;
        }
    }
}

/// Loads every followed series, the sparklines from rollups and the server states from the
/// last raw rows; returns the raw cursor to follow from.
async fn warm(store: &Store, fleet: &Fleet, now_ms: i64) -> Result<i64, crate::store::StoreError> {
    let list = store.tracked_series(FOLLOWED.to_vec(), 0).await?;
    let since = now_ms - SPARK_MINUTES as i64 * MINUTE_MS;
    let ids: Vec<i64> = list.iter().map(|s| s.id).collect();
    let means = store.minute_means(ids, since).await?;
    let start = store.newest_raw_id().await?;
    {
        let mut summary = fleet.lock();
        summary.follow(list);
        // Rollups in time order, totals before used within a minute.
        let mut rows = means;
        rows.sort_by_key(|&(id, ts, _)| {
            let total = matches!(
                summary.series.get(&id).map(|x| &x.1),
                Some(Figure::MemoryTotal | Figure::DiskTotal(_))
            );
            (ts, !total)
        });
        summary.apply(&rows, now_ms);
        for track in summary.hosts.values_mut() {
            for spark in [&mut track.cpu, &mut track.memory, &mut track.disk] {
                spark.warmed_through = spark.minutes.back().map_or(i64::MIN, |m| m.0);
            }
        }
    }
    // The last minutes of raw rows, for server states (and sparkline minutes not rolled up).
    let mut cursor = store.raw_id_before(now_ms - WARM_RAW_MS).await?;
    loop {
        let read = store
            .samples_after(cursor, now_ms - WARM_RAW_MS, READ_ROWS)
            .await?;
        fleet.lock().apply(&read.samples, crate::now_ms());
        cursor = read.last_raw_id;
        if !read.full || cursor >= start {
            break;
        }
    }
    fleet.lock().ready = true;
    Ok(cursor.max(start))
}

/// One poll: new series, then the samples of raw rows after `cursor`.
async fn step(
    store: &Store,
    fleet: &Fleet,
    cursor: i64,
) -> Result<(i64, usize, bool), crate::store::StoreError> {
    let newest_series = fleet.lock().newest_series;
    let list = store
        .tracked_series(FOLLOWED.to_vec(), newest_series)
        .await?;
    fleet.lock().follow(list);
    let read = store.samples_after(cursor, i64::MIN, READ_ROWS).await?;
    fleet.lock().apply(&read.samples, crate::now_ms());
    Ok((read.last_raw_id, read.unreadable, read.full))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(id: i64, name: &str, labels: &[(&str, &str)]) -> TrackedSeries {
        TrackedSeries {
            id,
            agent_id: "h".into(),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn sparklines_hold_per_minute_means_and_survive_hostile_values() {
        let mut s = Spark::default();
        let now = 1_800_000_000_000;
        s.add(now, 0.2);
        s.add(now + 1, 0.4);
        s.add(now - 120_000, 0.9);
        s.add(i64::MIN, 1.0);
        s.add(i64::MAX, 1.0);
        s.add(now, f64::NAN);
        s.add(now, f64::INFINITY);
        let v = s.values(now, false);
        assert_eq!(v.len(), SPARK_MINUTES);
        let last = v[SPARK_MINUTES - 1].expect("this minute");
        assert!((last - 0.3).abs() < 1e-9, "{v:?}");
        assert_eq!(v[SPARK_MINUTES - 3], Some(0.9));
        assert!(s.minutes.len() <= SPARK_MINUTES);
        // The ring keeps the newest 30 minutes.
        let mut full = Spark::default();
        for m in 0..40 {
            full.add(now - m * MINUTE_MS, 0.5);
        }
        assert_eq!(full.minutes.len(), SPARK_MINUTES);
    }

    #[test]
    fn servers_are_counted_once_by_state_and_stale_ones_dropped() {
        let mut summary = Summary::default();
        let mut list = Vec::new();
        let mut id = 0;
        let mut add = |name: &str, labels: &[(&str, &str)]| {
            id += 1;
            list.push(series(id, name, labels));
            id
        };
        let run_a = add(SERVER_STATE, &[("server", "a"), ("state", "running")]);
        let healthy_a = add(SERVER_HEALTHY, &[("server", "a")]);
        let run_b = add(SERVER_STATE, &[("server", "b"), ("state", "running")]);
        let gave_b = add(SERVER_GAVE_UP, &[("server", "b")]);
        let back_c = add(SERVER_STATE, &[("server", "c"), ("state", "backing_off")]);
        let drift_c = add(SERVER_DRIFT, &[("server", "c")]);
        let run_old = add(SERVER_STATE, &[("server", "old"), ("state", "running")]);
        let ignored = add(SERVER_STATE, &[("state", "running")]);
        summary.follow(list);
        assert!(
            !summary.series.contains_key(&ignored),
            "no server label: not followed"
        );
        let now = 1_800_000_000_000;
        summary.apply(
            &[
                (run_a, now, 1.0),
                (healthy_a, now, 0.0),
                (run_b, now, 1.0),
                (gave_b, now, 1.0),
                (back_c, now, 1.0),
                (drift_c, now, 1.0),
                (run_old, now - SERVER_STALE_MS - 1, 1.0),
                // From a clock far ahead: ignored, so it cannot pin a state.
                (back_c, now + 3_600_000, 0.0),
                (run_a, i64::MAX, 0.0),
            ],
            now,
        );
        let c = summary.hosts.get("h").expect("host").counts();
        assert_eq!(
            c,
            ServerCounts {
                total: 3,
                running: 0,
                unhealthy: 1,
                crash_looping: 1,
                gave_up: 1,
                other: 0,
                drift: 1
            }
        );
    }

    #[test]
    fn memory_and_disk_are_ratios_of_their_totals() {
        let mut summary = Summary::default();
        summary.follow(vec![
            series(1, MEMORY_USED, &[]),
            series(2, MEMORY_TOTAL, &[]),
            series(3, DISK_USED, &[("mountpoint", "/")]),
            series(4, DISK_TOTAL, &[("mountpoint", "/")]),
            series(5, DISK_USED, &[("mountpoint", "/data")]),
            series(6, DISK_TOTAL, &[("mountpoint", "/data")]),
        ]);
        let now = 1_800_000_000_000;
        summary.apply(
            &[
                (1, now, 1.0), // before any total: no ratio
                (2, now, 4.0),
                (1, now, 1.0),
                (4, now, 0.0), // a zero total gives no ratio
                (3, now, 5.0),
                (6, now, 10.0),
                (5, now, 9.0),
            ],
            now,
        );
        let f = Fleet {
            summary: Arc::new(Mutex::new(summary)),
        }
        .figures(["h"], now);
        let h = &f["h"];
        assert_eq!(h.memory[SPARK_MINUTES - 1], Some(0.25));
        assert_eq!(h.disk[SPARK_MINUTES - 1], Some(0.9));
        assert_eq!(h.cpu[SPARK_MINUTES - 1], None);
    }
}
