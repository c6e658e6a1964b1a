//! Alerting end to end with the real collector binary: a simulated agent (raw protocol over
//! mutual TLS) sends `test_value{i="k"} 1` at the current time, the rule `test_high` fires in
//! the commit that stores it, and the notification travels through the durable SQLite outbox
//! to local stand-ins for PagerDuty, Slack, a generic webhook and a real SMTP server. Covers
//! kill -9 between firing and delivery, retries with backoff, the dead-letter list, and the
//! built-in `notification_receiver_failing` alert reaching another receiver.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcpwatch_tests::client;
use mcpwatch_tests::process::CollectorProc;
use mcpwatch_tests::receivers::{
    validate_pagerduty, validate_slack, validate_webhook, verify_hmac, Captured, HttpCapture,
    Reply, SmtpMode, SmtpServer,
};
use mcpwatch_tests::sim::{fast_alerting, test_high_rules, SimAgent};
use mcpwatch_tests::{wait_for, Pki};
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use tokio::runtime::Runtime;

/// The simulated agent's id (certificate SAN and Hello); alerts carry `host = AGENT`.
const AGENT: &str = "alert-test";
const PD_KEY: &str = "R0UT1NGKEY0000000000000000000000";
const HMAC_KEY: &str = "alerting-hmac-secret";
const SLACK_TOKEN: &str = "XXSLACKTOKENXX";
const RULE: &str = "test_high";

/// The summary `test_high` renders for series `i`.
fn summary(i: &str) -> String {
    format!("test {i} on {AGENT}")
}

// ---- fixture ---------------------------------------------------------------------------

/// Temp dir, PKI, the client TLS config of `AGENT`, and the collector's directory with the
/// rules file and receiver secrets already written.
struct Setup {
    rt: Runtime,
    pki: Pki,
    tls: Arc<rustls::ClientConfig>,
    dir: PathBuf,
    tmp: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(&tmp.path().join("pki"));
        let certs = pki.agent(AGENT);
        let tls = client::config(&pki.ca(), &certs.cert, &certs.key);
        let dir = tmp.path().join("c");
        std::fs::create_dir_all(&dir).expect("mkdir collector dir");
        std::fs::write(dir.join("rules.toml"), test_high_rules("10s")).expect("write rules");
        std::fs::write(dir.join("pd-key"), format!("{PD_KEY}\n")).expect("pd key");
        std::fs::write(dir.join("hmac"), format!("{HMAC_KEY}\n")).expect("hmac key");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        Setup {
            rt,
            pki,
            tls,
            dir,
            tmp,
        }
    }

    /// Starts the collector with `alerting` (whole TOML tables) in its config.
    fn collector(&self, alerting: &str) -> CollectorProc {
        CollectorProc::start(&self.pki, &self.dir, alerting)
    }

    fn capture(&self, default: Reply) -> HttpCapture {
        self.rt.block_on(HttpCapture::start(default))
    }

    /// Connects a simulated agent, fires one alert for series `i` and disconnects.
    fn fire(&self, ingest: SocketAddr, i: &str) {
        self.rt.block_on(async {
            let mut agent = SimAgent::connect(ingest, self.tls.clone(), AGENT).await;
            agent.send("test_value", i, 1.0).await;
        });
    }
}

fn pagerduty_receiver(name: &str, url: &str) -> String {
    format!(
        "[[receiver]]\ntype = \"pagerduty\"\nname = \"{name}\"\nrouting_key = {{ file = \"pd-key\" }}\nurl = \"{url}\"\n"
    )
}

fn webhook_receiver(name: &str, url: &str) -> String {
    format!(
        "[[receiver]]\ntype = \"webhook\"\nname = \"{name}\"\nurl = \"{url}\"\nsecret = {{ file = \"hmac\" }}\n"
    )
}

/// The next captured request within `within` (at most 5 s per call), or None.
async fn next_within(cap: &mut HttpCapture, within: Duration) -> Option<Captured> {
    // HttpCapture::next panics after 10 s; stay well below.
    tokio::time::timeout(within.min(Duration::from_secs(5)), cap.next())
        .await
        .ok()
}

/// The next captured request within `within` (any length), or None.
async fn request_within(cap: &mut HttpCapture, within: Duration) -> Option<Captured> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        if let Some(r) = next_within(cap, left).await {
            return Some(r);
        }
    }
}

// ---- observing the collector -------------------------------------------------------------

fn open_db(db: &Path) -> Option<Connection> {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    c.busy_timeout(Duration::from_secs(5)).ok()?;
    Some(c)
}

/// Rows in the outbox (for `receiver`, or all); None while the DB cannot be read.
fn outbox_rows(db: &Path, receiver: Option<&str>) -> Option<i64> {
    let c = open_db(db)?;
    c.query_row(
        "SELECT count(*) FROM outbox WHERE ?1 IS NULL OR receiver = ?1",
        [receiver],
        |r| r.get(0),
    )
    .ok()
}

#[derive(Debug)]
struct DeadLetter {
    receiver: String,
    fingerprint: String,
    attempts: i64,
    reason: String,
}

fn dead_letters(db: &Path) -> Vec<DeadLetter> {
    let c = open_db(db).expect("open db");
    let mut st = c
        .prepare("SELECT receiver, fingerprint, attempts, reason FROM dead_letters ORDER BY id")
        .expect("prepare");
    st.query_map([], |r| {
        Ok(DeadLetter {
            receiver: r.get(0)?,
            fingerprint: r.get(1)?,
            attempts: r.get(2)?,
            reason: r.get(3)?,
        })
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

/// Fingerprints of every alert of `rule` the collector has recorded.
fn alert_fingerprints(db: &Path, rule: &str) -> BTreeSet<String> {
    let c = open_db(db).expect("open db");
    let mut st = c
        .prepare("SELECT fingerprint FROM alerts WHERE rule = ?1")
        .expect("prepare");
    st.query_map([rule], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// The value of `name{...}` whose labels include all of `labels`.
fn metric_with(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let prefix = format!("{name}{{");
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let rest = l.strip_prefix(&prefix)?;
        let (set, value) = rest.rsplit_once("} ")?;
        labels
            .iter()
            .all(|(k, v)| set.split(',').any(|p| p == format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// The sum of every `name{...}` line whose labels include all of `labels` (0 when none).
fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let prefix = format!("{name}{{");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (set, value) = l.strip_prefix(&prefix)?.rsplit_once("} ")?;
            labels
                .iter()
                .all(|(k, v)| set.split(',').any(|p| p == format!("{k}=\"{v}\"")))
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

fn receiver_metric(c: &CollectorProc, name: &str, receiver: &str) -> f64 {
    metric_with(&c.metrics(), name, &[("receiver", receiver)]).unwrap_or(f64::NAN)
}

/// The tail of the collector's logs, for failure messages.
fn log_tail(c: &CollectorProc) -> String {
    let logs = c.logs();
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

// ---- tests -------------------------------------------------------------------------------

#[test]
fn alert_survives_kill9_between_firing_and_delivery() {
    const ROUNDS: usize = 20;
    let s = Setup::new();
    let mut pd = s.capture(
        Reply::status(202).with_body(r#"{"status":"success","message":"Event processed"}"#),
    );
    let mut collector = s.collector(&format!(
        "[alerting]\n{fast}\n{}",
        pagerduty_receiver("pd", &pd.url("/v2/enqueue")),
        fast = fast_alerting("4h")
    ));
    let started = Instant::now();
    let mut acked = 0u64;
    // When the collector that fired alert k was dead for sure (after kill + wait).
    let mut killed_at: Vec<Instant> = Vec::with_capacity(ROUNDS);
    for k in 0..ROUNDS {
        let i = k.to_string();
        acked = s.rt.block_on(async {
            let id = u32::try_from(k + 1).expect("small");
            let mut agent = SimAgent::resume(collector.ingest, s.tls.clone(), AGENT, acked)
                .await
                .first_series_id(id);
            assert_eq!(
                agent.seq,
                acked + 1,
                "round {k}: the collector lost an acked batch (resume_from_seq)"
            );
            agent.send("test_value", &i, 1.0).await
        });
        // The alert and its outbox row are committed with the acked batch: crash right now.
        collector.kill9();
        killed_at.push(Instant::now());
        collector.restart();
    }
    eprintln!(
        "{ROUNDS} fire+kill9+restart rounds took {:?}",
        started.elapsed()
    );

    // Every alert must arrive; once the outbox is empty nothing more can be (re)sent.
    let mut requests: Vec<Value> = Vec::new();
    let mut arrived: Vec<Instant> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let drained = outbox_rows(&collector.db, None) == Some(0);
        while let Some(req) = pd.try_next() {
            assert_eq!(req.path, "/v2/enqueue");
            requests.push(req.json());
            arrived.push(req.at);
        }
        let triggered: BTreeSet<&str> = requests
            .iter()
            .filter(|v| v["event_action"] == "trigger")
            .filter_map(|v| v.pointer("/payload/custom_details/labels/i")?.as_str())
            .collect();
        if drained && triggered.len() == ROUNDS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 90 s: triggers for {} of {ROUNDS} alerts ({triggered:?}), outbox drained: \
             {drained}\n{}",
            triggered.len(),
            log_tail(&collector)
        );
        if let Some(req) =
            s.rt.block_on(next_within(&mut pd, Duration::from_millis(200)))
        {
            requests.push(req.json());
            arrived.push(req.at);
        }
    }
    eprintln!(
        "all {ROUNDS} alerts delivered {:?} after the first was fired",
        started.elapsed()
    );

    for v in &requests {
        validate_pagerduty(v).unwrap_or_else(|e| panic!("PagerDuty schema: {e}: {v}"));
        assert_eq!(v["routing_key"], PD_KEY);
    }
    let mut per_key: BTreeMap<String, (usize, BTreeSet<String>)> = BTreeMap::new();
    for v in requests.iter().filter(|v| v["event_action"] == "trigger") {
        let key = v["dedup_key"].as_str().expect("dedup_key").to_owned();
        let i = v
            .pointer("/payload/custom_details/labels/i")
            .and_then(Value::as_str)
            .expect("labels.i")
            .to_owned();
        assert_eq!(v["payload"]["summary"], summary(&i).as_str());
        assert_eq!(v["payload"]["source"], AGENT);
        assert_eq!(v["payload"]["severity"], "critical");
        let e = per_key.entry(key).or_default();
        e.0 += 1;
        e.1.insert(i);
    }
    let triggers: usize = per_key.values().map(|e| e.0).sum();
    // How many alerts only a restarted collector delivered (from the outbox it inherited).
    let mut first: BTreeMap<usize, Instant> = BTreeMap::new();
    for (v, at) in requests.iter().zip(&arrived) {
        if v["event_action"] == "trigger" {
            if let Some(k) = v
                .pointer("/payload/custom_details/labels/i")
                .and_then(Value::as_str)
                .and_then(|i| i.parse::<usize>().ok())
            {
                first.entry(k).or_insert(*at);
            }
        }
    }
    let after_crash = first.iter().filter(|(k, at)| **at > killed_at[**k]).count();
    eprintln!("{after_crash} of {ROUNDS} alerts were first delivered by the restarted collector");
    eprintln!(
        "{triggers} triggers for {} dedup keys ({} requests in all)",
        per_key.len(),
        requests.len()
    );
    assert_eq!(per_key.len(), ROUNDS, "distinct dedup keys: {per_key:?}");
    for (key, (n, labels)) in &per_key {
        assert_eq!(
            labels.len(),
            1,
            "dedup key {key} used for series {labels:?}"
        );
        assert!(*n <= 2, "dedup key {key} triggered {n} times");
    }
    assert!(
        triggers <= 2 * ROUNDS,
        "{triggers} triggers: more than one duplicate per crash"
    );
    // The dedup keys are the fingerprints of the recorded alerts.
    let keys: BTreeSet<String> = per_key.keys().cloned().collect();
    assert_eq!(keys, alert_fingerprints(&collector.db, RULE));
    let dead = dead_letters(&collector.db);
    assert!(dead.is_empty(), "dead letters: {dead:?}");
}

#[test]
fn alert_email_end_to_end() {
    let s = Setup::new();
    let smtp_dir = s.tmp.path().join("smtp");
    std::fs::create_dir_all(&smtp_dir).expect("mkdir smtp");
    let smtp = SmtpServer::start(&smtp_dir, SmtpMode::Mailbox);
    let collector = s.collector(&format!(
        "[alerting]\n{fast}\n[[receiver]]\ntype = \"email\"\nname = \"mail\"\nhost = \"127.0.0.1\"\n\
         port = {port}\ntls = \"none\"\nfrom = \"mcpwatch <alerts@mcpwatch.test>\"\n\
         to = [\"ops@mcpwatch.test\", \"Second <second@mcpwatch.test>\"]\ntimeout_secs = 10\n",
        port = smtp.addr.port(),
        fast = fast_alerting("4h")
    ));
    let started = Instant::now();
    s.fire(collector.ingest, "0");
    wait_for("the alert mail", Duration::from_secs(30), || {
        (!smtp.messages().is_empty()).then_some(())
    });
    eprintln!("mail arrived {:?} after the sample", started.elapsed());
    // Settled: delivered once, nothing left to send.
    wait_for("the outbox row settled", Duration::from_secs(10), || {
        (receiver_metric(
            &collector,
            "mcpwatch_collector_notifications_sent_total",
            "mail",
        ) == 1.0
            && outbox_rows(&collector.db, Some("mail")) == Some(0))
        .then_some(())
    });
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let m = &messages[0];
    let subject = m["subject"].as_str().expect("subject");
    assert!(
        subject.starts_with("[FIRING:critical]") && subject.contains(&summary("0")),
        "subject {subject:?}"
    );
    let rcpt = m["rcpt_to"].as_str().expect("X-RcptTo");
    assert!(
        rcpt.contains("ops@mcpwatch.test") && rcpt.contains("second@mcpwatch.test"),
        "envelope recipients {rcpt:?}"
    );
    let to = m["to"].as_str().expect("To");
    assert!(
        to.contains("ops@mcpwatch.test") && to.contains("second@mcpwatch.test"),
        "To: {to:?}"
    );
    assert!(m["from"]
        .as_str()
        .expect("from")
        .contains("alerts@mcpwatch.test"));
    let text = m["parts"]["text/plain"].as_str().expect("text part");
    assert!(text.contains(&summary("0")), "{text}");
    assert!(text.contains(&format!("host={AGENT}")), "{text}");
    assert!(m["parts"]["text/html"]
        .as_str()
        .expect("html part")
        .contains(AGENT));
}

#[test]
fn alert_webhook_and_slack_end_to_end() {
    let s = Setup::new();
    let mut hook = s.capture(Reply::status(200));
    let mut slack = s.capture(Reply::status(200).with_body("ok"));
    std::fs::write(
        s.dir.join("slack-url"),
        slack.url(&format!("/services/T0/B0/{SLACK_TOKEN}")),
    )
    .expect("slack url");
    let collector = s.collector(&format!(
        "[alerting]\n{fast}\n{}[[receiver]]\ntype = \"slack\"\nname = \"slack\"\n\
         webhook_url = {{ file = \"slack-url\" }}\n",
        webhook_receiver("hook", &hook.url("/hook")),
        fast = fast_alerting("4h")
    ));
    let started = Instant::now();
    s.fire(collector.ingest, "7");
    let (h, sl) = s.rt.block_on(async {
        let h = request_within(&mut hook, Duration::from_secs(30)).await;
        let sl = request_within(&mut slack, Duration::from_secs(30)).await;
        (h, sl)
    });
    let h = h.unwrap_or_else(|| panic!("no webhook request\n{}", log_tail(&collector)));
    let sl = sl.unwrap_or_else(|| panic!("no Slack request\n{}", log_tail(&collector)));
    eprintln!(
        "webhook after {:?}, slack after {:?}",
        h.at.duration_since(started),
        sl.at.duration_since(started)
    );

    assert_eq!((h.method.as_str(), h.path.as_str()), ("POST", "/hook"));
    let sig = h.header("x-mcpwatch-signature").expect("signature header");
    assert!(verify_hmac(HMAC_KEY.as_bytes(), &h.body, sig), "HMAC");
    let body = h.json();
    validate_webhook(&body).unwrap_or_else(|e| panic!("webhook schema: {e}: {body}"));
    assert_eq!(
        h.header("x-mcpwatch-timestamp"),
        Some(body["sent_at_ms"].to_string().as_str())
    );
    assert_eq!(body["status"], "firing");
    let alerts = body["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 1, "{body}");
    let a = &alerts[0];
    assert_eq!(a["rule"], RULE);
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["summary"], summary("7").as_str());
    for (k, v) in [
        ("host", AGENT),
        ("i", "7"),
        ("alertname", RULE),
        ("severity", "critical"),
    ] {
        assert_eq!(a["labels"][k], v, "label {k}: {a}");
    }
    let fingerprint = a["fingerprint"].as_str().expect("fingerprint");
    assert_eq!(
        alert_fingerprints(&collector.db, RULE),
        BTreeSet::from([fingerprint.to_owned()])
    );

    assert_eq!(sl.path, format!("/services/T0/B0/{SLACK_TOKEN}"));
    let v = sl.json();
    validate_slack(&v).unwrap_or_else(|e| panic!("Slack schema: {e}: {v}"));
    let text = v["text"].as_str().expect("text");
    assert!(
        text.starts_with("[FIRING:critical]") && text.contains(&summary("7")),
        "Slack text {text:?}"
    );
    // One alert, one message each.
    wait_for("both rows settled", Duration::from_secs(10), || {
        (outbox_rows(&collector.db, None) == Some(0)).then_some(())
    });
    assert!(hook.try_next().is_none(), "a second webhook request");
    assert!(slack.try_next().is_none(), "a second Slack message");
}

#[test]
fn alert_retry_then_deliver_and_dead_letter() {
    let s = Setup::new();
    // "flaky" fails twice with 500, then accepts; "strict" refuses with 400.
    let mut flaky = s.capture(Reply::status(202));
    flaky.push(Reply::status(500).with_body("upstream down"));
    flaky.push(Reply::status(500).with_body("upstream down"));
    let mut strict = s.capture(
        Reply::status(400)
            .with_body(r#"{"status":"invalid event","message":"Event object is invalid"}"#),
    );
    let collector = s.collector(&format!(
        "[alerting]\n{fast}\n{}{}",
        webhook_receiver("flaky", &flaky.url("/hook")),
        pagerduty_receiver("strict", &strict.url("/v2/enqueue")),
        fast = fast_alerting("4h")
    ));
    s.fire(collector.ingest, "1");

    let dead_metric = "mcpwatch_collector_notifications_dead_lettered_total";
    wait_for(
        "flaky delivered and strict dead-lettered",
        Duration::from_secs(30),
        || {
            let m = collector.metrics();
            let sent = metric_with(
                &m,
                "mcpwatch_collector_notifications_sent_total",
                &[("receiver", "flaky")],
            );
            let dead = metric_with(
                &m,
                dead_metric,
                &[("receiver", "strict"), ("reason", "permanent")],
            );
            (sent == Some(1.0) && dead == Some(1.0) && outbox_rows(&collector.db, None) == Some(0))
                .then_some(())
        },
    );
    let m = collector.metrics();
    let get = |name: &str, receiver: &str| {
        metric_with(&m, name, &[("receiver", receiver)]).unwrap_or(f64::NAN)
    };
    assert!(
        get("mcpwatch_collector_notifications_retried_total", "flaky") >= 2.0,
        "{m}"
    );
    assert_eq!(
        get("mcpwatch_collector_notifications_failed_total", "flaky"),
        2.0
    );
    assert_eq!(
        get("mcpwatch_collector_notifications_sent_total", "flaky"),
        1.0
    );
    assert_eq!(
        get("mcpwatch_collector_notifications_sent_total", "strict"),
        0.0
    );
    assert_eq!(
        get("mcpwatch_collector_notifications_retried_total", "strict"),
        0.0
    );
    assert_eq!(
        metric_sum(&m, dead_metric, &[("receiver", "flaky")]),
        0.0,
        "flaky has dead letters: {m}"
    );

    // The outbox is empty: everything either side will ever get has been captured.
    let mut flaky_reqs = Vec::new();
    while let Some(r) = flaky.try_next() {
        flaky_reqs.push(r);
    }
    let mut strict_reqs = Vec::new();
    while let Some(r) = strict.try_next() {
        strict_reqs.push(r);
    }
    assert_eq!(flaky_reqs.len(), 3, "flaky: 500, 500, 202");
    let fps: BTreeSet<String> = flaky_reqs
        .iter()
        .map(|r| {
            let v = r.json();
            validate_webhook(&v).unwrap_or_else(|e| panic!("webhook schema: {e}: {v}"));
            v["alerts"][0]["fingerprint"]
                .as_str()
                .expect("fingerprint")
                .to_owned()
        })
        .collect();
    assert_eq!(fps.len(), 1, "retries carry the same alert: {fps:?}");
    // retry_initial = 200ms doubling, ±20% jitter.
    let gap1 = flaky_reqs[1].at.duration_since(flaky_reqs[0].at);
    let gap2 = flaky_reqs[2].at.duration_since(flaky_reqs[1].at);
    eprintln!("flaky retry gaps: {gap1:?}, {gap2:?}");
    assert!(
        gap1 >= Duration::from_millis(150),
        "first retry after {gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(300),
        "second retry after {gap2:?}"
    );

    assert_eq!(strict_reqs.len(), 1, "a 400 must not be retried");
    let v = strict_reqs[0].json();
    validate_pagerduty(&v).unwrap_or_else(|e| panic!("PagerDuty schema: {e}: {v}"));
    let dead = dead_letters(&collector.db);
    assert_eq!(dead.len(), 1, "{dead:?}");
    let d = &dead[0];
    assert_eq!(d.receiver, "strict");
    assert_eq!(d.attempts, 1);
    assert_eq!(Some(d.fingerprint.as_str()), v["dedup_key"].as_str());
    assert!(fps.contains(&d.fingerprint), "same alert at both receivers");
    assert!(
        d.reason.starts_with("refused") && d.reason.contains("400"),
        "reason {:?}",
        d.reason
    );
    assert!(!d.reason.contains(PD_KEY), "routing key in the reason");

    // Dispatch log lines name the notifications (outbox ids) and the alert they carry.
    let logs = collector.logs();
    let fp = &d.fingerprint;
    let line_with = |what: &str| {
        logs.lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} line:\n{logs}"))
            .to_owned()
    };
    for what in [
        "notification failed; will retry",
        "notification delivered",
        "notification refused permanently",
    ] {
        let line = line_with(what);
        assert!(
            line.contains(&format!("fingerprints={fp}")) && line.contains("notification_ids="),
            "{line}"
        );
    }
    let line = line_with("notification moved to the dead-letter list");
    assert!(
        line.contains(&format!("fingerprint={fp}")) && line.contains("notification_id="),
        "{line}"
    );
}

#[test]
fn alert_receiver_failing_goes_through_another_receiver() {
    let s = Setup::new();
    let mut broken = s.capture(Reply::status(500).with_body("broken"));
    let mut backup = s.capture(Reply::status(202));
    // Default grouping, timing and retries; everything is routed to "broken".
    let collector = s.collector(&format!(
        "[alerting]\nrule_files = [\"rules.toml\"]\nbuiltin_rules = true\n\n\
         [[route]]\nmatchers = '{{}}'\nreceivers = [\"broken\"]\n\n{}{}",
        webhook_receiver("broken", &broken.url("/broken")),
        webhook_receiver("backup", &backup.url("/backup")),
    ));
    let started = Instant::now();
    s.fire(collector.ingest, "3");

    let alertnames = |req: &Captured| -> Vec<(String, String)> {
        let v = req.json();
        validate_webhook(&v).unwrap_or_else(|e| panic!("webhook schema: {e}: {v}"));
        v["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
                    a["labels"]["receiver"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    };
    let mut broken_seen: Vec<Vec<(String, String)>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let failing = s.rt.block_on(async {
        loop {
            while let Some(r) = broken.try_next() {
                broken_seen.push(alertnames(&r));
            }
            if let Some(r) = next_within(&mut backup, Duration::from_millis(200)).await {
                let v = r.json();
                validate_webhook(&v).unwrap_or_else(|e| panic!("webhook schema: {e}: {v}"));
                for a in v["alerts"].as_array().expect("alerts") {
                    assert_ne!(
                        a["labels"]["alertname"], RULE,
                        "test_high is routed to broken only: {v}"
                    );
                    if a["labels"]["alertname"] == "notification_receiver_failing" {
                        return a.clone();
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "backup got no notification_receiver_failing alert in 60 s; broken saw \
                 {broken_seen:?}\n{}",
                log_tail(&collector)
            );
        }
    });
    eprintln!(
        "receiver-failing alert at backup {:?} after the sample: {failing}",
        started.elapsed()
    );
    assert_eq!(failing["labels"]["receiver"], "broken", "{failing}");
    assert_eq!(failing["status"], "firing");
    assert!(
        failing["summary"]
            .as_str()
            .is_some_and(|t| t.contains("broken")),
        "{failing}"
    );

    // "broken" keeps being retried; one more attempt after the alert was queued shows what
    // it is sent now.
    let more =
        s.rt.block_on(request_within(&mut broken, Duration::from_secs(30)))
            .unwrap_or_else(|| panic!("broken was not retried within 30 s"));
    broken_seen.push(alertnames(&more));
    while let Some(r) = broken.try_next() {
        broken_seen.push(alertnames(&r));
    }
    eprintln!("broken saw {} requests: {broken_seen:?}", broken_seen.len());
    assert!(!broken_seen.is_empty());
    for req in &broken_seen {
        assert!(
            req.iter().all(|(name, _)| name == RULE),
            "broken got {req:?}: only test_high is routed to it"
        );
    }
    // The counters move once the replies are in (the capture records a request first).
    let attempts = broken_seen.len() as f64;
    wait_for(
        "failure and delivery counted",
        Duration::from_secs(10),
        || {
            let m = collector.metrics();
            let failed = metric_with(
                &m,
                "mcpwatch_collector_notifications_failed_total",
                &[("receiver", "broken")],
            )?;
            let sent = metric_with(
                &m,
                "mcpwatch_collector_notifications_sent_total",
                &[("receiver", "backup")],
            )?;
            (failed >= attempts && sent >= 1.0).then_some(())
        },
    );
}
