//! The gateway against hostile and careless clients: an off-loopback listener without TLS or
//! token is refused at start (exit 64, naming the key); on a running agent with a token,
//! requests without it, from a foreign Origin, oversized, malformed, for unknown servers or
//! sessions are refused with the right status and counted; 10,000 made-up tool names add one
//! `_other` series, not 10,000.

use std::process::Command;

use mcpwatch_tests::docker::fixture_image;
use mcpwatch_tests::process::AgentProc;
use mcpwatch_tests::rig::{Rig, LONG};
use mcpwatch_tests::{bin, free_addr, metric, wait_for, Pki};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, ORIGIN};
use reqwest::StatusCode;
use serde_json::{json, Value};

const TOKEN: &str = "gateway-test-token-0123456789";

fn check_config(config: &std::path::Path) -> (i32, String) {
    let out = Command::new(bin("mcpwatch-agent"))
        .args(["check-config", "--config"])
        .arg(config)
        .output()
        .expect("run mcpwatch-agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn off_loopback_without_tls_or_token_is_refused_with_exit_64_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let agent = AgentProc::configure(
        &pki,
        &tmp.path().join("a"),
        "edge",
        free_addr(),
        "1s",
        "1MiB",
    );
    let base = std::fs::read_to_string(&agent.config).unwrap();
    let loopback = format!("listen = \"{}\"", agent.gateway_addr);
    let open = format!("listen = \"0.0.0.0:{}\"", agent.gateway_addr.port());
    std::fs::write(&agent.config, base.replace(&loopback, &open)).unwrap();
    let (code, err) = check_config(&agent.config);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("gateway.tls_cert"), "{err}");

    // With TLS but no token: still refused, naming the tokens.
    let certs = pki.agent("gateway");
    let with_tls = format!(
        "{open}\ntls_cert = \"{}\"\ntls_key = \"{}\"",
        certs.cert.display(),
        certs.key.display()
    );
    std::fs::write(&agent.config, base.replace(&loopback, &with_tls)).unwrap();
    let (code, err) = check_config(&agent.config);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("gateway.tokens"), "{err}");

    // Both: accepted.
    let token = tmp.path().join("gateway.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let full = format!(
        "{with_tls}\ntokens = [{{ file = \"{}\" }}]",
        token.display()
    );
    std::fs::write(&agent.config, base.replace(&loopback, &full)).unwrap();
    let (code, err) = check_config(&agent.config);
    assert_eq!(code, 0, "{err}");
}

fn post(
    client: &reqwest::Client,
    url: &str,
    headers: HeaderMap,
    body: String,
) -> reqwest::RequestBuilder {
    client.post(url).headers(headers).body(body)
}

fn headers(token: Option<&str>, session: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(
        "accept",
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    if let Some(t) = token {
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
    }
    if let Some(s) = session {
        h.insert("mcp-session-id", HeaderValue::from_str(s).unwrap());
    }
    h
}

fn refused(rig: &Rig, reason: &str) -> f64 {
    metric(
        &rig.agent.metrics(),
        &format!("mcpwatch_mcp_gateway_requests_refused_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

// Over 80 lines on purpose: one running agent, every hostile request in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_and_counted_and_bogus_tools_fold_into_other() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("gateway.token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let servers = format!(
        "\n[[mcp_server]]\nname = \"tools\"\nimage = \"{}\"\nargs = [\"--transport\", \"stdio\"]\n\
         transport = \"stdio\"\n[mcp_server.probe]\ninterval = \"1s\"\ntimeout = \"900ms\"\n",
        fixture_image()
    );
    let rig = Rig::start_with(
        &servers,
        &[],
        &format!("tokens = [{{ file = \"{}\" }}]", token_file.display()),
        &[],
    );
    rig.wait_events("tools", "probe_ok", 1);
    wait_for("attached", LONG, || {
        (rig.agent_metric("mcpwatch_mcp_gateway_attached", "tools") == Some(1.0)).then_some(())
    });
    let url = format!("http://{}/mcp/tools", rig.agent.gateway_addr);
    let http = reqwest::Client::new();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "hostile", "version": "0"}}})
    .to_string();

    let r = post(&http, &url, headers(None, None), init.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers().get("www-authenticate").unwrap(), "Bearer");
    let r = post(
        &http,
        &url,
        headers(Some("wrong-token-wrong-token"), None),
        init.clone(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let mut foreign = headers(Some(TOKEN), None);
    foreign.insert(ORIGIN, HeaderValue::from_static("http://evil.example"));
    let r = post(&http, &url, foreign, init.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(5 << 20)
    );
    let r = post(&http, &url, headers(Some(TOKEN), None), huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // A DNS-rebinding page: same-origin to the browser, so no Origin, but a foreign Host.
    let mut rebound = headers(Some(TOKEN), None);
    rebound.insert("host", HeaderValue::from_static("attacker.example:9470"));
    let r = post(&http, &url, rebound, init.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Not JSON-RPC 2.0: refused before it could pin a session waiting for an answer.
    let old = r#"{"id":1,"method":"tools/list"}"#;
    let r = post(&http, &url, headers(Some(TOKEN), None), old.into())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let mut text = headers(Some(TOKEN), None);
    text.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    let r = post(&http, &url, text, init.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for bad in ["not json", "[]", r#"{"jsonrpc":"2.0"}"#] {
        let r = post(&http, &url, headers(Some(TOKEN), None), bad.into())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let elsewhere = format!("http://{}/mcp/nope", rig.agent.gateway_addr);
    let r = post(&http, &elsewhere, headers(Some(TOKEN), None), init.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = post(
        &http,
        &url,
        headers(Some(TOKEN), Some("00ff")),
        init.clone(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // A proper session, then 10,000 calls of made-up tools on it.
    let r = post(&http, &url, headers(Some(TOKEN), None), init)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let session = r
        .headers()
        .get("mcp-session-id")
        .expect("session id")
        .to_str()
        .unwrap()
        .to_owned();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(
        answer["result"]["serverInfo"]["name"],
        "mcpwatch-mcp-fixture"
    );
    const BOGUS: u64 = 10_000;
    let mut batch = Vec::new();
    for i in 0..BOGUS {
        let call = json!({"jsonrpc": "2.0", "id": 100 + i, "method": "tools/call",
            "params": {"name": format!("bogus-{i}"), "arguments": {}}})
        .to_string();
        batch.push(post(&http, &url, headers(Some(TOKEN), Some(&session)), call).send());
        if batch.len() == 16 || i + 1 == BOGUS {
            for r in futures::future::join_all(batch.drain(..)).await {
                let r = r.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                let v: Value = r.json().await.unwrap();
                assert_eq!(v["error"]["code"], -32602, "{v}");
            }
        }
    }
    wait_for("bogus calls counted", LONG, || {
        let m = rig.agent.metrics();
        let n = metric(
            &m,
            r#"mcpwatch_mcp_tool_calls_total{server="tools",tool="_other",outcome="jsonrpc_error"}"#,
        );
        (n == Some(BOGUS as f64)).then_some(m)
    });
    // One series per known tool and outcome (from 0) and `_other`'s: none per made-up name.
    let m = rig.agent.metrics();
    let tool_series = m
        .lines()
        .filter(|l| l.starts_with("mcpwatch_mcp_tool_calls_total{"))
        .count();
    assert_eq!(tool_series, (3 + 1) * 6, "{m}");
    assert!(!m.contains("bogus-"), "a made-up tool name became a label");
    let r = http
        .delete(&url)
        .headers(headers(Some(TOKEN), Some(&session)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    assert!(refused(&rig, "unauthorized") >= 2.0);
    for reason in [
        "origin",
        "content_type",
        "malformed",
        "unknown_server",
        "unknown_session",
    ] {
        assert!(refused(&rig, reason) >= 1.0, "{reason}");
    }
    // Tokens never reach the log.
    assert!(!rig.agent.logs().contains(TOKEN));
}
