//! The live feed behind `GET /api/v1/stream`: one task reads what was committed since its
//! last look (`store::query::changes`) every `[api] stream_poll_interval` and publishes each
//! change once, to every open stream, through one bounded broadcast channel. It keeps the
//! newest changes in a ring so a reconnecting browser resumes where it left off
//! (`Last-Event-ID`). Each change carries the scope a caller needs to see it; the stream
//! filters with the same checks as the list endpoints.
//!
//! Why polling, not publishing from the writer: the feed only ever sees committed rows (no
//! rollback bookkeeping), the writer's hot path stays untouched, and the cost is a few
//! pooled reads a second however many browsers watch.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::auth::Permission;
use crate::metrics::CollectorMetrics;
use crate::store::query::changes::{Changes, Cursors, HostState};
use crate::store::Store;

/// Changes kept for resuming, and the broadcast channel's depth: a stream further behind
/// than this is told to reload (`reset`) instead of being buffered without bound.
pub const RING: usize = 4096;
/// Rows read per table per poll; a full read polls again at once.
const READ_LIMIT: usize = 1000;

/// Who may see a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeScope {
    /// A host's object: the permission must cover that host (`labels`: its stored labels
    /// JSON, `None` for a host the collector never saw).
    Host {
        permission: Permission,
        agent_id: String,
        labels: Option<String>,
    },
    /// The permission on some hosts or all (lists the caller then reads are filtered).
    Any(Permission),
    /// The permission on every host (fleet-wide configuration and administration).
    Global(Permission),
}

/// One published change: an invalidation hint. Its payload names what changed and holds
/// nothing the caller's list endpoints would not show it.
#[derive(Debug)]
pub struct Change {
    /// Per-process sequence number, from 1.
    pub seq: u64,
    /// The server-sent event's name: `host`, `event`, `alert` or `change`.
    pub event: &'static str,
    /// JSON payload.
    pub data: String,
    pub scope: ChangeScope,
}

/// Where a resuming stream starts.
pub struct Resume {
    /// Changes after the client's last id, oldest first.
    pub replay: Vec<Arc<Change>>,
    /// The client's last id is unknown (another process, or too old): it must reload.
    pub reset: bool,
    pub live: broadcast::Receiver<Arc<Change>>,
}

struct Shared {
    ring: VecDeque<Arc<Change>>,
    next_seq: u64,
}

/// Handle to the feed: cheap to clone, shared by the feed task and every stream.
#[derive(Clone)]
pub struct Feed {
    /// Random per process: an event id from an earlier process never resumes here.
    boot: Arc<str>,
    sender: broadcast::Sender<Arc<Change>>,
    shared: Arc<Mutex<Shared>>,
}

impl Feed {
    pub fn new() -> Feed {
        let boot = fastrand::u64(..);
        Feed {
            boot: format!("{boot:016x}").into(),
            sender: broadcast::channel(RING).0,
            shared: Arc::new(Mutex::new(Shared {
                ring: VecDeque::with_capacity(RING),
                next_seq: 1,
            })),
        }
    }

    /// The server-sent event id of `seq`: `<boot>-<seq>`.
    pub fn event_id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.boot)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // The ring holds only published changes; a poisoned lock leaves it consistent.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes a change to every stream and keeps it for resuming.
    pub fn publish(&self, event: &'static str, data: serde_json::Value, scope: ChangeScope) {
        let mut shared = self.lock();
        let change = Arc::new(Change {
            seq: shared.next_seq,
            event,
            data: data.to_string(),
            scope,
        });
        shared.next_seq += 1;
        if shared.ring.len() == RING {
            shared.ring.pop_front();
        }
        shared.ring.push_back(change.clone());
        // No stream open is not an error: the ring still keeps it.
        let _ = self.sender.send(change);
    }

    /// Subscribes, replaying what came after `last_event_id` when this process published
    /// it and the ring still holds everything since. Subscribing and reading the ring
    /// happen under one lock with publishing, so nothing is missed or seen twice.
    pub fn resume(&self, last_event_id: Option<&str>) -> Resume {
        let shared = self.lock();
        let live = self.sender.subscribe();
        let Some(last) = last_event_id else {
            return Resume {
                replay: Vec::new(),
                reset: false,
                live,
            };
        };
        let seq = last
            .split_once('-')
            .filter(|(boot, _)| *boot == &*self.boot)
            .and_then(|(_, seq)| seq.parse::<u64>().ok())
            .filter(|seq| *seq < shared.next_seq);
        let oldest = shared.ring.front().map_or(shared.next_seq, |c| c.seq);
        match seq {
            // Everything after `seq` is still in the ring.
            Some(seq) if seq + 1 >= oldest => Resume {
                replay: shared
                    .ring
                    .iter()
                    .filter(|c| c.seq > seq)
                    .cloned()
                    .collect(),
                reset: false,
                live,
            },
            _ => Resume {
                replay: Vec::new(),
                reset: true,
                live,
            },
        }
    }
}

impl Default for Feed {
    fn default() -> Self {
        Feed::new()
    }
}

/// Reads committed changes every `poll` and publishes them until `stop`. A failed read is
/// counted and retried at the next poll; the cursors only move past what was published.
pub async fn run(
    store: Store,
    feed: Feed,
    metrics: Arc<CollectorMetrics>,
    poll: Duration,
    stop: CancellationToken,
) {
    let mut cursors = loop {
        match store.change_cursors().await {
            Ok(c) => break c,
            Err(e) => {
                metrics.feed_failures.inc();
                tracing::warn!(error = %e, "live feed: reading its starting point failed");
            }
        }
        if !crate::polling::pause(poll, &stop).await {
            return;
        }
    };
    let mut hosts: Option<HashMap<String, HostState>> = None;
    loop {
        let more = match store.changes_after(cursors, READ_LIMIT).await {
            Ok(changes) => {
                let full = [
                    changes.events.len(),
                    changes.alerts.len(),
                    changes.audit.len(),
                ]
                .contains(&READ_LIMIT);
                cursors = publish_changes(&feed, changes, cursors, &mut hosts);
                full
            }
            Err(e) => {
                metrics.feed_failures.inc();
                tracing::warn!(error = %e, "live feed: reading changes failed");
                false
            }
        };
        if !crate::polling::next(more, poll, &stop).await {
            return;
        }
    }
}

/// Publishes one read's changes and returns the cursors after them. `hosts` is the host
/// state seen last time (`None` on the first read, which publishes no host changes).
fn publish_changes(
    feed: &Feed,
    changes: Changes,
    mut cursors: Cursors,
    hosts: &mut Option<HashMap<String, HostState>>,
) -> Cursors {
    let now: HashMap<String, HostState> = changes
        .hosts
        .into_iter()
        .map(|h| (h.agent_id.clone(), h))
        .collect();
    if let Some(before) = hosts.as_ref() {
        for (agent_id, h) in &now {
            if before.get(agent_id) != Some(h) {
                feed.publish(
                    "host",
                    json!({ "host": agent_id, "online": h.online, "revoked": h.revoked }),
                    host_scope(Permission::HostsRead, agent_id, &now),
                );
            }
        }
    }
    for e in changes.events {
        cursors.event = e.id;
        feed.publish(
            "event",
            json!({ "id": e.id, "host": e.agent_id, "server": e.server, "kind": e.kind,
                    "ts_ms": e.ts_ms }),
            host_scope(Permission::HostsRead, &e.agent_id, &now),
        );
    }
    for a in changes.alerts {
        cursors.alert = a.id;
        let host = serde_json::from_str::<HashMap<String, String>>(&a.labels)
            .ok()
            .and_then(|mut l| l.remove("host"));
        let scope = match host {
            Some(h) => host_scope(Permission::AlertsRead, &h, &now),
            None => ChangeScope::Global(Permission::AlertsRead),
        };
        feed.publish(
            "alert",
            json!({ "fingerprint": a.fingerprint, "rule": a.rule, "from": a.from_state,
                    "to": a.to_state, "at_ms": a.at_ms }),
            scope,
        );
    }
    for a in changes.audit {
        cursors.audit = a.id;
        if let Some((topic, scope)) = a.applied.then(|| topic(&a.action)).flatten() {
            feed.publish("change", json!({ "topic": topic }), scope);
        }
    }
    *hosts = Some(now);
    cursors
}

fn host_scope(
    permission: Permission,
    agent_id: &str,
    hosts: &HashMap<String, HostState>,
) -> ChangeScope {
    ChangeScope::Host {
        permission,
        agent_id: agent_id.to_owned(),
        labels: hosts.get(agent_id).map(|h| h.labels.clone()),
    }
}

/// Which console list a successful mutation invalidates, and who may read that list, from
/// the audit row's action (`METHOD /api/v1/route`). Host changes (labels, revocation) and
/// alert transitions come through their own tables.
fn topic(action: &str) -> Option<(&'static str, ChangeScope)> {
    let (method, route) = action.split_once(' ')?;
    if matches!(method, "GET" | "HEAD" | "OPTIONS") {
        return None;
    }
    // Requests that change nothing a list shows.
    if route == "/api/v1/rules/dry-run" || route.ends_with("/test") {
        return None;
    }
    let resource = route.strip_prefix("/api/v1/")?.split('/').next()?;
    Some(match resource {
        "alerts" => ("alerts", ChangeScope::Any(Permission::AlertsRead)),
        "silences" => ("silences", ChangeScope::Any(Permission::AlertsRead)),
        // The rules list needs alerts:read on every host.
        "rules" => ("rules", ChangeScope::Global(Permission::AlertsRead)),
        "receivers" => ("receivers", ChangeScope::Global(Permission::ReceiversWrite)),
        "users" | "roles" | "bindings" | "tokens" => {
            ("admin", ChangeScope::Global(Permission::UsersAdmin))
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::query::changes::AuditChange;
    use crate::store::query::events::EventRecord;

    fn host(agent_id: &str, online: bool) -> HostState {
        HostState {
            agent_id: agent_id.into(),
            online,
            revoked: false,
            labels: r#"{"team":"a"}"#.into(),
        }
    }

    #[test]
    fn a_stream_resumes_after_its_last_id_or_is_told_to_reset() {
        let feed = Feed::new();
        for i in 0..3 {
            feed.publish(
                "change",
                json!({ "i": i }),
                ChangeScope::Any(Permission::HostsRead),
            );
        }
        let r = feed.resume(Some(&feed.event_id(1)));
        assert!(!r.reset);
        assert_eq!(r.replay.iter().map(|c| c.seq).collect::<Vec<_>>(), [2, 3]);
        // Up to date: nothing to replay.
        let r = feed.resume(Some(&feed.event_id(3)));
        assert!(!r.reset && r.replay.is_empty());
        // Another process's id, a future one, garbage: reload.
        for id in ["0000000000000000-1", &feed.event_id(9), "x", ""] {
            assert!(feed.resume(Some(id)).reset, "{id}");
        }
        // New subscribers see what comes next, once.
        let mut r = feed.resume(None);
        feed.publish("change", json!({}), ChangeScope::Any(Permission::HostsRead));
        assert_eq!(r.live.try_recv().unwrap().seq, 4);
        assert!(r.live.try_recv().is_err());
    }

    #[test]
    fn an_id_older_than_the_ring_resets() {
        let feed = Feed::new();
        for _ in 0..RING + 2 {
            feed.publish("change", json!({}), ChangeScope::Any(Permission::HostsRead));
        }
        assert!(feed.resume(Some(&feed.event_id(1))).reset);
        let r = feed.resume(Some(&feed.event_id(2)));
        assert!(!r.reset);
        assert_eq!(r.replay.len(), RING);
    }

    #[test]
    fn host_changes_events_alerts_and_mutations_are_published_with_their_scope() {
        let feed = Feed::new();
        let mut r = feed.resume(None);
        let mut hosts = None;
        let first = Changes {
            hosts: vec![host("a", true)],
            ..Changes::default()
        };
        let c = publish_changes(&feed, first, Cursors::default(), &mut hosts);
        assert!(
            r.live.try_recv().is_err(),
            "the first read only seeds the host state"
        );
        let next = Changes {
            hosts: vec![host("a", false)],
            events: vec![EventRecord {
                id: 7,
                agent_id: "a".into(),
                ts_ms: 1,
                kind: "restarted".into(),
                server: Some("web".into()),
                detail: "{}".into(),
            }],
            audit: vec![
                AuditChange {
                    id: 3,
                    action: "POST /api/v1/silences".into(),
                    applied: true,
                },
                AuditChange {
                    id: 4,
                    action: "POST /api/v1/users".into(),
                    applied: false,
                },
            ],
            ..Changes::default()
        };
        let c = publish_changes(&feed, next, c, &mut hosts);
        assert_eq!(
            (c.event, c.audit),
            (7, 4),
            "refused mutations still move the cursor"
        );
        let got: Vec<_> = std::iter::from_fn(|| r.live.try_recv().ok()).collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].event, "host");
        assert!(got[0].data.contains(r#""online":false"#));
        assert_eq!(
            got[0].scope,
            ChangeScope::Host {
                permission: Permission::HostsRead,
                agent_id: "a".into(),
                labels: Some(r#"{"team":"a"}"#.into())
            }
        );
        assert_eq!(got[1].event, "event");
        assert!(got[1].data.contains(r#""kind":"restarted""#));
        assert_eq!(got[2].data, r#"{"topic":"silences"}"#);
    }

    #[test]
    fn mutations_map_to_the_list_they_change() {
        assert_eq!(
            topic("POST /api/v1/alerts/{fingerprint}/ack").unwrap().0,
            "alerts"
        );
        assert_eq!(
            topic("DELETE /api/v1/tokens/{id}").unwrap().1,
            ChangeScope::Global(Permission::UsersAdmin)
        );
        assert!(topic("GET /api/v1/silences").is_none());
        assert!(topic("POST /api/v1/rules/dry-run").is_none());
        assert!(topic("POST /api/v1/receivers/{name}/test").is_none());
        assert_eq!(
            topic("PUT /api/v1/rules/{name}").unwrap().1,
            ChangeScope::Global(Permission::AlertsRead)
        );
        assert!(topic("POST /api/v1/sessions").is_none());
        assert!(topic("garbage").is_none());
    }
}
