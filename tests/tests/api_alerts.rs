//! The alerting part of the HTTP API against the real collector binary: simulated agents
//! (raw protocol over mutual TLS) send samples that fire rules, local HTTP receivers capture
//! what is sent, and the API is driven over plain HTTP with API tokens and login sessions.
//! Covers listing and acknowledging alerts (acknowledgement reaches the receiver and stops
//! repeats), history, silences with host scopes, rules changed live through the API (and
//! kept across a restart), dry runs, and receivers listed without secrets and test-sent.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mcpwatch_collector::auth::credential::{self, Kind};
use mcpwatch_collector::auth::password;
use mcpwatch_collector::store::admin;
use mcpwatch_collector::store::query::{roles, tokens, users};
use mcpwatch_tests::client;
use mcpwatch_tests::process::CollectorProc;
use mcpwatch_tests::receivers::{
    validate_pagerduty, validate_webhook, verify_hmac, HttpCapture, Reply,
};
use mcpwatch_tests::sim::{fast_alerting, test_high_rules, wall_ms, SimAgent};
use mcpwatch_tests::Pki;
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};
use tokio::runtime::Runtime;

/// Team A's and team B's hosts (certificate SANs and agent ids).
const HOST_A: &str = "team-a-1";
const HOST_B: &str = "team-b-1";
const HMAC_KEY: &str = "api-alerts-hmac-secret";
const PD_KEY: &str = "R0UT1NGKEYAPI00000000000000000000";
const PASSWORD: &str = "Correct-Horse-42!";

fn webhook_receiver(name: &str, url: &str) -> String {
    format!(
        "[[receiver]]\ntype = \"webhook\"\nname = \"{name}\"\nurl = \"{url}\"\nsecret = {{ file = \"hmac\" }}\n"
    )
}

// ---- fixture ---------------------------------------------------------------------------

struct Rig {
    rt: Runtime,
    pki: Pki,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Rig {
    fn new() -> Rig {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(&tmp.path().join("pki"));
        let dir = tmp.path().join("c");
        std::fs::create_dir_all(&dir).expect("mkdir collector dir");
        std::fs::write(dir.join("rules.toml"), test_high_rules("10m")).expect("write rules");
        std::fs::write(dir.join("hmac"), format!("{HMAC_KEY}\n")).expect("hmac key");
        std::fs::write(dir.join("pd-key"), format!("{PD_KEY}\n")).expect("pd key");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        Rig {
            rt,
            pki,
            dir,
            _tmp: tmp,
        }
    }

    fn collector(&self, alerting: &str) -> CollectorProc {
        CollectorProc::start(&self.pki, &self.dir, alerting)
    }

    fn capture(&self, default: Reply) -> HttpCapture {
        self.rt.block_on(HttpCapture::start(default))
    }

    fn agent(&self, ingest: SocketAddr, id: &str) -> SimAgent {
        let certs = self.pki.agent(id);
        let tls = client::config(&self.pki.ca(), &certs.cert, &certs.key);
        self.rt.block_on(SimAgent::connect(ingest, tls, id))
    }

    fn send(&self, agent: &mut SimAgent, metric: &str, i: &str, value: f64) {
        self.rt.block_on(agent.send(metric, i, value));
    }

    /// The next webhook request whose first alert satisfies `pred`, within `within`;
    /// others are skipped.
    fn next_alert(
        &self,
        cap: &mut HttpCapture,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + within;
        self.rt.block_on(async {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                let wait = left.min(Duration::from_secs(5));
                if let Ok(req) = tokio::time::timeout(wait, cap.next()).await {
                    let body = req.json();
                    if body["alerts"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(&pred))
                    {
                        return Some(body);
                    }
                }
            }
        })
    }
}

/// A first alert of a webhook body with this rule, status and `i` label.
fn is(rule: &str, status: &str, i: &str) -> impl Fn(&Value) -> bool {
    let (rule, status, i) = (rule.to_owned(), status.to_owned(), i.to_owned());
    move |a: &Value| {
        a["rule"] == rule.as_str()
            && a["status"] == status.as_str()
            && a["labels"]["i"] == i.as_str()
    }
}

// ---- HTTP ------------------------------------------------------------------------------

#[derive(Debug)]
struct Resp {
    status: u16,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

/// One request on a fresh connection (`Connection: close`); chunked bodies are decoded.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Resp {
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let payload = body.map(Value::to_string).unwrap_or_default();
    if body.is_some() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            payload.len()
        ));
    }
    head.push_str("\r\n");
    head.push_str(&payload);
    s.write_all(head.as_bytes()).expect("write request");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read response");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (headers, raw) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        let mut out = String::new();
        let mut rest = raw;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
                break;
            };
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        raw.to_owned()
    };
    Resp { status, body }
}

/// A client with one credential.
struct Api {
    addr: SocketAddr,
    token: String,
}

impl Api {
    fn get(&self, path: &str) -> Resp {
        request(
            self.addr,
            "GET",
            &format!("/api/v1{path}"),
            Some(&self.token),
            None,
        )
    }
    fn post(&self, path: &str, body: &Value) -> Resp {
        request(
            self.addr,
            "POST",
            &format!("/api/v1{path}"),
            Some(&self.token),
            Some(body),
        )
    }
    fn put(&self, path: &str, body: &Value) -> Resp {
        request(
            self.addr,
            "PUT",
            &format!("/api/v1{path}"),
            Some(&self.token),
            Some(body),
        )
    }
    fn delete(&self, path: &str) -> Resp {
        request(
            self.addr,
            "DELETE",
            &format!("/api/v1{path}"),
            Some(&self.token),
            None,
        )
    }
}

/// `resp` has `status`, else fails showing the body.
#[track_caller]
fn expect(resp: Resp, status: u16) -> Value {
    assert_eq!(
        resp.status, status,
        "unexpected status; body: {}",
        resp.body
    );
    resp.json()
}

/// A token without a user (every permission), as the admin CLI makes; actor `token:NAME`.
fn admin_api(c: &CollectorProc, name: &str) -> Api {
    let secret = credential::secret().expect("secret");
    let hash = credential::hash(&secret);
    let id = admin::with_db(&c.db, |conn| {
        tokens::create_token(conn, name, None, None, None, &hash, wall_ms())
    })
    .expect("create token");
    Api {
        addr: c.http,
        token: credential::format(Kind::Token, id, &secret),
    }
}

/// Creates `name` bound to `role` on hosts matching `selector` ("" = all), and logs in.
fn user_api(c: &CollectorProc, name: &str, role: &str, selector: &str) -> Api {
    let hash = password::hash(PASSWORD).expect("hash");
    admin::with_db(&c.db, |conn| {
        let uid = users::create_user(conn, name, &hash, wall_ms())?;
        roles::bind(conn, uid, role, selector, wall_ms())?;
        Ok(())
    })
    .expect("create user");
    let r = request(
        c.http,
        "POST",
        "/api/v1/sessions",
        None,
        Some(&json!({"username": name, "password": PASSWORD})),
    );
    let body = expect(r, 201);
    Api {
        addr: c.http,
        token: body["token"].as_str().expect("session token").to_owned(),
    }
}

/// Audit rows `(actor, result, detail)` of one action (`METHOD /api/v1/route`).
fn audit(db: &Path, action: &str) -> Vec<(String, i64, String)> {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open db");
    c.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    let mut st = c
        .prepare("SELECT actor, result, detail FROM audit_log WHERE action = ?1 ORDER BY id")
        .expect("prepare");
    st.query_map([action], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

// ---- tests -------------------------------------------------------------------------------

#[test]
fn api_alerts_list_history_and_ack_stops_repeats() {
    let rig = Rig::new();
    let mut hook = rig.capture(Reply::status(200));
    let c = rig.collector(&format!(
        "[alerting]\n{}\n{}",
        fast_alerting("2s"),
        webhook_receiver("hook", &hook.url("/hook"))
    ));
    let admin = admin_api(&c, "t");
    let viewer = user_api(&c, "vic", "viewer", "");

    let mut a = rig.agent(c.ingest, HOST_A);
    rig.send(&mut a, "test_value", "1", 1.0);
    let first = rig
        .next_alert(
            &mut hook,
            Duration::from_secs(10),
            is("test_high", "firing", "1"),
        )
        .expect("the alert was announced");
    let fp = first["alerts"][0]["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_owned();
    // Unacknowledged, it is announced again after repeat_interval.
    rig.next_alert(
        &mut hook,
        Duration::from_secs(10),
        is("test_high", "firing", "1"),
    )
    .expect("a repeat before the acknowledgement");

    let list = expect(admin.get("/alerts"), 200);
    let alerts = items(&list);
    assert_eq!(alerts.len(), 1, "{list}");
    assert_eq!(alerts[0]["fingerprint"], fp.as_str());
    assert_eq!(alerts[0]["status"], "firing");
    assert_eq!(alerts[0]["severity"], "critical");
    assert_eq!(alerts[0]["labels"]["host"], HOST_A);
    assert_eq!(alerts[0]["annotations"]["summary"], "test 1 on team-a-1");
    assert!(alerts[0]["ack"].is_null());
    assert!(list["next_cursor"].is_null());
    assert_eq!(expect(viewer.get("/alerts"), 200)["items"], list["items"]);
    assert_eq!(
        expect(admin.get(&format!("/alerts/{fp}")), 200)["rule"],
        "test_high"
    );
    assert_eq!(items(&expect(admin.get("/alerts?rule=nope"), 200)).len(), 0);
    assert_eq!(
        items(&expect(admin.get(&format!("/alerts?host={HOST_B}")), 200)).len(),
        0
    );
    expect(admin.get("/alerts?limit=0"), 400);
    expect(admin.get("/alerts?limit=1000000"), 400);
    expect(admin.get("/alerts/0123456789abcdef"), 404);
    expect(request(c.http, "GET", "/api/v1/alerts", None, None), 401);

    let hist = expect(admin.get(&format!("/alerts/history?fingerprint={fp}")), 200);
    let h = items(&hist);
    assert!(!h.is_empty(), "{hist}");
    assert_eq!(h[0]["to"], "firing");
    assert_eq!(h[0]["from"], "inactive");
    assert_eq!(h[0]["rule"], "test_high");
    assert_eq!(h[0]["value"], 1.0);
    assert_eq!(
        items(&expect(admin.get("/alerts/history?rule=nope"), 200)).len(),
        0
    );
    let later = wall_ms() + 60_000;
    assert_eq!(
        items(&expect(
            admin.get(&format!("/alerts/history?since_ms={later}")),
            200
        ))
        .len(),
        0
    );
    let paged = expect(admin.get("/alerts/history?limit=1"), 200);
    assert_eq!(items(&paged).len(), 1);

    // A viewer may not acknowledge; unknown alerts are 404.
    expect(
        viewer.post(&format!("/alerts/{fp}/ack"), &json!({"comment": "x"})),
        403,
    );
    expect(admin.post("/alerts/0123456789abcdef/ack", &json!({})), 404);
    let r = admin.post(
        &format!("/alerts/{fp}/ack"),
        &json!({"comment": "x", "extra": 1}),
    );
    assert!(
        matches!(r.status, 400 | 422),
        "unknown field accepted: {r:?}"
    );

    let acked = expect(
        admin.post(&format!("/alerts/{fp}/ack"), &json!({"comment": "on it"})),
        200,
    );
    assert_eq!(acked["ack"]["by"], "token:t");
    assert_eq!(acked["ack"]["comment"], "on it");
    assert_eq!(acked["ack"]["level"], "critical");
    // The receiver hears of the acknowledgement (a repeat may still have been in flight)...
    let ack_note = rig
        .next_alert(
            &mut hook,
            Duration::from_secs(10),
            is("test_high", "acknowledged", "1"),
        )
        .expect("the acknowledgement reached the receiver");
    validate_webhook(&ack_note).unwrap_or_else(|e| panic!("webhook schema: {e}: {ack_note}"));
    // ...and the repeats stop (two and a half repeat intervals without one).
    let repeat = rig.next_alert(
        &mut hook,
        Duration::from_secs(5),
        is("test_high", "firing", "1"),
    );
    assert!(
        repeat.is_none(),
        "repeated after the acknowledgement: {repeat:?}"
    );
    assert_eq!(
        items(&expect(admin.get("/alerts"), 200))[0]["ack"]["by"],
        "token:t"
    );

    let rows = audit(&c.db, "POST /api/v1/alerts/{fingerprint}/ack");
    assert!(
        rows.contains(&("user:vic".into(), 403, String::new())),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r.0 == "token:t" && r.1 == 200 && r.2.contains(&fp)),
        "{rows:?}"
    );
}

#[test]
fn api_alerts_silences_and_host_scopes() {
    let rig = Rig::new();
    let mut hook = rig.capture(Reply::status(200));
    let c = rig.collector(&format!(
        "[alerting]\n{}\n{}",
        fast_alerting("4h"),
        webhook_receiver("hook", &hook.url("/hook"))
    ));
    let admin = admin_api(&c, "t");
    let mut a = rig.agent(c.ingest, HOST_A);
    let mut b = rig.agent(c.ingest, HOST_B);
    rig.send(&mut a, "test_value", "1", 1.0);
    rig.send(&mut b, "test_value", "1", 1.0);
    for _ in 0..2 {
        rig.next_alert(
            &mut hook,
            Duration::from_secs(10),
            is("test_high", "firing", "1"),
        )
        .expect("both alerts announced");
    }
    // Alice operates team A's hosts only.
    let alice = user_api(&c, "alice", "operator", &format!("{{host=\"{HOST_A}\"}}"));

    let all = items(&expect(admin.get("/alerts"), 200));
    assert_eq!(all.len(), 2);
    let fp_of = |host: &str| {
        all.iter()
            .find(|x| x["labels"]["host"] == host)
            .and_then(|x| x["fingerprint"].as_str())
            .expect("alert of host")
            .to_owned()
    };
    let (fp_a, fp_b) = (fp_of(HOST_A), fp_of(HOST_B));
    let mine = items(&expect(alice.get("/alerts"), 200));
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["labels"]["host"], HOST_A);
    let hist = items(&expect(alice.get("/alerts/history"), 200));
    assert!(!hist.is_empty());
    assert!(
        hist.iter().all(|h| h["labels"]["host"] == HOST_A),
        "{hist:?}"
    );
    expect(alice.get(&format!("/alerts/{fp_b}")), 404);
    expect(alice.post(&format!("/alerts/{fp_b}/ack"), &json!({})), 404);
    assert_eq!(
        expect(alice.post(&format!("/alerts/{fp_a}/ack"), &json!({})), 200)["ack"]["by"],
        "user:alice"
    );

    // Silences: a scoped caller must limit the silence to one of its hosts.
    let body = |m: &str| json!({"matchers": m, "duration": "1h", "comment": "maintenance"});
    let r = alice.post("/silences", &body(r#"{alertname="test_high"}"#));
    assert_eq!(r.status, 403, "{}", r.body);
    expect(
        alice.post("/silences", &body(&format!("{{host=\"{HOST_B}\"}}"))),
        403,
    );
    let sa = expect(
        alice.post(
            "/silences",
            &body(&format!("{{host=\"{HOST_A}\", i=\"2\"}}")),
        ),
        201,
    );
    assert_eq!(sa["author"], "user:alice");
    assert_eq!(sa["state"], "active");
    assert_eq!(sa["comment"], "maintenance");
    let sa_id = sa["id"].as_i64().expect("id");
    let sb = expect(
        admin.post(
            "/silences",
            &json!({"matchers": format!("{{host=\"{HOST_B}\", i=\"2\"}}"),
                    "ends_ms": wall_ms() + 3_600_000, "comment": "b maintenance"}),
        ),
        201,
    );
    let sb_id = sb["id"].as_i64().expect("id");
    assert_eq!(sb["author"], "token:t");

    // Invalid silences are refused with the reason.
    for (bad, needle) in [
        (
            json!({"matchers": "{i=~\".*\"}", "duration": "1h", "comment": "x"}),
            "empty label set",
        ),
        (
            json!({"matchers": "nope", "duration": "1h", "comment": "x"}),
            "matchers",
        ),
        (
            json!({"matchers": "{i=\"1\"}", "duration": "1h", "comment": " "}),
            "comment",
        ),
        (
            json!({"matchers": "{i=\"1\"}", "comment": "x"}),
            "exactly one",
        ),
        (
            json!({"matchers": "{i=\"1\"}", "duration": "1h", "ends_ms": 1, "comment": "x"}),
            "exactly one",
        ),
        (
            json!({"matchers": "{i=\"1\"}", "duration": "5x", "comment": "x"}),
            "duration",
        ),
        (
            json!({"matchers": "{i=\"1\"}", "ends_ms": 1000, "comment": "x"}),
            "past",
        ),
    ] {
        let r = admin.post("/silences", &bad);
        assert_eq!(r.status, 422, "{bad}: {}", r.body);
        assert!(r.message().contains(needle), "{bad}: {}", r.body);
    }

    let ids =
        |v: Value| -> Vec<i64> { items(&v).iter().filter_map(|s| s["id"].as_i64()).collect() };
    // Matchers that contradict each other are refused: `{host=A, host=B}` once let a scoped
    // caller file a silence that the other team then saw (it named a host of each).
    for contradictory in [
        format!("{{host=\"{HOST_A}\", host=\"{HOST_B}\"}}"),
        format!("{{host=\"{HOST_A}\", host!=\"{HOST_A}\"}}"),
    ] {
        for caller in [&alice, &admin] {
            let r = caller.post("/silences", &body(&contradictory));
            assert_eq!(r.status, 422, "{contradictory}: {}", r.body);
            assert!(r.message().contains("contradict"), "{}", r.body);
        }
    }
    assert_eq!(ids(expect(alice.get("/silences"), 200)), vec![sa_id]);
    assert_eq!(ids(expect(admin.get("/silences"), 200)), vec![sb_id, sa_id]);
    expect(alice.get(&format!("/silences/{sb_id}")), 404);
    expect(alice.delete(&format!("/silences/{sb_id}")), 404);
    expect(admin.get("/silences?state=bogus"), 400);
    expect(admin.get("/silences/999999"), 404);

    // The silence mutes: i=2 on host A stays quiet while i=3 is announced.
    rig.send(&mut a, "test_value", "2", 1.0);
    rig.send(&mut a, "test_value", "3", 1.0);
    rig.next_alert(
        &mut hook,
        Duration::from_secs(10),
        is("test_high", "firing", "3"),
    )
    .expect("the unsilenced alert");
    let muted = rig.next_alert(
        &mut hook,
        Duration::from_secs(2),
        is("test_high", "firing", "2"),
    );
    assert!(muted.is_none(), "silenced alert announced: {muted:?}");

    // Expiring it announces the alert it muted.
    expect(alice.delete(&format!("/silences/{sa_id}")), 204);
    expect(alice.delete(&format!("/silences/{sa_id}")), 409);
    rig.next_alert(
        &mut hook,
        Duration::from_secs(10),
        is("test_high", "firing", "2"),
    )
    .expect("announced once the silence ended");
    assert_eq!(ids(expect(admin.get("/silences"), 200)), vec![sb_id]);
    let every = items(&expect(admin.get("/silences?state=all"), 200));
    assert_eq!(every.len(), 2);
    assert_eq!(every[1]["state"], "expired");
    let rows = audit(&c.db, "POST /api/v1/silences");
    assert!(
        rows.iter().any(|r| r.0 == "user:alice" && r.1 == 403),
        "{rows:?}"
    );
    assert!(
        rows.iter().any(|r| r.0 == "user:alice" && r.1 == 201),
        "{rows:?}"
    );

    // One already stored (made before this check) is visible only to whoever covers every
    // host it names: alice (team A only) does not see it.
    let legacy: i64 = mcpwatch_collector::store::admin::with_db(&c.db, |conn| {
        conn.execute(
            "INSERT INTO silences (matchers, starts_ms, ends_ms, author, comment, created_ms)
             VALUES (?1, ?2, ?3, 'token:t', 'legacy', ?2)",
            rusqlite::params![
                format!("{{host=\"{HOST_A}\", host=\"{HOST_B}\"}}"),
                wall_ms(),
                wall_ms() + 3_600_000
            ],
        )?;
        Ok(conn.last_insert_rowid())
    })
    .expect("legacy silence");
    expect(alice.get(&format!("/silences/{legacy}")), 404);
    expect(admin.get(&format!("/silences/{legacy}")), 200);
    assert!(!ids(expect(alice.get("/silences"), 200)).contains(&legacy));

    // `silenced_by`: the silences muting an alert now, among those the caller may see.
    let muting = expect(
        alice.post(
            "/silences",
            &body(&format!("{{host=\"{HOST_A}\", i=\"1\"}}")),
        ),
        201,
    )["id"]
        .as_i64()
        .expect("id");
    let global = expect(
        admin.post("/silences", &body(r#"{alertname="test_high"}"#)),
        201,
    )["id"]
        .as_i64()
        .expect("id");
    let muted_by =
        |api: &Api, fp: &str| expect(api.get(&format!("/alerts/{fp}")), 200)["silenced_by"].clone();
    assert_eq!(muted_by(&alice, &fp_a), json!([muting]));
    assert_eq!(muted_by(&admin, &fp_a), json!([muting, global]));
    assert_eq!(muted_by(&admin, &fp_b), json!([global]));
    let listed = items(&expect(alice.get("/alerts"), 200));
    let a1 = listed
        .iter()
        .find(|x| x["fingerprint"] == fp_a.as_str())
        .expect("alert a");
    assert_eq!(a1["silenced_by"], json!([muting]));
}

#[test]
fn api_alerts_rules_live_dry_run_and_restart() {
    let rig = Rig::new();
    let mut hook = rig.capture(Reply::status(200));
    let mut c = rig.collector(&format!(
        "[alerting]\n{}\n{}",
        fast_alerting("4h"),
        webhook_receiver("hook", &hook.url("/hook"))
    ));
    let admin = admin_api(&c, "t");
    let operator = user_api(&c, "olga", "operator", "");

    let rules = expect(admin.get("/rules"), 200);
    assert_eq!(rules.as_array().map(Vec::len), Some(1), "{rules}");
    assert_eq!(rules[0]["name"], "test_high");
    assert_eq!(rules[0]["origin"], "config");
    assert_eq!(rules[0]["enabled"], true);
    assert_eq!(rules[0]["definition"]["window"], "10m");
    expect(operator.get("/rules"), 200);
    expect(operator.get("/rules/test_high"), 200);
    expect(
        operator.put("/rules/x", &json!({"selector": "m", "critical": 1.0})),
        403,
    );
    expect(
        operator.post("/rules/dry-run", &json!({"selector": "m", "critical": 1.0})),
        403,
    );

    let mut a = rig.agent(c.ingest, HOST_A);
    rig.send(&mut a, "api_metric", "x", 1.0);
    rig.send(&mut a, "test_value", "1", 1.0);
    rig.next_alert(
        &mut hook,
        Duration::from_secs(10),
        is("test_high", "firing", "1"),
    )
    .expect("config rule fired");

    // Dry runs: over stored samples for a metric no rule reads, over the window otherwise.
    let d = expect(
        admin.post(
            "/rules/dry-run",
            &json!({"selector": "api_metric", "critical": 5.0}),
        ),
        200,
    );
    assert_eq!(d["source"], "store", "{d}");
    assert_eq!(
        (d["evaluated"].as_u64(), d["firing"].as_u64()),
        (Some(1), Some(0)),
        "{d}"
    );
    assert_eq!(d["series"][0]["state"], "inactive");
    assert_eq!(d["series"][0]["value"], 1.0);
    assert_eq!(d["series"][0]["labels"]["host"], HOST_A);
    let d = expect(
        admin.post(
            "/rules/dry-run",
            &json!({"name": "probe", "selector": "test_value", "window": "5m", "critical": 0.5,
                    "summary": "{{ $labels.i }} is {{ $value }}"}),
        ),
        200,
    );
    assert_eq!(d["source"], "window", "{d}");
    assert_eq!(d["firing"], 1, "{d}");
    assert_eq!(d["series"][0]["level"], "critical");
    assert_eq!(d["series"][0]["annotations"]["summary"], "1 is 1");
    assert_eq!(d["series"][0]["labels"]["alertname"], "probe");
    let d = expect(
        admin.post(
            "/rules/dry-run",
            &json!({"selector": "test_value", "window": "5m", "for": "1m", "critical": 0.5}),
        ),
        200,
    );
    assert_eq!(
        (d["firing"].as_u64(), d["pending"].as_u64()),
        (Some(0), Some(1)),
        "{d}"
    );
    let r = admin.post("/rules/dry-run", &json!({"selector": "test_value"}));
    assert_eq!(r.status, 422);
    assert!(r.message().contains("no threshold"), "{}", r.body);
    // Nothing of the dry runs was stored.
    assert_eq!(items(&expect(admin.get("/alerts"), 200)).len(), 1);

    // PUT: validated like the rules files.
    for (name, bad, needle) in [
        (
            "bad",
            json!({"selector": "m", "critical": 95.0, "critical_clear": 99.0}),
            "wrong side",
        ),
        (
            "bad",
            json!({"selector": "m", "criticall": 1.0}),
            "criticall",
        ),
        (
            "bad",
            json!({"name": "other", "selector": "m", "critical": 1.0}),
            "path",
        ),
        (
            "bad$name",
            json!({"selector": "m", "critical": 1.0}),
            "invalid name",
        ),
        ("bad", json!(["not", "an", "object"]), "object"),
    ] {
        let r = admin.put(&format!("/rules/{name}"), &bad);
        // Not an object: does not fit the document (400); the rest fit it but are refused.
        let want = if needle == "object" { 400 } else { 422 };
        assert_eq!(r.status, want, "{bad}: {}", r.body);
        assert!(r.message().contains(needle), "{bad}: {}", r.body);
    }
    expect(admin.get("/rules/bad"), 404);

    // A rule put through the API runs at once: new data fires it.
    let put = expect(
        admin.put(
            "/rules/api_high",
            &json!({"selector": "api_metric", "window": "10m", "critical": 5.0,
                    "summary": "api {{ $labels.i }} at {{ $value }}"}),
        ),
        200,
    );
    assert_eq!(put["origin"], "api");
    assert_eq!(put["enabled"], true);
    assert_eq!(put["definition"]["critical"], 5.0);
    assert_eq!(put["definition"]["window"], "10m");
    assert_eq!(expect(admin.get("/rules/api_high"), 200)["origin"], "api");
    rig.send(&mut a, "api_metric", "x", 9.0);
    let fired = rig
        .next_alert(
            &mut hook,
            Duration::from_secs(10),
            is("api_high", "firing", "x"),
        )
        .expect("the API rule fired on new data");
    assert_eq!(fired["alerts"][0]["summary"], "api x at 9");
    assert_eq!(
        items(&expect(admin.get("/alerts?rule=api_high"), 200)).len(),
        1
    );

    // A configured rule is switched off by PUT enabled=false: its alert resolves.
    let off = expect(
        admin.put("/rules/test_high", &json!({"enabled": false})),
        200,
    );
    assert_eq!(
        (off["origin"].as_str(), off["enabled"].as_bool()),
        (Some("api"), Some(false))
    );
    rig.next_alert(
        &mut hook,
        Duration::from_secs(10),
        is("test_high", "resolved", "1"),
    )
    .expect("the disabled rule's alert resolved");
    rig.send(&mut a, "test_value", "4", 1.0);
    let quiet = rig.next_alert(
        &mut hook,
        Duration::from_secs(2),
        is("test_high", "firing", "4"),
    );
    assert!(quiet.is_none(), "a disabled rule fired: {quiet:?}");

    // API rules survive a restart, still overriding the configured ones.
    c.stop();
    c.restart();
    let admin = Api {
        addr: c.http,
        token: admin.token,
    };
    assert_eq!(expect(admin.get("/rules/api_high"), 200)["origin"], "api");
    assert_eq!(expect(admin.get("/rules/test_high"), 200)["enabled"], false);
    let mut a = rig.agent(c.ingest, HOST_A);
    rig.send(&mut a, "test_value", "5", 1.0);
    let quiet = rig.next_alert(
        &mut hook,
        Duration::from_secs(2),
        is("test_high", "firing", "5"),
    );
    assert!(
        quiet.is_none(),
        "a disabled rule fired after a restart: {quiet:?}"
    );

    // DELETE: only API rules; the configured definition applies again.
    let del = expect(admin.delete("/rules/test_high"), 200);
    assert_eq!(del["config_restored"], true);
    assert_eq!(
        expect(admin.get("/rules/test_high"), 200)["origin"],
        "config"
    );
    let r = admin.delete("/rules/test_high");
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.message().contains("enabled"), "{}", r.body);
    expect(admin.delete("/rules/nope"), 404);
    let del = expect(admin.delete("/rules/api_high"), 200);
    assert_eq!(del["config_restored"], false);
    expect(admin.get("/rules/api_high"), 404);
    rig.next_alert(
        &mut hook,
        Duration::from_secs(10),
        is("api_high", "resolved", "x"),
    )
    .expect("the deleted rule's alert resolved");

    let rows = audit(&c.db, "PUT /api/v1/rules/{name}");
    assert!(
        rows.iter().any(|r| r.0 == "user:olga" && r.1 == 403),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r.0 == "token:t" && r.1 == 200 && r.2.contains("api_high")),
        "{rows:?}"
    );
}

#[test]
fn api_alerts_receivers_redacted_and_test_send() {
    let rig = Rig::new();
    let mut hook = rig.capture(Reply::status(200));
    let mut pd = rig.capture(
        Reply::status(202).with_body(r#"{"status":"success","message":"Event processed"}"#),
    );
    let broken = rig.capture(Reply::status(400).with_body("bad payload"));
    let slack_url = format!(
        "http://127.0.0.1:9/services/T000/B000/{}",
        "XXSLACKSECRETXX"
    );
    std::fs::write(rig.dir.join("slack-url"), &slack_url).expect("slack secret");
    let c = rig.collector(&format!(
        "[alerting]\n{}\n{}{}\
         [[receiver]]\ntype = \"pagerduty\"\nname = \"pd\"\nrouting_key = {{ file = \"pd-key\" }}\nurl = \"{}\"\n\
         [[receiver]]\ntype = \"slack\"\nname = \"chat\"\nwebhook_url = {{ file = \"slack-url\" }}\n",
        fast_alerting("4h"),
        webhook_receiver("hook", &hook.url("/hook")),
        webhook_receiver("broken", &broken.url("/broken")),
        pd.url("/v2/enqueue"),
    ));
    let admin = admin_api(&c, "t");
    let viewer = user_api(&c, "vic", "viewer", "");
    let scoped_admin = user_api(&c, "ada", "admin", &format!("{{host=\"{HOST_A}\"}}"));

    let r = admin.get("/receivers");
    for secret in [HMAC_KEY, PD_KEY, "XXSLACKSECRETXX"] {
        assert!(
            !r.body.contains(secret),
            "a secret in the receiver list: {}",
            r.body
        );
    }
    let list = expect(r, 200);
    let by_name = |n: &str| {
        list.as_array()
            .and_then(|l| l.iter().find(|x| x["name"] == n))
            .cloned()
            .unwrap_or_else(|| panic!("receiver {n} listed: {list}"))
    };
    let h = by_name("hook");
    assert_eq!(h["type"], "webhook");
    assert_eq!(h["settings"]["url"], hook.url("/hook").as_str());
    assert_eq!(h["settings"]["secret"], json!({"file": "hmac"}));
    assert_eq!(
        by_name("pd")["settings"]["routing_key"],
        json!({"file": "pd-key"})
    );
    assert_eq!(
        by_name("chat")["settings"]["webhook_url"],
        json!({"file": "slack-url"})
    );
    assert_eq!(by_name("chat")["type"], "slack");
    assert_eq!(expect(admin.get("/receivers/pd"), 200)["type"], "pagerduty");
    expect(admin.get("/receivers/nope"), 404);
    expect(viewer.get("/receivers"), 403);
    // A team's receivers:write reaches only receivers owned inside its scope: none of these
    // fleet-wide ones.
    assert_eq!(expect(scoped_admin.get("/receivers"), 200), json!([]));
    expect(scoped_admin.post("/receivers/hook/test", &json!({})), 404);

    // Test-sends go out now, signed like any notification.
    let sent = expect(admin.post("/receivers/hook/test", &json!({})), 200);
    assert_eq!(sent["ok"], true);
    let req = rig.rt.block_on(hook.next());
    assert_eq!(req.path, "/hook");
    let sig = req
        .header("x-mcpwatch-signature")
        .expect("signature header");
    assert!(verify_hmac(HMAC_KEY.as_bytes(), &req.body, sig), "HMAC");
    let body = req.json();
    validate_webhook(&body).unwrap_or_else(|e| panic!("webhook schema: {e}: {body}"));
    assert_eq!(body["alerts"][0]["rule"], "mcpwatch_test_notification");
    assert_eq!(body["alerts"][0]["labels"]["receiver"], "hook");
    assert_eq!(body["alerts"][0]["fingerprint"], sent["fingerprint"]);

    // PagerDuty gets the trigger and the resolve, so no incident stays open.
    expect(admin.post("/receivers/pd/test", &json!({})), 200);
    let (t, r) = rig
        .rt
        .block_on(async { (pd.next().await.json(), pd.next().await.json()) });
    for v in [&t, &r] {
        validate_pagerduty(v).unwrap_or_else(|e| panic!("PagerDuty schema: {e}: {v}"));
        assert_eq!(v["routing_key"], PD_KEY);
    }
    assert_eq!(
        (t["event_action"].as_str(), r["event_action"].as_str()),
        (Some("trigger"), Some("resolve"))
    );
    assert_eq!(t["dedup_key"], r["dedup_key"]);

    // A refusal comes back as 502 with the receiver's reason.
    let r = admin.post("/receivers/broken/test", &json!({}));
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "send_failed");
    assert!(r.message().contains("400"), "{}", r.body);
    expect(admin.post("/receivers/nope/test", &json!({})), 404);

    // Configured receivers are read-only through the API (409); an incomplete definition
    // is refused (422). Receivers defined through the API: tests/api_receivers.rs.
    expect(
        admin.post("/receivers", &json!({"type": "webhook", "name": "x"})),
        422,
    );
    expect(
        admin.put(
            "/receivers/hook",
            &json!({"type": "webhook", "name": "hook"}),
        ),
        409,
    );
    expect(admin.delete("/receivers/hook"), 409);
    expect(viewer.delete("/receivers/hook"), 403);

    let rows = audit(&c.db, "POST /api/v1/receivers/{name}/test");
    assert!(
        rows.iter()
            .any(|r| r.0 == "token:t" && r.1 == 200 && r.2.contains("hook")),
        "{rows:?}"
    );
    assert!(
        rows.iter().any(|r| r.0 == "token:t" && r.1 == 502),
        "{rows:?}"
    );
    assert!(
        rows.iter().any(|r| r.0 == "user:ada" && r.1 == 404),
        "the hidden receiver's refusal is audited: {rows:?}"
    );
}
