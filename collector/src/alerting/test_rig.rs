//! The test rig of the alerting runtime: a real store (SQLite file, writer thread) with the
//! runtime plugged in, an agent connection sending samples, and the outbox drained as a
//! dispatcher would.

use std::path::{Path, PathBuf};
use std::time::Instant;

use mcpwatch_common::wire::{Sample, SeriesDef, SeriesKey};

use super::{Alerting, AlertingSetup, OutboxBatch, OutboxOutcome, OutboxShared};
use crate::alert::route::GroupBy;
use crate::alert::{parse_rules, validate_rules};
use crate::notify::Status;
use crate::store::{IngestBatch, IngestOutcome, StoreConfig};

pub(super) const RULES: &str = r#"
[[rule]]
name = "test_high"
selector = "test_value"
window = "10s"
op = ">"
critical = 0.5
severity = "critical"
summary = "test {{ $labels.i }} on {{ $labels.host }}"
"#;

pub(super) fn setup(rules: &str, tune: impl FnOnce(&mut AlertingSetup)) -> AlertingSetup {
    let raw = parse_rules(Path::new("rules.toml"), rules).expect("rules parse");
    let mut s = AlertingSetup::disabled();
    s.rules = validate_rules(raw, false).expect("rules valid");
    s.routing.default_receivers = vec!["r".into()];
    s.routing.all_receivers = vec!["r".into()];
    s.routing.default_opts.group_by = GroupBy::All;
    s.routing.default_opts.group_interval_ms = 1;
    tune(&mut s);
    s
}

pub(super) struct Rig {
    pub(super) dir: tempfile::TempDir,
    pub(super) path: PathBuf,
    pub(super) setup: AlertingSetup,
    pub(super) store: Alerting,
    pub(super) thread: std::thread::JoinHandle<()>,
    pub(super) conn: u64,
    pub(super) host: i64,
    pub(super) seq: u64,
    /// Series declared on the current connection, by `i` label.
    pub(super) declared: Vec<String>,
    /// The agent id the rig connects as.
    pub(super) agent: String,
}

impl Rig {
    pub(super) async fn new(setup: AlertingSetup) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alerts.db");
        let (store, thread) = open(&path, &setup);
        let mut rig = Rig {
            dir,
            path,
            setup,
            store,
            thread,
            conn: 0,
            host: 0,
            seq: 0,
            declared: Vec::new(),
            agent: "agent-1".into(),
        };
        rig.connect().await;
        rig
    }

    pub(super) async fn connect(&mut self) {
        let agent = self.agent.clone();
        self.connect_as(&agent).await;
    }

    /// Connects as agent `agent` (a new connection: series are declared again).
    pub(super) async fn connect_as(&mut self, agent: &str) {
        self.agent = agent.to_owned();
        self.conn += 1;
        self.declared.clear();
        let s = self
            .store
            .register_agent(self.conn, agent, "h", "v", "b", now())
            .await
            .expect("register");
        self.host = s.host_id;
    }

    /// Closes and reopens the store on the same file (a collector restart).
    pub(super) async fn restart(self) -> Rig {
        drop(self.store);
        self.thread.join().expect("writer exits");
        let (store, thread) = open(&self.path, &self.setup);
        let mut rig = Rig {
            store,
            thread,
            declared: Vec::new(),
            ..self
        };
        rig.connect().await;
        rig
    }

    /// Sends `test_value{i=...}` samples in one batch and waits for the commit.
    pub(super) async fn send(&mut self, metric: &str, points: &[(&str, i64, f64)]) {
        self.seq += 1;
        let mut b = IngestBatch {
            conn: self.conn,
            host_id: self.host,
            seq: self.seq,
            new_series: Vec::new(),
            samples: Vec::new(),
            events: Vec::new(),
            received: Instant::now(),
        };
        for &(i, ts, v) in points {
            let name = format!("{metric}/{i}");
            let id = match self.declared.iter().position(|d| *d == name) {
                Some(id) => id,
                None => {
                    self.declared.push(name);
                    let id = self.declared.len() - 1;
                    b.new_series.push(SeriesDef {
                        id: id as u32,
                        key: SeriesKey::new(metric, &[("i", i)]),
                    });
                    id
                }
            };
            b.samples.push(Sample {
                series: id as u32,
                ts_ms: ts,
                value: v,
            });
        }
        assert_eq!(
            self.store.ingest(b).await.expect("ingest").outcome,
            IngestOutcome::Committed
        );
    }

    pub(super) async fn fetch(&self, at: i64) -> OutboxBatch {
        self.fetch_for("r", at).await
    }

    pub(super) async fn fetch_for(&self, receiver: &str, at: i64) -> OutboxBatch {
        self.store
            .outbox_fetch(receiver, at, 100)
            .await
            .expect("fetch")
    }

    /// Fetches and marks delivered everything due at `at`.
    pub(super) async fn drain(&self, at: i64) -> Vec<crate::notify::Notification> {
        self.drain_for("r", at).await
    }

    /// Fetches and marks delivered everything due at `at` for `receiver`.
    pub(super) async fn drain_for(
        &self,
        receiver: &str,
        at: i64,
    ) -> Vec<crate::notify::Notification> {
        let mut out = Vec::new();
        loop {
            let b = self.fetch_for(receiver, at).await;
            if b.items.is_empty() {
                return out;
            }
            let ids = b.items.iter().map(|i| i.id).collect();
            self.store
                .outbox_settle(
                    receiver,
                    &b.group_key,
                    ids,
                    OutboxOutcome::Delivered { at_ms: at },
                    at,
                )
                .await
                .expect("settle");
            out.extend(b.items.into_iter().map(|i| i.notification));
        }
    }

    pub(super) fn count(&self, sql: &str) -> i64 {
        let c = rusqlite::Connection::open(&self.path).expect("open db");
        c.query_row(sql, [], |r| r.get(0)).expect("count")
    }
}

pub(super) fn open(path: &Path, setup: &AlertingSetup) -> (Alerting, std::thread::JoinHandle<()>) {
    let cfg = StoreConfig::new(path);
    let receivers = setup.routing.all_receivers.iter().map(String::as_str);
    Alerting::open(cfg, setup.clone(), OutboxShared::new(receivers)).expect("open store")
}

pub(super) fn now() -> i64 {
    mcpwatch_common::time::now_ms()
}

pub(super) fn statuses(v: &[crate::notify::Notification]) -> Vec<Status> {
    v.iter().map(|n| n.status).collect()
}
