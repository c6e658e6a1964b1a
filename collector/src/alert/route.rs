//! Where an alert goes: routes (label matchers → receivers, with grouping and timing),
//! inhibition rules (a firing source alert mutes matching target alerts) and silences
//! (matchers + time range). Pure: the store applies these to its active alerts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::escalation::EscalationPolicy;
use super::owner::OwnerScope;
use super::selector::{Labels, Matcher, Selector};

/// Name of the built-in rule whose alerts must not be sent through the receiver they are
/// about (label `receiver`).
pub const RECEIVER_FAILING_RULE: &str = "notification_receiver_failing";
/// The same for dead letters piling up for a receiver.
pub const DEAD_LETTERS_RULE: &str = "notification_dead_letters";

/// Parses a matcher list written as `{label="v", other=~"re"}` (an empty `{}` matches all).
pub fn parse_matchers(text: &str) -> Result<Vec<Matcher>, String> {
    let t = text.trim();
    if !t.starts_with('{') {
        return Err(format!(
            "matchers must be written as {{label=\"value\", ...}}, got {t:?}"
        ));
    }
    // A placeholder metric name lets the selector parser do the work.
    Selector::parse(&format!("m{t}")).map(|s| s.matchers)
}

pub fn matches_all(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// Which labels make a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// `["..."]`: every label, i.e. one group per alert.
    All,
    Labels(Vec<String>),
}

impl GroupBy {
    pub fn from_list(list: Vec<String>) -> GroupBy {
        if list.iter().any(|l| l == "...") {
            GroupBy::All
        } else {
            GroupBy::Labels(list)
        }
    }
}

/// Grouping and timing of one route, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteOpts {
    pub group_by: GroupBy,
    /// How long a new group waits to gather more alerts before its first notification.
    pub group_wait_ms: i64,
    /// Minimum time between two notifications of the same group.
    pub group_interval_ms: i64,
    /// A still-firing, unacknowledged alert is notified again after this long.
    pub repeat_interval_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub matchers: Vec<Matcher>,
    pub receivers: Vec<String>,
    pub opts: RouteOpts,
    /// Keep looking at later routes after this one matched.
    pub continue_matching: bool,
    /// `Some`: the route only takes alerts about hosts inside this scope (a team's route).
    pub owner: Option<OwnerScope>,
    /// `Some`: unacknowledged alerts it takes also go to the policy's steps as they are
    /// reached.
    pub escalation: Option<Arc<EscalationPolicy>>,
}

/// One receiver an alert goes to, with the group it is batched in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub receiver: String,
    pub group_key: String,
    pub opts: RouteOpts,
    /// The escalation round in which the receiver was last reached (0 without a repeating
    /// policy): a later round tells it again.
    pub round: u32,
}

/// The routing tree (a list, first match wins unless `continue`), with a default route.
#[derive(Debug, Clone)]
pub struct Routing {
    pub routes: Vec<Route>,
    /// Receivers of alerts no route matched.
    pub default_receivers: Vec<String>,
    pub default_opts: RouteOpts,
    /// Every configured receiver, for the receiver-failing fallback.
    pub all_receivers: Vec<String>,
    /// Routes defined through the API, after the configured ones: each adds its receivers
    /// to the alerts it matches and never takes an alert away from the configured routing
    /// (a team's route cannot divert the fleet's on-call).
    pub extra: Vec<Route>,
}

impl Routing {
    /// The receivers for an alert with `labels` about a host with `scope` labels (see
    /// [`OwnerScope::covers`]), unacknowledged for `elapsed_ms` (escalation steps), each
    /// with its group key. An alert about a failing receiver never goes to that receiver;
    /// when nothing else is routed, it goes to every other receiver.
    pub fn targets(&self, labels: &Labels, scope: Option<&Labels>, elapsed_ms: i64) -> Vec<Target> {
        let mut out: Vec<Target> = Vec::new();
        let add = |out: &mut Vec<Target>,
                   receivers: &[String],
                   opts: &RouteOpts,
                   route: &str,
                   round: u32| {
            for r in receivers {
                match out.iter_mut().find(|t| &t.receiver == r) {
                    Some(t) => t.round = t.round.max(round),
                    None => out.push(Target {
                        receiver: r.clone(),
                        group_key: group_key(route, &opts.group_by, labels),
                        opts: opts.clone(),
                        round,
                    }),
                }
            }
        };
        let mut matched = false;
        for (i, route) in self.routes.iter().enumerate() {
            let inside = route.owner.as_ref().is_none_or(|o| o.covers(scope));
            if inside && matches_all(&route.matchers, labels) {
                matched = true;
                let name = format!("route{i}");
                add(&mut out, &route.receivers, &route.opts, &name, 0);
                if let Some(policy) = &route.escalation {
                    for reached in policy.reached(elapsed_ms) {
                        let step = &policy.steps[reached.step];
                        add(&mut out, &step.receivers, &route.opts, &name, reached.round);
                    }
                }
                if !route.continue_matching {
                    break;
                }
            }
        }
        if !matched {
            add(
                &mut out,
                &self.default_receivers,
                &self.default_opts,
                "default",
                0,
            );
        }
        for (i, route) in self.extra.iter().enumerate() {
            let inside = route.owner.as_ref().is_none_or(|o| o.covers(scope));
            if inside && matches_all(&route.matchers, labels) {
                let name = format!("api{i}");
                add(&mut out, &route.receivers, &route.opts, &name, 0);
                if let Some(policy) = &route.escalation {
                    for reached in policy.reached(elapsed_ms) {
                        let step = &policy.steps[reached.step];
                        add(&mut out, &step.receivers, &route.opts, &name, reached.round);
                    }
                }
            }
        }
        let about_receiver = labels
            .get("alertname")
            .is_some_and(|a| a == RECEIVER_FAILING_RULE || a == DEAD_LETTERS_RULE);
        if about_receiver {
            if let Some(failing) = labels.get("receiver") {
                out.retain(|t| &t.receiver != failing);
                if out.is_empty() {
                    let others: Vec<String> = self
                        .all_receivers
                        .iter()
                        .filter(|r| *r != failing)
                        .cloned()
                        .collect();
                    add(&mut out, &others, &self.default_opts, "fallback", 0);
                }
            }
        }
        out
    }
}

impl Routing {
    /// The escalation policy of the first route (configured, then API) that takes an
    /// alert with `labels` about a host with `scope` labels and names one.
    pub fn escalation(
        &self,
        labels: &Labels,
        scope: Option<&Labels>,
    ) -> Option<&Arc<EscalationPolicy>> {
        let takes = |r: &&Route| {
            r.owner.as_ref().is_none_or(|o| o.covers(scope)) && matches_all(&r.matchers, labels)
        };
        let mut configured = Vec::new();
        for r in self.routes.iter().filter(takes) {
            configured.push(r);
            if !r.continue_matching {
                break;
            }
        }
        configured
            .into_iter()
            .chain(self.extra.iter().filter(takes))
            .find_map(|r| r.escalation.as_ref())
    }
}

/// `route:{k="v",...}`, stable for the same route and group labels.
fn group_key(route: &str, by: &GroupBy, labels: &Labels) -> String {
    let picked: BTreeMap<&str, &str> = match by {
        GroupBy::All => labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        GroupBy::Labels(names) => names
            .iter()
            .map(|n| {
                (
                    n.as_str(),
                    labels.get(n).map(String::as_str).unwrap_or_default(),
                )
            })
            .collect(),
    };
    let body: Vec<String> = picked.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{route}:{{{}}}", body.join(","))
}

/// While an alert matching `source` fires, alerts matching `target` with the same values
/// of the `equal` labels are muted.
#[derive(Debug, Clone)]
pub struct InhibitRule {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    pub equal: Vec<String>,
}

impl InhibitRule {
    /// Host down mutes that host's other alerts; a crash-looping server mutes its probe and
    /// down alerts.
    pub fn builtin() -> Vec<InhibitRule> {
        let m = |t: &str| parse_matchers(t).unwrap_or_default();
        vec![
            InhibitRule {
                source: m(r#"{alertname="host_down"}"#),
                target: m(r#"{alertname!="host_down"}"#),
                equal: vec!["host".into()],
            },
            InhibitRule {
                source: m(r#"{alertname="mcp_server_crashlooping"}"#),
                target: m(r#"{alertname=~"mcp_server_unhealthy|mcp_server_down"}"#),
                equal: vec!["host".into(), "server".into()],
            },
        ]
    }

    fn mutes(&self, target: &Labels, source: &Labels) -> bool {
        source != target
            && matches_all(&self.target, target)
            && matches_all(&self.source, source)
            && self.equal.iter().all(|l| target.get(l) == source.get(l))
    }
}

/// Whether `labels` is muted by any rule given the currently firing alerts' labels.
pub fn inhibited<'a>(
    rules: &[InhibitRule],
    labels: &Labels,
    firing: impl Iterator<Item = &'a Labels> + Clone,
) -> bool {
    rules
        .iter()
        .any(|r| firing.clone().any(|src| r.mutes(labels, src)))
}

/// A silence as stored: matchers text, time range, who and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SilenceSpec {
    /// `{label="v", ...}`; at least one matcher.
    pub matchers: String,
    pub starts_ms: i64,
    pub ends_ms: i64,
    pub author: String,
    pub comment: String,
}

impl SilenceSpec {
    /// Checks the spec and compiles its matchers.
    pub fn compile(&self) -> Result<Vec<Matcher>, String> {
        let m = parse_matchers(&self.matchers)?;
        if m.is_empty() {
            return Err("a silence needs at least one matcher".into());
        }
        if self.ends_ms <= self.starts_ms {
            return Err("a silence must end after it starts".into());
        }
        if self.author.trim().is_empty() {
            return Err("a silence needs an author".into());
        }
        Ok(m)
    }
}

#[derive(Debug, Clone)]
pub struct Silence {
    pub id: i64,
    pub spec: SilenceSpec,
    pub matchers: Vec<Matcher>,
}

impl Silence {
    pub fn mutes(&self, labels: &Labels, now_ms: i64) -> bool {
        self.spec.starts_ms <= now_ms
            && now_ms < self.spec.ends_ms
            && matches_all(&self.matchers, labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::labels;

    fn opts(by: &[&str]) -> RouteOpts {
        RouteOpts {
            group_by: GroupBy::from_list(by.iter().map(|s| (*s).to_owned()).collect()),
            group_wait_ms: 0,
            group_interval_ms: 60_000,
            repeat_interval_ms: 3_600_000,
        }
    }

    fn routing() -> Routing {
        Routing {
            routes: vec![
                Route {
                    matchers: parse_matchers(r#"{severity="critical"}"#).unwrap(),
                    receivers: vec!["pager".into()],
                    opts: opts(&["alertname"]),
                    continue_matching: true,
                    owner: None,
                    escalation: None,
                },
                Route {
                    matchers: parse_matchers(r#"{host=~"web-.*"}"#).unwrap(),
                    receivers: vec!["web-team".into(), "pager".into()],
                    opts: opts(&["host"]),
                    continue_matching: false,
                    owner: None,
                    escalation: None,
                },
                Route {
                    matchers: parse_matchers("{}").unwrap(),
                    receivers: vec!["never".into()],
                    opts: opts(&[]),
                    continue_matching: false,
                    owner: None,
                    escalation: None,
                },
            ],
            default_receivers: vec!["chat".into()],
            default_opts: opts(&["..."]),
            all_receivers: vec!["pager".into(), "web-team".into(), "chat".into()],
            extra: Vec::new(),
        }
    }

    #[test]
    fn alert_route_first_match_continue_and_dedup() {
        let r = routing();
        let t = r.targets(
            &labels(&[("severity", "critical"), ("host", "web-1")]),
            None,
            0,
        );
        let names: Vec<&str> = t.iter().map(|t| t.receiver.as_str()).collect();
        assert_eq!(names, ["pager", "web-team"]);
        assert_eq!(t[0].group_key, r#"route0:{alertname=""}"#);
        assert_eq!(t[1].group_key, r#"route1:{host="web-1"}"#);
        let t = r.targets(&labels(&[("severity", "low"), ("host", "db-1")]), None, 0);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].receiver, "never", "the catch-all route matched first");
    }

    #[test]
    fn alert_route_receiver_failing_goes_elsewhere() {
        let mut r = routing();
        r.routes.clear();
        r.default_receivers = vec!["chat".into()];
        let l = labels(&[("alertname", RECEIVER_FAILING_RULE), ("receiver", "chat")]);
        let names: Vec<String> = r
            .targets(&l, None, 0)
            .into_iter()
            .map(|t| t.receiver)
            .collect();
        assert_eq!(names, ["pager", "web-team"]);
    }

    #[test]
    fn alert_route_group_all_labels() {
        let k1 = group_key("d", &GroupBy::All, &labels(&[("a", "1"), ("b", "2")]));
        let k2 = group_key("d", &GroupBy::All, &labels(&[("a", "1"), ("b", "3")]));
        assert_ne!(k1, k2);
    }

    #[test]
    fn alert_inhibit_host_down_and_crashloop() {
        let rules = InhibitRule::builtin();
        let down = labels(&[("alertname", "host_down"), ("host", "a")]);
        let cpu_a = labels(&[("alertname", "host_cpu_high"), ("host", "a")]);
        let cpu_b = labels(&[("alertname", "host_cpu_high"), ("host", "b")]);
        let firing = [down.clone()];
        assert!(inhibited(&rules, &cpu_a, firing.iter()));
        assert!(!inhibited(&rules, &cpu_b, firing.iter()));
        assert!(
            !inhibited(&rules, &down, firing.iter()),
            "never mutes itself"
        );
        let loop_s = labels(&[
            ("alertname", "mcp_server_crashlooping"),
            ("host", "a"),
            ("server", "s"),
        ]);
        let probe = labels(&[
            ("alertname", "mcp_server_unhealthy"),
            ("host", "a"),
            ("server", "s"),
        ]);
        let probe_other = labels(&[
            ("alertname", "mcp_server_unhealthy"),
            ("host", "a"),
            ("server", "t"),
        ]);
        let firing = [loop_s];
        assert!(inhibited(&rules, &probe, firing.iter()));
        assert!(!inhibited(&rules, &probe_other, firing.iter()));
    }

    #[test]
    fn alert_silence_window_and_validation() {
        let spec = SilenceSpec {
            matchers: r#"{host="a"}"#.into(),
            starts_ms: 100,
            ends_ms: 200,
            author: "ops".into(),
            comment: "maintenance".into(),
        };
        let s = Silence {
            id: 1,
            matchers: spec.compile().unwrap(),
            spec: spec.clone(),
        };
        let l = labels(&[("host", "a")]);
        assert!(!s.mutes(&l, 99));
        assert!(s.mutes(&l, 100));
        assert!(!s.mutes(&l, 200));
        assert!(!s.mutes(&labels(&[("host", "b")]), 150));
        let mut bad = spec.clone();
        bad.matchers = "{}".into();
        assert!(bad.compile().is_err());
        let mut bad = spec.clone();
        bad.ends_ms = 50;
        assert!(bad.compile().is_err());
        let mut bad = spec;
        bad.matchers = "host=a".into();
        assert!(bad.compile().is_err());
    }
}
