//! The API's HTTP surface against a real collector: the OpenAPI 3.1 document validates
//! (openapi-spec-validator) and every documented route exists; hostile requests — oversized
//! bodies, malformed JSON, huge page sizes, SQL metacharacters in every query parameter,
//! slow headers, too many connections — get clear 4xx answers or are cut off, and the
//! server keeps serving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mcpwatch_tests::api::{admin_token, request, Api};
use mcpwatch_tests::process::CollectorProc;
use mcpwatch_tests::Pki;
use serde_json::{json, Value};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn collector(dir: &Path, http_extra: &str) -> CollectorProc {
    let pki = Pki::new(&dir.join("pki"));
    let c = CollectorProc::start(&pki, &dir.join("c"), "");
    if http_extra.is_empty() {
        return c;
    }
    let mut c = c;
    c.stop();
    let text = std::fs::read_to_string(&c.config).unwrap();
    let text = text.replacen("[http]\n", &format!("[http]\n{http_extra}\n"), 1);
    std::fs::write(&c.config, text).unwrap();
    c.child = None;
    c.restart();
    c
}

/// Every (method, path template) of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                out.push((method.to_uppercase(), path.clone(), op.clone()));
            }
        }
    }
    out
}

fn fill(path: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let j = rest[i..].find('}').map_or(rest.len(), |j| i + j + 1);
        out.push_str(value);
        rest = &rest[j..];
    }
    out.push_str(rest);
    out
}

#[test]
fn api_openapi_document_validates_and_every_route_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let c = collector(tmp.path(), "");
    let api = Api::new(c.http, None);
    let r = api.get("/api/v1/openapi.json");
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let file = tmp.path().join("openapi.json");
    std::fs::write(&file, &r.body).unwrap();
    let python = repo().join("target/pyvenv/bin/python");
    let out = Command::new(&python)
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/test.sh creates it)", python.display()));
    assert!(
        out.status.success(),
        "openapi-spec-validator:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ops = operations(&doc);
    assert!(ops.len() >= 3, "{ops:?}");
    for (method, path, _) in &ops {
        let r = request(c.http, method, &fill(path, "1"), None, Some(b"{}")).unwrap();
        assert_ne!(
            (
                r.status,
                r.json()["error"]["message"].as_str().unwrap_or("")
            ),
            (404, "no such route"),
            "{method} {path} is documented but not served"
        );
        assert_ne!(r.status, 405, "{method} {path}: method not served");
    }
}

#[test]
fn api_hostile_requests_get_clear_errors_and_the_server_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let c = collector(tmp.path(), "max_body_size = \"64KiB\"");
    let token = admin_token(&c.db, "hostile", None);
    let api = Api::new(c.http, Some(&token));

    let big = vec![b'a'; 1 << 20];
    let r = request(c.http, "POST", "/api/v1/sessions", None, Some(&big)).unwrap();
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.code(), "payload_too_large");
    // Refused before routing, and still audited: with the sizes, never the body.
    let long_uri = format!("/api/v1/hosts?x={}", "a".repeat(9000));
    let r = request(c.http, "GET", &long_uri, Some(&token), None).unwrap();
    assert_eq!(r.status, 414, "{r:?}");
    assert_eq!(r.code(), "uri_too_long");
    let refused: Vec<(i64, String)> = {
        let db = rusqlite::Connection::open_with_flags(
            &c.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let mut stmt = db
            .prepare(
                "SELECT result, detail FROM audit_log
                 WHERE action LIKE '%refused before routing%' ORDER BY id",
            )
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows
    };
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[0].0, 413);
    assert!(
        refused[0].1.contains("content-length 1048576"),
        "{refused:?}"
    );
    assert_eq!(refused[1].0, 414);
    assert!(refused[1].1.contains("uri 9016 bytes"), "{refused:?}");

    let r = request(
        c.http,
        "POST",
        "/api/v1/sessions",
        None,
        Some(b"{\"username\": "),
    )
    .unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(
        r.code(),
        "bad_request",
        "malformed JSON gets the JSON error shape"
    );
    let r = api.send(
        "POST",
        "/api/v1/sessions",
        &json!({"username": 5, "password": []}),
    );
    assert!(matches!(r.status, 400 | 422), "{r:?}");
    assert!(!r.code().is_empty());

    let doc = api.get("/api/v1/openapi.json").json();
    let evil = "%27%20OR%20%271%27%3D%271%27%3B%20DROP%20TABLE%20users%3B--";
    let mut with_limit = 0;
    for (method, path, op) in operations(&doc) {
        if method != "GET" {
            continue;
        }
        let params: Vec<String> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "query")
                    .filter_map(|p| p["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let base = fill(&path, evil);
        let r = api.get(&base);
        assert!(r.status < 500, "GET {base}: {r:?}");
        for p in &params {
            let url = format!("{}?{p}={evil}", fill(&path, "1"));
            let r = api.get(&url);
            assert!(r.status < 500, "GET {url}: {r:?}");
        }
        if params.iter().any(|p| p == "limit") {
            with_limit += 1;
            let url = format!("{}?limit=100000000", fill(&path, "1"));
            let r = api.get(&url);
            assert!(
                r.status == 400 || r.status == 404,
                "GET {url}: a huge page size must be refused, got {r:?}"
            );
        }
    }
    assert!(
        with_limit > 0 || operations(&doc).len() < 10,
        "no paged list found"
    );
    // Nothing was dropped: the users table and the API still work.
    let n: i64 = rusqlite::Connection::open(&c.db)
        .unwrap()
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(api.get("/api/v1/me").status, 200);
    assert_eq!(mcpwatch_tests::http_get(c.http, "/healthz").unwrap().0, 200);
}

#[test]
fn api_slow_headers_are_cut_off_and_connections_are_limited() {
    let tmp = tempfile::tempdir().unwrap();
    let c = collector(
        tmp.path(),
        "header_read_timeout = \"1s\"\nmax_connections = 3",
    );
    // A client that never finishes its request head is disconnected by the server.
    let mut slow = TcpStream::connect(c.http).unwrap();
    slow.write_all(b"GET /api/v1/me HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 512];
    let n = slow.read(&mut buf).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        n == 0 || text.starts_with("HTTP/1.1 408"),
        "expected a close or 408, got {text:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off after {:?}",
        started.elapsed()
    );
    drop(slow);

    // Three idle connections fill the limit; a fourth is closed without an answer.
    let idle: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(c.http).unwrap())
        .collect();
    mcpwatch_tests::wait_for(
        "a connection over the limit closed unanswered",
        Duration::from_secs(10),
        || {
            let mut extra = TcpStream::connect(c.http).ok()?;
            extra.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut b = [0u8; 64];
            (extra.read(&mut b).unwrap_or(0) == 0).then_some(())
        },
    );
    drop(idle);
    let back = mcpwatch_tests::wait_for("serving again", Duration::from_secs(10), || {
        mcpwatch_tests::http_get(c.http, "/healthz")
            .ok()
            .filter(|r| r.0 == 200)
    });
    assert_eq!(back.0, 200);
}

/// 1,000 hostile connections from 127.0.0.2 — half idle, half slow-loris, each reopened as
/// soon as the server closes it — while an admin on 127.0.0.1 keeps using the API: every one
/// of the admin's requests is answered. Before the per-address cap and the first-byte
/// deadline, the flood held every slot and the admin's requests were reset.
#[test]
fn api_connection_flood_from_one_address_does_not_starve_another() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    let c = collector(tmp.path(), "first_byte_timeout = \"2s\"");
    let token = admin_token(&c.db, "admin", None);
    let api = Api::new(c.http, Some(&token));
    assert_eq!(api.get("/api/v1/hosts").status, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let target = c.http;
    for i in 0..1000u32 {
        let (stop, attempts) = (stop.clone(), attempts.clone());
        rt.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            // Bounded: the flag ends it, and so does this deadline.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                attempts.fetch_add(1, Ordering::Relaxed);
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                if let Ok(mut conn) = socket.connect(target).await {
                    let mut buf = [0u8; 256];
                    if i % 2 == 1 {
                        // Slow: a request head that never ends, one byte every 500 ms.
                        let _ = conn.write_all(b"GET /api/v1/hosts HTTP/1.1\r\n").await;
                        while !stop.load(Ordering::Relaxed) {
                            let read = conn.read(&mut buf);
                            match tokio::time::timeout(Duration::from_millis(500), read).await {
                                Ok(_) => break,
                                Err(_) => {
                                    if conn.write_all(b"X").await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    } else {
                        // Idle: hold the connection until the server closes it.
                        let read = conn.read(&mut buf);
                        let _ = tokio::time::timeout(Duration::from_secs(60), read).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
    mcpwatch_tests::wait_for("the flood under way", Duration::from_secs(30), || {
        (attempts.load(Ordering::Relaxed) >= 1500).then_some(())
    });

    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        match request(c.http, "GET", "/api/v1/hosts", Some(&token), None) {
            Ok(r) if r.status == 200 => latencies.push(started.elapsed()),
            Ok(r) => failures.push(format!("status {}", r.status)),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let flood = attempts.load(Ordering::Relaxed);
    let metrics = mcpwatch_tests::http_get(c.http, "/metrics").unwrap().1;
    stop.store(true, Ordering::Relaxed);
    rt.shutdown_timeout(Duration::from_secs(5));

    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "flood: {flood} hostile connection attempts; admin requests: {} ok, {} failed, \
         p50 {:?}, p99 {:?}",
        latencies.len(),
        failures.len(),
        p(0.5),
        p(0.99)
    );
    assert!(failures.is_empty(), "admin requests failed: {failures:?}");
    let refused = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "mcpwatch_collector_http_connections_closed_total{reason=\"address_limit\"}",
            )
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        refused > 0.0,
        "no connection refused by the per-address cap:\n{metrics}"
    );
}

/// A connection that never sends a byte is closed after `first_byte_timeout`; one that
/// idles after a response is closed after `idle_timeout`.
#[test]
fn api_silent_and_idle_connections_are_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let c = collector(
        tmp.path(),
        "first_byte_timeout = \"1s\"\nidle_timeout = \"2s\"",
    );
    let closed_within = |mut s: TcpStream, limit: Duration| {
        s.set_read_timeout(Some(limit)).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 64];
        // A read that returns 0 bytes is the server's close; a timeout is an Err.
        let n = s.read(&mut buf);
        assert!(
            matches!(n, Ok(0)),
            "not closed within {limit:?}: {n:?} after {:?}",
            started.elapsed()
        );
        started.elapsed()
    };
    let silent = TcpStream::connect(c.http).unwrap();
    let waited = closed_within(silent, Duration::from_secs(10));
    assert!(
        waited >= Duration::from_millis(900),
        "closed too early: {waited:?}"
    );

    let mut kept = TcpStream::connect(c.http).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The whole answer (head, then Content-Length bytes), however the reads split it.
    let mut answer: Vec<u8> = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = kept.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the answer ended");
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if answer.len() >= end + 4 + length {
                break;
            }
        }
    }
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    let waited = closed_within(kept, Duration::from_secs(10));
    assert!(
        waited >= Duration::from_millis(1500),
        "closed too early: {waited:?}"
    );
}
