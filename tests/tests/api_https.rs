//! The API over HTTPS against a real collector: the console's cookie gets `__Host-` and
//! `Secure`, `/metrics` passes promtool with alerting configured, TLS 1.3 only unless 1.2
//! is configured, and SIGHUP swaps the certificate for new connections.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mcpwatch_tests::api::admin_token;
use mcpwatch_tests::process::CollectorProc;
use mcpwatch_tests::Pki;

#[test]
fn api_over_https_and_metrics_pass_promtool_with_alerting_configured() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let dir = tmp.path().join("c");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hmac"), "k").unwrap();
    // The collector's own certificate (SAN localhost) doubles as the API's.
    let extra = "[alerting]\n[[receiver]]\ntype = \"webhook\"\nname = \"hook\"\n\
                 url = \"http://127.0.0.1:9/hook\"\nsecret = { file = \"hmac\" }\n";
    let mut c = CollectorProc::start(&pki, &dir, extra);
    c.stop();
    c.child = None;
    let text = std::fs::read_to_string(&c.config).unwrap();
    let p = pki.dir.display();
    let text = text.replacen(
        "[http]\n",
        &format!("[http]\ntls_cert = \"{p}/collector.crt\"\ntls_key = \"{p}/collector.key\"\n"),
        1,
    );
    std::fs::write(&c.config, text).unwrap();
    // `restart` waits for /readyz over plain HTTP, which now refuses: start by hand.
    let child = Command::new(mcpwatch_tests::bin("mcpwatch-collector"))
        .args(["run", "--config"])
        .arg(&c.config)
        .stderr(std::fs::File::create(dir.join("https.log")).unwrap())
        .spawn()
        .unwrap();
    c.child = Some(child);
    let token = admin_token(&c.db, "tls", None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // (status, head, body) of one request over TLS.
    let call =
        |method: &str, path: &str, headers: &str, body: &str| -> Option<(u16, String, String)> {
            rt.block_on(async {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let cfg = mcpwatch_tests::client::config_without_cert(&pki.ca());
                let mut s = mcpwatch_tests::client::connect(c.http, cfg).await.ok()?;
                let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
                s.write_all(req.as_bytes()).await.ok()?;
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf).await;
                let text = String::from_utf8_lossy(&buf).into_owned();
                let status = text.split_whitespace().nth(1)?.parse().ok()?;
                let (head, body) = text.split_once("\r\n\r\n")?;
                Some((status, head.to_owned(), body.to_owned()))
            })
        };
    let get = |path: &str, token: Option<&str>| -> Option<(u16, String)> {
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        call("GET", path, &auth, "").map(|(s, _, b)| (s, b))
    };
    let ready = mcpwatch_tests::wait_for("https /readyz", Duration::from_secs(30), || {
        get("/readyz", None).filter(|r| r.0 == 200)
    });
    assert_eq!(ready.0, 200);
    let me = get("/api/v1/me", Some(&token)).expect("me over https");
    assert_eq!(me.0, 200, "{me:?}");
    assert!(me.1.contains("token:tls"), "{me:?}");
    assert_eq!(get("/api/v1/me", None).unwrap().0, 401);
    // A browser sign-in over TLS: the session cookie is Secure and __Host- prefixed (no
    // Domain, Path=/), besides HttpOnly and SameSite=Strict.
    let auth = format!("Authorization: Bearer {token}\r\nContent-Type: application/json\r\n");
    let user = r#"{"username":"dora","password":"secure-cookies-only-1","roles":["viewer"]}"#;
    let made = call("POST", "/api/v1/users", &auth, user).expect("create user");
    assert_eq!(made.0, 201, "{made:?}");
    let login = r#"{"username":"dora","password":"secure-cookies-only-1","cookie":true}"#;
    let headers = "Content-Type: application/json\r\nSec-Fetch-Site: same-origin\r\n";
    let (status, head, body) =
        call("POST", "/api/v1/sessions", headers, login).expect("cookie sign-in over https");
    assert_eq!(status, 201, "{head}\n{body}");
    let session_cookie = head
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .find(|l| l.contains("HttpOnly"))
        .unwrap_or_else(|| panic!("no HttpOnly cookie: {head}"));
    for part in ["__Host-", "; Secure", "SameSite=Strict", "Path=/"] {
        assert!(
            session_cookie.contains(part),
            "{part} missing: {session_cookie}"
        );
    }
    assert!(!session_cookie.contains("Domain="), "{session_cookie}");
    // Plain HTTP on the TLS port gets nothing useful.
    assert_ne!(
        mcpwatch_tests::http_get(c.http, "/readyz")
            .map(|r| r.0)
            .unwrap_or(0),
        200
    );
    let metrics = get("/metrics", None).expect("metrics over https").1;
    for family in [
        "mcpwatch_collector_notifications_sent_total",
        "mcpwatch_collector_outbox_queue_depth",
        "mcpwatch_collector_alerts_active",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
    // The endpoint may answer OpenMetrics; ask for the text format promtool reads.
    mcpwatch_tests::promtool_check("collector /metrics with alerting", &metrics);
}

/// A TLS client trusting `ca`, speaking only `version`.
fn tls_client(
    ca: &Path,
    version: &'static rustls::SupportedProtocolVersion,
) -> std::sync::Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in mcpwatch_common::tls::load_certs(ca).unwrap() {
        roots.add(cert).unwrap();
    }
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// The HTTPS API speaks TLS 1.3 only unless `tls_min_version = "1.2"`, and SIGHUP swaps its
/// certificate for new connections without a restart.
#[test]
fn api_https_is_tls13_by_default_and_reloads_its_certificate_on_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let other = Pki::new(&tmp.path().join("other-pki"));
    let dir = tmp.path().join("c");
    let mut c = CollectorProc::start(&pki, &dir, "");
    c.stop();
    c.child = None;
    let api_crt = dir.join("api.crt");
    let api_key = dir.join("api.key");
    std::fs::copy(pki.dir.join("collector.crt"), &api_crt).unwrap();
    std::fs::copy(pki.dir.join("collector.key"), &api_key).unwrap();
    let text = std::fs::read_to_string(&c.config).unwrap();
    let https = format!(
        "[http]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        api_crt.display(),
        api_key.display()
    );
    std::fs::write(&c.config, text.replacen("[http]\n", &https, 1)).unwrap();
    let start = |config: &Path| {
        Command::new(mcpwatch_tests::bin("mcpwatch-collector"))
            .args(["run", "--config"])
            .arg(config)
            .stderr(std::fs::File::create(dir.join("https.log")).unwrap())
            .spawn()
            .unwrap()
    };
    c.child = Some(start(&c.config));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = c.http;
    let status = |cfg: std::sync::Arc<rustls::ClientConfig>| -> Option<u16> {
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = mcpwatch_tests::client::connect(http, cfg).await.ok()?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            String::from_utf8_lossy(&buf)
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
    };
    let tls13 = |ca: &Path| tls_client(ca, &rustls::version::TLS13);
    let up = mcpwatch_tests::wait_for("https up", Duration::from_secs(30), || {
        status(tls13(&pki.ca())).filter(|s| *s == 200)
    });
    assert_eq!(up, 200);
    assert_eq!(
        status(tls_client(&pki.ca(), &rustls::version::TLS12)),
        None,
        "TLS 1.2 accepted without tls_min_version = \"1.2\""
    );
    assert_eq!(status(tls13(&other.ca())), None, "wrong CA accepted");

    // Swap in a certificate from another CA and send SIGHUP.
    std::fs::copy(other.dir.join("collector.crt"), &api_crt).unwrap();
    std::fs::copy(other.dir.join("collector.key"), &api_key).unwrap();
    mcpwatch_tests::process::signal(c.child.as_ref().unwrap(), "HUP");
    mcpwatch_tests::wait_for("new certificate served", Duration::from_secs(10), || {
        status(tls13(&other.ca())).filter(|s| *s == 200)
    });
    assert_eq!(
        status(tls13(&pki.ca())),
        None,
        "old certificate still served"
    );

    // TLS 1.2 when asked for.
    c.stop();
    let text = std::fs::read_to_string(&c.config).unwrap();
    std::fs::write(
        &c.config,
        text.replacen("[http]\n", "[http]\ntls_min_version = \"1.2\"\n", 1),
    )
    .unwrap();
    c.child = Some(start(&c.config));
    let ok = mcpwatch_tests::wait_for("https 1.2", Duration::from_secs(30), || {
        status(tls_client(&other.ca(), &rustls::version::TLS12)).filter(|s| *s == 200)
    });
    assert_eq!(ok, 200);
}
