//! Caps on what agents and API users can make the collector hold (issue 10 items 9 and 12),
//! against the real collector binary: a per-agent series limit that refuses new series
//! beyond it while the agent's session stays healthy (simulated agents, then the real
//! agent), and caps on silences per user and overall that answer 429 — also to parallel
//! requests.

use std::path::Path;
use std::time::Duration;

use mcpwatch_collector::config::CollectorConfig;
use mcpwatch_collector::store::admin;
use mcpwatch_collector::store::query::{roles, users};
use mcpwatch_common::wire::SeriesKey;
use mcpwatch_tests::api::{admin_token, Api, Resp};
use mcpwatch_tests::process::{AgentProc, CollectorFiles, CollectorProc};
use mcpwatch_tests::sim::{wall_ms, SimAgent};
use mcpwatch_tests::{client, db, metric, wait_for, Pki};
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Series rows stored for `agent_id`.
fn series_count(db: &Path, agent_id: &str) -> i64 {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open db");
    c.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    c.query_row(
        "SELECT count(*) FROM series s JOIN hosts h ON h.id = s.host_id WHERE h.agent_id = ?1",
        [agent_id],
        |r| r.get(0),
    )
    .expect("count series")
}

fn refused(c: &CollectorProc, what: &str) -> f64 {
    metric(
        &c.metrics(),
        &format!("mcpwatch_collector_{what}_refused_total{{reason=\"agent_limit\"}}"),
    )
    .unwrap_or(f64::NAN)
}

fn keys(prefix: &str, n: usize) -> Vec<SeriesKey> {
    (0..n)
        .map(|i| SeriesKey::new(prefix, &[("i", &i.to_string())]))
        .collect()
}

#[test]
fn limits_series_beyond_the_agent_limit_are_refused_while_the_session_stays_healthy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&tmp.path().join("pki"));
    let c = CollectorProc::start(&pki, &tmp.path().join("c"), "max_series_per_agent = 5");
    let rt = runtime();
    let agent = |id: &str| {
        let certs = pki.agent(id);
        let tls = client::config(&pki.ca(), &certs.cert, &certs.key);
        rt.block_on(SimAgent::connect(c.ingest, tls, id))
    };
    let mut a = agent("greedy-1");
    let mut b = agent("modest-1");

    // Eight series on one connection: the first five are stored, three refused, and the
    // batch is acknowledged (the agent must not resend it forever).
    let t = wall_ms();
    let batch: Vec<(SeriesKey, i64, f64)> = keys("m", 8).into_iter().map(|k| (k, t, 1.0)).collect();
    rt.block_on(a.push(&batch, Vec::new()));
    // The same series again (now without declarations) and a sixth new one: still acked.
    let mut again: Vec<(SeriesKey, i64, f64)> = keys("m", 8)
        .into_iter()
        .map(|k| (k, t + 1_000, 2.0))
        .collect();
    again.push((SeriesKey::new("late", &[]), t + 1_000, 3.0));
    rt.block_on(a.push(&again, Vec::new()));
    assert_eq!(
        series_count(&c.db, "greedy-1"),
        5,
        "series beyond the limit are not stored"
    );
    assert_eq!(db::sample_count(&c.db, "greedy-1"), 10);

    // Another agent has its own allowance.
    let mine: Vec<(SeriesKey, i64, f64)> = keys("m", 4).into_iter().map(|k| (k, t, 1.0)).collect();
    rt.block_on(b.push(&mine, Vec::new()));
    assert_eq!(series_count(&c.db, "modest-1"), 4);
    assert_eq!(db::sample_count(&c.db, "modest-1"), 4);

    // Counted, noted in the host's events once per connection, and logged.
    assert_eq!(refused(&c, "series"), 4.0);
    assert_eq!(refused(&c, "samples"), 3.0 + 4.0);
    let notices: Vec<_> = db::events(&c.db, "greedy-1")
        .into_iter()
        .filter(|e| e.kind == "series_limit")
        .collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(db::events(&c.db, "modest-1").is_empty());
    assert!(
        c.logs().contains("max_series_per_agent"),
        "no refusal logged:\n{}",
        c.logs()
    );

    // After a reconnect the count is still the stored one.
    drop(a);
    let mut a = agent("greedy-1");
    rt.block_on(a.push(&again, Vec::new()));
    assert_eq!(series_count(&c.db, "greedy-1"), 5);
    assert_eq!(
        metric(
            &c.metrics(),
            "mcpwatch_collector_sessions_closed_total{reason=\"store\"}"
        ),
        None,
        "no session ended on a store error"
    );
}

#[test]
fn limits_a_real_agent_over_its_series_limit_keeps_streaming_without_reconnects() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&tmp.path().join("pki"));
    let c = CollectorProc::start(&pki, &tmp.path().join("c"), "max_series_per_agent = 5");
    let agent = AgentProc::start(
        &pki,
        &tmp.path().join("a"),
        "web-1",
        c.ingest,
        "100ms",
        "256MiB",
    );
    agent.wait_acked_more(10.0);
    assert_eq!(series_count(&c.db, "web-1"), 5);
    assert!(refused(&c, "samples") > 0.0);
    assert_eq!(agent.metric("mcpwatch_agent_reconnects_total"), 0.0);
    assert_eq!(agent.metric("mcpwatch_agent_uplink_connected"), 1.0);
    let pending = agent.metric("mcpwatch_agent_spool_pending_records");
    assert!(pending < 10.0, "the spool drains: {pending} pending");
}

#[test]
fn limits_out_of_range_caps_are_refused_naming_their_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&tmp.path().join("pki"));
    for (extra, key) in [
        ("max_series_per_agent = 0", "ingest.max_series_per_agent"),
        ("[alerting]\nmax_silences = 0", "alerting.max_silences"),
        (
            "[alerting]\nmax_silences = 10\nmax_silences_per_user = 11",
            "alerting.max_silences_per_user",
        ),
        (
            "[alerting]\nmax_silences_per_user = 0",
            "alerting.max_silences_per_user",
        ),
    ] {
        let files = CollectorFiles::write(&pki, &tmp.path().join("c"), extra);
        let err = CollectorConfig::load(&files.config)
            .map(|_| ())
            .expect_err(extra);
        assert!(err.to_string().contains(key), "{extra}: {err}");
    }
    let files = CollectorFiles::write(
        &pki,
        &tmp.path().join("c"),
        "max_series_per_agent = 7\n[alerting]\nmax_silences = 5",
    );
    let c = CollectorConfig::load(&files.config).expect("valid");
    assert_eq!(c.max_series_per_agent, 7);
    let l = c.alerting.setup.silence_limits;
    assert_eq!(
        (l.max, l.per_user),
        (5, 5),
        "the per-user default fits under the total"
    );
}

// ---- silences ---------------------------------------------------------------------------

/// A token owned by a new user `name` holding `role` on every host.
fn user_token(c: &CollectorProc, name: &str, role: &str) -> Api {
    let uid = admin::with_db(&c.db, |conn| {
        let uid = users::create_user(conn, name, "unused-hash", wall_ms())?;
        roles::bind(conn, uid, role, "", wall_ms())?;
        Ok(uid)
    })
    .expect("create user");
    token_api(c, name, Some(uid))
}

/// A token `name`, owned by `user` or (None) by no user: every permission.
fn token_api(c: &CollectorProc, name: &str, user: Option<i64>) -> Api {
    let token = admin_token(&c.db, name, user);
    Api::new(c.http, Some(&token))
}

fn silence(api: &Api, i: usize) -> Resp {
    api.send(
        "POST",
        "/api/v1/silences",
        &json!({"matchers": format!("{{alertname=\"a{i}\"}}"), "duration": "1h", "comment": "maintenance"}),
    )
}

#[track_caller]
fn status(r: &Resp, want: u16) -> Value {
    assert_eq!(r.status, want, "body: {}", r.body);
    r.json()
}

fn audit_results(db: &Path) -> Vec<(i64, String)> {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open db");
    c.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    let mut st = c
        .prepare("SELECT result, detail FROM audit_log WHERE action = 'POST /api/v1/silences' ORDER BY id")
        .expect("prepare");
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn current_silences(db: &Path) -> i64 {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open db");
    c.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    c.query_row(
        "SELECT count(*) FROM silences WHERE ends_ms > ?1",
        [wall_ms()],
        |r| r.get(0),
    )
    .expect("count")
}

#[test]
fn limits_silences_are_capped_per_user_and_overall_with_429_even_in_parallel() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&tmp.path().join("pki"));
    let c = CollectorProc::start(
        &pki,
        &tmp.path().join("c"),
        "[alerting]\nmax_silences = 4\nmax_silences_per_user = 2",
    );
    let alice = user_token(&c, "alice", "operator");
    let bob = user_token(&c, "bob", "operator");
    let ci = token_api(&c, "ci", None);

    // Per user: alice's third is refused, with tokens and sessions of hers counting alike.
    status(&silence(&alice, 0), 201);
    status(&silence(&alice, 1), 201);
    let r = silence(&alice, 2);
    let body = status(&r, 429);
    assert_eq!(body["error"]["code"], "limit_reached");
    assert!(r.body.contains("max_silences_per_user"), "{}", r.body);
    // Another user still may, up to the overall cap.
    status(&silence(&bob, 3), 201);
    let id = status(&silence(&bob, 4), 201)["id"].as_i64().expect("id");
    let r = silence(&ci, 5);
    status(&r, 429);
    assert!(r.body.contains("max_silences"), "{}", r.body);
    assert_eq!(current_silences(&c.db), 4);

    // Refusals are audited and counted; the gauge shows the silences held.
    let rows = audit_results(&c.db);
    let refused: Vec<_> = rows.iter().filter(|(res, _)| *res == 429).collect();
    assert_eq!(refused.len(), 2, "{rows:?}");
    assert!(
        refused.iter().all(|(_, d)| d.contains("refused")),
        "{rows:?}"
    );
    let m = c.metrics();
    assert_eq!(
        metric(
            &m,
            "mcpwatch_collector_silences_refused_total{reason=\"user_limit\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "mcpwatch_collector_silences_refused_total{reason=\"limit\"}"
        ),
        Some(1.0)
    );
    assert_eq!(metric(&m, "mcpwatch_collector_silences"), Some(4.0));

    // Expiring one frees a place.
    assert_eq!(
        bob.send("DELETE", &format!("/api/v1/silences/{id}"), &json!({}))
            .status,
        204
    );
    status(&silence(&ci, 6), 201);

    // Many callers at once: never more than the cap.
    let callers: Vec<Api> = (0..6)
        .map(|i| token_api(&c, &format!("burst-{i}"), None))
        .collect();
    // Free every place first, then race 12 creations for 4 places.
    let list = ci.get("/api/v1/silences?limit=100").json();
    for s in list["items"].as_array().cloned().unwrap_or_default() {
        let id = s["id"].as_i64().expect("id");
        assert_eq!(
            ci.send("DELETE", &format!("/api/v1/silences/{id}"), &json!({}))
                .status,
            204
        );
    }
    wait_for("no silences", Duration::from_secs(10), || {
        (current_silences(&c.db) == 0).then_some(())
    });
    let handles: Vec<_> = callers
        .iter()
        .flat_map(|api| [api.clone(), api.clone()])
        .enumerate()
        .map(|(i, api)| std::thread::spawn(move || silence(&api, 100 + i).status))
        .collect();
    let statuses: Vec<u16> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let created = statuses.iter().filter(|s| **s == 201).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((created, limited), (4, 8), "{statuses:?}");
    assert_eq!(current_silences(&c.db), 4);
}
