//! Administration through the API: rules and receivers changed in the open transaction
//! and applied at once (undone in memory if it rolls back), rule validation as the API
//! stores rules, and dry runs over the in-memory window.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use rusqlite::{params, Connection, OptionalExtension};

use super::runtime::Runtime;
use crate::alert::{EngineOptions, RawRule, Rule};
use crate::notify::{ReceiverConfigRaw, SealedSecret};
use crate::store::StoreError;

/// What [`super::Alerting::put_receiver`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverPut {
    Created,
    Replaced,
    /// A configured receiver has this name; the API cannot change it.
    FromConfig,
    /// Only creating was asked for, and a receiver of this name is stored already.
    Exists,
}

/// What [`super::Alerting::delete_receiver`] did.
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

/// What [`super::Alerting::delete_rule`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleDeleted {
    /// No rule of that name is stored.
    Missing,
    /// The rule comes from the configuration; the API cannot delete it (only override it).
    FromConfig,
    /// The API rule is gone; `config_restored` when a configured rule of the same name
    /// applies again.
    Deleted { config_restored: bool },
    /// The caller's check refused the rule's owner scope (nothing changed).
    Refused,
}

/// What the caller's check of a rule's owner is given: the owner scope of the rule stored
/// under that name (`None`: fleet-wide), when one is. Checked on the writer with the change,
/// so an owner cannot change between the check and the write.
pub type OwnerCheck = Box<dyn FnOnce(Option<&str>) -> bool + Send>;

/// The owner scope written in a stored rule definition (`None`: fleet-wide). An unreadable
/// definition counts as fleet-wide, which only an unscoped grant may change.
fn stored_owner(c: &Connection, name: &str) -> Result<Option<Option<String>>, StoreError> {
    let def: Option<String> = c
        .prepare_cached("SELECT definition FROM alert_rules WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    Ok(def.map(|d| {
        serde_json::from_str::<RawRule>(&d)
            .ok()
            .and_then(|r| r.owner)
    }))
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
        // Only the name can fail: the rest is a minimal valid rule.
        Rule::validate(RawRule {
            name: raw.name.clone(),
            selector: Some("m".into()),
            critical: Some(0.0),
            ..RawRule::default()
        })?;
        return Ok(None);
    }
    let rule = Rule::validate(raw.clone())?;
    // The window holds every sample a rule looks back over, for every series it may read
    // (the whole fleet's, before an owner scope filters them): an API rule looks back a
    // day at most.
    let span = rule.window_ms.max(rule.absent_for_ms.unwrap_or(0));
    if span > MAX_API_RULE_SPAN_MS {
        let key = if rule.window_ms >= rule.absent_for_ms.unwrap_or(0) {
            "window"
        } else {
            "absent_for"
        };
        return Err(crate::alert::RuleError {
            rule: raw.name.clone(),
            key: key.into(),
            message: "at most 1d for a rule set through the API".into(),
        });
    }
    Ok((raw.enabled != Some(false)).then_some(rule))
}

/// The longest `window` or `absent_for` of a rule set through the API.
pub const MAX_API_RULE_SPAN_MS: i64 = 86_400_000;

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
pub(super) fn effective_rules(config: &[Rule], c: &Connection) -> Result<Vec<Rule>, StoreError> {
    let mut api = api_rules(c)?;
    // A team's rule never replaces a configured (or built-in) rule of the same name, which
    // reads every host: one made before the configuration named that rule is left out.
    api.retain(|a| {
        let shadows = a.owner.is_some() && config.iter().any(|r| r.name == a.name);
        if shadows {
            tracing::warn!(rule = %a.name,
                "an owned API rule has the name of a configured rule; the configured one runs");
        }
        !shadows
    });
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

impl Runtime {
    /// Runs the effective rules (configured + API) from now on: engine and window follow
    /// them, series and recent samples of newly read metrics are loaded, and alerts of rules
    /// that are gone are resolved — all inside the open transaction.
    pub(super) fn reload_rules(&mut self, c: &Connection, now_ms: i64) -> Result<(), StoreError> {
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
    /// `may_replace` is asked about the owner of a rule already stored under that name;
    /// `false` = refused (nothing changed).
    pub(super) fn put_rule(
        &mut self,
        c: &Connection,
        raw: &RawRule,
        may_replace: OwnerCheck,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        validate_api_rule(raw).map_err(|e| StoreError::Invalid(e.to_string()))?;
        if let Some(owner) = stored_owner(c, &raw.name)? {
            if !may_replace(owner.as_deref()) {
                return Ok(false);
            }
        }
        c.prepare_cached(
            "INSERT INTO alert_rules (name, origin, definition, updated_ms)
             VALUES (?1, 'api', ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET origin = 'api', definition = excluded.definition,
                 updated_ms = excluded.updated_ms",
        )?
        .execute(params![raw.name, serde_json::to_string(raw)?, now_ms])?;
        self.reload_rules(c, now_ms)?;
        Ok(true)
    }

    /// Deletes a rule stored through the API (a configured rule of the same name applies
    /// again). Configured rules cannot be deleted this way.
    pub(super) fn delete_rule(
        &mut self,
        c: &Connection,
        name: &str,
        may_delete: OwnerCheck,
        now_ms: i64,
    ) -> Result<RuleDeleted, StoreError> {
        if let Some(owner) = stored_owner(c, name)? {
            if !may_delete(owner.as_deref()) {
                return Ok(RuleDeleted::Refused);
            }
        }
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
    pub(super) fn dry_run(&self, rule: Rule, now_ms: i64) -> DryRunReply {
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
        let covered = match &rule.selector.name {
            // A `__name__` pattern: the window holds its metrics only when a running rule
            // reads the same pattern for long enough.
            Some(p) => self.setup.rules.iter().any(|r| {
                r.selector
                    .name
                    .as_ref()
                    .is_some_and(|n| n.op == p.op && n.value == p.value)
                    && rule_span(r, grace) >= need
            }),
            None => {
                kept(&rule.selector.metric)
                    && rule.divide_by.as_ref().is_none_or(|d| kept(&d.metric))
            }
        };
        if !covered {
            return DryRunReply::NotInWindow(self.setup.engine);
        }
        DryRunReply::Done(crate::alert::dry_run::dry_run(
            rule,
            self.setup.engine,
            &super::host_scopes::ScopedWindow::new(&self.window, &self.hosts),
            now_ms,
            DRY_RUN_LIMIT,
        ))
    }

    /// Recomputes the routing's receiver lists: the configured ones plus the API
    /// receivers running now (on the default route too when `default_all`).
    pub(super) fn sync_routing(&mut self) {
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
    pub(super) fn save_receivers_undo(&mut self) {
        if self.receivers_undo.is_none() {
            self.receivers_undo = Some((self.shared.read().clone(), self.api_receivers.clone()));
        }
    }

    /// Stores an API receiver (creating it, or replacing its definition and sealed
    /// secrets) and routes to it from now on; its queued rows stay for the new definition.
    /// Configured receivers are not touched. The definition holds no secret value.
    pub(super) fn put_receiver(
        &mut self,
        c: &Connection,
        raw: &ReceiverConfigRaw,
        secrets: &[SealedSecret],
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
        let owner = crate::alert::OwnerScope::parse(raw.owner().unwrap_or_default())
            .map_err(StoreError::Invalid)?;
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
        c.prepare_cached("DELETE FROM receiver_secrets WHERE receiver = ?1")?
            .execute([name])?;
        for s in secrets {
            c.prepare_cached(
                "INSERT INTO receiver_secrets (receiver, field, destination, sealed)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![name, s.field, s.destination, s.sealed])?;
        }
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
        match owner {
            Some(o) => self.api_receiver_owners.insert(name.to_owned(), Some(o)),
            None => self.api_receiver_owners.remove(name),
        };
        self.sync_routing();
        Ok(if exists {
            ReceiverPut::Replaced
        } else {
            ReceiverPut::Created
        })
    }

    /// Deletes an API receiver: nothing is routed to it any more, its queued rows go to the
    /// dead-letter list ([`RECEIVER_DELETED`]) and what it was told is forgotten.
    pub(super) fn delete_receiver(
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
        self.api_receiver_owners.remove(name);
        self.dead_dirty = true;
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
