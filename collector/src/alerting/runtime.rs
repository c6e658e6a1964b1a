//! The alerting runtime's state and its life cycle on the writer thread: startup (stored
//! rule definitions, API receivers, persisted engine state, warm window), the
//! [`WriterHook`] the writer calls on every group and tick, and the reload after a
//! rollback. Evaluation, notification and administration are `impl Runtime` blocks in
//! their own files.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection};

use super::administration::effective_rules;
use super::evaluation::{load_engine_state, max_span};
use super::host_scopes::{load_api_receiver_owners, HostScopes};
use super::notification::{OutboxShared, ReceiverShared};
use super::outbox::dead_letter;
use super::sample_window::SampleWindow;
use super::silences::Silences;
use super::AlertingSetup;
use crate::alert::policy::{AlertRecord, ToldEntry};
use crate::alert::{Engine, EngineState, RawRule, Rule};
use crate::store::{StoreError, WriterHook};

/// The alerting state the writer thread owns (through [`super::Alerting`]'s shared handle).
pub(crate) struct Runtime {
    pub(super) setup: AlertingSetup,
    pub(super) shared: Arc<OutboxShared>,
    pub(super) engine: Engine,
    pub(super) window: SampleWindow,
    /// Firing and flapping alerts by fingerprint.
    pub(super) active: HashMap<String, AlertRecord>,
    /// (receiver, fingerprint) → what the receiver was told.
    pub(super) told: HashMap<(String, String), ToldEntry>,
    /// Silences not yet ended, compiled once each.
    pub(super) silences: Silences,
    /// (receiver, group) → last delivery, for `group_interval`.
    pub(super) last_flush: HashMap<(String, String), i64>,
    pub(super) touched: BTreeSet<String>,
    /// Receivers with rows queued by the open transaction.
    pub(super) woken: BTreeSet<String>,
    /// When each quiet (inactive, absence-tracked) state was last written: those change on
    /// every evaluation, so they are persisted at most once per `QUIET_PERSIST_MS`.
    pub(super) persisted: HashMap<(String, String), i64>,
    /// The rules from the configuration (before API rules override them), validated and
    /// as written.
    pub(super) config_rules: Vec<Rule>,
    pub(super) config_raw: Vec<RawRule>,
    /// The routing's receiver lists as configured (every receiver; the default route's);
    /// API receivers are added to them by `sync_routing`.
    pub(super) config_all: Vec<String>,
    pub(super) config_default: Vec<String>,
    /// Receivers defined through the API that run now.
    pub(super) api_receivers: BTreeSet<String>,
    /// The receiver set before the open transaction changed it, put back on rollback.
    pub(super) receivers_undo: Option<ReceiversUndo>,
    /// Every host's operator labels (alert labels, owner scopes).
    pub(super) hosts: HostScopes,
    /// Owner scopes of API receivers (see `host_scopes::load_api_receiver_owners`).
    pub(super) api_receiver_owners: HashMap<String, Option<crate::alert::OwnerScope>>,
    /// Dead letters per receiver (the built-in rule's series), counted again when
    /// `dead_dirty`.
    pub(super) dead_counts: BTreeMap<String, i64>,
    pub(super) dead_dirty: bool,
    /// When the delivery log was last pruned.
    pub(super) deliveries_pruned_ms: i64,
}

type ReceiversUndo = (BTreeMap<String, Arc<ReceiverShared>>, BTreeSet<String>);

impl Runtime {
    /// Loads persisted state, stores the rule definitions and warms the window from the
    /// raw samples, so a restart neither re-fires nor resolves anything by itself.
    pub(super) fn open(
        conn: &mut Connection,
        setup: AlertingSetup,
        shared: Arc<OutboxShared>,
        now_ms: i64,
    ) -> Result<Runtime, StoreError> {
        let mut setup = setup;
        let tx = conn.transaction()?;
        store_config_rules(&tx, &setup.raw_rules, now_ms)?;
        let config_raw = setup.raw_rules.clone();
        let config_rules = setup.rules.clone();
        setup.rules = effective_rules(&config_rules, &tx)?;
        let config_all = setup.routing.all_receivers.clone();
        let api_receivers = settle_api_receivers(&tx, &config_all, &shared, now_ms)?;
        tx.commit()?;

        let engine = restore_engine(conn, &setup, now_ms)?;
        let hosts = HostScopes::load(conn)?;
        let api_receiver_owners = load_api_receiver_owners(conn)?;
        let mut window = SampleWindow::default();
        window.set_rules(&setup.rules, setup.engine.grace_ms);
        let setup_default = setup.routing.default_receivers.clone();
        let mut a = Runtime {
            setup,
            shared,
            engine,
            window,
            active: HashMap::new(),
            told: HashMap::new(),
            silences: Silences::default(),
            last_flush: HashMap::new(),
            touched: BTreeSet::new(),
            woken: BTreeSet::new(),
            persisted: HashMap::new(),
            config_rules,
            config_raw,
            config_default: setup_default,
            config_all,
            api_receivers,
            receivers_undo: None,
            hosts,
            api_receiver_owners,
            dead_counts: BTreeMap::new(),
            dead_dirty: true,
            deliveries_pruned_ms: 0,
        };
        a.sync_routing();
        a.load_api_routes(conn)?;
        a.load(conn, now_ms)?;
        a.declare_all(conn)?;
        let span = max_span(&a.setup);
        a.warm(conn, now_ms, span)?;
        let tx = conn.transaction()?;
        a.resolve_orphans(&tx, now_ms)?;
        tx.commit()?;
        a.committed();
        Ok(a)
    }

    /// (Re)loads alerts, told log, silences and queue depths from the database.
    pub(super) fn load(&mut self, c: &Connection, now_ms: i64) -> Result<(), StoreError> {
        self.active.clear();
        let mut stmt = c.prepare("SELECT record FROM alerts WHERE status != 'resolved'")?;
        for text in stmt.query_map([], |r| r.get::<_, String>(0))? {
            match serde_json::from_str::<AlertRecord>(&text?) {
                Ok(rec) => {
                    self.active.insert(rec.fingerprint.clone(), rec);
                }
                Err(e) => tracing::warn!(error = %e, "dropping unreadable alert record"),
            }
        }
        self.told.clear();
        let mut stmt = c.prepare("SELECT receiver, fingerprint, told FROM notify_log")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (rcv, fp, text) = row?;
            if let Ok(t) = serde_json::from_str::<ToldEntry>(&text) {
                self.told.insert((rcv, fp), t);
            }
        }
        self.reload_silences(c, now_ms)?;
        let receivers = self.shared.read();
        for r in receivers.values() {
            r.queued.store(0, Ordering::Relaxed);
        }
        let mut stmt = c.prepare("SELECT receiver, count(*) FROM outbox GROUP BY receiver")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (rcv, n) = row?;
            if let Some(r) = receivers.get(&rcv) {
                r.queued.store(n, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// After a commit: wake the workers that have new rows.
    pub(super) fn committed(&mut self) {
        self.receivers_undo = None;
        if self.woken.is_empty() {
            return;
        }
        let receivers = self.shared.read();
        for name in std::mem::take(&mut self.woken) {
            if let Some(r) = receivers.get(&name) {
                r.wake.notify_one();
            }
        }
    }

    /// After a rollback: memory may be ahead of the database, so reload it.
    pub(super) fn rolled_back(&mut self, c: &Connection, now_ms: i64) {
        self.woken.clear();
        self.touched.clear();
        // A receiver change in the failed group is undone with it.
        if let Some((map, api)) = self.receivers_undo.take() {
            *self.shared.write() = map;
            self.api_receivers = api;
            self.sync_routing();
        }
        // A rule change in the failed group is undone with it.
        match effective_rules(&self.config_rules, c) {
            Ok(rules) => {
                self.window.set_rules(&rules, self.setup.engine.grace_ms);
                self.setup.rules = rules;
            }
            Err(e) => tracing::error!(error = %e, "re-reading rules after a rollback failed"),
        }
        self.window.forget_ids();
        match HostScopes::load(c) {
            Ok(hosts) => self.hosts = hosts,
            Err(e) => tracing::error!(error = %e, "re-reading host labels after a rollback failed"),
        }
        if let Err(e) = self.load_api_routes(c) {
            tracing::error!(error = %e, "re-reading routes after a rollback failed");
        }
        match load_api_receiver_owners(c) {
            Ok(owners) => self.api_receiver_owners = owners,
            Err(e) => {
                tracing::error!(error = %e, "re-reading receiver owners after a rollback failed")
            }
        }
        if let Err(e) = self.declare_all(c) {
            tracing::error!(error = %e, "re-reading series after a rollback failed");
        }
        self.persisted.clear();
        self.dead_dirty = true;
        let state = load_engine_state(c).unwrap_or_else(|e| {
            tracing::error!(error = %e, "reloading alert state after a rollback failed");
            EngineState::default()
        });
        if let Err(e) = self.load(c, now_ms) {
            tracing::error!(error = %e, "reloading alerts after a rollback failed");
        }
        self.engine = Engine::restore(self.setup.rules.clone(), self.setup.engine, state);
    }
}

/// Stores the configured rule definitions (origin `config`); a rule stored through the API
/// keeps overriding the configured one of its name.
fn store_config_rules(
    tx: &Connection,
    raw_rules: &[RawRule],
    now_ms: i64,
) -> Result<(), StoreError> {
    tx.execute("DELETE FROM alert_rules WHERE origin = 'config'", [])?;
    for raw in raw_rules {
        tx.execute(
            "INSERT OR IGNORE INTO alert_rules (name, origin, definition, updated_ms)
             VALUES (?1, 'config', ?2, ?3)",
            params![raw.name, serde_json::to_string(raw)?, now_ms],
        )?;
    }
    Ok(())
}

/// The API receivers that run now. One the configuration now defines too is the configured
/// one (its API definition is dropped); outbox rows of receivers neither configured nor
/// stored go to the dead-letter list.
fn settle_api_receivers(
    tx: &Connection,
    config_all: &[String],
    shared: &OutboxShared,
    now_ms: i64,
) -> Result<BTreeSet<String>, StoreError> {
    let mut stored: BTreeSet<String> = BTreeSet::new();
    {
        let mut stmt = tx.prepare("SELECT name FROM receivers")?;
        for name in stmt.query_map([], |r| r.get::<_, String>(0))? {
            stored.insert(name?);
        }
    }
    for name in stored.iter().filter(|n| config_all.contains(n)) {
        tracing::warn!(receiver = %name,
            "the configuration defines this receiver now; its API definition is dropped");
        tx.execute("DELETE FROM receivers WHERE name = ?1", [name])?;
    }
    stored.retain(|n| !config_all.contains(n));
    let mut known = shared.names();
    // An API receiver that could not be loaded (say, its secret file is missing) keeps
    // its rows until it is fixed with a PUT or deleted.
    known.extend(stored.iter().cloned());
    let api_receivers: BTreeSet<String> = stored
        .into_iter()
        .filter(|n| shared.receiver(n).is_some())
        .collect();
    let orphans: Vec<i64> = {
        let mut stmt = tx.prepare("SELECT id, receiver FROM outbox")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, rcv) = row?;
            if !known.contains(&rcv) {
                out.push(id);
            }
        }
        out
    };
    for id in orphans {
        dead_letter(tx, id, "receiver no longer configured", now_ms)?;
    }
    Ok(api_receivers)
}

/// The engine with its persisted state. The collector's own downtime is not the hosts'
/// silence: absence clocks restart now for series not already firing, and missing data
/// is held until every rule's look-back has passed since the start.
fn restore_engine(
    c: &Connection,
    setup: &AlertingSetup,
    now_ms: i64,
) -> Result<Engine, StoreError> {
    let mut state = load_engine_state(c)?;
    for rule in setup.rules.iter().filter(|r| r.absent_for_ms.is_some()) {
        if let Some(states) = state.rules.get_mut(&rule.name) {
            for st in states.values_mut() {
                if st.phase != crate::alert::Phase::Firing {
                    st.last_seen_ms = st.last_seen_ms.map(|t| t.max(now_ms));
                }
            }
        }
    }
    let mut opts = setup.engine;
    opts.hold_missing_until_ms = now_ms.saturating_add(max_span(setup));
    Ok(Engine::restore(setup.rules.clone(), opts, state))
}

/// The runtime as the writer's hook. The state is shared with the [`super::Alerting`]
/// handles whose requests run as `Store::exec` jobs; both only ever lock it on the writer
/// thread, one call at a time, so the lock is never contended.
pub(super) struct Hook(pub(super) Arc<Mutex<Runtime>>);

/// The runtime, locked. A poisoned lock means a panic on the writer thread mid-change;
/// the state is reloaded from the database after the rollback that follows, so it is used
/// as is.
pub(super) fn lock(runtime: &Mutex<Runtime>) -> MutexGuard<'_, Runtime> {
    runtime.lock().unwrap_or_else(|p| p.into_inner())
}

impl WriterHook for Hook {
    fn declare(&mut self, series: i64, host: &str, name: &str, labels: &[(String, String)]) {
        lock(&self.0).declare(series, host, name, labels);
    }

    fn observe(&mut self, samples: &[(i64, i64, f64)], now_ms: i64) {
        let mut rt = lock(&self.0);
        for &(series, ts_ms, value) in samples {
            rt.observe(series, ts_ms, value, now_ms);
        }
    }

    fn before_commit(&mut self, tx: &Connection, now_ms: i64) -> Result<(), StoreError> {
        let mut rt = lock(&self.0);
        let r = rt.evaluate_touched(tx, now_ms);
        if r.is_err() {
            rt.evaluation_failed();
        }
        r
    }

    fn tick(&mut self, tx: &Connection, now_ms: i64) -> Result<(), StoreError> {
        lock(&self.0).tick(tx, now_ms)
    }

    fn committed(&mut self) {
        lock(&self.0).committed();
    }

    fn rolled_back(&mut self, conn: &Connection, now_ms: i64) {
        lock(&self.0).rolled_back(conn, now_ms);
    }

    fn tick_failed(&mut self, conn: &Connection, now_ms: i64) {
        let mut rt = lock(&self.0);
        rt.evaluation_failed();
        rt.rolled_back(conn, now_ms);
    }
}
