//! Notification receivers against real local servers: scripted HTTP receivers on 127.0.0.1
//! that validate each provider's documented payload schema (and the webhook HMAC), the
//! failure matrix per HTTP receiver, Slack's 1 message/s limit, and email through a real SMTP
//! server (Debian `python3-aiosmtpd`), including 4xx/5xx rejections.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use mcpwatch_collector::notify::{
    Destinations, Notification, Receiver, ReceiverConfigRaw, SendError, SendErrorKind, Severity,
    Status,
};
use mcpwatch_tests::receivers::{
    validate_discord, validate_pagerduty, validate_slack, validate_teams, validate_webhook,
    verify_hmac, HttpCapture, Reply, SmtpMode, SmtpServer,
};
use serde_json::{json, Value};

const SLACK_TOKEN: &str = "XXSLACKTOKENXX";
const DISCORD_TOKEN: &str = "XXDISCORDTOKENXX";
const PD_KEY: &str = "R0UT1NGKEY0000000000000000000000";
const HMAC_KEY: &str = "hmac-test-secret";

fn alert(fingerprint: &str, status: Status, severity: Severity) -> Notification {
    Notification {
        fingerprint: fingerprint.to_owned(),
        status,
        severity,
        rule: "cpu_high".to_owned(),
        summary: format!("CPU above 95% on web-1 ({fingerprint})"),
        description: "cpu <script>alert(1)</script> & \"busy\"".to_owned(),
        runbook_url: Some("https://runbooks.example/cpu?a=1&b=2".to_owned()),
        labels: BTreeMap::from([
            ("host".to_owned(), "web-1".to_owned()),
            ("server".to_owned(), "github-mcp".to_owned()),
        ]),
        value: Some(97.25),
        starts_at_ms: 1_763_762_400_000,
        ends_at_ms: (status == Status::Resolved).then_some(1_763_762_460_000),
        group_key: "{}:{alertname=\"cpu_high\"}".to_owned(),
    }
}

fn write_secret(dir: &Path, name: &str, value: &str) {
    std::fs::write(dir.join(name), format!("{value}\n")).expect("write secret");
}

fn receiver(dir: &Path, config: Value) -> Receiver {
    let raw: ReceiverConfigRaw = serde_json::from_value(config).expect("raw config");
    Receiver::from_raw(raw, dir, &Destinations::Any).expect("valid receiver")
}

fn slack(dir: &Path, cap: &HttpCapture) -> Receiver {
    write_secret(
        dir,
        "slack-url",
        &cap.url(&format!("/services/T0/B0/{SLACK_TOKEN}")),
    );
    receiver(
        dir,
        json!({ "type": "slack", "name": "slack", "webhook_url": { "file": "slack-url" } }),
    )
}

fn teams(dir: &Path, cap: &HttpCapture) -> Receiver {
    write_secret(
        dir,
        "teams-url",
        &cap.url("/workflows/abc/triggers/manual/paths/invoke?sig=SECRETSIG"),
    );
    receiver(
        dir,
        json!({ "type": "teams", "name": "teams", "webhook_url": { "file": "teams-url" } }),
    )
}

fn discord(dir: &Path, cap: &HttpCapture) -> Receiver {
    write_secret(
        dir,
        "discord-url",
        &cap.url(&format!("/api/webhooks/1/{DISCORD_TOKEN}")),
    );
    receiver(
        dir,
        json!({ "type": "discord", "name": "discord", "webhook_url": { "file": "discord-url" } }),
    )
}

fn pagerduty(dir: &Path, cap: &HttpCapture) -> Receiver {
    write_secret(dir, "pd-key", PD_KEY);
    receiver(
        dir,
        json!({ "type": "pagerduty", "name": "pd", "routing_key": { "file": "pd-key" },
                "url": cap.url("/v2/enqueue") }),
    )
}

fn webhook(dir: &Path, cap: &HttpCapture) -> Receiver {
    write_secret(dir, "hmac", HMAC_KEY);
    receiver(
        dir,
        json!({ "type": "webhook", "name": "hook", "url": cap.url("/hook"),
                "secret": { "file": "hmac" } }),
    )
}

fn assert_no_secret(err: &SendError) {
    for s in [SLACK_TOKEN, DISCORD_TOKEN, PD_KEY, HMAC_KEY] {
        assert!(!err.message.contains(s), "secret leaked: {}", err.message);
    }
}

#[tokio::test]
async fn notify_webhook_payload_schema_and_hmac() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cap = HttpCapture::start(Reply::status(200)).await;
    let r = webhook(dir.path(), &cap);
    let batch = [
        alert("a", Status::Firing, Severity::Critical),
        alert("b", Status::Resolved, Severity::High),
    ];
    r.send(&batch).await.expect("sent");
    let req = cap.next().await;
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hook");
    assert_eq!(req.header("content-type"), Some("application/json"));
    let body = req.json();
    validate_webhook(&body).expect("webhook schema");
    let sig = req
        .header("x-mcpwatch-signature")
        .expect("signature header");
    assert!(verify_hmac(HMAC_KEY.as_bytes(), &req.body, sig), "HMAC");
    assert!(!verify_hmac(b"wrong", &req.body, sig));
    assert_eq!(
        req.header("x-mcpwatch-timestamp"),
        Some(body["sent_at_ms"].to_string().as_str())
    );
    assert_eq!(body["status"], "firing");
    assert_eq!(body["alerts"].as_array().map(Vec::len), Some(2));
    assert_eq!(body["alerts"][1]["status"], "resolved");
    assert_eq!(body["alerts"][0]["labels"]["host"], "web-1");
}

#[tokio::test]
async fn notify_pagerduty_trigger_acknowledge_resolve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cap = HttpCapture::start(
        Reply::status(202).with_body(r#"{"status":"success","message":"Event processed"}"#),
    )
    .await;
    let r = pagerduty(dir.path(), &cap);
    let mut long = alert("fp-42", Status::Firing, Severity::High);
    long.summary = "ü".repeat(5000);
    r.send(&[long]).await.expect("trigger");
    r.send(&[alert("fp-42", Status::Acknowledged, Severity::High)])
        .await
        .expect("ack");
    r.send(&[alert("fp-42", Status::Resolved, Severity::High)])
        .await
        .expect("resolve");
    let mut actions = Vec::new();
    for _ in 0..3 {
        let req = cap.next().await;
        assert_eq!(req.path, "/v2/enqueue");
        let v = req.json();
        validate_pagerduty(&v).unwrap_or_else(|e| panic!("PagerDuty schema: {e}: {v}"));
        assert_eq!(v["routing_key"], PD_KEY);
        assert_eq!(v["dedup_key"], "fp-42");
        actions.push(v["event_action"].as_str().expect("action").to_owned());
        if v["event_action"] == "trigger" {
            assert_eq!(v["payload"]["severity"], "error");
            assert_eq!(v["payload"]["source"], "web-1");
            assert_eq!(
                v["links"][0]["href"],
                "https://runbooks.example/cpu?a=1&b=2"
            );
        }
    }
    assert_eq!(actions, ["trigger", "acknowledge", "resolve"]);
}

#[tokio::test]
async fn notify_slack_block_kit_and_one_message_per_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cap = HttpCapture::start(Reply::status(200).with_body("ok")).await;
    let r = slack(dir.path(), &cap);
    let batch: Vec<_> = (0..3)
        .map(|i| alert(&format!("s{i}"), Status::Firing, Severity::Critical))
        .collect();
    r.send(&batch).await.expect("first");
    r.send(&batch[..1]).await.expect("second");
    let first = cap.next().await;
    let second = cap.next().await;
    for req in [&first, &second] {
        let v = req.json();
        validate_slack(&v).unwrap_or_else(|e| panic!("Slack schema: {e}: {v}"));
        assert!(v["text"]
            .as_str()
            .expect("text")
            .starts_with("[FIRING:critical]"));
    }
    let raw = String::from_utf8_lossy(&first.body).into_owned();
    assert!(!raw.contains("<script>"), "mrkdwn not escaped: {raw}");
    let gap = second.at.duration_since(first.at);
    assert!(gap >= Duration::from_millis(1000), "gap {gap:?}");
}

#[tokio::test]
async fn notify_discord_embeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cap = HttpCapture::start(Reply::status(204)).await;
    let r = discord(dir.path(), &cap);
    let mut big = alert("d", Status::Firing, Severity::Critical);
    big.description = "x".repeat(9000);
    let batch: Vec<_> = (0..12).map(|_| big.clone()).collect();
    r.send(&batch).await.expect("sent");
    let v = cap.next().await.json();
    validate_discord(&v).unwrap_or_else(|e| panic!("Discord schema: {e}"));
    assert_eq!(v["embeds"][0]["color"], 0xE7_4C3C);
    assert!(v["content"]
        .as_str()
        .expect("content")
        .starts_with("[FIRING:critical]"));
}

/// 202 → ok, 400 → permanent, 500 → retry, connection dropped → retry, 429 → retry after
/// the provider's delay (last: Slack also waits that long before its next message).
async fn failure_matrix(kind: &str, retry_after_reply: Reply, expected_after: Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cap = HttpCapture::start(Reply::status(202)).await;
    let r = match kind {
        "slack" => slack(dir.path(), &cap),
        "discord" => discord(dir.path(), &cap),
        "teams" => teams(dir.path(), &cap),
        "pagerduty" => pagerduty(dir.path(), &cap),
        _ => webhook(dir.path(), &cap),
    };
    cap.push(Reply::status(202));
    cap.push(Reply::status(400).with_body(r#"{"status":"invalid event"}"#));
    cap.push(Reply::status(500));
    cap.push(Reply::Reset);
    cap.push(retry_after_reply);
    let batch = [alert("m", Status::Firing, Severity::Medium)];

    r.send(&batch)
        .await
        .unwrap_or_else(|e| panic!("{kind} 202: {e}"));
    let e = r.send(&batch).await.expect_err("400");
    assert_eq!(e.kind, SendErrorKind::Permanent, "{kind} 400: {e}");
    assert_no_secret(&e);
    let e = r.send(&batch).await.expect_err("500");
    assert_eq!(e.kind, SendErrorKind::Retry { after: None }, "{kind} 500");
    let e = r.send(&batch).await.expect_err("reset");
    assert_eq!(
        e.kind,
        SendErrorKind::Retry { after: None },
        "{kind} reset: {e}"
    );
    assert_no_secret(&e);
    let e = r.send(&batch).await.expect_err("429");
    assert_eq!(
        e.kind,
        SendErrorKind::Retry {
            after: Some(expected_after)
        },
        "{kind} 429"
    );
    for _ in 0..5 {
        cap.next().await;
    }
    assert!(
        cap.try_next().is_none(),
        "{kind}: a send was retried inside"
    );
}

#[tokio::test]
async fn notify_failure_matrix_slack() {
    failure_matrix(
        "slack",
        Reply::status(429).with_header("Retry-After", "2"),
        Duration::from_secs(2),
    )
    .await;
}

#[tokio::test]
async fn notify_failure_matrix_teams() {
    failure_matrix(
        "teams",
        Reply::status(429).with_header("Retry-After", "3"),
        Duration::from_secs(3),
    )
    .await;
}

#[tokio::test]
async fn notify_teams_adaptive_card_schema_and_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cap = HttpCapture::start(Reply::status(202)).await;
    let r = teams(dir.path(), &cap);
    let mut firing = alert("t1", Status::Firing, Severity::Critical);
    firing.runbook_url = Some("https://runbooks.example/cpu".into());
    let mut resolved = alert("t2", Status::Resolved, Severity::High);
    resolved.description = "z".repeat(100_000);
    let mut big = vec![firing, resolved];
    big.extend((0..30).map(|i| alert(&format!("m{i}"), Status::Firing, Severity::Medium)));
    r.send(&big[..2]).await.expect("small batch");
    r.send(&big).await.expect("big batch");
    for _ in 0..2 {
        let req = cap.next().await;
        assert_eq!(
            req.path,
            "/workflows/abc/triggers/manual/paths/invoke?sig=SECRETSIG"
        );
        let v = req.json();
        validate_teams(&v).unwrap_or_else(|e| panic!("Teams payload: {e}"));
        let card = &v["attachments"][0]["content"];
        assert!(card["body"][0]["text"]
            .as_str()
            .expect("title")
            .starts_with("\\[FIRING:critical\\]"));
    }
    // A card the schema refuses is refused by the check (it can fail).
    let bad = json!({"type": "message", "attachments": [{
        "contentType": "application/vnd.microsoft.card.adaptive",
        "content": {"type": "AdaptiveCard", "version": "1.5",
                    "body": [{"type": "TextBlock", "text": "x", "size": "Huge"}]}}]});
    assert!(validate_teams(&bad).is_err());
}

#[tokio::test]
async fn notify_failure_matrix_pagerduty() {
    failure_matrix(
        "pagerduty",
        Reply::status(429).with_header("Retry-After", "30"),
        Duration::from_secs(30),
    )
    .await;
}

#[tokio::test]
async fn notify_failure_matrix_discord() {
    failure_matrix(
        "discord",
        Reply::status(429)
            .with_header("Retry-After", "9")
            .with_body(
                r#"{"message":"You are being rate limited.","retry_after":1.5,"global":false}"#,
            ),
        Duration::from_millis(1500),
    )
    .await;
}

#[tokio::test]
async fn notify_failure_matrix_webhook() {
    failure_matrix(
        "webhook",
        Reply::status(429).with_header("Retry-After", "5"),
        Duration::from_secs(5),
    )
    .await;
}

#[test]
fn notify_config_rejects_unknown_fields_and_redacts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = serde_json::from_value::<ReceiverConfigRaw>(json!({
        "type": "webhook", "name": "h", "url": "http://127.0.0.1:9/", "secret": { "file": "s" },
        "sekret": 1
    }));
    assert!(bad.is_err(), "unknown field accepted");
    let bad = serde_json::from_value::<ReceiverConfigRaw>(json!({ "type": "fax", "name": "f" }));
    assert!(bad.is_err(), "unknown type accepted");
    write_secret(dir.path(), "pd", PD_KEY);
    let r = receiver(
        dir.path(),
        json!({ "type": "pagerduty", "name": "pd", "routing_key": { "file": "pd" } }),
    );
    assert!(!format!("{r:?}").contains(PD_KEY));
    let raw: ReceiverConfigRaw = serde_json::from_value(json!({
        "type": "slack", "name": "s", "webhook_url": { "env": "MCPWATCH_NOTIFY_TEST_UNSET" }
    }))
    .expect("raw");
    let err = Receiver::from_raw(raw, dir.path(), &Destinations::Any).expect_err("unset env");
    assert!(err.to_string().contains("MCPWATCH_NOTIFY_TEST_UNSET"));
}

// ---- email ----------------------------------------------------------------------------

fn email(dir: &Path, server: &SmtpServer) -> Receiver {
    receiver(
        dir,
        json!({
            "type": "email", "name": "mail", "host": "127.0.0.1", "port": server.addr.port(),
            "tls": "none", "from": "mcpwatch <alerts@mcpwatch.test>",
            "to": ["ops@mcpwatch.test", "Second <second@mcpwatch.test>"], "timeout_secs": 10
        }),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn notify_email_through_real_smtp_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = SmtpServer::start(dir.path(), SmtpMode::Mailbox);
    let r = email(dir.path(), &server);
    let batch = [
        alert("e1", Status::Firing, Severity::Critical),
        alert("e2", Status::Firing, Severity::Low),
    ];
    runtime().block_on(r.send(&batch)).expect("mail sent");
    // The server answers 250 to DATA only after its handler stored the message.
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let m = &messages[0];
    assert_eq!(
        m["subject"],
        "[FIRING:critical] CPU above 95% on web-1 (e1) (+1 more)"
    );
    let rcpt = m["rcpt_to"].as_str().expect("X-RcptTo");
    assert!(rcpt.contains("ops@mcpwatch.test") && rcpt.contains("second@mcpwatch.test"));
    assert!(m["to"]
        .as_str()
        .expect("to")
        .contains("second@mcpwatch.test"));
    assert!(m["from"]
        .as_str()
        .expect("from")
        .contains("alerts@mcpwatch.test"));
    assert_eq!(m["content_type"], "multipart/alternative");
    let text = m["parts"]["text/plain"].as_str().expect("text part");
    assert!(text.contains("CPU above 95% on web-1 (e2)"));
    assert!(text.contains("host=web-1"));
    let html = m["parts"]["text/html"].as_str().expect("html part");
    assert!(html.contains("cpu &lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;busy&quot;"));
    assert!(!html.contains("<script>"));
    assert!(html.contains("href=\"https://runbooks.example/cpu?a=1&amp;b=2\""));
}

#[test]
fn notify_email_smtp_451_is_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = SmtpServer::start(dir.path(), SmtpMode::Reject451Rcpt);
    let r = email(dir.path(), &server);
    let e = runtime()
        .block_on(r.send(&[alert("t", Status::Firing, Severity::High)]))
        .expect_err("451");
    assert_eq!(e.kind, SendErrorKind::Retry { after: None }, "{e}");
    assert!(e.message.contains("451"), "{e}");
}

#[test]
fn notify_email_smtp_550_is_permanent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = SmtpServer::start(dir.path(), SmtpMode::Reject550Data);
    let r = email(dir.path(), &server);
    let e = runtime()
        .block_on(r.send(&[alert("p", Status::Firing, Severity::High)]))
        .expect_err("550");
    assert_eq!(e.kind, SendErrorKind::Permanent, "{e}");
    assert!(e.message.contains("550"), "{e}");
}

#[test]
fn notify_email_connection_refused_is_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = mcpwatch_tests::free_addr();
    let r = receiver(
        dir.path(),
        json!({
            "type": "email", "name": "mail", "host": "127.0.0.1", "port": addr.port(),
            "tls": "none", "from": "alerts@mcpwatch.test", "to": ["ops@mcpwatch.test"]
        }),
    );
    let e = runtime()
        .block_on(r.send(&[alert("c", Status::Firing, Severity::High)]))
        .expect_err("refused");
    assert!(e.is_retry(), "{e}");
}
