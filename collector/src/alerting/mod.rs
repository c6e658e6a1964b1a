//! The alerting runtime: everything that turns committed samples into alerts and alerts
//! into notifications, around the pure engine in `crate::alert`.
//!
//! It lives on the store's writer thread, plugged in as the store's [`WriterHook`]: what it
//! changes (transitions, engine state, alert records, history, the per-receiver "told" log,
//! outbox rows) commits in the same SQLite transaction as the samples that caused it, so a
//! crash can neither lose nor repeat a transition. Its SQL touches only the alert tables
//! (`alert_rules`, `alert_state`, `alerts`, `alert_history`, `notify_log`, `outbox`,
//! `dead_letters`, `silences`, `receivers`), and only on a connection the store hands it:
//! the write connection while the store opens (startup, before the writer thread runs) and
//! after a rollback (outside any transaction, to reload), the writer's open group or tick
//! transaction, or a read connection for the API (`stored_receivers`). Series and raw
//! samples are read through `store::hook`.
//!
//! - `config`: the `[alerting]`, `[[route]]`, `[[inhibit]]` and `[[receiver]]` sections;
//! - `runtime`: the state, startup, the hook, reload after a rollback;
//! - `evaluation`: engine driving, history and records, the `sample_window`;
//! - `notification`: routing, told log, group timing, the `outbox`, and the state shared
//!   with the `dispatcher` (its workers send what the outbox holds);
//! - `silences`: silences compiled once and kept until they end, and their caps;
//! - `administration`: rule and receiver changes with undo, dry runs, API rule validation;
//!   `stored_receivers` reads the API's receiver definitions.
//!
//! Callers reach it through [`Alerting`], a [`Store`] handle whose requests run on the
//! writer inside the group transaction (as `Store::exec` jobs) and are answered once it
//! commits.

mod administration;
pub mod api_routes;
pub mod config;
pub mod dead_letters;
pub mod dispatcher;
pub mod escalation_config;
mod evaluation;
mod host_scopes;
mod notification;
mod outbox;
mod own_series;
mod runtime;
mod sample_window;
#[cfg(test)]
mod silence_tests;
mod silences;
pub mod stored_receivers;
#[cfg(test)]
mod team_tests;
#[cfg(test)]
mod test_rig;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};

use rusqlite::Connection;

pub use administration::{
    validate_api_rule, DryRunReply, OwnerCheck, ReceiverDeleted, ReceiverPut, RuleDeleted,
    DRY_RUN_LIMIT, RECEIVER_DELETED,
};
pub use notification::{
    AlertMetrics, OutboxShared, ReceiverShared, TransitionLabel, FAILED_METRIC,
};
pub use outbox::{OutboxBatch, OutboxItem, OutboxOutcome};
pub use own_series::OwnSeries;
pub use silences::SilenceLimits;

use crate::alert::policy::AlertRecord;
use crate::alert::route::{InhibitRule, Routing, SilenceSpec};
use crate::alert::{EngineOptions, RawRule, Rule};
use crate::notify::{ReceiverConfigRaw, SealedSecret};
use crate::store::query::hosts::{set_labels_checked, HostRecord, Relabel};
use crate::store::{Store, StoreConfig, StoreError, WriterHook};
use runtime::{lock, Hook, Runtime};

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
    /// Caps on silences not yet ended, overall and per user.
    pub silence_limits: SilenceLimits,
    /// Owner scopes of the configured receivers that have one.
    pub receiver_owners: std::collections::BTreeMap<String, crate::alert::OwnerScope>,
    /// How long the delivery log keeps its lines.
    pub delivery_log_keep_ms: i64,
    /// The `[[escalation]]` policies by name (routes defined through the API name them too).
    pub escalations: std::collections::BTreeMap<
        String,
        std::sync::Arc<crate::alert::escalation::EscalationPolicy>,
    >,
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
                extra: Vec::new(),
            },
            inhibit: Vec::new(),
            max_age_ms: 86_400_000,
            default_all: false,
            silence_limits: SilenceLimits::default(),
            receiver_owners: Default::default(),
            delivery_log_keep_ms: 30 * 86_400_000,
            escalations: Default::default(),
        }
    }
}

/// A store handle with the alerting runtime plugged into its writer. Cheap to clone; it
/// dereferences to the [`Store`] for everything else (ingest, ticks, `exec`).
#[derive(Clone)]
pub struct Alerting {
    store: Store,
    runtime: Arc<Mutex<Runtime>>,
    /// The configured escalation policies (fixed for the process's life).
    escalations:
        Arc<std::collections::BTreeMap<String, Arc<crate::alert::escalation::EscalationPolicy>>>,
}

impl std::fmt::Debug for Alerting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerting").finish_non_exhaustive()
    }
}

impl std::ops::Deref for Alerting {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

impl Alerting {
    /// Opens the store with the runtime plugged in: loads persisted state, stores the rule
    /// definitions and warms the window from the raw samples (so a restart neither
    /// re-fires nor resolves anything by itself), then starts the writer thread. Join the
    /// returned handle after dropping every handle to wait for the final checkpoint.
    pub fn open(
        cfg: StoreConfig,
        setup: AlertingSetup,
        shared: Arc<OutboxShared>,
    ) -> Result<(Alerting, std::thread::JoinHandle<()>), StoreError> {
        let mut built = None;
        let escalations = Arc::new(setup.escalations.clone());
        let (store, thread) = Store::open_with_hook(cfg, |conn| {
            let runtime = Runtime::open(conn, setup, shared, crate::now_ms())?;
            let runtime = Arc::new(Mutex::new(runtime));
            built = Some(runtime.clone());
            Ok(Box::new(Hook(runtime)) as Box<dyn WriterHook>)
        })?;
        let runtime = built.ok_or_else(|| StoreError::Invalid("alerting hook not built".into()))?;
        Ok((
            Alerting {
                store,
                runtime,
                escalations,
            },
            thread,
        ))
    }

    /// The plain store handle.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs `f` on the runtime inside the writer's next group transaction; resolves once
    /// that commits (an SQLite error aborts the group, as for every `Store::exec` job).
    pub(super) async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Runtime, &Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let runtime = self.runtime.clone();
        self.store.exec(move |c| f(&mut lock(&runtime), c)).await
    }

    /// Acknowledges an active alert (repeats stop; receivers told it fired hear of the
    /// acknowledgement). `false` if no such alert is active.
    pub async fn acknowledge(
        &self,
        fingerprint: &str,
        by: &str,
        comment: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let (fingerprint, by, comment) =
            (fingerprint.to_owned(), by.to_owned(), comment.to_owned());
        self.call(move |rt, c| rt.acknowledge(c, &fingerprint, &by, &comment, now_ms))
            .await
    }

    /// Replaces a host's operator labels if `check` (given the host as stored) returns
    /// `None`; the host's active alerts take the new labels in the same transaction.
    pub async fn set_host_labels_checked<R: Send + 'static>(
        &self,
        agent_id: String,
        labels_json: String,
        check: impl FnOnce(&HostRecord) -> Option<R> + Send + 'static,
        now_ms: i64,
    ) -> Result<Relabel<R>, StoreError> {
        self.call(move |rt, c| {
            let out = set_labels_checked(c, &agent_id, &labels_json, check)?;
            if let Relabel::Done(h) = &out {
                rt.host_relabelled(c, &h.agent_id, &h.labels, now_ms)?;
            }
            Ok(out)
        })
        .await
    }

    /// Adds a silence; returns its id. Invalid specs are refused with the reason
    /// ([`StoreError::Invalid`]), and so is one beyond `[alerting] max_silences` or
    /// `max_silences_per_user` ([`StoreError::Limit`]).
    pub async fn add_silence(&self, spec: SilenceSpec, now_ms: i64) -> Result<i64, StoreError> {
        self.call(move |rt, c| rt.add_silence(c, &spec, now_ms))
            .await
    }

    /// Ends a silence now. `false` if it does not exist or has already ended.
    pub async fn expire_silence(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        self.call(move |rt, c| rt.expire_silence(c, id, now_ms))
            .await
    }

    /// Firing and flapping alerts, oldest first.
    pub async fn active_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        self.call(|rt, _| Ok(rt.active_alerts())).await
    }

    /// The oldest due notification group of `receiver` (at most `limit` rows).
    pub async fn outbox_fetch(
        &self,
        receiver: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<OutboxBatch, StoreError> {
        let receiver = receiver.to_owned();
        self.call(move |rt, c| rt.outbox_fetch(c, &receiver, now_ms, limit))
            .await
    }

    /// Records how sending outbox rows ended.
    pub async fn outbox_settle(
        &self,
        receiver: &str,
        group_key: &str,
        ids: Vec<i64>,
        outcome: OutboxOutcome,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (receiver, group_key) = (receiver.to_owned(), group_key.to_owned());
        self.call(move |rt, c| rt.outbox_settle(c, &receiver, &group_key, &ids, &outcome, now_ms))
            .await
    }

    /// Stores a rule definition with origin `api` (replacing any configured rule of that
    /// name) and runs it from now on. Invalid definitions are refused with the reason.
    /// `may_replace` is asked about the owner scope of a rule already stored under the
    /// name; `Ok(false)` when it refused (nothing changed).
    pub async fn put_rule(
        &self,
        raw: RawRule,
        may_replace: OwnerCheck,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.call(move |rt, c| rt.put_rule(c, &raw, may_replace, now_ms))
            .await
    }

    /// Deletes a rule stored through the API; a configured rule of the same name applies
    /// again. Configured rules are not deleted ([`RuleDeleted::FromConfig`]).
    pub async fn delete_rule(
        &self,
        name: &str,
        may_delete: OwnerCheck,
        now_ms: i64,
    ) -> Result<RuleDeleted, StoreError> {
        let name = name.to_owned();
        self.call(move |rt, c| rt.delete_rule(c, &name, may_delete, now_ms))
            .await
    }

    /// Evaluates `rule` alone over the writer's in-memory window at `now_ms` (nothing is
    /// stored), or says the window does not cover it.
    pub async fn dry_run_rule(&self, rule: Rule, now_ms: i64) -> Result<DryRunReply, StoreError> {
        self.call(move |rt, _| Ok(rt.dry_run(rule, now_ms))).await
    }

    /// Stores a receiver defined through the API (`create_only`: only if none of that name
    /// is stored) with its sealed secrets, and routes to it from now on. The caller
    /// validates the definition (`ApiSecrets::prepare`) and starts its dispatcher worker
    /// once this returns
    /// [`ReceiverPut::Created`] or [`ReceiverPut::Replaced`].
    pub async fn put_receiver(
        &self,
        raw: ReceiverConfigRaw,
        secrets: Vec<SealedSecret>,
        create_only: bool,
        now_ms: i64,
    ) -> Result<ReceiverPut, StoreError> {
        self.call(move |rt, c| rt.put_receiver(c, &raw, &secrets, create_only, now_ms))
            .await
    }

    /// Deletes a receiver defined through the API; its queued notifications go to the
    /// dead-letter list. Configured receivers are not deleted.
    pub async fn delete_receiver(
        &self,
        name: &str,
        now_ms: i64,
    ) -> Result<ReceiverDeleted, StoreError> {
        let name = name.to_owned();
        self.call(move |rt, c| rt.delete_receiver(c, &name, now_ms))
            .await
    }
}
