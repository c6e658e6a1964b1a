//! Alerting inside the writer thread: feeds committed samples to the rule engine, and writes
//! its state, the alert records, their history and the outbox rows in the same transaction
//! as the data that caused them, so a crash can neither lose nor repeat a transition.
//!
//! The outbox is read and settled by the dispatcher's per-receiver workers through the
//! writer too (fetch a due group, report delivered / retry / dead), so SQLite keeps one
//! writer and the queue survives restarts; that side is in `outbox.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::Notify;

use super::outbox::dead_letter;
use super::window::AlertWindow;
use super::{codec, StoreError};
use crate::alert::policy::{plan, AlertRecord, AlertStatus, Outgoing, ToldEntry};
use crate::alert::route::{inhibited, InhibitRule, Routing, Silence, SilenceSpec, Target};
use crate::alert::{
    Engine, EngineOptions, EngineState, Labels, RawRule, Rule, SeriesState, Transition,
};
use crate::notify::{Notification, ReceiverConfigRaw};

/// Metric through which the dispatcher's failures reach the rules (built-in
/// `notification_receiver_failing`).
pub const FAILED_METRIC: &str = "mcpwatch_collector_notifications_failed_total";

/// The validated alerting configuration the writer runs with.
#[derive(Debug, Clone)]
pub struct AlertingSetup {
    pub rules: Vec<Rule>,
    /// The rule definitions as written (user files overlaid on the built-ins), stored in
    /// `alert_rules` for the API.
    pub raw_rules: Vec<RawRule>,
    pub engine: EngineOptions,
    pub routing: Routing,
    pub inhibit: Vec<InhibitRule>,
    /// Undelivered notifications older than this go to the dead-letter list.
    pub max_age_ms: i64,
    /// `[alerting] default_receivers` was left unset: every receiver is a default
    /// receiver, so receivers defined through the API join the default route too.
    pub default_all: bool,
}

impl AlertingSetup {
    /// No rules and no receivers (stores that only hold data, tests, benchmarks).
    pub fn disabled() -> AlertingSetup {
        AlertingSetup {
            rules: Vec::new(),
            raw_rules: Vec::new(),
            engine: EngineOptions::default(),
            routing: Routing {
                routes: Vec::new(),
                default_receivers: Vec::new(),
                default_opts: crate::alert::route::RouteOpts {
                    group_by: crate::alert::route::GroupBy::All,
                    group_wait_ms: 0,
                    group_interval_ms: 60_000,
                    repeat_interval_ms: 4 * 3_600_000,
                },
                all_receivers: Vec::new(),
            },
            inhibit: Vec::new(),
            max_age_ms: 86_400_000,
            default_all: false,
        }
    }
}

/// Per-receiver state shared between the writer and the dispatcher.
#[derive(Debug, Default)]
pub struct ReceiverShared {
    /// Signalled after a commit that queued notifications for the receiver.
    pub wake: Notify,
    /// Rows waiting in the outbox.
    pub queued: AtomicI64,
    /// Failed send attempts, fed back to the rules as [`FAILED_METRIC`].
    pub failed: AtomicU64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct TransitionLabel {
    pub to: String,
}

/// The alert engine's figures, updated by the writer and exposed on `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct AlertMetrics {
    /// Alert transitions by the state entered (pending, firing, resolved, flapping...).
    pub transitions: Family<TransitionLabel, Counter>,
    /// Alerts currently firing or flapping.
    pub active: Gauge,
    /// Evaluations (per commit or tick) that failed and were rolled back.
    pub evaluation_failures: Counter,
}

/// Receiver name → shared state, and the alert engine's metrics. The receivers are the
/// configured ones plus those defined through the API; only the writer changes the set (in
/// the transaction that stores the change), the dispatcher reads it when a worker starts.
#[derive(Debug, Default)]
pub struct OutboxShared {
    receivers: RwLock<BTreeMap<String, Arc<ReceiverShared>>>,
    pub alert_metrics: AlertMetrics,
}

impl OutboxShared {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Arc<OutboxShared> {
        Self::with_metrics(names, AlertMetrics::default())
    }

    /// As `new`, with metric handles registered elsewhere (the collector's registry).
    pub fn with_metrics<'a>(
        names: impl IntoIterator<Item = &'a str>,
        alert_metrics: AlertMetrics,
    ) -> Arc<OutboxShared> {
        Arc::new(OutboxShared {
            receivers: RwLock::new(
                names
                    .into_iter()
                    .map(|n| (n.to_owned(), Arc::new(ReceiverShared::default())))
                    .collect(),
            ),
            alert_metrics,
        })
    }

    // A poisoned lock means a panic elsewhere while holding it; the map itself is fine.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Arc<ReceiverShared>>> {
        self.receivers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Arc<ReceiverShared>>> {
        self.receivers.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The state of receiver `name`, if it is one now.
    pub fn receiver(&self, name: &str) -> Option<Arc<ReceiverShared>> {
        self.read().get(name).cloned()
    }

    /// The current receivers' names.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }
}

/// One outbox row handed to a worker.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: i64,
    pub notification: Notification,
    pub created_ms: i64,
    pub attempts: u32,
}

/// A due group for one receiver, and when the next row after it is due.
#[derive(Debug, Clone, Default)]
pub struct OutboxBatch {
    pub group_key: String,
    pub items: Vec<OutboxItem>,
    pub next_due_ms: Option<i64>,
    /// Rows moved to the dead-letter list because they were too old.
    pub expired: u64,
}

/// How a send of a batch ended.
#[derive(Debug, Clone)]
pub enum OutboxOutcome {
    Delivered { at_ms: i64 },
    Retry { next_ms: i64, error: String },
    Dead { reason: String },
}

pub(crate) struct Alerting {
    pub(super) setup: AlertingSetup,
    pub(super) shared: Arc<OutboxShared>,
    engine: Engine,
    pub(crate) window: AlertWindow,
    /// Firing and flapping alerts by fingerprint.
    active: HashMap<String, AlertRecord>,
    /// (receiver, fingerprint) → what the receiver was told.
    told: HashMap<(String, String), ToldEntry>,
    silences: Vec<Silence>,
    /// (receiver, group) → last delivery, for `group_interval`.
    pub(super) last_flush: HashMap<(String, String), i64>,
    touched: BTreeSet<String>,
    /// Receivers with rows queued by the open transaction.
    woken: BTreeSet<String>,
    /// When each quiet (inactive, absence-tracked) state was last written: those change on
    /// every evaluation, so they are persisted at most once per `QUIET_PERSIST_MS`.
    persisted: HashMap<(String, String), i64>,
    /// The rules from the configuration (before API rules override them), validated and
    /// as written.
    config_rules: Vec<Rule>,
    config_raw: Vec<RawRule>,
    /// The routing's receiver lists as configured (every receiver; the default route's);
    /// API receivers are added to them by `sync_routing`.
    config_all: Vec<String>,
    config_default: Vec<String>,
    /// Receivers defined through the API that run now.
    api_receivers: BTreeSet<String>,
    /// The receiver set before the open transaction changed it, put back on rollback.
    receivers_undo: Option<ReceiversUndo>,
}

type ReceiversUndo = (BTreeMap<String, Arc<ReceiverShared>>, BTreeSet<String>);

/// What `Store::put_receiver` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverPut {
    Created,
    Replaced,
    /// A configured receiver has this name; the API cannot change it.
    FromConfig,
    /// Only creating was asked for, and a receiver of this name is stored already.
    Exists,
}

/// What `Store::delete_receiver` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverDeleted {
    /// No receiver of this name was defined through the API.
    Missing,
    /// A configured receiver; the API cannot delete it.
    FromConfig,
    /// Gone; its queued notifications moved to the dead-letter list.
    Deleted { dead_lettered: u64 },
}

/// Reason of the dead letters left by a deleted receiver.
pub const RECEIVER_DELETED: &str = "receiver deleted";

/// What `Store::delete_rule` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleDeleted {
    /// No rule of that name is stored.
    Missing,
    /// The rule comes from the configuration; the API cannot delete it (only override it).
    FromConfig,
    /// The API rule is gone; `config_restored` when a configured rule of the same name
    /// applies again.
    Deleted { config_restored: bool },
}

/// The answer to a dry run on the writer.
#[derive(Debug, Clone)]
pub enum DryRunReply {
    /// Evaluated over the in-memory window.
    Done(crate::alert::dry_run::DryRun),
    /// The window does not hold the rule's metrics for its whole look-back: evaluate over
    /// the stored samples instead, with these engine options.
    NotInWindow(EngineOptions),
}

/// Most series a dry run lists.
pub const DRY_RUN_LIMIT: usize = 1000;

/// How far back a rule looks (its window or absence time, plus grace).
fn rule_span(r: &Rule, grace_ms: i64) -> i64 {
    r.window_ms
        .max(r.absent_for_ms.unwrap_or(0))
        .saturating_add(grace_ms)
}

/// Validates a rule definition as the API stores it. A disabled rule without a selector
/// (the way to switch a configured rule off) needs only a valid name; anything else must
/// pass the same validation as the rules files.
pub fn validate_api_rule(raw: &RawRule) -> Result<Option<Rule>, crate::alert::RuleError> {
    if raw.enabled == Some(false) && raw.selector.is_none() {
        let mut probe = raw.clone();
        probe.selector = Some("m".into());
        probe.critical = Some(0.0);
        probe.absent_for = None;
        probe.warning = None;
        probe.warning_clear = None;
        probe.critical_clear = None;
        // Only the name can fail now.
        Rule::validate(probe)?;
        return Ok(None);
    }
    let rule = Rule::validate(raw.clone())?;
    Ok((raw.enabled != Some(false)).then_some(rule))
}

/// The rules stored through the API.
fn api_rules(c: &Connection) -> Result<Vec<RawRule>, StoreError> {
    let mut stmt =
        c.prepare_cached("SELECT name, definition FROM alert_rules WHERE origin = 'api'")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (name, text) = row?;
        match serde_json::from_str::<RawRule>(&text) {
            Ok(raw) => out.push(raw),
            Err(e) => tracing::warn!(rule = %name, error = %e, "ignoring an unreadable API rule"),
        }
    }
    Ok(out)
}

/// The effective rules: the configured ones, with API rules replacing those of the same
/// name (whole definitions, not field by field); disabled ones dropped. An API rule that
/// no longer validates is skipped (logged).
fn effective_rules(config: &[Rule], c: &Connection) -> Result<Vec<Rule>, StoreError> {
    let api = api_rules(c)?;
    let mut rules: Vec<Rule> = config
        .iter()
        .filter(|r| !api.iter().any(|a| a.name == r.name))
        .cloned()
        .collect();
    for raw in api.into_iter().filter(|r| r.enabled.unwrap_or(true)) {
        match Rule::validate(raw) {
            Ok(r) => rules.push(r),
            Err(e) => tracing::warn!(error = %e, "ignoring an invalid API rule"),
        }
    }
    Ok(rules)
}

/// How often the state of a quiet absence-tracked series is written (it only matters to know
/// the series exists after a restart, whose absence clocks restart anyway).
const QUIET_PERSIST_MS: i64 = 60_000;

/// The longest span of data any rule looks at.
fn max_span(setup: &AlertingSetup) -> i64 {
    setup
        .rules
        .iter()
        .map(|r| r.window_ms.max(r.absent_for_ms.unwrap_or(0)))
        .max()
        .unwrap_or(0)
        .saturating_add(setup.engine.grace_ms)
}

impl Alerting {
    /// Loads persisted state, stores the rule definitions and warms the window from the
    /// raw samples, so a restart neither re-fires nor resolves anything by itself.
    pub(crate) fn open(
        conn: &mut Connection,
        setup: AlertingSetup,
        shared: Arc<OutboxShared>,
        now_ms: i64,
    ) -> Result<Alerting, StoreError> {
        let mut setup = setup;
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM alert_rules WHERE origin = 'config'", [])?;
        // A rule stored through the API keeps overriding the configured one of its name.
        for raw in &setup.raw_rules {
            tx.execute(
                "INSERT OR IGNORE INTO alert_rules (name, origin, definition, updated_ms)
                 VALUES (?1, 'config', ?2, ?3)",
                params![raw.name, serde_json::to_string(raw)?, now_ms],
            )?;
        }
        let config_raw = setup.raw_rules.clone();
        let config_rules = setup.rules.clone();
        setup.rules = effective_rules(&config_rules, &tx)?;
        // API receivers: one the configuration now defines too is the configured one.
        let config_all = setup.routing.all_receivers.clone();
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
            dead_letter(&tx, id, "receiver no longer configured", now_ms)?;
        }
        tx.commit()?;

        let mut state = load_engine_state(conn)?;
        // The collector's own downtime is not the hosts' silence: absence clocks restart
        // now for series not already firing.
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
        opts.hold_missing_until_ms = now_ms.saturating_add(max_span(&setup));
        let engine = Engine::restore(setup.rules.clone(), opts, state);
        let mut window = AlertWindow::default();
        window.set_rules(&setup.rules, setup.engine.grace_ms);
        let setup_default = setup.routing.default_receivers.clone();
        let mut a = Alerting {
            setup,
            shared,
            engine,
            window,
            active: HashMap::new(),
            told: HashMap::new(),
            silences: Vec::new(),
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
        };
        a.sync_routing();
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

    /// Alerts whose rule is gone (removed, renamed, disabled) or whose engine state was lost
    /// can never resolve by evaluation: resolve them now, telling the receivers that were
    /// told they fired, so none stays open or keeps muting others.
    fn resolve_orphans(&mut self, tx: &Connection, now_ms: i64) -> Result<(), StoreError> {
        let orphans: Vec<AlertRecord> = self
            .active
            .values()
            .filter(|a| {
                self.engine
                    .state()
                    .rules
                    .get(&a.rule)
                    .is_none_or(|m| !m.contains_key(&a.fingerprint))
            })
            .cloned()
            .collect();
        for mut rec in orphans {
            tracing::info!(rule = %rec.rule, fingerprint = %rec.fingerprint,
                "resolving an alert whose rule or state no longer exists");
            rec.status = AlertStatus::Resolved;
            rec.resolved_ms = Some(now_ms);
            rec.updated_ms = now_ms;
            save_alert(tx, &rec)?;
            self.active.remove(&rec.fingerprint);
            self.reconcile(tx, &rec, now_ms)?;
        }
        Ok(())
    }

    /// Runs the effective rules (configured + API) from now on: engine and window follow
    /// them, series and recent samples of newly read metrics are loaded, and alerts of rules
    /// that are gone are resolved — all inside the open transaction.
    fn reload_rules(&mut self, c: &Connection, now_ms: i64) -> Result<(), StoreError> {
        let rules = effective_rules(&self.config_rules, c)?;
        let grace = self.setup.engine.grace_ms;
        // Only metrics read for longer than before need their recent samples loaded: a
        // threshold change costs no reading at all.
        let spans = |rules: &[Rule]| {
            let mut m: HashMap<String, i64> = HashMap::new();
            for r in rules {
                for metric in
                    std::iter::once(&r.selector.metric).chain(r.divide_by.iter().map(|d| &d.metric))
                {
                    let e = m.entry(metric.clone()).or_default();
                    *e = (*e).max(rule_span(r, grace));
                }
            }
            m
        };
        let before = spans(&self.setup.rules);
        let warm_span = spans(&rules)
            .into_iter()
            .filter(|(m, span)| before.get(m).is_none_or(|b| b < span))
            .map(|(_, span)| span)
            .max()
            .unwrap_or(0);
        self.window.set_rules(&rules, grace);
        self.engine.set_rules(rules.clone());
        self.setup.rules = rules;
        self.declare_all(c)?;
        self.warm(c, now_ms, warm_span)?;
        self.resolve_orphans(c, now_ms)
    }

    /// Stores (or replaces) a rule with origin `api` and applies it at once. The rule is
    /// validated again here, so nothing invalid reaches the table.
    pub(crate) fn put_rule(
        &mut self,
        c: &Connection,
        raw: &RawRule,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        validate_api_rule(raw).map_err(|e| StoreError::Invalid(e.to_string()))?;
        c.prepare_cached(
            "INSERT INTO alert_rules (name, origin, definition, updated_ms)
             VALUES (?1, 'api', ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET origin = 'api', definition = excluded.definition,
                 updated_ms = excluded.updated_ms",
        )?
        .execute(params![raw.name, serde_json::to_string(raw)?, now_ms])?;
        self.reload_rules(c, now_ms)
    }

    /// Deletes a rule stored through the API (a configured rule of the same name applies
    /// again). Configured rules cannot be deleted this way.
    pub(crate) fn delete_rule(
        &mut self,
        c: &Connection,
        name: &str,
        now_ms: i64,
    ) -> Result<RuleDeleted, StoreError> {
        let origin: Option<String> = c
            .prepare_cached("SELECT origin FROM alert_rules WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?;
        match origin.as_deref() {
            None => return Ok(RuleDeleted::Missing),
            Some("api") => {}
            Some(_) => return Ok(RuleDeleted::FromConfig),
        }
        c.prepare_cached("DELETE FROM alert_rules WHERE name = ?1")?
            .execute([name])?;
        let config = self.config_raw.iter().find(|r| r.name == name).cloned();
        if let Some(raw) = &config {
            c.prepare_cached(
                "INSERT INTO alert_rules (name, origin, definition, updated_ms)
                 VALUES (?1, 'config', ?2, ?3)",
            )?
            .execute(params![raw.name, serde_json::to_string(raw)?, now_ms])?;
        }
        self.reload_rules(c, now_ms)?;
        Ok(RuleDeleted::Deleted {
            config_restored: config.is_some(),
        })
    }

    /// Evaluates `rule` alone over the in-memory window at `now_ms`, if the window holds
    /// every metric it reads for its whole look-back (metrics some running rule reads).
    pub(crate) fn dry_run(&self, rule: Rule, now_ms: i64) -> DryRunReply {
        let grace = self.setup.engine.grace_ms;
        let need = rule_span(&rule, grace);
        let kept = |metric: &str| {
            self.setup
                .rules
                .iter()
                .filter(|r| {
                    r.selector.metric == metric
                        || r.divide_by.as_ref().is_some_and(|d| d.metric == metric)
                })
                .map(|r| rule_span(r, grace))
                .max()
                .is_some_and(|span| span >= need)
        };
        let covered =
            kept(&rule.selector.metric) && rule.divide_by.as_ref().is_none_or(|d| kept(&d.metric));
        if !covered {
            return DryRunReply::NotInWindow(self.setup.engine);
        }
        DryRunReply::Done(crate::alert::dry_run::dry_run(
            rule,
            self.setup.engine,
            &self.window,
            now_ms,
            DRY_RUN_LIMIT,
        ))
    }

    /// Learns every stored series' name and labels (startup, and after a rollback made the
    /// id mapping untrustworthy), so samples keep reaching the rules without a reconnect.
    fn declare_all(&mut self, c: &Connection) -> Result<(), StoreError> {
        if self.setup.rules.is_empty() {
            return Ok(());
        }
        let mut stmt = c.prepare(
            "SELECT s.id, s.name, s.labels, h.agent_id FROM series s JOIN hosts h ON h.id = s.host_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        for row in rows {
            let (id, name, labels, host) = row?;
            if let Some(pairs) = mcpwatch_common::wire::SeriesKey::parse_labels_text(&labels) {
                self.window.declare(id, &host, &name, &pairs);
            }
        }
        Ok(())
    }

    /// (Re)loads alerts, told log, silences and queue depths from the database.
    fn load(&mut self, c: &Connection, now_ms: i64) -> Result<(), StoreError> {
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

    /// Reads back the recent raw samples of the metrics rules read.
    fn warm(&mut self, c: &Connection, now_ms: i64, span: i64) -> Result<(), StoreError> {
        if self.setup.rules.is_empty() || span <= 0 {
            return Ok(());
        }
        let mut stmt = c.prepare("SELECT data FROM raw WHERE ts_max >= ?1 ORDER BY id")?;
        let blobs = stmt.query_map([now_ms.saturating_sub(span)], |r| r.get::<_, Vec<u8>>(0))?;
        let mut n = 0u64;
        for blob in blobs {
            let Ok(rows) = codec::decode(&blob?) else {
                continue;
            };
            for (id, ts, v) in rows {
                if self.window.push(id, ts, v, now_ms).is_some() {
                    n += 1;
                }
            }
        }
        tracing::debug!(samples = n, "alert window warmed from the store");
        Ok(())
    }

    fn reload_silences(&mut self, c: &Connection, now_ms: i64) -> Result<(), StoreError> {
        self.silences.clear();
        let mut stmt = c.prepare(
            "SELECT id, matchers, starts_ms, ends_ms, author, comment FROM silences
             WHERE ends_ms > ?1",
        )?;
        let rows = stmt.query_map([now_ms], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                SilenceSpec {
                    matchers: r.get(1)?,
                    starts_ms: r.get(2)?,
                    ends_ms: r.get(3)?,
                    author: r.get(4)?,
                    comment: r.get(5)?,
                },
            ))
        })?;
        for row in rows {
            let (id, spec) = row?;
            if let Ok(matchers) = spec.compile() {
                self.silences.push(Silence { id, spec, matchers });
            }
        }
        Ok(())
    }

    /// A series declared by an agent (see [`AlertWindow::declare`]).
    pub(crate) fn declare(&mut self, id: i64, host: &str, name: &str, labels: &[(String, String)]) {
        self.window.declare(id, host, name, labels);
    }

    /// A committed sample.
    pub(crate) fn observe(&mut self, id: i64, ts_ms: i64, value: f64, now_ms: i64) {
        if let Some(metric) = self.window.push(id, ts_ms, value, now_ms) {
            if !self.touched.contains(metric) {
                self.touched.insert(metric.to_owned());
            }
        }
    }

    /// Evaluates the rules reading metrics observed since the last call.
    pub(crate) fn evaluate_touched(
        &mut self,
        c: &Connection,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if self.touched.is_empty() {
            return Ok(());
        }
        let touched = std::mem::take(&mut self.touched);
        let transitions =
            self.engine
                .evaluate_metrics(&self.window, touched.iter().map(String::as_str), now_ms);
        self.apply(c, transitions, now_ms, false)
    }

    /// The 1 s tick: `for`, `keep_firing_for`, absence, the collector's own series, repeats,
    /// silences starting or ending, inhibitions lifting.
    pub(crate) fn tick(&mut self, c: &Connection, now_ms: i64) -> Result<(), StoreError> {
        self.window.prune(now_ms);
        let failed: Vec<(String, u64)> = self
            .shared
            .read()
            .iter()
            .map(|(name, r)| (name.clone(), r.failed.load(Ordering::Relaxed)))
            .collect();
        for (name, n) in failed {
            let labels: Labels = [("receiver".to_owned(), name)].into_iter().collect();
            self.window
                .push_own(FAILED_METRIC, labels, now_ms, n as f64);
        }
        self.reload_silences(c, now_ms)?;
        self.touched.clear();
        let transitions = self.engine.evaluate(&self.window, now_ms);
        self.apply(c, transitions, now_ms, true)
    }

    /// Records transitions and the engine state, then reconciles notifications for the
    /// alerts they touched (or for every active alert).
    fn apply(
        &mut self,
        c: &Connection,
        transitions: Vec<Transition>,
        now_ms: i64,
        all: bool,
    ) -> Result<(), StoreError> {
        let mut changed: Vec<AlertRecord> = Vec::new();
        for t in &transitions {
            self.shared
                .alert_metrics
                .transitions
                .get_or_create(&TransitionLabel {
                    to: state_str(t.to).to_owned(),
                })
                .inc();
            c.prepare_cached(
                "INSERT INTO alert_history (at_ms, rule, fingerprint, labels, from_state, to_state,
                     level, value, notify) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                t.at_ms,
                t.rule,
                t.fingerprint,
                serde_json::to_string(&t.labels)?,
                state_str(t.from),
                state_str(t.to),
                t.level.map(|l| l.as_str()),
                t.value.filter(|v| v.is_finite()),
                t.notify,
            ])?;
            let prev = self.active.get(&t.fingerprint).cloned().or_else(|| {
                changed
                    .iter()
                    .rev()
                    .find(|r| r.fingerprint == t.fingerprint)
                    .cloned()
            });
            if let Some(rec) = AlertRecord::apply(prev.as_ref(), t) {
                save_alert(c, &rec)?;
                if rec.is_active() {
                    self.active.insert(rec.fingerprint.clone(), rec.clone());
                } else {
                    self.active.remove(&rec.fingerprint);
                }
                changed.retain(|r| r.fingerprint != rec.fingerprint);
                changed.push(rec);
            }
        }
        for d in self.engine.take_dirty() {
            let key = (d.rule.clone(), d.fingerprint.clone());
            let quiet = d
                .state
                .as_ref()
                .is_some_and(|st| st.phase == crate::alert::Phase::Inactive && !st.flapping);
            if quiet {
                match self.persisted.get(&key) {
                    Some(&at) if now_ms.saturating_sub(at) < QUIET_PERSIST_MS => continue,
                    _ => {
                        self.persisted.insert(key, now_ms);
                    }
                }
            } else {
                self.persisted.remove(&key);
            }
            match d.state {
                Some(st) => c
                    .prepare_cached(
                        "INSERT INTO alert_state (rule, fingerprint, state) VALUES (?1, ?2, ?3)
                         ON CONFLICT (rule, fingerprint) DO UPDATE SET state = excluded.state",
                    )?
                    .execute(params![d.rule, d.fingerprint, serde_json::to_string(&st)?])?,
                None => c
                    .prepare_cached("DELETE FROM alert_state WHERE rule = ?1 AND fingerprint = ?2")?
                    .execute(params![d.rule, d.fingerprint])?,
            };
        }
        let mut todo: Vec<AlertRecord> = changed;
        if all {
            let done: std::collections::HashSet<String> =
                todo.iter().map(|r| r.fingerprint.clone()).collect();
            for rec in self.active.values() {
                if !done.contains(&rec.fingerprint) {
                    todo.push(rec.clone());
                }
            }
        }
        for rec in &todo {
            self.reconcile(c, rec, now_ms)?;
        }
        self.shared
            .alert_metrics
            .active
            .set(i64::try_from(self.active.len()).unwrap_or(i64::MAX));
        Ok(())
    }

    /// Counts an evaluation that failed (its transaction rolled back).
    pub(crate) fn evaluation_failed(&self) {
        self.shared.alert_metrics.evaluation_failures.inc();
    }

    /// Queues whatever each receiver of `rec` should now be sent.
    fn reconcile(
        &mut self,
        c: &Connection,
        rec: &AlertRecord,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut targets = self.setup.routing.targets(&rec.labels);
        if rec.status == AlertStatus::Resolved {
            // Receivers told earlier get the resolve even if routing changed since.
            for (rcv, fp) in self.told.keys() {
                if fp == &rec.fingerprint && !targets.iter().any(|t| &t.receiver == rcv) {
                    targets.push(Target {
                        receiver: rcv.clone(),
                        group_key: "unrouted".into(),
                        opts: self.setup.routing.default_opts.clone(),
                    });
                }
            }
        }
        // Rows for a receiver no longer configured could never be sent.
        {
            let receivers = self.shared.read();
            targets.retain(|t| receivers.contains_key(&t.receiver));
        }
        let muted = rec.is_active() && self.muted(&rec.labels, now_ms);
        for target in &targets {
            let key = (target.receiver.clone(), rec.fingerprint.clone());
            let told = self.told.get(&key).copied();
            if let Some(out) = plan(rec, target, told, muted, now_ms) {
                self.enqueue(c, &out, now_ms)?;
                match out.told {
                    Some(t) => {
                        c.prepare_cached(
                            "INSERT INTO notify_log (receiver, fingerprint, told) VALUES (?1, ?2, ?3)
                             ON CONFLICT (receiver, fingerprint) DO UPDATE SET told = excluded.told",
                        )?
                        .execute(params![key.0, key.1, serde_json::to_string(&t)?])?;
                        self.told.insert(key, t);
                    }
                    None => {
                        c.prepare_cached(
                            "DELETE FROM notify_log WHERE receiver = ?1 AND fingerprint = ?2",
                        )?
                        .execute(params![key.0, key.1])?;
                        self.told.remove(&key);
                    }
                }
            }
        }
        if !rec.is_active() {
            // Nothing more will be sent about this incident.
            let fp = rec.fingerprint.clone();
            self.told.retain(|k, _| k.1 != fp);
            c.prepare_cached("DELETE FROM notify_log WHERE fingerprint = ?1")?
                .execute([&fp])?;
        }
        Ok(())
    }

    /// Silenced, or inhibited by another firing alert.
    fn muted(&self, labels: &Labels, now_ms: i64) -> bool {
        self.silences.iter().any(|s| s.mutes(labels, now_ms))
            || inhibited(
                &self.setup.inhibit,
                labels,
                self.active.values().map(|a| &a.labels),
            )
    }

    fn enqueue(&mut self, c: &Connection, out: &Outgoing, now_ms: i64) -> Result<(), StoreError> {
        let t = &out.target;
        let flush = self
            .last_flush
            .get(&(t.receiver.clone(), t.group_key.clone()))
            .copied();
        // Only a batch still waiting for its first send can be joined: rows being sent now or
        // backing off after a failure must not hold back (or hurry) a new notification.
        let pending: Option<i64> = c
            .prepare_cached(
                "SELECT min(due_ms) FROM outbox WHERE receiver = ?1 AND group_key = ?2
                     AND attempts = 0 AND due_ms > ?3",
            )?
            .query_row(params![t.receiver, t.group_key, now_ms], |r| r.get(0))?;
        let due = match (pending, flush) {
            // Join the batch already waiting for this group.
            (Some(p), _) => p,
            (None, Some(f)) if now_ms.saturating_sub(f) < t.opts.group_interval_ms => {
                f.saturating_add(t.opts.group_interval_ms)
            }
            _ => now_ms.saturating_add(t.opts.group_wait_ms),
        };
        c.prepare_cached(
            "INSERT INTO outbox (receiver, group_key, fingerprint, payload, created_ms, due_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            t.receiver,
            t.group_key,
            out.notification.fingerprint,
            serde_json::to_string(&out.notification)?,
            now_ms,
            due
        ])?;
        if let Some(r) = self.shared.receiver(&t.receiver) {
            r.queued.fetch_add(1, Ordering::Relaxed);
        }
        self.woken.insert(t.receiver.clone());
        Ok(())
    }

    /// After a commit: wake the workers that have new rows.
    pub(crate) fn committed(&mut self) {
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
    pub(crate) fn rolled_back(&mut self, c: &Connection, now_ms: i64) {
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
        if let Err(e) = self.declare_all(c) {
            tracing::error!(error = %e, "re-reading series after a rollback failed");
        }
        self.persisted.clear();
        let state = load_engine_state(c).unwrap_or_else(|e| {
            tracing::error!(error = %e, "reloading alert state after a rollback failed");
            EngineState::default()
        });
        if let Err(e) = self.load(c, now_ms) {
            tracing::error!(error = %e, "reloading alerts after a rollback failed");
        }
        self.engine = Engine::restore(self.setup.rules.clone(), self.setup.engine, state);
    }

    /// Acknowledges an active alert: repeats stop, receivers told it fired are told it is
    /// acknowledged. `false` when no such alert is active.
    pub(crate) fn acknowledge(
        &mut self,
        c: &Connection,
        fingerprint: &str,
        by: &str,
        comment: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let Some(mut rec) = self.active.get(fingerprint).cloned() else {
            return Ok(false);
        };
        rec.ack = Some(crate::alert::policy::Ack {
            by: by.to_owned(),
            at_ms: now_ms,
            comment: comment.to_owned(),
            level: rec.level,
        });
        save_alert(c, &rec)?;
        self.active.insert(rec.fingerprint.clone(), rec.clone());
        self.reconcile(c, &rec, now_ms)?;
        Ok(true)
    }

    pub(crate) fn add_silence(
        &mut self,
        c: &Connection,
        spec: &SilenceSpec,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        spec.compile().map_err(StoreError::Invalid)?;
        let id: i64 = c
            .prepare_cached(
                "INSERT INTO silences (matchers, starts_ms, ends_ms, author, comment, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
            )?
            .query_row(
                params![
                    spec.matchers,
                    spec.starts_ms,
                    spec.ends_ms,
                    spec.author,
                    spec.comment,
                    now_ms
                ],
                |r| r.get(0),
            )?;
        self.reload_silences(c, now_ms)?;
        Ok(id)
    }

    /// Ends a silence now; alerts it muted are announced on the next tick.
    pub(crate) fn expire_silence(
        &mut self,
        c: &Connection,
        id: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = c
            .prepare_cached("UPDATE silences SET ends_ms = ?2 WHERE id = ?1 AND ends_ms > ?2")?
            .execute(params![id, now_ms])?;
        self.reload_silences(c, now_ms)?;
        Ok(n > 0)
    }

    pub(crate) fn active_alerts(&self) -> Vec<AlertRecord> {
        let mut v: Vec<AlertRecord> = self.active.values().cloned().collect();
        v.sort_by(|a, b| {
            a.started_ms
                .cmp(&b.started_ms)
                .then(a.fingerprint.cmp(&b.fingerprint))
        });
        v
    }

    /// Recomputes the routing's receiver lists: the configured ones plus the API
    /// receivers running now (on the default route too when `default_all`).
    fn sync_routing(&mut self) {
        let mut all = self.config_all.clone();
        all.extend(
            self.api_receivers
                .iter()
                .filter(|n| !self.config_all.contains(n))
                .cloned(),
        );
        self.setup.routing.default_receivers = if self.setup.default_all {
            all.clone()
        } else {
            self.config_default.clone()
        };
        self.setup.routing.all_receivers = all;
    }

    /// Remembers the receiver set as it was before the open transaction changed it.
    fn save_receivers_undo(&mut self) {
        if self.receivers_undo.is_none() {
            self.receivers_undo = Some((self.shared.read().clone(), self.api_receivers.clone()));
        }
    }

    /// Stores an API receiver (creating it, or replacing its definition) and routes to it
    /// from now on; its queued rows stay for the new definition. Configured receivers are
    /// not touched. The definition holds secrets only as references.
    pub(crate) fn put_receiver(
        &mut self,
        c: &Connection,
        raw: &ReceiverConfigRaw,
        create_only: bool,
        now_ms: i64,
    ) -> Result<ReceiverPut, StoreError> {
        let name = raw.name();
        if name.trim().is_empty() {
            return Err(StoreError::Invalid("a receiver needs a name".into()));
        }
        if self.config_all.iter().any(|n| n == name) {
            return Ok(ReceiverPut::FromConfig);
        }
        let definition = serde_json::to_string(raw)?;
        let exists = c
            .prepare_cached("SELECT 1 FROM receivers WHERE name = ?1")?
            .query_row([name], |_| Ok(()))
            .optional()?
            .is_some();
        if exists && create_only {
            return Ok(ReceiverPut::Exists);
        }
        c.prepare_cached(
            "INSERT INTO receivers (name, definition, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (name) DO UPDATE SET definition = excluded.definition,
                 updated_ms = excluded.updated_ms",
        )?
        .execute(params![name, definition, now_ms])?;
        let queued: i64 = c
            .prepare_cached("SELECT count(*) FROM outbox WHERE receiver = ?1")?
            .query_row([name], |r| r.get(0))?;
        self.save_receivers_undo();
        self.shared
            .write()
            .entry(name.to_owned())
            .or_default()
            .queued
            .store(queued, Ordering::Relaxed);
        self.api_receivers.insert(name.to_owned());
        self.sync_routing();
        Ok(if exists {
            ReceiverPut::Replaced
        } else {
            ReceiverPut::Created
        })
    }

    /// Deletes an API receiver: nothing is routed to it any more, its queued rows go to the
    /// dead-letter list ([`RECEIVER_DELETED`]) and what it was told is forgotten.
    pub(crate) fn delete_receiver(
        &mut self,
        c: &Connection,
        name: &str,
        now_ms: i64,
    ) -> Result<ReceiverDeleted, StoreError> {
        if self.config_all.iter().any(|n| n == name) {
            return Ok(ReceiverDeleted::FromConfig);
        }
        let n = c
            .prepare_cached("DELETE FROM receivers WHERE name = ?1")?
            .execute([name])?;
        if n == 0 {
            return Ok(ReceiverDeleted::Missing);
        }
        let dead = c
            .prepare_cached(
                "INSERT INTO dead_letters (receiver, group_key, fingerprint, payload, created_ms,
                     failed_ms, attempts, reason)
                 SELECT receiver, group_key, fingerprint, payload, created_ms, ?2, attempts,
                     ?3 || coalesce(': ' || last_error, '')
                 FROM outbox WHERE receiver = ?1 ORDER BY id",
            )?
            .execute(params![name, now_ms, RECEIVER_DELETED])?;
        c.prepare_cached("DELETE FROM outbox WHERE receiver = ?1")?
            .execute([name])?;
        c.prepare_cached("DELETE FROM notify_log WHERE receiver = ?1")?
            .execute([name])?;
        self.told.retain(|k, _| k.0 != name);
        self.last_flush.retain(|k, _| k.0 != name);
        self.save_receivers_undo();
        self.shared.write().remove(name);
        self.api_receivers.remove(name);
        self.sync_routing();
        if dead > 0 {
            tracing::warn!(receiver = %name, notifications = dead,
                "receiver deleted; its queued notifications moved to the dead-letter list");
        }
        Ok(ReceiverDeleted::Deleted {
            dead_lettered: dead as u64,
        })
    }
}

/// The engine's persisted per-series state; unreadable rows are dropped with a warning.
fn load_engine_state(c: &Connection) -> Result<EngineState, StoreError> {
    let mut state = EngineState::default();
    let mut stmt = c.prepare("SELECT rule, fingerprint, state FROM alert_state")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (rule, fp, text) = row?;
        match serde_json::from_str::<SeriesState>(&text) {
            Ok(st) => {
                state.rules.entry(rule).or_default().insert(fp, st);
            }
            Err(e) => tracing::warn!(rule, error = %e, "dropping unreadable alert state"),
        }
    }
    Ok(state)
}

fn save_alert(c: &Connection, rec: &AlertRecord) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO alerts (fingerprint, rule, status, started_ms, updated_ms, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (fingerprint) DO UPDATE SET rule = excluded.rule, status = excluded.status,
             started_ms = excluded.started_ms, updated_ms = excluded.updated_ms,
             record = excluded.record",
    )?
    .execute(params![
        rec.fingerprint,
        rec.rule,
        rec.status.as_str(),
        rec.started_ms,
        rec.updated_ms,
        serde_json::to_string(rec)?
    ])?;
    Ok(())
}

fn state_str(s: crate::alert::AlertState) -> &'static str {
    use crate::alert::AlertState as S;
    match s {
        S::Inactive => "inactive",
        S::Pending => "pending",
        S::Firing => "firing",
        S::Resolved => "resolved",
        S::Flapping => "flapping",
    }
}
