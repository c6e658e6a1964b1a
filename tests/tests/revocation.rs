//! Revocation by serial, live, against the real binaries: through the API and the CLI the
//! revoked certificate's session closes at once and its reconnects fail at the TLS
//! handshake, while another agent streams on; and a CRL from an external CA (made here with
//! rcgen) refuses the certificate it lists, taking effect when the file is replaced and on
//! SIGHUP.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mcpwatch_common::cert_info;
use mcpwatch_tests::api::{admin_token, Api};
use mcpwatch_tests::process::{signal, AgentProc, CollectorProc};
use mcpwatch_tests::{bin, metric, wait_for, Pki};

const LONG: Duration = Duration::from_secs(30);

fn serial_of(cert: &Path) -> String {
    cert_info::inspect_pem(&std::fs::read(cert).unwrap())
        .unwrap()
        .remove(0)
        .serial
}

fn connected(c: &CollectorProc) -> f64 {
    metric(&c.metrics(), "mcpwatch_collector_agents_connected").unwrap_or(-1.0)
}

fn tls_refusals(c: &CollectorProc) -> f64 {
    metric(
        &c.metrics(),
        "mcpwatch_collector_handshake_failures_total{reason=\"tls\"}",
    )
    .unwrap_or(0.0)
}

#[test]
fn a_revoked_serial_loses_its_session_at_once_and_is_refused_at_the_handshake() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let c = CollectorProc::start(&pki, &tmp.path().join("c"), "");
    let a = AgentProc::start(&pki, &tmp.path().join("a"), "a", c.ingest, "100ms", "16MiB");
    let b = AgentProc::start(&pki, &tmp.path().join("b"), "b", c.ingest, "100ms", "16MiB");
    a.wait_acked_more(2.0);
    b.wait_acked_more(2.0);
    let api = Api::new(c.http, Some(&admin_token(&c.db, "revoke-test", None)));
    let serial_a = serial_of(&pki.dir.join("agent-a.crt"));
    // Seen at the handshake, so the host lists it.
    let certs = api.get("/api/v1/hosts/a/certificates").json();
    assert_eq!(certs[0]["serial"], serial_a.as_str(), "{certs}");
    assert_eq!(certs[0]["source"], "seen", "{certs}");

    let refused_before = tls_refusals(&c);
    let asked = Instant::now();
    let r = api.send(
        "POST",
        &format!("/api/v1/hosts/a/certificates/{serial_a}/revoke"),
        &serde_json::json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["revoked_ms"].as_i64().is_some(), "{}", r.body);
    wait_for("a's session closed", LONG, || {
        (connected(&c) == 1.0).then_some(())
    });
    let closed_after = asked.elapsed();
    println!(
        "revoked session closed {} ms after the request",
        closed_after.as_millis()
    );
    // The issue's bound, checked because it separates "at once" from "at the next batch or
    // idle timeout" (a regression would take seconds); measured at a few milliseconds.
    assert!(
        closed_after < Duration::from_secs(1),
        "the revoked session took {closed_after:?} to close"
    );
    wait_for("a's reconnect refused at the handshake", LONG, || {
        (tls_refusals(&c) > refused_before).then_some(())
    });
    // Revoking it again changes nothing; another host's route does not reach it.
    let again = api.send(
        "POST",
        &format!("/api/v1/hosts/a/certificates/{serial_a}/revoke"),
        &serde_json::json!({}),
    );
    assert_eq!(again.status, 409, "{}", again.body);
    let wrong_host = api.send(
        "POST",
        &format!("/api/v1/hosts/b/certificates/{serial_a}/revoke"),
        &serde_json::json!({}),
    );
    assert_eq!(wrong_host.status, 404, "{}", wrong_host.body);
    // b streams on.
    b.wait_acked_more(3.0);

    // The CLI, on the database while the collector runs: picked up within its poll.
    let serial_b = serial_of(&pki.dir.join("agent-b.crt"));
    let out = Command::new(bin("mcpwatch-collector"))
        .args(["certs", "revoke", "--db"])
        .arg(&c.db)
        .args(["--serial", &serial_b.to_ascii_uppercase()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("b's session closed", LONG, || {
        (connected(&c) == 0.0).then_some(())
    });
    // The expiry gauge no longer lists revoked certificates.
    let m = c.metrics();
    assert!(!m.contains(&serial_a) && !m.contains(&serial_b), "{m}");
    assert!(
        m.contains("mcpwatch_tls_certificate_expiry_timestamp_seconds{role=\"collector\""),
        "{m}"
    );
}

/// A CRL of `ca` (its directory holds `ca.crt` and `ca.key`) listing `serials`.
fn crl(ca: &Pki, serials: &[&str]) -> String {
    let key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(ca.dir.join("ca.key")).unwrap()).unwrap();
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&std::fs::read_to_string(ca.ca()).unwrap(), key).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let revoked = serials
        .iter()
        .map(|s| {
            let padded = if s.len() % 2 == 1 {
                format!("0{s}")
            } else {
                (*s).to_owned()
            };
            rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(
                    &mcpwatch_common::hex::decode(&padded).unwrap(),
                ),
                revocation_time: now,
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            }
        })
        .collect();
    rcgen::CertificateRevocationListParams {
        this_update: now - time::Duration::minutes(1),
        next_update: now + time::Duration::days(1),
        crl_number: rcgen::SerialNumber::from(serials.len() as u64 + 1),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .unwrap()
    .pem()
    .unwrap()
}

#[test]
fn a_crl_from_an_external_ca_refuses_what_it_lists_and_a_replaced_file_takes_effect() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let external = Pki::new(&tmp.path().join("external"));
    let mut c = CollectorProc::start(&pki, &tmp.path().join("c"), "");
    c.stop();
    c.child = None;
    // The collector trusts both CAs; the external one publishes a CRL.
    let bundle = tmp.path().join("c/ca-bundle.crt");
    let mut text = std::fs::read_to_string(&bundle).unwrap();
    text.push_str(&std::fs::read_to_string(external.ca()).unwrap());
    std::fs::write(&bundle, text).unwrap();
    let crl_path = tmp.path().join("c/external.crl");
    std::fs::write(&crl_path, padded(crl(&external, &[]))).unwrap();
    let config = std::fs::read_to_string(&c.config).unwrap().replacen(
        "[tls]\n",
        &format!("[tls]\ncrl = [\"{}\"]\n", crl_path.display()),
        1,
    );
    std::fs::write(&c.config, config).unwrap();
    c.restart();

    // Agents with certificates of the external CA, verifying the collector with ours.
    let external_agent = |name: &str| {
        let mut a = AgentProc::configure(
            &external,
            &tmp.path().join(name),
            name,
            c.ingest,
            "100ms",
            "16MiB",
        );
        let text = std::fs::read_to_string(&a.config).unwrap().replace(
            &format!("ca = \"{}\"", external.ca().display()),
            &format!("ca = \"{}\"", pki.ca().display()),
        );
        std::fs::write(&a.config, text).unwrap();
        a.restart();
        a
    };
    let x = external_agent("x");
    let y = external_agent("y");
    x.wait_acked_more(2.0);
    y.wait_acked_more(2.0);
    let serial_x = serial_of(&external.dir.join("agent-x.crt"));

    // A new CRL listing x, written over the old one: no restart, no SIGHUP.
    let refused_before = tls_refusals(&c);
    let tmp_crl = crl_path.with_extension("new");
    std::fs::write(&tmp_crl, padded(crl(&external, &[&serial_x]))).unwrap();
    std::fs::rename(&tmp_crl, &crl_path).unwrap();
    wait_for("the new CRL in force", LONG, || {
        (reloads(&c, "file change") == 1).then_some(())
    });
    // x's live session is not cut by a CRL (see ARCHITECTURE.md); its next connection is
    // refused at the handshake.
    let mut x = x;
    x.kill9();
    x.restart();
    wait_for("x refused at the handshake", LONG, || {
        (tls_refusals(&c) > refused_before).then_some(())
    });
    assert_eq!(x.metric("mcpwatch_agent_uplink_connected"), 0.0);
    // y, from the same CA and not listed, is unaffected.
    y.wait_acked_more(3.0);

    // SIGHUP on its own: a CRL listing y too, of the same size and modification time, which
    // the file watch (it compares length and mtime: `Pki::spawn_tls_watch`) cannot tell from
    // the old one. x stops, so every refusal from here on is y's.
    x.kill9();
    let serial_y = serial_of(&external.dir.join("agent-y.crt"));
    let old_modified = std::fs::metadata(&crl_path).unwrap().modified().unwrap();
    std::fs::write(&tmp_crl, padded(crl(&external, &[&serial_x, &serial_y]))).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&tmp_crl)
        .unwrap()
        .set_modified(old_modified)
        .unwrap();
    std::fs::rename(&tmp_crl, &crl_path).unwrap();
    let refused_before = tls_refusals(&c);
    signal(c.child.as_ref().unwrap(), "HUP");
    wait_for("the SIGHUP reload", LONG, || {
        (reloads(&c, "SIGHUP") == 1).then_some(())
    });
    let mut y = y;
    y.kill9();
    y.restart();
    // Two failed attempts of the restarted y, both refused by the collector, and not one
    // batch acknowledged in between: it is the CRL that keeps y out, not a slow start.
    wait_for("y refused at the handshake twice", LONG, || {
        (uplink_errors(&y) >= 2.0 && tls_refusals(&c) >= refused_before + 2.0).then_some(())
    });
    assert_eq!(y.acked(), 0.0, "y got a batch through after the SIGHUP");
    assert_eq!(y.metric("mcpwatch_agent_uplink_connected"), 0.0);
    assert_eq!(
        reloads(&c, "file change"),
        1,
        "the file watch saw the same-size, same-time CRL, so this did not test SIGHUP alone"
    );
}

/// Every CRL file of the test has the same length (PEM ignores what follows its block), so
/// that one replaced with the same modification time is invisible to the file watch.
fn padded(mut pem: String) -> String {
    const LEN: usize = 4096;
    assert!(pem.len() <= LEN, "a CRL of {} bytes", pem.len());
    pem.extend(std::iter::repeat_n('\n', LEN - pem.len()));
    pem
}

/// Failed uplink attempts of `agent` since it started, of any kind (a refused client
/// certificate reaches a TLS 1.3 client as an alert on its first read).
fn uplink_errors(agent: &AgentProc) -> f64 {
    agent
        .metrics()
        .lines()
        .filter(|l| l.starts_with("mcpwatch_agent_uplink_errors_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// How many times the collector's log says it reloaded its ingest TLS files for `trigger`.
fn reloads(c: &CollectorProc, trigger: &str) -> usize {
    c.logs()
        .lines()
        .filter(|l| l.contains("ingest TLS files reloaded") && l.contains(trigger))
        .count()
}
