//! The alerting sections of collector.toml — `[alerting]`, `[[route]]`, `[[inhibit]]` and
//! `[[receiver]]` — in raw form (serde, unknown keys rejected, documented defaults) and
//! validated into what the alerting runtime and the dispatcher run with.
//!
//! ```toml
//! [alerting]
//! rule_files = ["rules.toml"]     # [[rule]] tables, relative to this file
//! group_by = ["alertname", "host"]
//!
//! [[route]]
//! matchers = '{severity="critical"}'
//! receivers = ["oncall"]
//!
//! [[receiver]]
//! type = "pagerduty"
//! name = "oncall"
//! routing_key = { env = "PD_ROUTING_KEY" }
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mcpwatch_common::config::{self as cfg, ConfigError, Duration};
use serde::Deserialize;

use super::escalation_config::{parse_escalations, RawEscalation};
use super::{AlertingSetup, SilenceLimits};
use crate::alert::escalation::EscalationPolicy;
use crate::alert::route::{parse_matchers, GroupBy, InhibitRule, Route, RouteOpts, Routing};
use crate::alert::OwnerScope;
use crate::alert::{merge_rules, parse_rules, EngineOptions, RawRule, Rule};
use crate::notify::{Destinations, Receiver, ReceiverConfigRaw};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerting {
    /// Files of `[[rule]]` tables, relative to collector.toml. Default none.
    pub rule_files: Option<Vec<PathBuf>>,
    /// Run the built-in rules (host down, MCP server down/unhealthy/crash-looping/gave up,
    /// tool drift, dropped samples, CPU/memory/disk, receiver failing). Default true.
    pub builtin_rules: Option<bool>,
    /// Built-in inhibitions: host down mutes the host's other alerts; a crash-looping
    /// server mutes its probe and down alerts. Default true.
    pub builtin_inhibit: Option<bool>,
    /// Receivers of alerts no `[[route]]` matches. Default: every receiver.
    pub default_receivers: Option<Vec<String>>,
    /// Labels that batch alerts into one notification (`["..."]` = one per alert).
    /// Default ["alertname", "host"].
    pub group_by: Option<Vec<String>>,
    /// Wait before a new group's first notification. Default 0s (page at once).
    pub group_wait: Option<Duration>,
    /// Minimum time between notifications of one group. Default 1m.
    pub group_interval: Option<Duration>,
    /// Re-notify a firing, unacknowledged alert after this. Default 4h.
    pub repeat_interval: Option<Duration>,
    /// Flap detection: more than `flap_threshold` changes within `flap_window` make one
    /// "flapping" notice, then quiet until `flap_quiet` without change. Defaults 10m, 6, 10m.
    pub flap_window: Option<Duration>,
    pub flap_threshold: Option<usize>,
    pub flap_quiet: Option<Duration>,
    /// Allowance for transport delay: samples older than a rule's window plus this are
    /// ignored, so a replayed spool never fires. Default 5s.
    pub late_grace: Option<Duration>,
    /// First retry delay of a failed send; doubles up to `retry_max`. Defaults 1s, 5m.
    pub retry_initial: Option<Duration>,
    pub retry_max: Option<Duration>,
    /// Notifications not delivered within this go to the dead-letter list. Default 24h.
    pub max_age: Option<Duration>,
    /// How long the delivery log (`GET /api/v1/notifications`) keeps its lines. Default 30d;
    /// shorter than 1m counts as 1m.
    pub delivery_log_keep: Option<Duration>,
    /// The key that seals the secrets of receivers defined through the API (64 hex
    /// digits; created 0600 at first start when missing; refused when group- or
    /// world-readable). Back it up with the database: without it those secrets are lost.
    /// Relative to collector.toml. Default `receiver-secrets.key` beside the database.
    pub secret_key_file: Option<PathBuf>,
    /// Silences not yet ended (active or pending) at once; creating one more answers 429.
    /// Default 1000.
    pub max_silences: Option<usize>,
    /// The same per user (all their tokens and sessions; a token without a user counts on
    /// its own). Default 100.
    pub max_silences_per_user: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// `{label="value", other=~"re"}`; `{}` or absent matches every alert.
    pub matchers: Option<String>,
    pub receivers: Vec<String>,
    pub group_by: Option<Vec<String>>,
    pub group_wait: Option<Duration>,
    pub group_interval: Option<Duration>,
    pub repeat_interval: Option<Duration>,
    /// Keep matching later routes. Default false.
    #[serde(rename = "continue")]
    pub continue_matching: Option<bool>,
    /// Owner scope (`{team="a"}`): the route only takes alerts about hosts inside it.
    /// Default: every host.
    pub owner: Option<String>,
    /// An `[[escalation]]` policy's name: unacknowledged alerts this route takes also go
    /// to its steps. `receivers` may then be empty. Default none.
    pub escalation: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInhibit {
    /// Matchers of the muting alert, e.g. `{alertname="host_down"}`.
    pub source: String,
    /// Matchers of the muted alerts.
    pub target: String,
    /// Labels both must share. Default none.
    pub equal: Option<Vec<String>>,
}

/// Retry timing for the dispatcher: `retry_initial` doubling to `retry_max`, ±20 % jitter
/// so receivers that failed together do not retry in lockstep.
pub type RetryPolicy = mcpwatch_common::backoff::ExponentialBackoff;

/// The validated alerting configuration.
#[derive(Debug, Clone)]
pub struct AlertingConfig {
    pub setup: AlertingSetup,
    pub receivers: Vec<ReceiverConfigRaw>,
    pub retry: RetryPolicy,
    /// Where receivers defined through the API may send (`[api] receiver_url_allow`).
    pub api_destinations: Destinations,
    /// `secret_key_file` as given (resolved); `None`: beside the database.
    pub secret_key_file: Option<PathBuf>,
}

impl AlertingConfig {
    /// `sections`: the `[[receiver]]`, `[[route]]`, `[[inhibit]]` and `[[escalation]]`
    /// tables.
    pub fn validate(
        path: &Path,
        raw: RawAlerting,
        sections: (
            Vec<ReceiverConfigRaw>,
            Vec<RawRoute>,
            Vec<RawInhibit>,
            Vec<RawEscalation>,
        ),
    ) -> Result<AlertingConfig, ConfigError> {
        let (receivers, routes, inhibit, escalations) = sections;
        let bad = |key: &str, msg: &str| ConfigError::invalid(path, key, msg);
        let (names, receiver_owners) = check_receivers(path, &receivers)?;
        let escalations = parse_escalations(path, escalations, &names)?;
        let known = |list: &[String], key: &str| -> Result<(), ConfigError> {
            match list.iter().find(|n| !names.contains(*n)) {
                Some(n) => Err(bad(key, &format!("unknown receiver {n:?}"))),
                None => Ok(()),
            }
        };
        let default_opts = RouteOpts {
            group_by: GroupBy::from_list(
                raw.group_by
                    .clone()
                    .unwrap_or_else(|| vec!["alertname".into(), "host".into()]),
            ),
            group_wait_ms: ms(raw.group_wait, Duration::from_secs(0)),
            group_interval_ms: ms(raw.group_interval, Duration::from_secs(60)),
            repeat_interval_ms: ms(raw.repeat_interval, Duration::from_secs(4 * 3600)),
        };
        check_timing(&default_opts).map_err(|m| bad("alerting", &m))?;
        let all: Vec<String> = receivers.iter().map(|r| r.name().to_owned()).collect();
        let default_all = raw.default_receivers.is_none();
        let default_receivers = raw.default_receivers.clone().unwrap_or_else(|| all.clone());
        known(&default_receivers, "alerting.default_receivers")?;
        let mut parsed_routes = Vec::new();
        for (i, r) in routes.into_iter().enumerate() {
            known(&r.receivers, &format!("route[{i}].receivers"))?;
            let route = parse_route(path, &format!("route[{i}]"), r, &default_opts, &escalations)?;
            parsed_routes.push(route);
        }
        let inhibit_rules = parse_inhibits(path, raw.builtin_inhibit.unwrap_or(true), inhibit)?;
        let (rules, raw_rules) = load_rule_files(
            path,
            raw.rule_files.clone().unwrap_or_default(),
            raw.builtin_rules.unwrap_or(true),
        )?;
        let engine = engine_options(path, &raw)?;
        let (retry, max_age) = delivery_limits(path, &raw)?;
        check_waits_fit(path, &parsed_routes, &default_opts, max_age)?;
        let silence_limits = silence_limits(path, &raw)?;
        Ok(AlertingConfig {
            setup: AlertingSetup {
                rules,
                raw_rules,
                engine,
                routing: Routing {
                    routes: parsed_routes,
                    default_receivers,
                    default_opts,
                    all_receivers: all,
                    extra: Vec::new(),
                },
                inhibit: inhibit_rules,
                max_age_ms: max_age.as_millis_i64(),
                default_all,
                silence_limits,
                receiver_owners,
                delivery_log_keep_ms: ms(raw.delivery_log_keep, Duration::from_secs(30 * 86_400))
                    .max(60_000),
                escalations,
            },
            receivers,
            retry,
            // `[api] receiver_url_allow` replaces this when set (see config.rs).
            api_destinations: Destinations::Public,
            secret_key_file: raw.secret_key_file.map(|f| cfg::resolve_path(path, f)),
        })
    }
}

fn ms(d: Option<Duration>, default: Duration) -> i64 {
    d.unwrap_or(default).as_millis_i64()
}

/// The receivers' names, each non-empty and defined once; their secrets (files, env) are
/// resolved here too, so check-config catches them.
fn check_receivers(
    path: &Path,
    receivers: &[ReceiverConfigRaw],
) -> Result<(HashSet<String>, BTreeMap<String, OwnerScope>), ConfigError> {
    let bad = |key: &str, msg: &str| ConfigError::invalid(path, key, msg);
    let base = path.parent().unwrap_or(Path::new("."));
    let mut names = HashSet::new();
    let mut owners = BTreeMap::new();
    for r in receivers {
        let owner = OwnerScope::parse(r.owner().unwrap_or_default())
            .map_err(|m| bad("receiver.owner", &format!("receiver {:?}: {m}", r.name())))?;
        if let Some(o) = owner {
            owners.insert(r.name().to_owned(), o);
        }
        if r.name().trim().is_empty() {
            return Err(bad("receiver.name", "must not be empty"));
        }
        if !names.insert(r.name().to_owned()) {
            return Err(bad(
                "receiver.name",
                &format!("receiver {:?} is defined twice", r.name()),
            ));
        }
        if let Some((field, _)) = r
            .secret_refs()
            .into_iter()
            .find(|(_, s)| !s.is_config_reference())
        {
            return Err(bad(
                "receiver",
                &format!(
                    "receiver {:?}: {field}: a secret in the configuration file is \
                     {{ file = \"...\" }} or {{ env = \"...\" }}, never the value",
                    r.name()
                ),
            ));
        }
        Receiver::from_raw(r.clone(), base, &crate::notify::Destinations::Any)
            .map_err(|e| bad("receiver", &e.to_string()))?;
    }
    Ok((names, owners))
}

/// `[[route]]` number `i` (its receivers already known to exist); unset timing comes from
/// the default route.
fn parse_route(
    path: &Path,
    key: &str,
    r: RawRoute,
    default_opts: &RouteOpts,
    escalations: &BTreeMap<String, Arc<EscalationPolicy>>,
) -> Result<Route, ConfigError> {
    let bad = |key: &str, msg: &str| ConfigError::invalid(path, key, msg);
    let escalation = match &r.escalation {
        Some(name) => Some(escalations.get(name).cloned().ok_or_else(|| {
            bad(
                &format!("{key}.escalation"),
                &format!("no [[escalation]] named {name:?}"),
            )
        })?),
        None => None,
    };
    if r.receivers.is_empty() && escalation.is_none() {
        return Err(bad(
            &format!("{key}.receivers"),
            "needs at least one receiver (or an escalation policy)",
        ));
    }
    let owner = OwnerScope::parse(r.owner.as_deref().unwrap_or_default())
        .map_err(|m| bad(&format!("{key}.owner"), &m))?;
    let matchers = parse_matchers(r.matchers.as_deref().unwrap_or("{}"))
        .map_err(|m| bad(&format!("{key}.matchers"), &m))?;
    let opts = RouteOpts {
        group_by: r
            .group_by
            .map(GroupBy::from_list)
            .unwrap_or_else(|| default_opts.group_by.clone()),
        group_wait_ms: r
            .group_wait
            .map_or(default_opts.group_wait_ms, Duration::as_millis_i64),
        group_interval_ms: r
            .group_interval
            .map_or(default_opts.group_interval_ms, Duration::as_millis_i64),
        repeat_interval_ms: r
            .repeat_interval
            .map_or(default_opts.repeat_interval_ms, Duration::as_millis_i64),
    };
    check_timing(&opts).map_err(|m| bad(key, &m))?;
    Ok(Route {
        matchers,
        receivers: r.receivers,
        opts,
        continue_matching: r.continue_matching.unwrap_or(false),
        owner,
        escalation,
    })
}

/// A route defined through the API (JSON of a `[[route]]` table without `continue`: such a
/// route always adds to the configured routing); the reason when it is refused.
pub fn api_route(
    raw: RawRoute,
    default_opts: &RouteOpts,
    escalations: &BTreeMap<String, Arc<EscalationPolicy>>,
) -> Result<Route, String> {
    if raw.continue_matching.is_some() {
        return Err(
            "continue: a route defined through the API always adds to the configured routing"
                .into(),
        );
    }
    parse_route(Path::new("<api>"), "route", raw, default_opts, escalations).map_err(|e| match e {
        ConfigError::Invalid { key, message, .. } => {
            format!("{}: {message}", key.trim_start_matches("route."))
        }
        other => other.to_string(),
    })
}

/// The built-in inhibition rules (unless switched off), then the configured ones.
fn parse_inhibits(
    path: &Path,
    builtin: bool,
    inhibit: Vec<RawInhibit>,
) -> Result<Vec<InhibitRule>, ConfigError> {
    let bad = |key: &str, msg: &str| ConfigError::invalid(path, key, msg);
    let mut rules = if builtin {
        InhibitRule::builtin()
    } else {
        Vec::new()
    };
    for (i, r) in inhibit.into_iter().enumerate() {
        let key = format!("inhibit[{i}]");
        rules.push(InhibitRule {
            source: parse_matchers(&r.source).map_err(|m| bad(&format!("{key}.source"), &m))?,
            target: parse_matchers(&r.target).map_err(|m| bad(&format!("{key}.target"), &m))?,
            equal: r.equal.unwrap_or_default(),
        });
    }
    Ok(rules)
}

/// Most silences allowed at once: `max_silences` 1..=100000, `max_silences_per_user`
/// 1..=`max_silences`.
fn silence_limits(path: &Path, raw: &RawAlerting) -> Result<SilenceLimits, ConfigError> {
    let bad = |key: &str, msg: &str| ConfigError::invalid(path, key, msg);
    let d = SilenceLimits::default();
    let max = raw.max_silences.unwrap_or(d.max);
    if !(1..=100_000).contains(&max) {
        return Err(bad("alerting.max_silences", "must be 1..=100000"));
    }
    let per_user = raw.max_silences_per_user.unwrap_or(d.per_user.min(max));
    if !(1..=max).contains(&per_user) {
        return Err(bad(
            "alerting.max_silences_per_user",
            "must be at least 1 and at most max_silences",
        ));
    }
    Ok(SilenceLimits { max, per_user })
}

/// Late-data grace and flap detection.
fn engine_options(path: &Path, raw: &RawAlerting) -> Result<EngineOptions, ConfigError> {
    let bad = |key: &str, msg: &str| ConfigError::invalid(path, key, msg);
    let engine = EngineOptions {
        grace_ms: ms(raw.late_grace, Duration::from_secs(5)),
        flap_window_ms: ms(raw.flap_window, Duration::from_secs(600)),
        flap_threshold: raw.flap_threshold.unwrap_or(6),
        flap_quiet_ms: ms(raw.flap_quiet, Duration::from_secs(600)),
        // Set by the store when it opens (it knows when it restarted).
        hold_missing_until_ms: 0,
    };
    if engine.flap_threshold < 2 {
        return Err(bad("alerting.flap_threshold", "must be at least 2"));
    }
    if engine.flap_quiet_ms <= 0 || engine.flap_window_ms <= 0 {
        return Err(bad(
            "alerting.flap_quiet",
            "flap_window and flap_quiet must be positive",
        ));
    }
    Ok(engine)
}

/// Every group wait and interval is shorter than `max_age`, or rows would expire before
/// they are due.
fn check_waits_fit(
    path: &Path,
    routes: &[Route],
    default_opts: &RouteOpts,
    max_age: Duration,
) -> Result<(), ConfigError> {
    let longest_wait = routes
        .iter()
        .map(|r| &r.opts)
        .chain(std::iter::once(default_opts))
        .map(|o| o.group_wait_ms.max(o.group_interval_ms))
        .max()
        .unwrap_or(0);
    if longest_wait >= max_age.as_millis_i64() {
        return Err(ConfigError::invalid(
            path,
            "alerting.max_age",
            "must exceed every group_wait and group_interval, or rows expire before they are due",
        ));
    }
    Ok(())
}

/// The retry policy and how long an undelivered notification may wait.
fn delivery_limits(path: &Path, raw: &RawAlerting) -> Result<(RetryPolicy, Duration), ConfigError> {
    let bad = |key: &str, msg: &str| ConfigError::invalid(path, key, msg);
    let retry = RetryPolicy::new(
        raw.retry_initial.unwrap_or(Duration::from_secs(1)).get(),
        raw.retry_max.unwrap_or(Duration::from_secs(300)).get(),
    )
    .and_then(|b| b.with_jitter(0.8, 1.2))
    .map_err(|_| {
        bad(
            "alerting.retry_initial",
            "must be positive and at most retry_max",
        )
    })?;
    if retry.max() > std::time::Duration::from_secs(86_400) {
        return Err(bad("alerting.retry_max", "must be at most 1d"));
    }
    let max_age = raw.max_age.unwrap_or(Duration::from_secs(86_400));
    if max_age.get() < retry.max() {
        return Err(bad("alerting.max_age", "must be at least retry_max"));
    }
    Ok((retry, max_age))
}

fn check_timing(o: &RouteOpts) -> Result<(), String> {
    if o.group_interval_ms <= 0 {
        return Err("group_interval must be positive".into());
    }
    if o.repeat_interval_ms < o.group_interval_ms {
        return Err("repeat_interval must be at least group_interval".into());
    }
    Ok(())
}

/// Reads every rule file, overlays the built-ins and validates; an error names the file
/// that defines the offending rule.
fn load_rule_files(
    config: &Path,
    files: Vec<PathBuf>,
    builtins: bool,
) -> Result<(Vec<Rule>, Vec<RawRule>), ConfigError> {
    let mut user: Vec<(PathBuf, RawRule)> = Vec::new();
    for f in files {
        let p = cfg::resolve_path(config, f);
        let text = std::fs::read_to_string(&p).map_err(|e| {
            ConfigError::invalid(
                config,
                "alerting.rule_files",
                format!("{}: {e}", p.display()),
            )
        })?;
        for r in parse_rules(&p, &text)? {
            user.push((p.clone(), r));
        }
    }
    let file_of = |name: &str| {
        user.iter()
            .find(|(_, r)| r.name == name)
            .map_or_else(|| config.to_path_buf(), |(p, _)| p.clone())
    };
    let raws: Vec<RawRule> = user.iter().map(|(_, r)| r.clone()).collect();
    let merged = merge_rules(raws, builtins).map_err(|e| {
        let p = file_of(&e.rule);
        e.into_config_error(&p)
    })?;
    let mut rules = Vec::with_capacity(merged.len());
    for r in &merged {
        rules.push(Rule::validate(r.clone()).map_err(|e| {
            let p = file_of(&e.rule);
            e.into_config_error(&p)
        })?);
    }
    Ok((rules, merged))
}
