//! Agent enrollment end to end, against the real binaries: a bootstrap token from the CLI,
//! `mcpwatch-agent enroll` pinned to the collector's CA by fingerprint, the agent streaming
//! with the certificate it got, and every refusal the issue names (used, expired and
//! revoked tokens, a token for another name, CSRs asking for more, a wrong fingerprint).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mcpwatch_common::cert_info;
use mcpwatch_tests::api::admin_token;
use mcpwatch_tests::process::{final_counts, AgentProc, CollectorProc};
use mcpwatch_tests::{bin, wait_for, Pki};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(30);

/// A collector that enrolls (`[enroll] ca_key`) and serves its API over HTTPS with its own
/// certificate (SAN 127.0.0.1).
struct Enrolling {
    c: CollectorProc,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    admin: String,
}

impl Enrolling {
    /// Certificates it issues live `lifetime` (e.g. `2d`).
    fn start(pki: &Pki, dir: &Path, lifetime: &str) -> Enrolling {
        let p = pki.dir.display();
        let extra = format!("\n[enroll]\nca_key = \"{p}/ca.key\"\nlifetime = \"{lifetime}\"\n");
        let mut c = CollectorProc::start(pki, dir, &extra);
        c.stop();
        c.child = None;
        let text = std::fs::read_to_string(&c.config).unwrap();
        let text = text.replacen(
            "[http]\n",
            &format!("[http]\ntls_cert = \"{p}/collector.crt\"\ntls_key = \"{p}/collector.key\"\n"),
            1,
        );
        std::fs::write(&c.config, text).unwrap();
        // `restart` waits for /readyz over plain HTTP, which now refuses: start by hand.
        let child = Command::new(bin("mcpwatch-collector"))
            .args(["run", "--config"])
            .arg(&c.config)
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(dir.join("https.log")).unwrap())
            .spawn()
            .unwrap();
        c.child = Some(child);
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.ca()).unwrap()).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .build()
            .unwrap();
        let admin = admin_token(&c.db, "enroll-test", None);
        let e = Enrolling {
            c,
            rt: tokio::runtime::Runtime::new().unwrap(),
            http,
            admin,
        };
        wait_for("https /readyz", LONG, || {
            e.call("GET", "/readyz", None, None)
                .filter(|(s, _)| *s == 200)
        });
        e
    }

    fn url(&self) -> String {
        format!("https://{}", self.c.http)
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        self.rt.block_on(async {
            let mut r = self
                .http
                .request(method.parse().ok()?, format!("{}{path}", self.url()));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            if let Some(b) = body {
                r = r.json(&b);
            }
            let resp = r.send().await.ok()?;
            let status = resp.status().as_u16();
            let text = resp.text().await.ok()?;
            Some((
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            ))
        })
    }

    fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(&self.admin), body)
            .unwrap_or_else(|| panic!("{method} {path}: no answer"))
    }

    /// `mcpwatch-collector ARGS --db DB`, which must succeed; its stdout.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(bin("mcpwatch-collector"))
            .args(args)
            .arg("--db")
            .arg(&self.c.db)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `enroll-token create` on the database; returns the token.
    fn token(&self, args: &[&str]) -> String {
        let args: Vec<&str> = ["enroll-token", "create"]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        self.cli(&args).trim().to_owned()
    }
}

/// The CA's `SHA256:` fingerprint.
fn fingerprint(ca: &Path) -> String {
    let der = mcpwatch_common::tls::load_certs(ca).unwrap().remove(0);
    cert_info::fingerprint(der.as_ref())
}

/// An agent configured with `[tls]` files that do not exist yet, in `dir/tls`.
fn unenrolled_agent(pki: &Pki, dir: &Path, name: &str, c: &CollectorProc) -> AgentProc {
    let a = AgentProc::configure(pki, dir, name, c.ingest, "200ms", "16MiB");
    let text = std::fs::read_to_string(&a.config).unwrap();
    let start = text.find("[tls]").unwrap();
    let end = start + text[start..].find("[spool]").unwrap();
    let tls = dir.join("tls");
    let text = format!(
        "agent_id = \"{name}\"\n{}[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n{}",
        &text[..start],
        tls.join("ca.crt").display(),
        tls.join("agent.crt").display(),
        tls.join("agent.key").display(),
        &text[end..]
    );
    std::fs::write(&a.config, text).unwrap();
    a
}

/// Runs `mcpwatch-agent enroll`; (exit code, stdout + stderr).
fn enroll(
    a: &AgentProc,
    collector: &str,
    token: &str,
    trust: &[&str],
    extra: &[&str],
) -> (i32, String) {
    let out = Command::new(bin("mcpwatch-agent"))
        .args(["enroll", "--config"])
        .arg(&a.config)
        .args(["--collector", collector, "--token", token])
        .args(trust)
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn an_agent_enrolls_with_a_pinned_ca_and_streams_and_tokens_are_refused_as_they_should() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let e = Enrolling::start(&pki, &tmp.path().join("c"), "2d");
    let fp = fingerprint(&pki.ca());
    let pin = ["--ca-fingerprint", fp.as_str()];
    let token = e.token(&["--name", "web-1", "--labels", "team=a"]);
    assert!(token.starts_with("mcpe_"), "{token}");
    let mut a = unenrolled_agent(&pki, &tmp.path().join("a"), "web-1", &e.c);

    // A wrong fingerprint: the agent stops before sending the token, which stays unused.
    let other = Pki::new(&tmp.path().join("other-pki"));
    let wrong = fingerprint(&other.ca());
    let (code, out) = enroll(&a, &e.url(), &token, &["--ca-fingerprint", &wrong], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("pinned fingerprint") && out.contains("not sent"),
        "{out}"
    );
    let (_, tokens) = e.api("GET", "/api/v1/enroll-tokens", None);
    assert_eq!(tokens[0]["used"], 0, "{tokens}");

    // The right one: key made here (0600), certificate and CA bundle written.
    let (code, out) = enroll(&a, &e.url(), &token, &pin, &[]);
    assert_eq!(code, 0, "{out}");
    let key = tmp.path().join("a/tls/agent.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let pem = std::fs::read(tmp.path().join("a/tls/agent.crt")).unwrap();
    let info = cert_info::inspect_pem(&pem).unwrap().remove(0);
    assert_eq!(info.identity, "web-1");
    let days = (info.not_after_s - info.not_before_s) / 86_400;
    assert_eq!(
        days, 2,
        "the configured lifetime (plus the 5 minutes of skew)"
    );
    // Enrolling again is a no-op while the certificate is valid.
    let (code, out) = enroll(&a, &e.url(), &token, &pin, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("already enrolled"), "{out}");

    // The agent streams with it; the host carries the token's labels.
    a.restart();
    wait_for("web-1 online", LONG, || {
        let (s, h) = e.api("GET", "/api/v1/hosts/web-1", None);
        (s == 200 && h["online"] == true).then_some(h)
    });
    let (_, h) = e.api("GET", "/api/v1/hosts/web-1", None);
    assert_eq!(h["labels"]["team"], "a", "{h}");
    let (_, certs) = e.api("GET", "/api/v1/hosts/web-1/certificates", None);
    assert_eq!(certs[0]["serial"], info.serial.as_str(), "{certs}");
    assert_eq!(certs[0]["source"], "enroll", "{certs}");
    assert!(
        certs[0]["last_seen_ms"].as_i64().is_some(),
        "seen at the handshake: {certs}"
    );
    let expiry = format!(
        "mcpwatch_tls_certificate_expiry_timestamp_seconds{{role=\"agent\",identity=\"web-1\",serial=\"{}\"}}",
        info.serial
    );
    let metrics = e.call("GET", "/metrics", None, None).unwrap().1;
    let text = metrics.as_str().unwrap_or_default();
    assert_eq!(
        mcpwatch_tests::metric(text, &expiry),
        Some(info.not_after_s as f64),
        "{text}"
    );
    // The collector's own certificate and its CA: each series equals its notAfter.
    for (role, file) in [
        ("collector", pki.dir.join("collector.crt")),
        ("ca", pki.ca()),
    ] {
        let own = cert_info::inspect_pem(&std::fs::read(&file).unwrap())
            .unwrap()
            .remove(0);
        let series = format!(
            "mcpwatch_tls_certificate_expiry_timestamp_seconds{{role=\"{role}\",identity=\"{}\",serial=\"{}\"}}",
            own.identity, own.serial
        );
        // Read by hand: the CA's name holds spaces, which `metric` does not expect.
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok());
        assert_eq!(value, Some(own.not_after_s as f64), "{role}: {text}");
    }

    // The agent reports its certificate's expiry; two days left pages.
    let alert = wait_for("tls_certificate_expiring firing", LONG, || {
        let (_, alerts) = e.api("GET", "/api/v1/alerts", None);
        alerts["items"]
            .as_array()?
            .iter()
            .find(|a| a["rule"] == "tls_certificate_expiring" && a["labels"]["role"] == "agent")
            .cloned()
    });
    assert_eq!(alert["labels"]["host"], "web-1", "{alert}");
    assert_eq!(alert["labels"]["serial"], info.serial.as_str(), "{alert}");
    assert_eq!(alert["level"], "critical", "{alert}");

    // The single-use token is spent.
    let (code, out) = enroll(&a, &e.url(), &token, &pin, &["--force"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("401"), "{out}");

    // A token for web-1 cannot enroll web-2.
    let token2 = e.token(&["--name", "web-1", "--uses", "5"]);
    let b = unenrolled_agent(&pki, &tmp.path().join("b"), "web-2", &e.c);
    let (code, out) = enroll(&b, &e.url(), &token2, &pin, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not allowed"), "{out}");
    // A pattern token cannot take over web-1, a known host (its history and labels).
    let pattern = e.token(&["--name", "web-*", "--uses", "5"]);
    let (code, out) = enroll(&a, &e.url(), &pattern, &pin, &["--force"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("known host"), "{out}");
    // ... but enrolls a new name, here trusting a CA file rather than a fingerprint.
    let ca_file = pki.ca().display().to_string();
    let (code, out) = enroll(&b, &e.url(), &pattern, &["--ca", &ca_file], &[]);
    assert_eq!(code, 0, "{out}");
    let pem = std::fs::read(tmp.path().join("b/tls/agent.crt")).unwrap();
    assert_eq!(
        cert_info::inspect_pem(&pem).unwrap()[0].identity,
        "web-2",
        "{out}"
    );

    // A team's enroller (hosts:enroll scoped to team a) mints tokens for its own hosts,
    // never for a known host outside its team, whatever labels it asks for (that would
    // move web-2, which has no team, into team a).
    let user = mcpwatch_tests::api::local_user(
        &e.c.db,
        "enroller",
        "enroller pass 1",
        "admin",
        "{team=\"a\"}",
    );
    let team = mcpwatch_tests::api::admin_token(&e.c.db, "team-a-enroller", Some(user));
    let mint = |name: &str| {
        e.call(
            "POST",
            "/api/v1/enroll-tokens",
            Some(team.as_str()),
            Some(json!({"name": name, "labels": {"team": "a"}})),
        )
        .unwrap()
    };
    let (status, body) = mint("web-1");
    assert_eq!(status, 201, "web-1 is team a's: {body}");
    let (status, body) = mint("web-2");
    // 404, as every read of a host outside the caller's scope: it does not learn it exists.
    assert_eq!(status, 404, "web-2 is outside team a: {body}");

    // The command line lists and revokes tokens, audited as the API routes are (actor
    // `cli`), never with the secret.
    let listed = e.cli(&["enroll-token", "list"]);
    assert!(
        listed.contains("web-*") && listed.contains("active"),
        "{listed}"
    );
    let cli_token = e.token(&["--name", "web-9"]);
    let id = cli_token.split('_').nth(1).unwrap().to_owned();
    e.cli(&["enroll-token", "revoke", &id]);
    let listed = e.cli(&["enroll-token", "list"]);
    let row = listed
        .lines()
        .find(|l| l.starts_with(&format!("{id} ")))
        .unwrap();
    assert!(row.contains("revoked"), "{listed}");
    let (_, audit) = e.api("GET", "/api/v1/audit?actor=cli&limit=100", None);
    let text = audit.to_string();
    let rows = audit["items"].as_array().unwrap();
    let has = |action: &str, object: &str| {
        rows.iter()
            .any(|r| r["action"] == action && r["object"] == object && r["source"] == "cli")
    };
    assert!(
        has(
            "POST /api/v1/enroll-tokens",
            &format!("/api/v1/enroll-tokens/{id}")
        ) && has(
            "POST /api/v1/enroll-tokens/{id}/revoke",
            &format!("/api/v1/enroll-tokens/{id}/revoke")
        ),
        "{text}"
    );
    assert!(
        !text.contains(cli_token.rsplit('_').next().unwrap()),
        "a token secret reached the audit log"
    );

    // Expired and revoked tokens are refused like unknown ones.
    let expired = e.token(&["--expires", "1ms"]);
    let c = unenrolled_agent(&pki, &tmp.path().join("c2"), "web-3", &e.c);
    let (code, out) = enroll(&c, &e.url(), &expired, &pin, &[]);
    assert_eq!((code, out.contains("401")), (1, true), "{out}");
    let (s, created) = e.api(
        "POST",
        "/api/v1/enroll-tokens",
        Some(json!({"name": "web-3", "labels": {"team": "b"}})),
    );
    assert_eq!(s, 201, "{created}");
    let revoked = created["token"].as_str().unwrap().to_owned();
    let (s, _) = e.api(
        "POST",
        &format!("/api/v1/enroll-tokens/{}/revoke", created["id"]),
        None,
    );
    assert_eq!(s, 204);
    let (code, out) = enroll(&c, &e.url(), &revoked, &pin, &[]);
    assert_eq!((code, out.contains("401")), (1, true), "{out}");
    // An enrollment token is never a bearer credential.
    let (s, _) = e
        .call("GET", "/api/v1/hosts", Some(&revoked), None)
        .unwrap();
    assert_eq!(s, 401);

    // CSRs asking for more than one name, or for a CA, are refused by the API itself.
    let fresh = e.token(&["--uses", "5"]);
    for (what, params) in [
        ("two names", {
            rcgen::CertificateParams::new(vec!["web-4".to_owned(), "evil".to_owned()]).unwrap()
        }),
        ("a CA", {
            let mut p = rcgen::CertificateParams::new(vec!["web-4".to_owned()]).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p
        }),
    ] {
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let (s, body) = e
            .call(
                "POST",
                "/api/v1/enroll",
                None,
                Some(json!({"token": fresh, "csr_pem": csr})),
            )
            .unwrap();
        assert_eq!(s, 422, "{what}: {body}");
    }
    // The refusals are audited with the token, never its secret.
    let (_, audit) = e.api(
        "GET",
        "/api/v1/audit?action=POST%20/api/v1/enroll&limit=100",
        None,
    );
    let text = audit.to_string();
    assert!(text.contains("refused: token_used_up"), "{text}");
    assert!(text.contains("refused: name_not_allowed"), "{text}");
    assert!(
        !text.contains(&token[5..]),
        "a token secret reached the audit log"
    );
}

#[test]
fn an_agent_renews_over_its_session_at_two_thirds_of_the_lifetime_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    // Two minutes: renewal is due 80 s after issue.
    let e = Enrolling::start(&pki, &tmp.path().join("c"), "2m");
    let fp = fingerprint(&pki.ca());
    let token = e.token(&["--name", "web-1"]);
    let mut a = unenrolled_agent(&pki, &tmp.path().join("a"), "web-1", &e.c);
    let (code, out) = enroll(&a, &e.url(), &token, &["--ca-fingerprint", &fp], &[]);
    assert_eq!(code, 0, "{out}");
    let first = cert_info::inspect_pem(&std::fs::read(tmp.path().join("a/tls/agent.crt")).unwrap())
        .unwrap()
        .remove(0);
    a.restart();
    // The renewed certificate is in use once a handshake has been made with it.
    let renewed = wait_for(
        "a handshake with the renewed certificate",
        Duration::from_secs(150),
        || {
            let (_, certs) = e.api("GET", "/api/v1/hosts/web-1/certificates", None);
            certs
                .as_array()?
                .iter()
                .find(|c| c["source"] == "renew" && c["last_seen_ms"].as_i64().is_some())
                .cloned()
        },
    );
    assert_ne!(renewed["serial"], first.serial.as_str());
    let on_disk =
        cert_info::inspect_pem(&std::fs::read(tmp.path().join("a/tls/agent.crt")).unwrap())
            .unwrap()
            .remove(0);
    assert_eq!(renewed["serial"], on_disk.serial.as_str());
    assert_eq!(
        a.metric("mcpwatch_agent_certificate_renewals_total{kind=\"renewed\"}"),
        1.0
    );
    // Nothing lost, nothing stored twice, across the reconnect.
    a.wait_acked_more(5.0);
    assert!(a.stop().success());
    let (collected, dropped, pending) = final_counts(&a.logs());
    assert_eq!((dropped, pending), (0, 0));
    let batches = mcpwatch_tests::db::batches(&e.c.db, "web-1");
    mcpwatch_tests::db::assert_no_duplicates(&batches);
    assert!(mcpwatch_tests::db::gaps(&e.c.db, "web-1").is_empty());
    assert_eq!(
        mcpwatch_tests::db::sample_count(&e.c.db, "web-1"),
        collected
    );
}
