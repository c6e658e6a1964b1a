//! The hosts, servers, events, metrics and federation routes of the collector's API against
//! the real binary: simulated agents (raw protocol over mutual TLS) stream series, events
//! and answer (or ignore) commands; the API is read with an admin token and with users
//! bound to one team's hosts. Covers scoping (other teams' hosts answer 404 and the denial
//! is audited), labels, revocation cutting a live session, `query_range` tier choice and
//! point cap, server control (answered, timed out, offline, unknown, revoked), and
//! `/federate` with and without its bearer token, checked by `promtool check metrics` and
//! scraped by a real Prometheus.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mcpwatch_collector::auth::password;
use mcpwatch_collector::now_ms;
use mcpwatch_collector::store::admin;
use mcpwatch_collector::store::query::{roles, users};
use mcpwatch_common::wire::{Batch, CommandResult, Event, Frame, RejectReason, Sample, SeriesKey};
use mcpwatch_tests::api::{admin_token, request, Api, Resp};
use mcpwatch_tests::client::{self, Conn};
use mcpwatch_tests::process::CollectorProc;
use mcpwatch_tests::sim::{AckWait, SimAgent};
use mcpwatch_tests::{free_addr, http_get, promtool_check, wait_for, Pki};
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};
use tokio::runtime::Runtime;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

// ---- fixture ---------------------------------------------------------------------------------

/// A temp dir, PKI, a collector and an admin API client.
struct Fleet {
    rt: Runtime,
    admin: Api,
    c: CollectorProc,
    pki: Pki,
    tmp: tempfile::TempDir,
}

impl Fleet {
    /// A collector with `extra` TOML (whole tables) in its config.
    fn start(extra: &str) -> Fleet {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(&tmp.path().join("pki"));
        let c = CollectorProc::start(&pki, &tmp.path().join("c"), extra);
        let admin = Api::new(c.http, Some(&admin_token(&c.db, "admin", None)));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        Fleet {
            rt,
            admin,
            c,
            pki,
            tmp,
        }
    }

    fn tls(&self, agent: &str) -> Arc<rustls::ClientConfig> {
        let certs = self.pki.agent(agent);
        client::config(&self.pki.ca(), &certs.cert, &certs.key)
    }

    /// Connects a simulated agent (Hello → Welcome).
    fn agent(&self, name: &str) -> SimAgent {
        let tls = self.tls(name);
        self.rt
            .block_on(SimAgent::connect(self.c.ingest, tls, name))
            .first_series_id(0)
            .ack_wait(AckWait::SkipOthers)
    }

    /// The answer to a Hello from a new connection of `name`.
    fn hello(&self, name: &str) -> Frame {
        let tls = self.tls(name);
        let ingest = self.c.ingest;
        self.rt.block_on(async move {
            let mut conn = Conn::open(ingest, tls).await.expect("connect");
            conn.handshake(Conn::hello(name)).await.expect("hello")
        })
    }

    /// A user bound to `role` on `selector`, and a token of theirs.
    fn user(&self, name: &str, role: &str, selector: &str) -> Api {
        let hash = password::hash("correct horse battery staple").expect("hash");
        let uid = admin::with_db(&self.c.db, |c| {
            let uid = users::create_user(c, name, &hash, now_ms())?;
            roles::bind(c, uid, role, selector, now_ms())?;
            Ok(uid)
        })
        .expect("create user");
        Api::new(
            self.c.http,
            Some(&admin_token(
                &self.c.db,
                &format!("{name}-token"),
                Some(uid),
            )),
        )
    }

    /// Labels three agents: web-1 and web-2 in team a, db-1 in team b.
    fn label_teams(&self) {
        for (host, team) in [("web-1", "a"), ("web-2", "a"), ("db-1", "b")] {
            let r = self.admin.send(
                "PUT",
                &format!("/api/v1/hosts/{host}/labels"),
                &json!({"labels": {"team": team, "env": "prod"}}),
            );
            assert_eq!(r.status, 200, "{host}: {}", r.body);
        }
    }

    fn db(&self) -> Connection {
        let c = Connection::open_with_flags(&self.c.db, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open db");
        c.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        c
    }

    /// `(actor, action, object, result, detail)` of every audit row.
    fn audit(&self) -> Vec<(String, String, String, i64, String)> {
        let c = self.db();
        let mut st = c
            .prepare("SELECT actor, action, object, result, detail FROM audit_log ORDER BY id")
            .expect("prepare");
        st.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
    }
}

/// Answers every command with ok and a message naming it, until the stream ends.
async fn answer_commands(mut agent: SimAgent) {
    while let Ok(f) = agent.conn.recv().await {
        if let Frame::Command(c) = f {
            let reply = Frame::CommandResult(CommandResult {
                id: c.id,
                ok: true,
                message: format!("done: {:?}", c.action),
            });
            if agent.conn.send(reply).await.is_err() {
                return;
            }
        }
    }
}

fn key(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
    SeriesKey::new(name, labels)
}

/// Host figures at `now` for any agent.
fn host_samples(now: i64, load: f64) -> Vec<(SeriesKey, i64, f64)> {
    vec![
        (key("mcpwatch_host_load1", &[]), now, load),
        (
            key("mcpwatch_host_cpu_usage_ratio", &[("cpu", "total")]),
            now,
            0.25,
        ),
        (
            key("mcpwatch_host_cpu_usage_ratio", &[("cpu", "0")]),
            now,
            0.5,
        ),
        (
            key(
                "mcpwatch_host_network_receive_bytes_total",
                &[("interface", "lo")],
            ),
            now,
            12345.0,
        ),
    ]
}

/// The figures of MCP server `fs`: running, healthy, 2 restarts, 5 tools, drifted.
fn server_samples(now: i64) -> Vec<(SeriesKey, i64, f64)> {
    let s = |name: &str, extra: &[(&str, &str)], v: f64| {
        let mut labels = vec![("server", "fs")];
        labels.extend_from_slice(extra);
        (key(name, &labels), now, v)
    };
    vec![
        s("mcpwatch_server_up", &[], 1.0),
        s("mcpwatch_server_healthy", &[], 1.0),
        s("mcpwatch_server_state", &[("state", "running")], 1.0),
        s("mcpwatch_server_state", &[("state", "exited")], 0.0),
        s("mcpwatch_server_restarts_total", &[], 2.0),
        s("mcpwatch_server_probe_up", &[], 1.0),
        s(
            "mcpwatch_server_probe_latency_seconds",
            &[("stage", "initialize")],
            0.012,
        ),
        s(
            "mcpwatch_server_probe_latency_seconds",
            &[("stage", "tools_list")],
            0.004,
        ),
        s(
            "mcpwatch_server_probe_latency_seconds",
            &[("stage", "ping")],
            0.001,
        ),
        s("mcpwatch_server_tools", &[], 5.0),
        s("mcpwatch_server_tool_drift", &[], 1.0),
        s(
            "mcpwatch_server_info",
            &[
                ("protocol_version", "2026-07-28"),
                ("server_name", "files"),
                ("server_version", "1.0"),
            ],
            1.0,
        ),
    ]
}

fn server_event(ts: i64, kind: &str, detail: &str) -> Event {
    Event::Server {
        ts_ms: ts,
        server: "fs".into(),
        kind: kind.into(),
        detail: detail.into(),
    }
}

/// Percent-encodes a query parameter value.
fn enc(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn agents_of(r: &Resp) -> Vec<String> {
    r.json()["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {}", r.body))
        .iter()
        .map(|h| h["agent_id"].as_str().expect("agent_id").to_owned())
        .collect()
}

/// Streams the usual data of web-1, web-2 and db-1 and labels them by team.
fn three_hosts(f: &Fleet) -> (SimAgent, SimAgent, SimAgent) {
    let now = now_ms();
    let mut web1 = f.agent("web-1");
    let mut web2 = f.agent("web-2");
    let mut db1 = f.agent("db-1");
    f.rt.block_on(async {
        let mut s = host_samples(now, 1.5);
        s.extend(server_samples(now));
        web1.push(
            &s,
            vec![
                server_event(now - 2000, "created", "container abc created"),
                server_event(now - 1000, "started", "container abc started"),
                server_event(now, "probe_ok", "tools=5"),
            ],
        )
        .await;
        web2.push(&host_samples(now, 2.5), Vec::new()).await;
        db1.push(
            &host_samples(now, 3.5),
            vec![Event::Server {
                ts_ms: now,
                server: "pg".into(),
                kind: "started".into(),
                detail: "db".into(),
            }],
        )
        .await;
    });
    f.label_teams();
    (web1, web2, db1)
}

// ---- tests -------------------------------------------------------------------------------------

#[test]
fn api_hosts_list_detail_labels_scoping_and_events() {
    let f = Fleet::start("");
    let (_web1, _web2, _db1) = three_hosts(&f);

    // Admin: every host, detail fields, labels as set.
    let r = f.admin.get("/api/v1/hosts");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(agents_of(&r), ["web-1", "web-2", "db-1"]);
    let r = f.admin.get("/api/v1/hosts/web-1");
    assert_eq!(r.status, 200);
    let h = r.json();
    assert_eq!(h["agent_id"], "web-1");
    assert_eq!(h["hostname"], "test-host");
    assert_eq!(h["agent_version"], "test");
    assert_eq!(h["online"], true);
    assert_eq!(h["revoked"], false);
    assert_eq!(h["labels"], json!({"team": "a", "env": "prod"}));
    assert!(h["first_seen_ms"].as_i64().expect("first_seen") > 0);
    assert!(h["last_seen_ms"].as_i64().expect("last_seen") > 0);
    assert_eq!(f.admin.get("/api/v1/hosts/nope").status, 404);

    // Cursor paging.
    let p1 = f.admin.get("/api/v1/hosts?limit=2");
    assert_eq!(agents_of(&p1), ["web-1", "web-2"]);
    let cursor = p1.json()["next_cursor"].as_i64().expect("next_cursor");
    let p2 = f
        .admin
        .get(&format!("/api/v1/hosts?limit=2&cursor={cursor}"));
    assert_eq!(agents_of(&p2), ["db-1"]);
    assert!(p2.json()["next_cursor"].is_null());
    assert_eq!(f.admin.get("/api/v1/hosts?limit=100000").status, 400);

    // Label validation.
    for bad in [
        json!({"labels": {"host": "x"}}),
        json!({"labels": {"1abc": "x"}}),
        json!({"labels": {"a-b": "x"}}),
        json!({"labels": {"a": "v".repeat(257)}}),
        json!({"labels": (0..65).map(|i| (format!("l{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
    ] {
        let r = f.admin.send("PUT", "/api/v1/hosts/web-1/labels", &bad);
        assert_eq!(r.status, 422, "{bad}: {}", r.body);
        assert_eq!(r.code(), "invalid", "{}", r.body);
    }
    // Bodies of the wrong shape do not fit the document (400).
    for bad in [
        json!({"labels": {"a": 1}}),
        json!({"labels": {}, "extra": true}),
        json!({"labels": ["team"]}),
    ] {
        let r = f.admin.send("PUT", "/api/v1/hosts/web-1/labels", &bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    assert_eq!(
        f.admin.get("/api/v1/hosts/web-1").json()["labels"]["team"],
        "a"
    );
    let r = f.admin.send(
        "PUT",
        "/api/v1/hosts/nope/labels",
        &json!({"labels": {"team": "a"}}),
    );
    assert_eq!(r.status, 404);

    // A viewer of team a sees only team a's hosts; team b's answer 404, audited.
    let alice = f.user("alice", "viewer", r#"{team="a"}"#);
    assert_eq!(agents_of(&alice.get("/api/v1/hosts")), ["web-1", "web-2"]);
    assert_eq!(alice.get("/api/v1/hosts/web-1").status, 200);
    let r = alice.get("/api/v1/hosts/db-1");
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.code(), "not_found");
    assert_eq!(alice.get("/api/v1/hosts/db-1/servers").status, 404);
    assert_eq!(alice.get("/api/v1/events?host=db-1").status, 404);
    // Viewer has no hosts:write at all: 403.
    let r = alice.send(
        "PUT",
        "/api/v1/hosts/web-1/labels",
        &json!({"labels": {"team": "b"}}),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = alice.send("POST", "/api/v1/hosts/web-1/revoke", &json!({}));
    assert_eq!(r.status, 403);

    // A team-a admin may relabel its own hosts but not hand them to team b, nor touch b's.
    let carol = f.user("carol", "admin", r#"{team="a"}"#);
    let r = carol.send(
        "PUT",
        "/api/v1/hosts/web-2/labels",
        &json!({"labels": {"team": "a", "tier": "edge"}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["labels"], json!({"team": "a", "tier": "edge"}));
    let r = carol.send(
        "PUT",
        "/api/v1/hosts/web-2/labels",
        &json!({"labels": {"team": "b"}}),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = carol.send(
        "PUT",
        "/api/v1/hosts/db-1/labels",
        &json!({"labels": {"team": "a"}}),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(
        f.admin.get("/api/v1/hosts/db-1").json()["labels"]["team"],
        "b"
    );

    // Relabelling cannot widen the caller's reach: dave labels team a's hosts but controls
    // servers only on team a's staging hosts, so he may not mark a host staging.
    use mcpwatch_collector::auth::{permission_names, Permission};
    admin::with_db(&f.c.db, |c| {
        roles::put_role(
            c,
            "labeler",
            &permission_names(&[Permission::HostsRead, Permission::HostsWrite]),
            now_ms(),
        )
    })
    .expect("role");
    let dave = f.user("dave", "labeler", r#"{team="a"}"#);
    admin::with_db(&f.c.db, |c| {
        let id = users::existing_user_id(c, "dave")?;
        roles::bind(c, id, "operator", r#"{team="a", tier="staging"}"#, now_ms())
    })
    .expect("bind");
    let r = dave.send(
        "PUT",
        "/api/v1/hosts/web-2/labels",
        &json!({"labels": {"team": "a", "tier": "staging"}}),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = dave.send(
        "PUT",
        "/api/v1/hosts/web-2/labels",
        &json!({"labels": {"team": "a", "tier": "canary"}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // Events: scoped, filtered, paged newest first.
    let r = f.admin.get("/api/v1/events?host=web-1");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let kinds: Vec<&str> = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["probe_ok", "started", "created"]);
    let items = r.json()["items"].clone();
    assert_eq!(items[1]["server"], "fs");
    assert_eq!(items[1]["host"], "web-1");
    assert_eq!(items[1]["detail"]["detail"], "container abc started");
    let r = f.admin.get("/api/v1/events?kind=started");
    assert_eq!(r.json()["items"].as_array().expect("items").len(), 2);
    // Several kinds at once.
    let r = f
        .admin
        .get("/api/v1/events?host=web-1&kind=created,started");
    let kinds: Vec<String> = r.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind").to_owned())
        .collect();
    assert_eq!(kinds, ["started", "created"]);
    for bad in [
        "started,",
        ",",
        "started,%20exited",
        "",
        &vec!["a"; 17].join(","),
    ] {
        let r = f.admin.get(&format!("/api/v1/events?kind={bad}"));
        assert_eq!(r.status, 400, "kind={bad}: {}", r.body);
    }
    let r = f.admin.get("/api/v1/events?server=pg");
    assert_eq!(r.json()["items"][0]["host"], "db-1");
    let since = items[0]["ts_ms"].as_i64().expect("ts");
    let r = f
        .admin
        .get(&format!("/api/v1/events?host=web-1&since_ms={since}"));
    assert_eq!(r.json()["items"].as_array().expect("items").len(), 1);
    let p1 = f.admin.get("/api/v1/events?host=web-1&limit=2");
    assert_eq!(p1.json()["items"].as_array().expect("items").len(), 2);
    let cursor = p1.json()["next_cursor"].as_i64().expect("cursor");
    let p2 = f.admin.get(&format!(
        "/api/v1/events?host=web-1&limit=2&cursor={cursor}"
    ));
    assert_eq!(p2.json()["items"][0]["kind"], "created");
    assert!(p2.json()["next_cursor"].is_null());
    let hosts: Vec<String> = alice.get("/api/v1/events").json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["host"].as_str().expect("host").to_owned())
        .collect();
    assert_eq!(hosts.len(), 3);
    assert!(hosts.iter().all(|h| h == "web-1"), "{hosts:?}");

    // Audit: the relabelling, the refused relabel and the hidden host.
    let audit = f.audit();
    assert!(
        audit.iter().any(
            |(actor, action, object, result, detail)| actor == "token:admin"
                && action == "PUT /api/v1/hosts/{agent_id}/labels"
                && object == "/api/v1/hosts/db-1/labels"
                && *result == 200
                && detail.contains(r#""team":"b""#)
        ),
        "{audit:#?}"
    );
    for (actor, object, result) in [
        ("user:alice", "/api/v1/hosts/db-1", 404),
        ("user:alice", "/api/v1/hosts/web-1/labels", 403),
        ("user:carol", "/api/v1/hosts/web-2/labels", 403),
        ("user:carol", "/api/v1/hosts/db-1/labels", 404),
    ] {
        assert!(
            audit
                .iter()
                .any(|(a, _, o, r, _)| a == actor && o == object && *r == result),
            "no audit row {actor} {object} {result}: {audit:#?}"
        );
    }
}

#[test]
fn api_hosts_series_and_query_range_tiers_and_cap() {
    let f = Fleet::start("");
    let (_web1, _web2, _db1) = three_hosts(&f);
    // 30 minutes of load at 10 s, value = sample index, on web-1; a minute-aligned start.
    let now = now_ms();
    let t0 = (now - 31 * MINUTE) - (now - 31 * MINUTE).rem_euclid(MINUTE);
    let load = key("mcpwatch_host_load5", &[]);
    let samples: Vec<(SeriesKey, i64, f64)> = (0..180)
        .map(|i| (load.clone(), t0 + i * 10_000, i as f64))
        .collect();
    let mut web1 = f.agent("web-1");
    f.rt.block_on(web1.push(&samples, Vec::new()));

    // Series search.
    let r = f.admin.get("/api/v1/series?host=web-1");
    assert_eq!(r.status, 200, "{}", r.body);
    let n_web1 = r.json()["items"].as_array().expect("items").len();
    assert_eq!(n_web1, 4 + 12 + 1);
    let r = f.admin.get(&format!(
        "/api/v1/series?name=mcpwatch_host_cpu_usage_ratio&match={}",
        enc(r#"{cpu="total"}"#)
    ));
    let items = r.json()["items"].clone();
    assert_eq!(items.as_array().expect("items").len(), 3, "{}", r.body);
    assert_eq!(items[0]["labels"]["cpu"], "total");
    let r = f.admin.get(&format!(
        "/api/v1/series?match={}",
        enc(r#"{host=~"web-.*",cpu="0"}"#)
    ));
    assert_eq!(r.json()["items"].as_array().expect("items").len(), 2);
    let p1 = f.admin.get("/api/v1/series?host=web-1&limit=5");
    let cursor = p1.json()["next_cursor"].as_i64().expect("cursor");
    let p2 = f.admin.get(&format!(
        "/api/v1/series?host=web-1&limit=100&cursor={cursor}"
    ));
    assert_eq!(
        p2.json()["items"].as_array().expect("items").len(),
        n_web1 - 5
    );
    let bad = f
        .admin
        .get(&format!("/api/v1/series?match={}", enc("{cpu=")));
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert_eq!(f.admin.get("/api/v1/series?host=nope").status, 404);
    let alice = f.user("alice", "viewer", r#"{team="a"}"#);
    let r = alice.get("/api/v1/series?name=mcpwatch_host_load1");
    let v = r.json();
    let hosts: Vec<&str> = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|s| s["host"].as_str().expect("host"))
        .collect();
    assert_eq!(hosts, ["web-1", "web-2"], "{}", r.body);
    assert_eq!(alice.get("/api/v1/series?host=db-1").status, 404);

    let range = |api: &Api, start: i64, end: i64, step: i64, extra: &str| -> Resp {
        api.get(&format!(
            "/api/v1/query_range?host=web-1&name=mcpwatch_host_load5&start_ms={start}&end_ms={end}&step_ms={step}{extra}"
        ))
    };
    // 30 minutes: raw, 30 one-minute points of 6 samples each.
    let end = t0 + 30 * MINUTE - 1;
    let r = range(&f.admin, t0, end, MINUTE, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["tier"], "raw");
    assert_eq!(v["agg"], "avg");
    let series = v["series"].as_array().expect("series");
    assert_eq!(series.len(), 1);
    assert_eq!(series[0]["labels"], json!({"host": "web-1"}));
    let points = series[0]["points"].as_array().expect("points");
    assert_eq!(points.len(), 30);
    for (k, p) in points.iter().enumerate() {
        let k = k as i64;
        assert_eq!(p[0].as_i64(), Some(t0 + k * MINUTE));
        assert_eq!(p[1].as_f64(), Some(6.0 * k as f64 + 2.5), "{p}");
    }
    let r = range(&f.admin, t0, end, MINUTE, "&agg=max");
    assert_eq!(r.json()["series"][0]["points"][3][1].as_f64(), Some(23.0));

    // Longer ranges come from the rollups (plus the raw rows not folded yet): the same
    // samples, whichever tier.
    let total = |r: &Resp| -> f64 {
        r.json()["series"][0]["points"]
            .as_array()
            .unwrap_or_else(|| panic!("no points: {}", r.body))
            .iter()
            .map(|p| p[1].as_f64().expect("value"))
            .sum()
    };
    for (span, step, tier) in [
        (30 * MINUTE, MINUTE, "raw"),
        (2 * DAY, 10 * MINUTE, "1m"),
        (10 * DAY, HOUR, "1h"),
    ] {
        let start = end - span;
        let c = range(&f.admin, start, end, step, "&agg=count");
        assert_eq!(c.status, 200, "{}", c.body);
        assert_eq!(c.json()["tier"], tier, "{span} ms");
        assert_eq!(total(&c), 180.0, "{tier}: {}", c.body);
        let s = range(&f.admin, start, end, step, "&agg=sum");
        assert_eq!(total(&s), (0..180).sum::<i64>() as f64, "{tier}");
    }

    // Once the writer has folded those rows into the rollups (a host's rows ripen after
    // ~30 s), the rollup tiers read the buckets plus the raw rows folded since: six more
    // samples, not folded yet, must show up on every tier exactly once.
    let sid = f
        .admin
        .get("/api/v1/series?host=web-1&name=mcpwatch_host_load5")
        .json()["items"][0]["id"]
        .as_i64()
        .expect("series id");
    wait_for("rollups folded", Duration::from_secs(90), || {
        let n: i64 = f
            .db()
            .query_row(
                "SELECT count(*) FROM rollup_1m WHERE series_id = ?1",
                [sid],
                |r| r.get(0),
            )
            .ok()?;
        (n >= 30).then_some(())
    });
    let more: Vec<(SeriesKey, i64, f64)> = (180..186)
        .map(|i| (load.clone(), t0 + i * 10_000, i as f64))
        .collect();
    f.rt.block_on(web1.push(&more, Vec::new()));
    let end = t0 + 31 * MINUTE - 1;
    for (span, step, tier) in [
        (31 * MINUTE, MINUTE, "raw"),
        (2 * DAY, 10 * MINUTE, "1m"),
        (10 * DAY, HOUR, "1h"),
    ] {
        let start = end - span;
        let c = range(&f.admin, start, end, step, "&agg=count");
        assert_eq!(c.status, 200, "{}", c.body);
        assert_eq!(c.json()["tier"], tier, "{span} ms after folding");
        assert_eq!(total(&c), 186.0, "{tier} after folding: {}", c.body);
        let s = range(&f.admin, start, end, step, "&agg=sum");
        assert_eq!(total(&s), (0..186).sum::<i64>() as f64, "{tier}");
    }
    let r = range(&f.admin, end - 2 * DAY, end, 10 * MINUTE, "&agg=max");
    let points = r.json()["series"][0]["points"].clone();
    let last = points.as_array().and_then(|p| p.last()).expect("points");
    assert_eq!(last[1].as_f64(), Some(185.0), "{}", r.body);

    // SQL metacharacters in every parameter: clear answers, nothing broken.
    let evil = "%27%20OR%20%271%27%3D%271%27%3B%20DROP%20TABLE%20hosts%3B--";
    for path in [
        "/api/v1/hosts",
        "/api/v1/events",
        "/api/v1/series",
        "/api/v1/query_range",
    ] {
        for p in [
            "host", "name", "match", "server", "kind", "since_ms", "limit", "cursor", "start_ms",
            "end_ms", "step_ms", "agg",
        ] {
            let r = f.admin.get(&format!("{path}?{p}={evil}"));
            assert!(
                r.status == 200 || (r.status < 500 && !r.code().is_empty()),
                "{path} {p}: {r:?}"
            );
        }
    }
    for path in [
        format!("/api/v1/hosts/{evil}"),
        format!("/api/v1/hosts/{evil}/servers"),
        format!("/api/v1/events?host={evil}"),
    ] {
        assert_eq!(f.admin.get(&path).status, 404, "{path}");
    }
    assert_eq!(agents_of(&f.admin.get("/api/v1/hosts")).len(), 3);

    // Validation and the point cap (default max_points 11000).
    for (start, end, step, extra) in [
        (t0, t0, MINUTE, ""),
        (t0, t0 - 1, MINUTE, ""),
        (t0, end, 0, ""),
        (t0, end, -5, ""),
        (t0, t0 + HOUR, 100, ""),
        (t0, end, MINUTE, "&agg=median"),
        (t0, end, MINUTE, "&match=%7Bcpu%3D"),
    ] {
        let r = range(&f.admin, start, end, step, extra);
        // An unknown aggregation does not fit the document (its enum): 400; the rest fit
        // it and are refused for their content: 422.
        let (status, code) = if extra.contains("agg") {
            (400, "bad_request")
        } else {
            (422, "invalid")
        };
        assert_eq!(r.status, status, "{start} {end} {step} {extra}: {}", r.body);
        assert_eq!(r.code(), code);
    }
    let r = range(&f.admin, t0, t0 + HOUR, 100, "");
    assert!(r.body.contains("11000"), "{}", r.body);
    assert_eq!(
        f.admin
            .get("/api/v1/query_range?host=web-1&name=mcpwatch_host_load5")
            .status,
        400
    );
    let r = f.admin.get(&format!(
        "/api/v1/query_range?host=web-1&name=mcpwatch_host_cpu_usage_ratio&match={}&start_ms={}&end_ms={}&step_ms=60000",
        enc(r#"{cpu="0"}"#),
        now - HOUR,
        now + MINUTE
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    let series = r.json()["series"].clone();
    assert_eq!(series.as_array().expect("series").len(), 1);
    assert_eq!(series[0]["labels"]["cpu"], "0");
    assert_eq!(series[0]["points"][0][1].as_f64(), Some(0.5));
    let r = f.admin.get(&format!(
        "/api/v1/query_range?host=db-1&name=mcpwatch_host_load1&start_ms={}&end_ms={}&step_ms=60000",
        now - HOUR,
        now + MINUTE
    ));
    assert_eq!(r.json()["series"][0]["points"][0][1].as_f64(), Some(3.5));
    // Scoped: team a's viewer cannot read db-1's history.
    let r = alice.get(&format!(
        "/api/v1/query_range?host=db-1&name=mcpwatch_host_load1&start_ms={}&end_ms={}&step_ms=60000",
        now - HOUR,
        now
    ));
    assert_eq!(r.status, 404, "{}", r.body);
    let r = f.admin.get(&format!(
        "/api/v1/query_range?host=nope&name=x&start_ms={}&end_ms={}&step_ms=60000",
        now - HOUR,
        now
    ));
    assert_eq!(r.status, 404);
}

#[test]
fn api_hosts_servers_control_and_revocation() {
    let f = Fleet::start("[api]\ncommand_timeout = \"2s\"\n");
    let (web1, mut web2, db1) = three_hosts(&f);

    // Server view from the latest samples and events.
    let r = f.admin.get("/api/v1/hosts/web-1/servers");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let servers = v.as_array().expect("servers");
    assert_eq!(servers.len(), 1, "{v}");
    let s = &servers[0];
    assert_eq!(s["name"], "fs");
    assert_eq!(s["state"], "running");
    assert_eq!(s["state_source"], "metric");
    assert_eq!(s["up"], true);
    assert_eq!(s["healthy"], true);
    assert_eq!(s["restarts"], 2);
    assert_eq!(s["tools"], 5);
    assert_eq!(s["drift"], true);
    assert_eq!(s["probe_up"], true);
    assert_eq!(
        s["probe_latency_seconds"],
        json!({"initialize": 0.012, "tools_list": 0.004, "ping": 0.001})
    );
    assert_eq!(s["protocol_version"], "2026-07-28");
    assert_eq!(s["server_name"], "files");
    assert_eq!(s["server_version"], "1.0");
    assert_eq!(s["events"][0]["kind"], "probe_ok");
    assert_eq!(s["events"].as_array().expect("events").len(), 3);
    // db-1 has only events for `pg`: its state comes from them.
    let r = f.admin.get("/api/v1/hosts/db-1/servers");
    assert_eq!(r.json()[0]["name"], "pg");
    assert_eq!(r.json()[0]["state"], "running");
    assert_eq!(r.json()[0]["state_source"], "event");
    assert_eq!(f.admin.get("/api/v1/hosts/web-2/servers").json(), json!([]));

    // web-1 answers commands.
    let answering = f.rt.spawn(answer_commands(web1));
    let r = f
        .admin
        .send("POST", "/api/v1/hosts/web-1/servers/fs/restart", &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["ok"], true);
    assert!(
        r.json()["message"]
            .as_str()
            .expect("message")
            .contains("RestartServer"),
        "{}",
        r.body
    );
    let r = f.admin.send(
        "POST",
        "/api/v1/hosts/web-1/servers/fs/approve-drift",
        &json!({}),
    );
    assert!(r.json()["message"]
        .as_str()
        .expect("message")
        .contains("ApproveDrift"));
    let r = f
        .admin
        .send("POST", "/api/v1/hosts/web-1/servers/fs/explode", &json!({}));
    assert_eq!(r.status, 400, "{}", r.body);
    // The agent's config reload travels the same way.
    let r = f
        .admin
        .send("POST", "/api/v1/hosts/web-1/reload", &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.json()["message"]
            .as_str()
            .expect("message")
            .contains("Reload"),
        "{}",
        r.body
    );

    // Scoped operator: own team's host yes, other team's 404; viewer 403.
    let bob = f.user("bob", "operator", r#"{team="a"}"#);
    let r = bob.send("POST", "/api/v1/hosts/web-1/servers/fs/stop", &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = bob.send("POST", "/api/v1/hosts/db-1/servers/pg/stop", &json!({}));
    assert_eq!(r.status, 404, "{}", r.body);
    let alice = f.user("alice", "viewer", "");
    let r = alice.send("POST", "/api/v1/hosts/web-1/servers/fs/start", &json!({}));
    assert_eq!(r.status, 403, "{}", r.body);

    // Unknown host: 404. An agent that went away: 503 agent_offline.
    let r = f
        .admin
        .send("POST", "/api/v1/hosts/nope/servers/fs/restart", &json!({}));
    assert_eq!(r.status, 404, "{}", r.body);
    drop(db1);
    wait_for("db-1 offline", Duration::from_secs(10), || {
        (f.admin.get("/api/v1/hosts/db-1").json()["online"] == false).then_some(())
    });
    let r = f
        .admin
        .send("POST", "/api/v1/hosts/db-1/servers/pg/restart", &json!({}));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.code(), "agent_offline");

    // web-2 is connected but never answers: 504 after the command timeout.
    let started = std::time::Instant::now();
    let r = f
        .admin
        .send("POST", "/api/v1/hosts/web-2/servers/fs/restart", &json!({}));
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(started.elapsed() >= Duration::from_millis(1900));
    assert!(started.elapsed() < Duration::from_secs(10));

    // Revoking web-2: no more commands, its live session ends at its next batch, new
    // connections are refused; unrevoking lets it back in.
    let r = f
        .admin
        .send("POST", "/api/v1/hosts/web-2/revoke", &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["revoked"], true);
    let r = f
        .admin
        .send("POST", "/api/v1/hosts/web-2/servers/fs/restart", &json!({}));
    assert_eq!(r.status, 409, "{}", r.body);
    let closed = f.rt.block_on(async {
        let batch = Frame::Batch(Batch {
            seq: web2.seq,
            new_series: Vec::new(),
            samples: vec![Sample {
                series: 0,
                ts_ms: now_ms(),
                value: 1.0,
            }],
            events: Vec::new(),
        });
        web2.conn.send(batch).await.expect("send");
        web2.conn.closed_within(Duration::from_secs(10)).await
    });
    assert!(
        closed,
        "the revoked agent's session survived its next batch"
    );
    match f.hello("web-2") {
        Frame::Reject(r) => assert_eq!(r.reason, RejectReason::Revoked),
        other => panic!("expected Reject(Revoked), got {other:?}"),
    }
    let r = f
        .admin
        .send("POST", "/api/v1/hosts/web-2/unrevoke", &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["revoked"], false);
    assert!(matches!(f.hello("web-2"), Frame::Welcome(_)));

    let audit = f.audit();
    for (action, object, result, detail) in [
        (
            "POST /api/v1/hosts/{agent_id}/servers/{server}/{action}",
            "/api/v1/hosts/web-1/servers/fs/restart",
            200,
            "ok=true",
        ),
        (
            "POST /api/v1/hosts/{agent_id}/servers/{server}/{action}",
            "/api/v1/hosts/db-1/servers/pg/restart",
            503,
            "not connected",
        ),
        (
            "POST /api/v1/hosts/{agent_id}/revoke",
            "/api/v1/hosts/web-2/revoke",
            200,
            "revoked",
        ),
    ] {
        assert!(
            audit.iter().any(|(_, a, o, r, d)| a == action
                && o == object
                && *r == result
                && d.contains(detail)),
            "no audit row {action} {object} {result} {detail}: {audit:#?}"
        );
    }
    assert!(audit.iter().any(|(a, _, o, r, _)| a == "user:bob"
        && o == "/api/v1/hosts/db-1/servers/pg/stop"
        && *r == 404));
    answering.abort();
}

/// A real Prometheus with its config, data and log in `dir`; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, target: SocketAddr, token_file: &Path) -> Prometheus {
        std::fs::create_dir_all(dir).expect("mkdir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: mcpwatch\n    honor_labels: true\n    metrics_path: /federate\n    authorization:\n      type: Bearer\n      credentials_file: {}\n    static_configs:\n      - targets: [\"{target}\"]\n",
                token_file.display()
            ),
        )
        .expect("write prometheus.yml");
        let addr = free_addr();
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run prometheus ({e}): apt-get install prometheus"));
        Prometheus { child, addr, log }
    }

    fn get(&self, path: &str) -> Value {
        http_get(self.addr, path)
            .ok()
            .and_then(|(_, b)| serde_json::from_str(&b).ok())
            .unwrap_or(Value::Null)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn api_hosts_federation_promtool_token_and_prometheus() {
    let mut f = Fleet::start("");
    let now = now_ms();
    let mut web1 = f.agent("web-1");
    let mut db1 = f.agent("db-1");
    f.rt.block_on(async {
        let mut s = host_samples(now - 2000, 1.0);
        s.extend(host_samples(now, 1.5));
        s.extend(server_samples(now));
        s.push((
            key("odd_value", &[("path", "a\"b\\c\nd"), ("host", "inner")]),
            now,
            f64::NAN,
        ));
        s.push((key("old_value", &[]), now - 10 * MINUTE, 1.0));
        web1.push(&s, Vec::new()).await;
        db1.push(&host_samples(now, 3.5), Vec::new()).await;
    });

    let (status, body) = http_get(f.c.http, "/federate").expect("GET /federate");
    assert_eq!(status, 200, "{body}");
    promtool_check("/federate", &body);
    let line = |name_labels: &str| -> Option<String> {
        body.lines()
            .find(|l| l.starts_with(&format!("{name_labels} ")))
            .map(str::to_owned)
    };
    assert_eq!(
        line(r#"mcpwatch_host_load1{host="web-1"}"#),
        Some(format!(r#"mcpwatch_host_load1{{host="web-1"}} 1.5 {now}"#)),
        "{body}"
    );
    assert!(
        line(r#"mcpwatch_host_load1{host="db-1"}"#).is_some(),
        "{body}"
    );
    assert!(
        line(r#"mcpwatch_host_cpu_usage_ratio{cpu="total",host="web-1"}"#).is_some(),
        "{body}"
    );
    assert!(body.contains("# TYPE mcpwatch_host_network_receive_bytes_total counter"));
    assert!(body.contains("# TYPE mcpwatch_host_load1 gauge"));
    assert!(
        line(r#"odd_value{exported_host="inner",host="web-1",path="a\"b\\c\nd"}"#)
            .is_some_and(|l| l.contains(" NaN ")),
        "{body}"
    );
    assert!(
        !body.contains("old_value"),
        "stale series exported:\n{body}"
    );
    assert_eq!(
        body.matches("# TYPE mcpwatch_host_load1 ").count(),
        1,
        "one family block per name"
    );

    // With a token configured: none or a wrong one is 401; the right one passes.
    let token = "federation-secret-0123456789";
    std::fs::write(f.c.dir.join("fed.token"), format!("{token}\n")).expect("token file");
    f.c.stop();
    let mut text = std::fs::read_to_string(&f.c.config).expect("config");
    text.push_str("[api]\nfederation_token = { file = \"fed.token\" }\n");
    std::fs::write(&f.c.config, text).expect("config");
    f.c.restart();
    let get = |token: Option<&str>| {
        request(f.c.http, "GET", "/federate", token, None).expect("GET /federate")
    };
    let r = get(None);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.code(), "unauthenticated");
    assert_eq!(get(Some("federation-secret-0123456780")).status, 401);
    assert_eq!(get(Some("short")).status, 401);
    let r = get(Some(token));
    assert_eq!(r.status, 200);
    assert!(r.body.contains(r#"mcpwatch_host_load1{host="web-1"} 1.5"#));
    promtool_check("/federate with token", &r.body);
    // /metrics follows the same token rule.
    let m = |token: Option<&str>| request(f.c.http, "GET", "/metrics", token, None).expect("GET");
    assert_eq!(m(None).status, 401);
    let with = m(Some(token));
    assert_eq!(with.status, 200);
    assert!(with.body.contains("mcpwatch_collector_"), "{}", with.body);

    // A real Prometheus scrapes it with the token and stores the host label.
    let token_file = f.tmp.path().join("prom-token");
    std::fs::write(&token_file, token).expect("token file");
    let prom = Prometheus::start(&f.tmp.path().join("prometheus"), f.c.http, &token_file);
    wait_for(
        "prometheus scraping /federate",
        Duration::from_secs(60),
        || {
            let t = prom.get("/api/v1/targets");
            let up = t["data"]["activeTargets"][0]["health"] == "up";
            if !up {
                if let Some(e) = t["data"]["activeTargets"][0]["lastError"].as_str() {
                    assert!(
                        e.is_empty() || !e.contains("401"),
                        "prometheus refused: {e}"
                    );
                }
            }
            up.then_some(())
        },
    );
    let v = wait_for(
        "federated series in prometheus",
        Duration::from_secs(30),
        || {
            let v = prom.get(&format!(
                "/api/v1/query?query={}",
                enc(r#"mcpwatch_host_load1{host="web-1"}"#)
            ));
            (v["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty()))
            .then_some(v)
        },
    );
    assert_eq!(v["data"]["result"][0]["value"][1], "1.5", "{v}");
    let v = prom.get(&format!(
        "/api/v1/query?query={}",
        enc("count(mcpwatch_host_load1)")
    ));
    assert_eq!(v["data"]["result"][0]["value"][1], "2", "{v}");
    let log = std::fs::read_to_string(&prom.log).unwrap_or_default();
    assert!(!log.contains("level=error"), "{log}");
}
