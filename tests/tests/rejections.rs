//! Hostile and mistaken connections are refused with a logged reason, counted, and leave a
//! healthy agent on the same collector undisturbed.

use std::time::Duration;

use mcpwatch_common::certs;
use mcpwatch_common::wire::{Frame, RejectReason};
use mcpwatch_tests::client::{config, config_without_cert, Conn};
use mcpwatch_tests::process::{AgentProc, CollectorProc, Pair};
use mcpwatch_tests::{metric, wait_for, Pki};

const CLOSE: Duration = Duration::from_secs(10);

/// The connection must fail at the TLS layer: either the handshake errors, or (TLS 1.3 sends
/// the server's verdict after the client thinks it is done) the first exchange does.
async fn refused_by_tls(addr: std::net::SocketAddr, cfg: std::sync::Arc<rustls::ClientConfig>) {
    match Conn::open(addr, cfg).await {
        Err(_) => {}
        Ok(mut conn) => {
            let answer = conn.handshake(Conn::hello("web-1")).await;
            assert!(answer.is_err(), "expected a TLS refusal, got {answer:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_connections_are_refused_and_other_agents_are_unaffected() {
    let Pair {
        agent,
        collector,
        pki,
        tmp,
    } = Pair::start();
    let addr = collector.ingest;
    let ca = pki.ca();

    // 1. No client certificate.
    refused_by_tls(addr, config_without_cert(&ca)).await;
    // 2. A certificate from another CA.
    let other = Pki::new(&tmp.path().join("other-pki"));
    let foreign = other.agent("web-1");
    refused_by_tls(addr, config(&ca, &foreign.cert, &foreign.key)).await;
    // 3. An expired certificate from the right CA.
    let now = time::OffsetDateTime::now_utc();
    let expired = certs::issue_agent_valid(
        &pki.dir,
        "old-1",
        now - time::Duration::days(10),
        now - time::Duration::days(1),
    )
    .unwrap();
    refused_by_tls(addr, config(&ca, &expired.cert, &expired.key)).await;

    let good = pki.agent("web-9");
    let cfg = config(&ca, &good.cert, &good.key);
    // 4. A Hello claiming another identity than the certificate's.
    let mut conn = Conn::open(addr, cfg.clone()).await.unwrap();
    match conn.handshake(Conn::hello("web-1")).await.unwrap() {
        Frame::Reject(r) => assert_eq!(r.reason, RejectReason::IdentityMismatch),
        other => panic!("expected Reject, got {other:?}"),
    }
    assert!(conn.closed_within(CLOSE).await);
    // 5. A protocol version the collector does not speak.
    let mut conn = Conn::open(addr, cfg.clone()).await.unwrap();
    let mut hello = Conn::hello("web-9");
    hello.protocol_version = 999;
    match conn.handshake(hello).await.unwrap() {
        Frame::Reject(r) => assert_eq!(r.reason, RejectReason::ProtocolVersion),
        other => panic!("expected Reject, got {other:?}"),
    }
    assert!(conn.closed_within(CLOSE).await);
    // 6. Garbage bytes instead of a Hello: a plausible length, an undecodable body.
    let mut conn = Conn::open(addr, cfg.clone()).await.unwrap();
    conn.send_raw(&[0, 0, 0, 8, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0xf9, 0xf8])
        .await
        .unwrap();
    assert!(conn.closed_within(CLOSE).await, "garbage not refused");
    // 7. An oversized length prefix (4 GiB): refused before anything is allocated.
    let mut conn = Conn::open(addr, cfg.clone()).await.unwrap();
    conn.send_raw(&u32::MAX.to_be_bytes()).await.unwrap();
    assert!(
        conn.closed_within(CLOSE).await,
        "oversized prefix not refused"
    );
    // 8. A truncated frame: a length of 100 with 10 bytes of body, then end of stream.
    let mut conn = Conn::open(addr, cfg.clone()).await.unwrap();
    assert!(matches!(
        conn.handshake(Conn::hello("web-9")).await.unwrap(),
        Frame::Welcome(_)
    ));
    conn.send_raw(&[0, 0, 0, 100, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::shutdown(conn.framed.get_mut())
        .await
        .unwrap();
    assert!(
        conn.closed_within(CLOSE).await,
        "truncated frame not closed"
    );
    // 9. Garbage after a good Hello: the session ends, nothing is stored from it.
    let mut conn = Conn::open(addr, cfg.clone()).await.unwrap();
    assert!(matches!(
        conn.handshake(Conn::hello("web-9")).await.unwrap(),
        Frame::Welcome(_)
    ));
    conn.send_raw(&[0, 0, 0, 4, 0x03, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    assert!(conn.closed_within(CLOSE).await, "garbage batch not refused");

    // Every refusal is counted by reason and logged with it.
    let m = collector.metrics();
    let failures = |reason: &str| {
        metric(
            &m,
            &format!("mcpwatch_collector_handshake_failures_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert!(failures("tls") >= 3.0, "tls failures: {m}");
    assert!(failures("refused") >= 2.0, "refused hellos: {m}");
    assert!(
        failures("malformed_frame") + failures("io") >= 2.0,
        "bad frames: {m}"
    );
    let logs = collector.logs();
    assert!(
        logs.matches("agent connection refused").count() >= 7,
        "{logs}"
    );
    assert!(logs.contains("but the certificate identifies"), "{logs}");
    assert!(logs.contains("protocol version 999"), "{logs}");

    // The healthy agent never noticed.
    agent.wait_acked_more(3.0);
    assert_eq!(agent.metric("mcpwatch_agent_reconnects_total"), 0.0);
    assert_eq!(
        mcpwatch_tests::http_get(collector.http, "/readyz")
            .unwrap()
            .0,
        200
    );
}

#[test]
fn agent_refuses_a_collector_whose_certificate_lacks_the_configured_name() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let collector = CollectorProc::start(&pki, &tmp.path().join("c"), "");
    let mut agent = AgentProc::configure(
        &pki,
        &tmp.path().join("a"),
        "web-1",
        collector.ingest,
        "100ms",
        "256MiB",
    );
    let text = std::fs::read_to_string(&agent.config).unwrap();
    std::fs::write(
        &agent.config,
        text.replace(
            "server_name = \"localhost\"",
            "server_name = \"collector.elsewhere.example\"",
        ),
    )
    .unwrap();
    agent.restart();
    wait_for("agent tls errors", CLOSE, || {
        (agent.metric("mcpwatch_agent_uplink_errors_total{kind=\"tls\"}") >= 2.0).then_some(())
    });
    assert_eq!(agent.metric("mcpwatch_agent_uplink_connected"), 0.0);
    assert_eq!(agent.metric("mcpwatch_agent_batches_acked_total"), 0.0);
    assert!(
        agent.logs().contains("certificate not valid for name"),
        "{}",
        agent.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let collector = CollectorProc::start(&pki, &tmp.path().join("c"), "max_connections = 2");
    let good = pki.agent("web-1");
    let cfg = config(&pki.ca(), &good.cert, &good.key);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = Conn::open(collector.ingest, cfg.clone()).await.unwrap();
        assert!(matches!(
            c.handshake(Conn::hello("web-1")).await.unwrap(),
            Frame::Welcome(_)
        ));
        held.push(c);
    }
    // The third is closed before TLS completes (or right after, from the client's view).
    match Conn::open(collector.ingest, cfg.clone()).await {
        Err(_) => {}
        Ok(mut c) => assert!(c.handshake(Conn::hello("web-1")).await.is_err()),
    }
    let m = collector.metrics();
    assert_eq!(
        metric(&m, "mcpwatch_collector_connections_refused_total"),
        Some(1.0),
        "{m}"
    );
    // Capacity returns when a connection goes away.
    drop(held.pop());
    let deadline = std::time::Instant::now() + CLOSE;
    loop {
        // Until the collector has noticed the close, a new connection is still refused.
        if let Ok(mut c) = Conn::open(collector.ingest, cfg.clone()).await {
            if matches!(
                c.handshake(Conn::hello("web-1")).await,
                Ok(Frame::Welcome(_))
            ) {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_by_the_handshake_and_idle_timeouts() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let collector = CollectorProc::start(
        &pki,
        &tmp.path().join("c"),
        "handshake_timeout = \"500ms\"\nidle_timeout = \"1s\"",
    );
    // A TCP connection that never starts TLS (slowloris).
    let mut raw = tokio::net::TcpStream::connect(collector.ingest)
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(CLOSE, tokio::io::AsyncReadExt::read(&mut raw, &mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "not closed: {read:?}"
    );
    // A session that goes quiet after its Hello.
    let good = pki.agent("web-1");
    let mut conn = Conn::open(collector.ingest, config(&pki.ca(), &good.cert, &good.key))
        .await
        .unwrap();
    assert!(matches!(
        conn.handshake(Conn::hello("web-1")).await.unwrap(),
        Frame::Welcome(_)
    ));
    assert!(conn.closed_within(CLOSE).await, "idle session not closed");
    let m = collector.metrics();
    assert_eq!(
        metric(
            &m,
            "mcpwatch_collector_handshake_failures_total{reason=\"timeout\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "mcpwatch_collector_sessions_closed_total{reason=\"timeout\"}"
        ),
        Some(1.0),
        "{m}"
    );
}

/// A flood of 300 junk connections from one address: every one is refused and counted, but
/// only the first few are logged one by one (the rest are summed up when the minute ends).
#[test]
fn refusal_logs_are_rate_limited_per_reason_and_address() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let collector = CollectorProc::start(&pki, &tmp.path().join("c"), "");
    for _ in 0..300 {
        let mut s = std::net::TcpStream::connect(collector.ingest).unwrap();
        s.set_read_timeout(Some(CLOSE)).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\nnot a TLS client hello at all");
        let mut buf = [0u8; 64];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    }
    let tls = |m: &str| {
        metric(
            m,
            "mcpwatch_collector_handshake_failures_total{reason=\"tls\"}",
        )
    };
    wait_for("300 refusals counted", CLOSE, || {
        (tls(&collector.metrics()) == Some(300.0)).then_some(())
    });
    let logs = collector.logs();
    let lines = logs.matches("agent connection refused").count();
    assert!(
        (1..=5).contains(&lines),
        "{lines} refusal lines for 300 refusals"
    );
}
