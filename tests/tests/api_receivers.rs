//! Receivers defined through the HTTP API against the real collector binary: a simulated
//! agent (raw protocol over mutual TLS) fires rules, local HTTP capture servers stand in
//! for webhooks. A receiver created through the API gets alerts at once; after a PUT the
//! next alert goes to its new URL; after a DELETE its queued notifications are in the
//! dead-letter list and nothing more is sent through it; it survives a restart (one whose
//! definition was changed behind the collector's back to send elsewhere is skipped, not
//! fatal, until fixed). Secrets are given as values and sealed: a reference to a file or
//! variable is a 422, a kept secret does not follow a definition to another destination,
//! configured receivers are read-only (409), and no secret value reaches the database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mcpwatch_tests::api::{admin_token, Api, Resp};
use mcpwatch_tests::client;
use mcpwatch_tests::process::CollectorProc;
use mcpwatch_tests::receivers::{validate_webhook, verify_hmac, Captured, HttpCapture, Reply};
use mcpwatch_tests::sim::{fast_alerting, test_high_rules, SimAgent};
use mcpwatch_tests::Pki;
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};
use tokio::runtime::Runtime;

const HOST: &str = "recv-host-1";
/// The configured receiver's HMAC key (next to collector.toml).
const CFG_KEY: &str = "configured-receiver-hmac-key-0001";
/// The API receivers' HMAC key, given as a value.
const API_KEY: &str = "api-receiver-hmac-key-7f3a9c21e4";
/// The key of `fragile`, whose definition is moved to another host behind the collector's
/// back.
const FRAGILE_KEY: &str = "fragile-receiver-hmac-key-55d0";
/// A secret sent as a bare string: refused, never stored.
const PLAIN: &str = "plaintext-secret-value-b81c27";

/// `[api]` letting API receivers reach the loopback capture servers, and `[alerting]` with
/// one notification per alert, at once, quick retries; one configured
/// webhook receiver `cfg`; `default_receivers` unset, so API receivers get every alert.
fn alerting(cfg_url: &str) -> String {
    format!(
        "[api]\nreceiver_url_allow = [\"127.0.0.0/8\"]\n\
         [alerting]\n{}\n\
         [[receiver]]\ntype = \"webhook\"\nname = \"cfg\"\nurl = \"{cfg_url}\"\n\
         secret = {{ file = \"cfg-hmac\" }}\n",
        fast_alerting("4h")
    )
}

fn hook(url: &str, secret: Value) -> Value {
    json!({"type": "webhook", "url": url, "secret": secret})
}

fn named(mut v: Value, name: &str) -> Value {
    v["name"] = json!(name);
    v
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

fn message(resp: &Resp) -> String {
    resp.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

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
        std::fs::create_dir_all(dir.join("secrets")).expect("mkdir secrets");
        std::fs::write(dir.join("rules.toml"), test_high_rules("10m")).expect("write rules");
        std::fs::write(dir.join("cfg-hmac"), format!("{CFG_KEY}\n")).expect("cfg key");
        // Where API receivers read secret files before they were sealed: no longer theirs.
        std::fs::write(dir.join("secrets/hook-hmac"), format!("{CFG_KEY}\n")).expect("old key");
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

    /// Connects the simulated agent `HOST`.
    fn agent(&self, ingest: SocketAddr) -> SimAgent {
        let certs = self.pki.agent(HOST);
        let tls = client::config(&self.pki.ca(), &certs.cert, &certs.key);
        self.rt.block_on(SimAgent::connect(ingest, tls, HOST))
    }

    fn capture(&self, default: Reply) -> HttpCapture {
        self.rt.block_on(HttpCapture::start(default))
    }

    /// The next request to `cap` with an alert satisfying `pred` within `within` (others
    /// are skipped).
    fn next_alert(
        &self,
        cap: &mut HttpCapture,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Captured> {
        let deadline = Instant::now() + within;
        self.rt.block_on(async {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                let wait = left.min(Duration::from_secs(5));
                if let Ok(req) = tokio::time::timeout(wait, cap.next()).await {
                    if req.json()["alerts"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(&pred))
                    {
                        return Some(req);
                    }
                }
            }
        })
    }

    /// Every request `cap` gets within `within`.
    fn collect(&self, cap: &mut HttpCapture, within: Duration) -> Vec<Captured> {
        let deadline = Instant::now() + within;
        self.rt.block_on(async {
            let mut out = Vec::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return out;
                }
                let wait = left.min(Duration::from_secs(5));
                if let Ok(req) = tokio::time::timeout(wait, cap.next()).await {
                    out.push(req);
                }
            }
        })
    }
}

/// A firing `test_high` alert for series `i`.
fn firing(i: &str) -> impl Fn(&Value) -> bool {
    let i = i.to_owned();
    move |a: &Value| {
        a["rule"] == "test_high" && a["status"] == "firing" && a["labels"]["i"] == i.as_str()
    }
}

fn mentions(req: &Captured, i: &str) -> bool {
    req.json()["alerts"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x["labels"]["i"] == i))
}

/// Checks the signature with `key` and the payload schema.
#[track_caller]
fn signed_with(req: &Captured, key: &str) {
    let sig = req
        .header("x-mcpwatch-signature")
        .expect("signature header");
    assert!(verify_hmac(key.as_bytes(), &req.body, sig), "HMAC key");
    let body = req.json();
    validate_webhook(&body).unwrap_or_else(|e| panic!("webhook schema: {e}: {body}"));
}

fn db(path: &Path) -> Connection {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open db");
    c.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    c
}

fn count(path: &Path, sql: &str) -> i64 {
    db(path).query_row(sql, [], |r| r.get(0)).expect("count")
}

fn find<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|l| l.iter().find(|x| x["name"] == name))
        .unwrap_or_else(|| panic!("receiver {name} listed: {list}"))
}

#[test]
fn api_receivers_crud_live_durable_and_secret_free() {
    let rig = Rig::new();
    let mut cfg = rig.capture(Reply::status(200));
    let mut a = rig.capture(Reply::status(200));
    // B refuses for a while (retryable), so rows stay queued for it.
    let mut b = rig.capture(Reply::status(503));
    let mut keep = rig.capture(Reply::status(200));
    let mut c = CollectorProc::start(&rig.pki, &rig.dir, &alerting(&cfg.url("/cfg")));
    let token = admin_token(&c.db, "t", None);
    let api = Api::new(c.http, Some(&token));
    let r = "/api/v1/receivers";

    // ---- refused definitions --------------------------------------------------------
    let resp = api.send("POST", r, &named(hook(&a.url("/a"), json!(PLAIN)), "bad"));
    assert!(
        !resp.body.contains(PLAIN),
        "a secret value echoed: {}",
        resp.body
    );
    expect(resp, 422);
    // The configuration's secret files and the environment are not the API's: a
    // `receivers:write` holder cannot ship a configured receiver's secret elsewhere.
    for reference in [
        json!({"file": "cfg-hmac"}),
        json!({"file": "hook-hmac"}),
        json!({"file": "../cfg-hmac"}),
        json!({"env": "HOME"}),
        json!({"env": "MCPWATCH_SECRET_X"}),
        json!({}),
        json!({"stored": true}),
        json!({"value": PLAIN, "stored": true}),
    ] {
        let resp = api.send(
            "POST",
            r,
            &named(hook(&a.url("/a"), reference.clone()), "bad"),
        );
        assert_eq!(resp.status, 422, "{reference}: {}", resp.body);
        assert!(!resp.body.contains(CFG_KEY), "{}", resp.body);
        assert!(!resp.body.contains(PLAIN), "{}", resp.body);
    }
    let resp = api.send(
        "POST",
        r,
        &json!({"type": "pagerduty", "name": "bad", "url": a.url("/pd"),
                "routing_key": {"file": "cfg-hmac"}}),
    );
    assert_eq!(resp.status, 422, "{}", resp.body);
    assert!(
        message(&resp).contains("configuration file"),
        "{}",
        resp.body
    );
    expect(api.send("POST", r, &json!({"type": "webhook"})), 422);
    expect(
        api.send("POST", r, &named(json!({"type": "carrier-pigeon"}), "bad")),
        422,
    );
    expect(
        api.send(
            "PUT",
            &format!("{r}/other"),
            &named(hook(&a.url("/a"), json!({"value": API_KEY})), "bad"),
        ),
        422,
    );
    expect(api.get(&format!("{r}/bad")), 404);

    // ---- configured receivers are read-only -------------------------------------------
    let ok_secret = json!({"value": API_KEY});
    let kept = json!({"stored": true});
    let resp = api.send(
        "PUT",
        &format!("{r}/cfg"),
        &hook(&a.url("/a"), ok_secret.clone()),
    );
    assert_eq!(resp.status, 409, "{}", resp.body);
    assert!(message(&resp).contains("configuration"), "{}", resp.body);
    expect(
        api.send(
            "POST",
            r,
            &named(hook(&a.url("/a"), ok_secret.clone()), "cfg"),
        ),
        409,
    );
    let resp = request_delete(&api, &format!("{r}/cfg"));
    assert_eq!(resp.status, 409, "{}", resp.body);
    expect(request_delete(&api, &format!("{r}/nope")), 404);

    // ---- create: in effect at once ----------------------------------------------------
    let created = expect(
        api.send(
            "POST",
            r,
            &named(hook(&a.url("/a"), ok_secret.clone()), "apihook"),
        ),
        201,
    );
    assert_eq!(created["origin"], "api");
    assert_eq!(created["active"], true);
    assert_eq!(created["settings"]["secret"], kept, "never shown again");
    assert!(!created.to_string().contains(API_KEY));
    expect(
        api.send(
            "POST",
            r,
            &named(hook(&a.url("/a"), ok_secret.clone()), "apihook"),
        ),
        409,
    );
    let list = expect(api.get(r), 200);
    assert_eq!(find(&list, "cfg")["origin"], "config");
    assert_eq!(find(&list, "apihook")["origin"], "api");
    assert_eq!(
        find(&list, "apihook")["settings"]["url"],
        a.url("/a").as_str()
    );
    assert!(
        c.metrics().contains("receiver=\"apihook\""),
        "series registered"
    );

    // Test-sends work for it too.
    expect(
        api.send("POST", &format!("{r}/apihook/test"), &json!({})),
        200,
    );
    let req = rig.rt.block_on(a.next());
    signed_with(&req, API_KEY);
    assert_eq!(
        req.json()["alerts"][0]["rule"],
        "mcpwatch_test_notification"
    );

    let mut agent = rig.agent(c.ingest);
    rig.rt.block_on(agent.send("test_value", "1", 1.0));
    let req = rig
        .next_alert(&mut a, Duration::from_secs(15), firing("1"))
        .expect("the API receiver got the alert");
    assert_eq!(req.path, "/a");
    signed_with(&req, API_KEY);
    let req = rig
        .next_alert(&mut cfg, Duration::from_secs(15), firing("1"))
        .expect("the configured receiver got it too");
    signed_with(&req, CFG_KEY);

    // ---- update: the kept secret stays with its destination -------------------------
    expect(
        api.send(
            "PUT",
            &format!("{r}/apihook"),
            &hook(&a.url("/a"), kept.clone()),
        ),
        200,
    );
    // Another path on the same server, or B (another port): the secret given for A must
    // be given again.
    for elsewhere in [a.url("/a2"), b.url("/b")] {
        let resp = api.send(
            "PUT",
            &format!("{r}/apihook"),
            &hook(&elsewhere, kept.clone()),
        );
        assert_eq!(resp.status, 422, "{elsewhere}: {}", resp.body);
        assert!(
            message(&resp).contains("give the secret again"),
            "{}",
            resp.body
        );
    }
    let resp = api.send(
        "PUT",
        &format!("{r}/apihook"),
        &hook(&b.url("/b"), kept.clone()),
    );
    assert_eq!(resp.status, 422, "{}", resp.body);
    assert!(
        message(&resp).contains("give the secret again"),
        "{}",
        resp.body
    );
    // ---- update: the next alert goes to the new URL -----------------------------------
    let put = expect(
        api.send(
            "PUT",
            &format!("{r}/apihook"),
            &hook(&b.url("/b"), ok_secret.clone()),
        ),
        200,
    );
    assert_eq!(put["settings"]["url"], b.url("/b").as_str());
    rig.rt.block_on(agent.send("test_value", "2", 1.0));
    let req = rig
        .next_alert(&mut b, Duration::from_secs(15), firing("2"))
        .expect("the new URL got the next alert");
    signed_with(&req, API_KEY);
    // B answers 503: the row stays queued and is retried.
    rig.next_alert(&mut b, Duration::from_secs(10), firing("2"))
        .expect("retried");
    assert!(
        !rig.collect(&mut a, Duration::from_secs(1))
            .iter()
            .any(|q| mentions(q, "2")),
        "the old URL got an alert after the update"
    );
    assert_eq!(
        count(
            &c.db,
            "SELECT count(*) FROM outbox WHERE receiver = 'apihook'"
        ),
        1
    );

    // ---- delete: queued rows dead-lettered, nothing more sent -----------------------
    let del = expect(request_delete(&api, &format!("{r}/apihook")), 200);
    assert_eq!(del["dead_lettered"], 1, "{del}");
    assert_eq!(
        count(
            &c.db,
            "SELECT count(*) FROM dead_letters WHERE receiver = 'apihook'
             AND reason LIKE 'receiver deleted%'"
        ),
        1
    );
    assert_eq!(
        count(
            &c.db,
            "SELECT count(*) FROM outbox WHERE receiver = 'apihook'"
        ),
        0
    );
    expect(api.get(&format!("{r}/apihook")), 404);
    // A send in progress at the delete may still finish; then nothing.
    rig.collect(&mut b, Duration::from_millis(1500));
    rig.rt.block_on(agent.send("test_value", "3", 1.0));
    rig.next_alert(&mut cfg, Duration::from_secs(15), firing("3"))
        .expect("the configured receiver still gets alerts");
    let late = rig.collect(&mut b, Duration::from_secs(3));
    assert!(late.is_empty(), "sent through a deleted receiver: {late:?}");
    assert!(
        !rig.collect(&mut a, Duration::from_millis(500))
            .iter()
            .any(|q| mentions(q, "3")),
        "sent through a deleted receiver"
    );
    assert!(
        !c.metrics()
            .contains("kind=\"webhook\",receiver=\"apihook\"")
            && !c
                .metrics()
                .contains("receiver=\"apihook\",kind=\"webhook\""),
        "info series of a deleted receiver"
    );

    // ---- durable: kept across a restart; one moved elsewhere behind our back is skipped
    expect(
        api.send(
            "POST",
            r,
            &named(hook(&keep.url("/keep"), ok_secret.clone()), "keeper"),
        ),
        201,
    );
    expect(
        api.send(
            "PUT",
            &format!("{r}/fragile"),
            &hook(&keep.url("/fragile"), json!({"value": FRAGILE_KEY})),
        ),
        201,
    );
    drop(agent);
    assert!(c.stop().success(), "clean stop");
    // Someone with write access to the database (not to the key) points `fragile` at
    // their own server: its secret no longer opens.
    let rw = Connection::open(&c.db).expect("open db");
    let moved = rw
        .execute(
            "UPDATE receivers SET definition = replace(definition, ?1, ?2)
             WHERE name = 'fragile'",
            [keep.url(""), b.url("")],
        )
        .expect("edit definition");
    assert_eq!(moved, 1);
    drop(rw);
    c.restart();
    assert!(
        c.logs().contains("cannot be loaded"),
        "skipped receiver logged"
    );
    assert!(
        c.metrics()
            .contains("mcpwatch_collector_notification_receivers_skipped 1"),
        "{}",
        c.metrics()
    );
    let list = expect(api.get(r), 200);
    assert_eq!(find(&list, "keeper")["origin"], "api");
    assert_eq!(find(&list, "keeper")["active"], true);
    assert_eq!(find(&list, "fragile")["active"], false);
    assert_eq!(find(&list, "cfg")["active"], true);
    let mut agent = rig.agent(c.ingest);
    rig.rt.block_on(agent.send("test_value", "4", 1.0));
    let req = rig
        .next_alert(&mut keep, Duration::from_secs(15), firing("4"))
        .expect("the API receiver works after a restart");
    assert_eq!(req.path, "/keep");
    signed_with(&req, API_KEY);
    // Fixing the skipped one brings it back.
    expect(
        api.send(
            "PUT",
            &format!("{r}/fragile"),
            &hook(&keep.url("/fragile"), json!({"value": FRAGILE_KEY})),
        ),
        200,
    );
    assert_eq!(
        expect(api.get(&format!("{r}/fragile")), 200)["active"],
        true
    );
    assert!(c
        .metrics()
        .contains("mcpwatch_collector_notification_receivers_skipped 0"));

    // ---- audit, and no secret value in the database -----------------------------------
    let audited = |status: i64| {
        count(
            &c.db,
            &format!(
                "SELECT count(*) FROM audit_log WHERE action = 'POST /api/v1/receivers'
                 AND result = {status}"
            ),
        )
    };
    assert!(audited(201) >= 2 && audited(422) >= 1 && audited(409) >= 1);
    let stored: String = db(&c.db)
        .query_row(
            "SELECT definition FROM receivers WHERE name = 'keeper'",
            [],
            |r| r.get(0),
        )
        .expect("stored definition");
    assert!(stored.contains(r#""secret":{"stored":true}"#), "{stored}");
    // The sealing key lives beside the database, readable by its owner only.
    let key = c.db.with_file_name("receiver-secrets.key");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "key file mode");
    }
    drop(agent);
    assert!(c.stop().success(), "clean stop");
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", c.db.display()));
        if let Ok(b) = std::fs::read(&p) {
            bytes.extend(b);
        }
    }
    assert!(bytes.len() > 4096, "read the database");
    for secret in [API_KEY, FRAGILE_KEY, CFG_KEY, PLAIN] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "secret {secret} found in the database"
        );
    }
}

fn request_delete(api: &Api, path: &str) -> Resp {
    mcpwatch_tests::api::request(api.addr, "DELETE", path, api.token.as_deref(), None)
        .expect("DELETE")
}

/// Receivers defined through the API cannot reach loopback, private or link-local addresses
/// unless `[api] receiver_url_allow` lists them, by literal address or by a name that
/// resolves there; and a test-send that fails answers with the status only: the body of
/// whatever answered reaches neither the caller nor the audit log.
#[test]
fn api_receivers_destinations_restricted_and_answers_not_echoed() {
    const LEAK: &str = "internal-service-body-3e9d1c";
    let rig = Rig::new();
    let cfg = rig.capture(Reply::status(200));
    // No allow list: the default keeps API receivers off internal addresses.
    let default_alerting = alerting(&cfg.url("/cfg")).replacen(
        "[api]\nreceiver_url_allow = [\"127.0.0.0/8\"]\n",
        "",
        1,
    );
    let mut c = CollectorProc::start(&rig.pki, &rig.dir, &default_alerting);
    let token = admin_token(&c.db, "t", None);
    let api = Api::new(c.http, Some(&token));
    let r = "/api/v1/receivers";
    let key = json!({"value": API_KEY});
    for url in [
        "http://127.0.0.1:9/x",
        "http://[::1]:9/x",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/x",
        "http://[::ffff:127.0.0.1]:9/x",
        "http://localhost:9/x",
    ] {
        let resp = api.send("POST", r, &named(hook(url, key.clone()), "inside"));
        if url.contains("localhost") {
            // A name is checked when it resolves: created, but every send is refused.
            expect(resp, 201);
            let sent = api.send("POST", &format!("{r}/inside/test"), &json!({}));
            assert_eq!(sent.status, 502, "{}", sent.body);
            assert!(message(&sent).contains("localhost"), "{}", sent.body);
            expect(request_delete(&api, &format!("{r}/inside")), 200);
        } else {
            assert_eq!(resp.status, 422, "{url}: {}", resp.body);
            assert!(
                message(&resp).contains("receiver_url_allow"),
                "{}",
                resp.body
            );
        }
    }

    // With the loopback range allowed, a receiver there works; its error body stays out.
    c.stop();
    let text = std::fs::read_to_string(&c.config).expect("config");
    std::fs::write(
        &c.config,
        format!("{text}\n[api]\nreceiver_url_allow = [\"127.0.0.0/8\"]\n"),
    )
    .expect("config");
    c.child = None;
    c.restart();
    let failing = rig.capture(Reply::status(500).with_body(&LEAK.repeat(10_000)));
    expect(
        api.send("POST", r, &named(hook(&failing.url("/f"), key), "failing")),
        201,
    );
    let sent = api.send("POST", &format!("{r}/failing/test"), &json!({}));
    assert_eq!(sent.status, 502, "{}", sent.body);
    assert!(message(&sent).contains("500"), "{}", sent.body);
    assert!(!sent.body.contains(LEAK), "body echoed: {}", sent.body);
    let leaked = count(
        &c.db,
        &format!("SELECT count(*) FROM audit_log WHERE detail LIKE '%{LEAK}%'"),
    );
    assert_eq!(leaked, 0, "the answer's body reached the audit log");
}
