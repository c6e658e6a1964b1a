//! Alerting for many teams, end to end with the real collector binary, two simulated agents
//! (host-a in team a, host-b in team b) and local stand-ins for the receivers: a team's
//! operator creating its own rule, Microsoft Teams receiver and route through the API (and
//! refused for team b or fleet-wide), host labels on alerts and a relabel during a firing
//! alert, the delivery log, a dead letter listed and retried once the receiver is fixed, and
//! escalation steps: unacknowledged → the next step, acknowledged → no more, and kill -9
//! between steps ten times → every step notified exactly once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcpwatch_tests::api::{request, Resp};
use mcpwatch_tests::client;
use mcpwatch_tests::process::CollectorProc;
use mcpwatch_tests::receivers::{validate_teams, validate_webhook, Captured, HttpCapture, Reply};
use mcpwatch_tests::sim::{fast_alerting, test_high_rules, SimAgent};
use mcpwatch_tests::{wait_for, Pki};
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};
use tokio::runtime::Runtime;

const HOST_A: &str = "host-a";
const HOST_B: &str = "host-b";
const HMAC_KEY: &str = "team-alerting-hmac";
const PASSWORD: &str = "correct horse battery staple 42";

struct Setup {
    rt: Runtime,
    pki: Pki,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(&tmp.path().join("pki"));
        let dir = tmp.path().join("c");
        std::fs::create_dir_all(&dir).expect("mkdir collector dir");
        std::fs::write(dir.join("rules.toml"), test_high_rules("10m")).expect("write rules");
        std::fs::write(dir.join("hmac"), format!("{HMAC_KEY}\n")).expect("hmac key");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        Setup {
            rt,
            pki,
            dir,
            _tmp: tmp,
        }
    }

    fn capture(&self, default: Reply) -> HttpCapture {
        self.rt.block_on(HttpCapture::start(default))
    }

    fn tls(&self, id: &str) -> Arc<rustls::ClientConfig> {
        let certs = self.pki.agent(id);
        client::config(&self.pki.ca(), &certs.cert, &certs.key)
    }

    /// Connects as `id`, sends `metric{i}` = `value` and disconnects.
    fn send(&self, ingest: SocketAddr, id: &str, metric: &str, i: &str, value: f64) {
        let tls = self.tls(id);
        self.rt.block_on(async {
            let mut agent = SimAgent::connect(ingest, tls, id).await;
            agent.send(metric, i, value).await;
        });
    }
}

fn webhook(name: &str, url: &str) -> String {
    format!(
        "[[receiver]]\ntype = \"webhook\"\nname = \"{name}\"\nurl = \"{url}\"\nsecret = {{ file = \"hmac\" }}\n"
    )
}

/// A client with a credential.
struct Client {
    addr: SocketAddr,
    token: String,
}

impl Client {
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        let bytes = body.map(|b| b.to_string().into_bytes());
        request(
            self.addr,
            method,
            &format!("/api/v1{path}"),
            Some(&self.token),
            bytes.as_deref(),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// The call's JSON answer, which must have status `want`.
    fn expect(&self, method: &str, path: &str, body: Option<&Value>, want: u16) -> Value {
        let r = self.call(method, path, body);
        assert_eq!(r.status, want, "{method} {path}: {}", r.body);
        if r.body.is_empty() {
            Value::Null
        } else {
            r.json()
        }
    }
}

fn admin(c: &CollectorProc) -> Client {
    Client {
        addr: c.http,
        token: mcpwatch_tests::api::admin_token(&c.db, "admin", None),
    }
}

/// A user bound to `role` on `selector`, signed in.
fn user(c: &CollectorProc, name: &str, role: &str, selector: &str) -> Client {
    mcpwatch_tests::api::local_user(&c.db, name, PASSWORD, role, selector);
    let r = request(
        c.http,
        "POST",
        "/api/v1/sessions",
        None,
        Some(
            json!({"username": name, "password": PASSWORD})
                .to_string()
                .as_bytes(),
        ),
    )
    .expect("sign in");
    assert_eq!(r.status, 201, "{}", r.body);
    Client {
        addr: c.http,
        token: r.json()["token"].as_str().expect("token").to_owned(),
    }
}

fn open_db(db: &Path) -> Connection {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open db");
    c.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    c
}

/// Delivery-log lines `(receiver, rule, host, status, result)`, oldest first.
fn deliveries(db: &Path) -> Vec<(String, String, Option<String>, String, String)> {
    let c = open_db(db);
    let mut st = c
        .prepare("SELECT receiver, rule, host, status, result FROM deliveries ORDER BY id")
        .expect("prepare");
    st.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

/// Waits until the delivery log has `n` lines that `pred` accepts; returns the log.
fn wait_delivered(
    c: &CollectorProc,
    what: &str,
    n: usize,
    pred: impl Fn(&(String, String, Option<String>, String, String)) -> bool,
) -> Vec<(String, String, Option<String>, String, String)> {
    wait_for(what, Duration::from_secs(30), || {
        let log = deliveries(&c.db);
        (log.iter().filter(|l| pred(l)).count() >= n).then_some(log)
    })
}

fn outbox_rows(db: &Path, receiver: &str) -> i64 {
    open_db(db)
        .query_row(
            "SELECT count(*) FROM outbox WHERE receiver = ?1",
            [receiver],
            |r| r.get(0),
        )
        .expect("count")
}

/// Audit rows `(actor, result, detail)` of one action.
fn audit(db: &Path, action: &str) -> Vec<(String, i64, String)> {
    let c = open_db(db);
    let mut st = c
        .prepare("SELECT actor, result, detail FROM audit_log WHERE action = ?1 ORDER BY id")
        .expect("prepare");
    st.query_map([action], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// Every request the capture server got so far, and those arriving within `within`.
fn drain(rt: &Runtime, cap: &mut HttpCapture, within: Duration) -> Vec<Captured> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    rt.block_on(async {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left.min(Duration::from_secs(5)), cap.next()).await {
                Ok(r) => out.push(r),
                Err(_) if Instant::now() >= deadline => return,
                Err(_) => {}
            }
        }
    });
    out
}

/// The alert summaries a Teams message carries (the first text block of each container).
fn teams_summaries(v: &Value) -> Vec<String> {
    v["attachments"][0]["content"]["body"]
        .as_array()
        .map(|b| {
            b.iter()
                .filter(|e| e["type"] == "Container")
                .filter_map(|e| e["items"][0]["text"].as_str().map(|t| t.replace('\\', "")))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn team_operator_owns_rule_receiver_and_route_and_sees_only_its_hosts() {
    let s = Setup::new();
    let mut all = s.capture(Reply::status(200));
    let mut teams = s.capture(Reply::status(202));
    let mut c = CollectorProc::start(
        &s.pki,
        &s.dir,
        &format!(
            "[alerting]\n{}default_receivers = [\"all\"]\n[api]\nreceiver_url_allow = [\"127.0.0.0/8\"]\n{}",
            fast_alerting("4h"),
            webhook("all", &all.url("/all")),
        ),
    );
    let admin = admin(&c);
    // Both hosts exist, then get their teams.
    s.send(c.ingest, HOST_A, "boot", "0", 0.0);
    s.send(c.ingest, HOST_B, "boot", "0", 0.0);
    admin.expect(
        "PUT",
        &format!("/hosts/{HOST_A}/labels"),
        Some(&json!({"labels": {"team": "a"}})),
        200,
    );
    admin.expect(
        "PUT",
        &format!("/hosts/{HOST_B}/labels"),
        Some(&json!({"labels": {"team": "b"}})),
        200,
    );
    let perms = json!({"permissions": ["hosts:read", "metrics:read", "alerts:read", "alerts:ack",
        "silences:write", "rules:write", "receivers:write"]});
    admin.expect("PUT", "/roles/team-operator", Some(&perms), 201);
    let alice = user(&c, "alice", "team-operator", r#"{team="a"}"#);

    // Team a's operator: a Teams receiver, a route to it and a rule, all owned by team a.
    let receiver = json!({"type": "teams", "name": "team-a-teams", "owner": r#"{team="a"}"#,
        "webhook_url": {"value": teams.url("/workflows/team-a?sig=S3CRET")}});
    let made = alice.expect("POST", "/receivers", Some(&receiver), 201);
    assert_eq!(made["owner"], r#"{team="a"}"#);
    assert!(!made.to_string().contains("S3CRET"), "secret shown: {made}");
    let route = json!({"owner": r#"{team="a"}"#, "matchers": "{}", "receivers": ["team-a-teams"]});
    alice.expect("PUT", "/routes/team-a", Some(&route), 201);
    let rule = json!({"selector": "team_load", "window": "10m", "op": ">", "critical": 0.5,
        "owner": r#"{team="a"}"#, "summary": "team load on {{ $labels.host }}"});
    alice.expect("PUT", "/rules/team_a_load", Some(&rule), 200);

    // ... and nothing for team b or fleet-wide: 403, audited.
    let mut for_b = rule.clone();
    for_b["owner"] = json!(r#"{team="b"}"#);
    alice.expect("PUT", "/rules/team_b_load", Some(&for_b), 403);
    let mut fleet = rule.clone();
    fleet.as_object_mut().expect("object").remove("owner");
    alice.expect("PUT", "/rules/fleet_load", Some(&fleet), 403);
    let mut recv_b = receiver.clone();
    recv_b["name"] = json!("team-b-teams");
    recv_b["owner"] = json!(r#"{team="b"}"#);
    alice.expect("POST", "/receivers", Some(&recv_b), 403);
    let mut recv_fleet = receiver.clone();
    recv_fleet["name"] = json!("fleet-teams");
    recv_fleet.as_object_mut().expect("object").remove("owner");
    alice.expect("POST", "/receivers", Some(&recv_fleet), 403);
    // A team route may not name a receiver the team does not manage.
    let to_all = json!({"owner": r#"{team="a"}"#, "matchers": "{}", "receivers": ["all"]});
    alice.expect("PUT", "/routes/team-a-all", Some(&to_all), 422);
    for (action, status) in [
        ("PUT /api/v1/rules/{name}", 403),
        ("POST /api/v1/receivers", 403),
        ("PUT /api/v1/routes/{name}", 422),
    ] {
        let rows = audit(&c.db, action);
        assert!(
            rows.iter().any(|r| r.0 == "user:alice" && r.1 == status),
            "{action}: refusals audited: {rows:?}"
        );
    }
    // Team a sees its own objects only.
    let rules = alice.expect("GET", "/rules", None, 200);
    let names: Vec<&str> = rules
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["team_a_load"]);
    let receivers = alice.expect("GET", "/receivers", None, 200);
    assert_eq!(receivers.as_array().expect("receivers").len(), 1);

    // Both hosts run hot: team a's rule reads only team a's series; a fleet-wide alert on
    // each host reaches "all", and only team a's reach team a's Teams channel (the first
    // attempt answered 429: sent again after Retry-After, delivered once).
    teams.push(Reply::status(429).with_header("Retry-After", "1"));
    s.send(c.ingest, HOST_A, "team_load", "1", 1.0);
    s.send(c.ingest, HOST_B, "team_load", "1", 1.0);
    s.send(c.ingest, HOST_A, "test_value", "t", 1.0);
    s.send(c.ingest, HOST_B, "test_value", "t", 1.0);
    let log = wait_delivered(
        &c,
        "both hosts' test_high at \"all\" and team a's at Teams",
        4,
        |l| l.4 == "delivered" && ((l.0 == "all" && l.1 == "test_high") || (l.0 == "team-a-teams")),
    );
    let team_lines: Vec<_> = log.iter().filter(|l| l.0 == "team-a-teams").collect();
    assert!(
        team_lines.iter().all(|l| l.2.as_deref() == Some(HOST_A)),
        "team b's alerts never reach team a's receiver: {team_lines:?}"
    );
    assert!(
        team_lines.iter().any(|l| l.4 == "retry"),
        "the 429 is in the log: {team_lines:?}"
    );
    wait_for(
        "team a's two alerts delivered to Teams",
        Duration::from_secs(30),
        || {
            let log = deliveries(&c.db);
            let n = log
                .iter()
                .filter(|l| l.0 == "team-a-teams" && l.4 == "delivered")
                .count();
            (n >= 1 && outbox_rows(&c.db, "team-a-teams") == 0).then_some(())
        },
    );
    // A team's catch-all reads every metric of the team's hosts and nothing else.
    let catch_all = json!({"selector": "{__name__=~\".+\"}", "window": "10m", "op": ">",
        "critical": 0.5, "owner": r#"{team="a"}"#});
    let preview = alice.expect("POST", "/rules/dry-run", Some(&catch_all), 200);
    let series = preview["series"].as_array().expect("series");
    assert!(
        preview["firing"].as_u64().expect("firing") >= 2,
        "{preview}"
    );
    assert!(
        series.iter().all(|s| s["labels"]["host"] == HOST_A),
        "only team a's series: {preview}"
    );
    let mut fleet_catch_all = catch_all.clone();
    fleet_catch_all
        .as_object_mut()
        .expect("object")
        .remove("owner");
    alice.expect("POST", "/rules/dry-run", Some(&fleet_catch_all), 403);
    let alerts = admin.expect("GET", "/alerts?limit=100", None, 200);
    let items = alerts["items"].as_array().expect("items");
    let team_load: Vec<&Value> = items
        .iter()
        .filter(|a| a["rule"] == "team_a_load")
        .collect();
    assert_eq!(
        team_load.len(),
        1,
        "team a's rule read only team a's series: {team_load:?}"
    );
    assert_eq!(team_load[0]["labels"]["host"], HOST_A);
    for a in items {
        let host = a["labels"]["host"].as_str().expect("host");
        let team = if host == HOST_A { "a" } else { "b" };
        assert_eq!(a["labels"]["team"], team, "host labels on every alert: {a}");
    }
    // One notification per alert (group_by "..."): the first request got the 429 and was
    // sent again; each alert was accepted exactly once.
    let requests = drain(&s.rt, &mut teams, Duration::from_millis(200));
    assert_eq!(
        requests.len(),
        3,
        "two alerts and one retry after the 429: {}",
        requests.len()
    );
    for r in &requests {
        validate_teams(&r.json()).unwrap_or_else(|e| panic!("Teams payload: {e}"));
    }
    let mut summaries: Vec<String> = requests[1..]
        .iter()
        .flat_map(|r| teams_summaries(&r.json()))
        .collect();
    summaries.sort();
    assert_eq!(summaries, ["team load on host-a", "test t on host-a"]);
    assert!(
        teams_summaries(&requests[0].json())
            .iter()
            .all(|s| summaries.contains(s)),
        "the refused one is among those accepted later"
    );

    // Relabel host-a during its firing alerts: the labels change in place, nobody is told
    // twice. The next thing team a's channel gets is a new alert, not a repeat.
    admin.expect(
        "PUT",
        &format!("/hosts/{HOST_A}/labels"),
        Some(&json!({"labels": {"team": "a", "env": "prod"}})),
        200,
    );
    let alerts = admin.expect("GET", &format!("/alerts?host={HOST_A}"), None, 200);
    for a in alerts["items"].as_array().expect("items") {
        assert_eq!(a["labels"]["env"], "prod", "{a}");
    }
    let history = admin.expect("GET", "/alerts/history?limit=100", None, 200);
    assert!(
        history["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|h| h["from"] == h["to"] && h["labels"]["env"] == "prod"),
        "the relabel is in the history: {history}"
    );
    s.send(c.ingest, HOST_A, "test_value", "after", 1.0);
    let next = drain(&s.rt, &mut teams, Duration::from_secs(10));
    let first = next.first().expect("the new alert reaches Teams");
    assert_eq!(teams_summaries(&first.json()), ["test after on host-a"]);
    assert!(
        first.json().to_string().contains("prod"),
        "the new labels are in the card"
    );
    let all_requests = drain(&s.rt, &mut all, Duration::from_millis(100));
    let repeats = all_requests
        .iter()
        .filter_map(|r| r.json()["alerts"].as_array().cloned())
        .flatten()
        .filter(|a| a["labels"]["i"] == "t" && a["labels"]["host"] == HOST_A)
        .count();
    assert_eq!(repeats, 1, "\"all\" was told about host-a's test_high once");
    for r in &all_requests {
        validate_webhook(&r.json()).unwrap_or_else(|e| panic!("webhook payload: {e}"));
    }
    c.stop();
}

/// `[[escalation]]` with two steps 2 s apart, a route to it for `i=~"esc.*"`, a route to a
/// receiver that refuses the first request with a 400, and "all" for the rest.
fn escalation_config(esc: &HttpCapture, flaky: &HttpCapture, all: &HttpCapture) -> String {
    format!(
        "[alerting]\n{}default_receivers = [\"all\"]\n{}{}{}{}\
         [[escalation]]\nname = \"oncall\"\nsteps = [{{ after = \"0s\", receivers = [\"esc1\"] }}, \
         {{ after = \"2s\", receivers = [\"esc2\"] }}]\n\
         [[route]]\nmatchers = '{{i=~\"esc.*\"}}'\nreceivers = []\nescalation = \"oncall\"\n\
         [[route]]\nmatchers = '{{i=\"dead\"}}'\nreceivers = [\"flaky\"]\n",
        fast_alerting("4h"),
        webhook("all", &all.url("/all")),
        webhook("esc1", &esc.url("/one")),
        webhook("esc2", &esc.url("/two")),
        webhook("flaky", &flaky.url("/flaky")),
    )
}

fn alert_i(r: &Captured) -> Vec<(String, String)> {
    r.json()["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    (
                        x["labels"]["i"].as_str().unwrap_or_default().to_owned(),
                        x["status"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn escalation_steps_and_acknowledgement_and_dead_letter_retry() {
    let s = Setup::new();
    let mut esc = s.capture(Reply::status(200));
    let mut flaky = s.capture(Reply::status(200));
    let all = s.capture(Reply::status(200));
    flaky.push(Reply::status(400).with_body("bad payload"));
    let mut c = CollectorProc::start(&s.pki, &s.dir, &escalation_config(&esc, &flaky, &all));
    let admin = admin(&c);

    // Two alerts start together; the second is acknowledged before the second step.
    s.send(c.ingest, HOST_B, "test_value", "esc-open", 1.0);
    s.send(c.ingest, HOST_B, "test_value", "esc-acked", 1.0);
    let first = drain(&s.rt, &mut esc, Duration::from_millis(1500));
    let mut at_one: Vec<(String, String)> = first
        .iter()
        .filter(|r| r.path == "/one")
        .flat_map(alert_i)
        .collect();
    at_one.sort();
    assert_eq!(
        at_one,
        [
            ("esc-acked".into(), "firing".into()),
            ("esc-open".into(), "firing".into())
        ],
        "step 1 at once"
    );
    let alerts = admin.expect("GET", "/alerts", None, 200);
    let acked = alerts["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|a| a["labels"]["i"] == "esc-acked")
        .expect("esc-acked")
        .clone();
    assert_eq!(acked["escalation"]["policy"], "oncall");
    assert_eq!(acked["escalation"]["step"], 0);
    let fp = acked["fingerprint"].as_str().expect("fingerprint");
    admin.expect(
        "POST",
        &format!("/alerts/{fp}/ack"),
        Some(&json!({"comment": "on it"})),
        200,
    );
    let later = drain(&s.rt, &mut esc, Duration::from_secs(4));
    let at_two: Vec<(String, String)> = later
        .iter()
        .filter(|r| r.path == "/two")
        .flat_map(alert_i)
        .collect();
    assert_eq!(
        at_two,
        [("esc-open".into(), "firing".into())],
        "unacknowledged → step 2; acknowledged → no more"
    );
    assert_eq!(outbox_rows(&c.db, "esc2"), 0);
    let now = admin.expect("GET", &format!("/alerts/{fp}"), None, 200);
    assert_eq!(now["escalation"]["next_ms"], Value::Null, "{now}");

    // A 400 makes a dead letter; listed, then retried once the receiver works.
    s.send(c.ingest, HOST_B, "test_value", "dead", 1.0);
    let dead = wait_for("a dead letter", Duration::from_secs(30), || {
        let page = admin.expect("GET", "/notifications/dead?receiver=flaky", None, 200);
        page["items"].as_array().and_then(|a| a.first().cloned())
    });
    assert_eq!(dead["receiver"], "flaky");
    assert_eq!(dead["labels"]["i"], "dead");
    assert_eq!(dead["attempts"], 1);
    assert!(
        dead["reason"].as_str().expect("reason").contains("400"),
        "{dead}"
    );
    let id = dead["id"].as_i64().expect("id");
    // Team a cannot see or retry team b's dead letter.
    admin.expect(
        "PUT",
        &format!("/hosts/{HOST_B}/labels"),
        Some(&json!({"labels": {"team": "b"}})),
        200,
    );
    let alice = user(&c, "alice", "operator", r#"{team="a"}"#);
    let seen = alice.expect("GET", "/notifications/dead", None, 200);
    assert_eq!(seen["items"], json!([]));
    alice.expect(
        "POST",
        &format!("/notifications/dead/{id}/retry"),
        None,
        404,
    );
    let retried = admin.expect(
        "POST",
        &format!("/notifications/dead/{id}/retry"),
        None,
        200,
    );
    assert_eq!(retried["requeued"], 1);
    let requests = drain(&s.rt, &mut flaky, Duration::from_secs(5));
    assert_eq!(requests.len(), 2, "the 400, then the retry: {requests:?}");
    assert_eq!(alert_i(&requests[1]), [("dead".into(), "firing".into())]);
    let log = wait_delivered(&c, "the retry delivered", 1, |l| {
        l.0 == "flaky" && l.4 == "delivered"
    });
    let results: Vec<&str> = log
        .iter()
        .filter(|l| l.0 == "flaky")
        .map(|l| l.4.as_str())
        .collect();
    assert_eq!(results, ["dead", "requeued", "delivered"]);
    let empty = admin.expect("GET", "/notifications/dead", None, 200);
    assert_eq!(empty["items"], json!([]));
    let was_paged = admin.expect(
        "GET",
        "/notifications?receiver=flaky&result=delivered",
        None,
        200,
    );
    assert_eq!(was_paged["items"].as_array().expect("items").len(), 1);
    let rows = audit(&c.db, "POST /api/v1/notifications/dead/{id}/retry");
    assert!(
        rows.iter().any(|r| r.0 == "token:admin" && r.1 == 200),
        "{rows:?}"
    );
    assert!(
        rows.iter().any(|r| r.0 == "user:alice" && r.1 == 404),
        "{rows:?}"
    );
    c.stop();
}

#[test]
fn escalation_kill9_between_steps_notifies_each_step_once() {
    const STEPS: usize = 11;
    let s = Setup::new();
    let mut cap = s.capture(Reply::status(200));
    let steps: Vec<String> = (0..STEPS)
        .map(|k| format!("{{ after = \"{}s\", receivers = [\"s{k}\"] }}", 2 * k))
        .collect();
    let receivers: String = (0..STEPS)
        .map(|k| webhook(&format!("s{k}"), &cap.url(&format!("/s{k}"))))
        .collect();
    let mut c = CollectorProc::start(
        &s.pki,
        &s.dir,
        &format!(
            "[alerting]\n{}{receivers}[[escalation]]\nname = \"ladder\"\nsteps = [{}]\n\
             [[route]]\nmatchers = '{{}}'\nreceivers = []\nescalation = \"ladder\"\n",
            fast_alerting("4h"),
            steps.join(", ")
        ),
    );
    s.send(c.ingest, HOST_A, "test_value", "ladder", 1.0);
    let started = Instant::now();
    for k in 0..STEPS - 1 {
        // Between steps: step k delivered (settled), step k + 1 not yet due.
        let receiver = format!("s{k}");
        wait_delivered(&c, &format!("step {k} delivered"), 1, |l| {
            l.0 == receiver && l.4 == "delivered"
        });
        c.kill9();
        c.restart();
    }
    let receiver = format!("s{}", STEPS - 1);
    wait_delivered(&c, "the last step", 1, |l| {
        l.0 == receiver && l.4 == "delivered"
    });
    eprintln!(
        "{} kill -9 between {STEPS} steps took {:?}",
        STEPS - 1,
        started.elapsed()
    );
    let requests = drain(&s.rt, &mut cap, Duration::from_millis(500));
    let mut per_step: BTreeMap<String, usize> = BTreeMap::new();
    for r in &requests {
        assert_eq!(
            alert_i(r),
            [("ladder".into(), "firing".into())],
            "{}",
            r.path
        );
        *per_step.entry(r.path.clone()).or_default() += 1;
    }
    let want: BTreeMap<String, usize> = (0..STEPS).map(|k| (format!("/s{k}"), 1)).collect();
    assert_eq!(per_step, want, "each step notified exactly once");
    c.stop();
}
