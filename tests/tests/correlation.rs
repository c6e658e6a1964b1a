//! Request correlation on a real collector: every HTTP answer carries `X-Request-Id` — the
//! client's when well formed, else a generated one, refusals before routing included — and
//! the security headers (strict CSP, nosniff, no referrer, never framed), and
//! the same id is in the request's audit row and log lines; ingest log lines about a batch
//! name the agent and the batch's seq.

use std::path::Path;
use std::time::Duration;

use mcpwatch_common::wire::{Batch, Frame, Sample};
use mcpwatch_tests::api::{admin_token, request, request_with, Api, Resp};
use mcpwatch_tests::client::{config, Conn};
use mcpwatch_tests::process::CollectorProc;
use mcpwatch_tests::{wait_for, Pki};

/// A collector with `http` added to its `[http]` table and `toml` appended to its config.
fn collector(pki: &Pki, dir: &Path, http: &str, toml: &str) -> CollectorProc {
    let mut c = CollectorProc::start(pki, dir, "");
    c.stop();
    c.child = None;
    let text = std::fs::read_to_string(&c.config).unwrap();
    let mut text = text.replacen("[http]\n", &format!("[http]\n{http}\n"), 1);
    text.push_str(toml);
    std::fs::write(&c.config, text).unwrap();
    // Each request's line ("http request answered") is at DEBUG.
    c.restart_with_env(&[("RUST_LOG", "info,mcpwatch_collector::api=debug")]);
    c
}

fn id_of(r: &Resp) -> String {
    r.header("x-request-id")
        .unwrap_or_else(|| panic!("no X-Request-Id on {r:?}"))
}

/// A generated id: 32 lowercase hex digits.
fn is_generated(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The headers `api/security_headers.rs` puts on every answer.
fn assert_security_headers(r: &Resp) {
    let csp = r
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("no CSP on {r:?}"));
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
    ] {
        assert_eq!(r.header(name).as_deref(), Some(value), "{name} on {r:?}");
    }
}

fn with_id(c: &CollectorProc, method: &str, path: &str, id: &str, body: Option<&[u8]>) -> Resp {
    request_with(c.http, method, path, None, &[("X-Request-Id", id)], body).unwrap()
}

#[test]
fn every_answer_carries_a_request_id_that_the_audit_row_and_log_lines_share() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let c = collector(
        &pki,
        &tmp.path().join("c"),
        "max_body_size = \"64KiB\"",
        "[api]\nlogin_attempts_per_minute = 1\n",
    );
    let token = admin_token(&c.db, "reader", None);
    let api = Api::new(c.http, Some(&token));

    // No id sent: one is generated, a new one per request.
    let healthz = request(c.http, "GET", "/healthz", None, None).unwrap();
    assert_security_headers(&healthz);
    let a = id_of(&healthz);
    let b = id_of(&request(c.http, "GET", "/metrics", None, None).unwrap());
    assert!(is_generated(&a) && is_generated(&b) && a != b, "{a} {b}");

    // A well-formed id is echoed, stored in the audit row and named in the log lines.
    let r = with_id(&c, "GET", "/api/v1/hosts", "client-42.a_B", None);
    assert_eq!((r.status, id_of(&r).as_str()), (401, "client-42.a_B"));
    assert_security_headers(&r);
    let rows = api.get("/api/v1/audit?request_id=client-42.a_B").json();
    let rows = rows["items"].as_array().expect("items").clone();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["request_id"], "client-42.a_B");
    assert_eq!(rows[0]["result"], 401);
    wait_for("the request's log line", Duration::from_secs(10), || {
        c.logs()
            .lines()
            .any(|l| l.contains("request_id=client-42.a_B") && l.contains("status=401"))
            .then_some(())
    });

    // Malformed ids are replaced, never echoed.
    let long = "x".repeat(65);
    for bad in [
        long.as_str(),
        "two words",
        "semi;colon",
        "a/b",
        "tab\there",
        "caf\u{e9}",
    ] {
        let r = with_id(&c, "GET", "/healthz", bad, None);
        let got = id_of(&r);
        assert!(got != bad && is_generated(&got), "{bad:?} -> {got:?}");
    }
    // CR/LF cannot split the answer: at worst the request has one more header.
    for injected in ["abc\r\nX-Evil: 1", "abc\rX-Evil: 1"] {
        let r = with_id(&c, "GET", "/healthz", injected, None);
        assert!(
            !r.head.to_ascii_lowercase().contains("x-evil"),
            "{injected:?}: {}",
            r.head
        );
        if let Some(id) = r.header("x-request-id") {
            assert!(!id.contains('\r') && !id.contains("Evil"), "{id:?}");
        }
    }

    // Refusals carry it too: 413 and 414 before routing (and their audit rows), 404 from
    // the fallback, 429 from the login limit.
    let big = vec![b'a'; 128 * 1024];
    let r = with_id(&c, "POST", "/api/v1/sessions", "big-body-1", Some(&big));
    assert_eq!((r.status, id_of(&r).as_str()), (413, "big-body-1"));
    assert_security_headers(&r);
    let long_uri = format!("/api/v1/hosts?x={}", "a".repeat(9000));
    let r = with_id(&c, "GET", &long_uri, "long-uri-1", None);
    assert_eq!((r.status, id_of(&r).as_str()), (414, "long-uri-1"));
    assert_security_headers(&r);
    for id in ["big-body-1", "long-uri-1"] {
        let rows = api.get(&format!("/api/v1/audit?request_id={id}")).json();
        assert_eq!(
            rows["items"].as_array().map(Vec::len),
            Some(1),
            "{id}: {rows}"
        );
        assert!(
            rows["items"][0]["action"]
                .as_str()
                .is_some_and(|a| a.contains("refused before routing")),
            "{rows}"
        );
    }
    let r = with_id(&c, "GET", "/no/such/route", "lost-1", None);
    assert_eq!((r.status, id_of(&r).as_str()), (404, "lost-1"));
    assert_security_headers(&r);
    let login = br#"{"username": "nobody", "password": "not-the-password-1"}"#;
    let mut statuses = Vec::new();
    for i in 0..3 {
        let r = with_id(
            &c,
            "POST",
            "/api/v1/sessions",
            &format!("login-{i}"),
            Some(login),
        );
        assert_eq!(id_of(&r), format!("login-{i}"));
        statuses.push(r.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_log_lines_about_a_batch_name_the_agent_and_the_seq() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let c = CollectorProc::start(&pki, &tmp.path().join("c"), "");
    let cert = pki.agent("web-7");
    let mut conn = Conn::open(c.ingest, config(&pki.ca(), &cert.cert, &cert.key))
        .await
        .unwrap();
    assert!(matches!(
        conn.handshake(Conn::hello("web-7")).await.unwrap(),
        Frame::Welcome(_)
    ));
    // A sample for a series never declared: the batch is refused and the session ends.
    let batch = Batch {
        seq: 1,
        new_series: Vec::new(),
        samples: vec![Sample {
            series: 99,
            ts_ms: mcpwatch_collector::now_ms(),
            value: 1.0,
        }],
        events: Vec::new(),
    };
    conn.send(Frame::Batch(batch)).await.unwrap();
    assert!(conn.closed_within(Duration::from_secs(10)).await);
    let logs = c.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("batch not committed"))
        .unwrap_or_else(|| panic!("no line about the refused batch:\n{logs}"));
    assert!(
        line.contains("agent_id=web-7") && line.contains("seq=1"),
        "{line}"
    );
}
