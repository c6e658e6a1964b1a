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
