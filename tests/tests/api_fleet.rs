//! `GET /api/v1/fleet` and `GET /api/v1/alerts/pending` on the real collector, fed by
//! simulated agents: server counts by state (running, unhealthy, crash-looping, gave up,
//! drift), CPU / memory / disk sparklines with their per-minute values, firing alerts per
//! host, the caller's permissions per host, scoping (a team viewer sees only its hosts; a
//! role without `metrics:read` gets no sparklines, without `alerts:read` no firing count),
//! pending alerts by scope, the answer gzipped for a client that accepts it, and the summary
//! warmed again after a collector restart.

use std::time::Duration;

use mcpwatch_collector::auth::password;
use mcpwatch_collector::now_ms;
use mcpwatch_collector::store::admin;
use mcpwatch_collector::store::query::{roles, users};
use mcpwatch_common::wire::SeriesKey;
use mcpwatch_tests::api::{admin_token, request_with, Api};
use mcpwatch_tests::client;
use mcpwatch_tests::process::CollectorProc;
use mcpwatch_tests::sim::{AckWait, SimAgent};
use mcpwatch_tests::{wait_for, Pki};
use serde_json::{json, Value};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn key(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
    SeriesKey::new(name, labels)
}

/// web-1's figures: CPU 0.5 two minutes ago and 0.95 now, memory 2 of 8 GiB, disks at 50 %
/// and 90 %, and four servers: fs running and drifted, api running but unhealthy, job
/// backing off, old gave up.
fn web1(now: i64) -> Vec<(SeriesKey, i64, f64)> {
    let mut s = vec![
        (
            key("mcpwatch_host_cpu_usage_ratio", &[("cpu", "total")]),
            now - 120_000,
            0.5,
        ),
        (
            key("mcpwatch_host_cpu_usage_ratio", &[("cpu", "total")]),
            now,
            0.95,
        ),
        (
            key("mcpwatch_host_cpu_usage_ratio", &[("cpu", "0")]),
            now,
            0.1,
        ),
        (key("mcpwatch_host_memory_total_bytes", &[]), now, 8.0 * GIB),
        (key("mcpwatch_host_memory_used_bytes", &[]), now, 2.0 * GIB),
        (key("mcpwatch_host_load1", &[]), now, 3.0),
    ];
    for (mount, used) in [("/", 50.0), ("/data", 90.0)] {
        s.push((
            key("mcpwatch_host_disk_total_bytes", &[("mountpoint", mount)]),
            now,
            100.0,
        ));
        s.push((
            key("mcpwatch_host_disk_used_bytes", &[("mountpoint", mount)]),
            now,
            used,
        ));
    }
    let server = |s: &mut Vec<(SeriesKey, i64, f64)>, name: &str, state: &str, healthy: f64| {
        for st in ["running", "backing_off", "stopped"] {
            let v = if st == state { 1.0 } else { 0.0 };
            s.push((
                key("mcpwatch_server_state", &[("server", name), ("state", st)]),
                now,
                v,
            ));
        }
        s.push((
            key("mcpwatch_server_healthy", &[("server", name)]),
            now,
            healthy,
        ));
        s.push((
            key("mcpwatch_server_tool_drift", &[("server", name)]),
            now,
            0.0,
        ));
        s.push((
            key("mcpwatch_server_gave_up", &[("server", name)]),
            now,
            0.0,
        ));
    };
    server(&mut s, "fs", "running", 1.0);
    server(&mut s, "api", "running", 0.0);
    server(&mut s, "job", "backing_off", 1.0);
    server(&mut s, "old", "stopped", 1.0);
    // Later samples of the same series win: fs drifted, old gave up.
    s.push((
        key("mcpwatch_server_tool_drift", &[("server", "fs")]),
        now + 1,
        1.0,
    ));
    s.push((
        key("mcpwatch_server_gave_up", &[("server", "old")]),
        now + 1,
        1.0,
    ));
    s
}

fn host(fleet: &Value, id: &str) -> Option<Value> {
    fleet["hosts"]
        .as_array()?
        .iter()
        .find(|h| h["agent_id"] == id)
        .cloned()
}

fn last_value(spark: &Value) -> Option<f64> {
    spark.as_array()?.iter().rev().find_map(Value::as_f64)
}

fn user(c: &CollectorProc, name: &str, role: &str, selector: &str) -> Api {
    let hash = password::hash("correct horse battery staple").expect("hash");
    let uid = admin::with_db(&c.db, |conn| {
        let uid = users::create_user(conn, name, &hash, now_ms())?;
        roles::bind(conn, uid, role, selector, now_ms())?;
        Ok(uid)
    })
    .expect("create user");
    Api::new(
        c.http,
        Some(&admin_token(&c.db, &format!("{name}-token"), Some(uid))),
    )
}

#[test]
fn api_fleet_counts_servers_sparklines_firing_pending_and_scope() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&tmp.path().join("pki"));
    let mut c = CollectorProc::start(&pki, &tmp.path().join("c"), "");
    let admin = Api::new(c.http, Some(&admin_token(&c.db, "admin", None)));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    for (rule, body) in [
        (
            "fleet_cpu_high",
            json!({"selector": "mcpwatch_host_cpu_usage_ratio{cpu=\"total\"}", "critical": 0.9}),
        ),
        (
            "fleet_load_pending",
            json!({"selector": "mcpwatch_host_load1", "critical": 1.0, "for": "1h"}),
        ),
    ] {
        let r = admin.send("PUT", &format!("/api/v1/rules/{rule}"), &body);
        assert!(r.status == 200 || r.status == 201, "{}", r.body);
    }
    let connect = |name: &str| {
        let certs = pki.agent(name);
        let tls = client::config(&pki.ca(), &certs.cert, &certs.key);
        rt.block_on(SimAgent::connect(c.ingest, tls, name))
            .first_series_id(0)
            .ack_wait(AckWait::SkipOthers)
    };
    let mut a = connect("web-1");
    let mut b = connect("db-1");
    let now = now_ms();
    rt.block_on(async {
        a.push(&web1(now), Vec::new()).await;
        b.push(
            &[
                (
                    key("mcpwatch_host_cpu_usage_ratio", &[("cpu", "total")]),
                    now,
                    0.2,
                ),
                (key("mcpwatch_host_load1", &[]), now, 2.0),
            ],
            Vec::new(),
        )
        .await;
    });
    for (h, team) in [("web-1", "a"), ("db-1", "b")] {
        let r = admin.send(
            "PUT",
            &format!("/api/v1/hosts/{h}/labels"),
            &json!({"labels": {"team": team}}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }

    let fleet = wait_for(
        "web-1's servers and its alert in /fleet",
        Duration::from_secs(20),
        || {
            let f = admin.get("/api/v1/fleet").json();
            let w = host(&f, "web-1")?;
            (w["servers"]["total"] == 4 && w["firing"].as_u64() >= Some(1)).then_some(f)
        },
    );
    assert_eq!(fleet["complete"], true);
    // Firing counts every active alert of the host: ours and the built-in server rules.
    let listed = admin.get("/api/v1/alerts?host=web-1").json();
    assert!(listed.to_string().contains("fleet_cpu_high"), "{listed}");
    assert_eq!(fleet["spark_minutes"], 30);
    let w = host(&fleet, "web-1").expect("web-1");
    assert_eq!(
        w["servers"],
        json!({"total": 4, "running": 1, "unhealthy": 1, "crash_looping": 1, "gave_up": 1,
               "other": 0, "drift": 1}),
        "{w}"
    );
    let cpu = w["cpu"].as_array().expect("cpu");
    assert_eq!(cpu.len(), 30);
    assert_eq!(last_value(&w["cpu"]), Some(0.95), "{w}");
    assert!(cpu.iter().any(|v| v.as_f64() == Some(0.5)), "{w}");
    assert_eq!(last_value(&w["memory"]), Some(0.25), "{w}");
    assert_eq!(last_value(&w["disk"]), Some(0.9), "the fullest disk: {w}");
    let perms: Vec<&str> = w["permissions"]
        .as_array()
        .expect("permissions")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        perms.contains(&"servers:control") && perms.contains(&"metrics:read"),
        "{w}"
    );
    assert!(
        !perms.contains(&"users:admin"),
        "fleet-wide permissions are not per host: {w}"
    );
    let d = host(&fleet, "db-1").expect("db-1");
    assert_eq!(d["firing"], 0);
    assert_eq!(d["servers"], Value::Null, "no server reported: {d}");
    assert_eq!(last_value(&d["cpu"]), Some(0.2));

    // Pending: the load rule holds on both hosts for less than its hour.
    let pending = wait_for("two pending alerts", Duration::from_secs(20), || {
        let r = admin.get("/api/v1/alerts/pending");
        let list: Vec<Value> = r
            .json()
            .as_array()?
            .iter()
            .filter(|p| p["rule"] == "fleet_load_pending")
            .cloned()
            .collect();
        (list.len() == 2).then_some(list)
    });
    assert!(pending
        .iter()
        .all(|p| p["labels"]["alertname"] == "fleet_load_pending"
            && p["level"] == "critical"
            && p["value"].as_f64().is_some()));

    // A team viewer: their host only, no control, pending of their host only.
    let viewer = user(&c, "viewer-a", "viewer", "{team=\"a\"}");
    let f = viewer.get("/api/v1/fleet").json();
    let ids: Vec<&str> = f["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .filter_map(|h| h["agent_id"].as_str())
        .collect();
    assert_eq!(ids, ["web-1"]);
    let w = host(&f, "web-1").expect("web-1");
    assert_eq!(
        w["permissions"],
        json!(["hosts:read", "metrics:read", "alerts:read"])
    );
    assert!(w["firing"].as_u64() >= Some(1), "{w}");
    assert_eq!(last_value(&w["cpu"]), Some(0.95));
    let p = viewer.get("/api/v1/alerts/pending").json();
    let hosts: Vec<&Value> = p
        .as_array()
        .expect("pending")
        .iter()
        .map(|p| &p["labels"]["host"])
        .collect();
    assert!(
        !hosts.is_empty() && hosts.iter().all(|h| *h == "web-1"),
        "{p}"
    );

    // A role with hosts:read only: hosts and servers, but no figures or alerts.
    let r = admin.send(
        "PUT",
        "/api/v1/roles/hosts-only",
        &json!({"permissions": ["hosts:read"]}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let narrow = user(&c, "narrow", "hosts-only", "");
    let f = narrow.get("/api/v1/fleet").json();
    let w = host(&f, "web-1").expect("web-1");
    assert_eq!(w["cpu"], json!([]));
    assert_eq!(w["memory"], json!([]));
    assert_eq!(w["firing"], Value::Null);
    assert_eq!(w["servers"]["total"], 4);
    assert_eq!(narrow.get("/api/v1/alerts/pending").status, 403);
    assert_eq!(Api::new(c.http, None).get("/api/v1/fleet").status, 401);
    // A browser's request gets the answer gzipped.
    let r = request_with(
        c.http,
        "GET",
        "/api/v1/fleet",
        Some(&admin_token(&c.db, "gzip-check", None)),
        &[("Accept-Encoding", "gzip")],
        None,
    )
    .expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-encoding").as_deref(),
        Some("gzip"),
        "{}",
        r.head
    );

    // After a restart the summary is warmed from the store: counts and sparklines are back
    // before any agent sends again.
    drop(a);
    drop(b);
    c.stop();
    c.restart();
    let f = wait_for("the summary warmed", Duration::from_secs(20), || {
        let f = admin.get("/api/v1/fleet").json();
        (f["complete"] == true).then_some(f)
    });
    let w = host(&f, "web-1").expect("web-1");
    assert_eq!(w["servers"]["total"], 4, "{w}");
    assert_eq!(w["servers"]["drift"], 1, "{w}");
    assert_eq!(last_value(&w["cpu"]), Some(0.95), "{w}");
}
