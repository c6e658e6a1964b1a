//! The web console's server side on the real collector, without a browser: its embedded
//! files (cache headers, gzip, ETag, the JSON 404 kept for every other path), browser
//! sessions (HttpOnly cookie only for a same-origin page, CSRF token required on every
//! cookie-authenticated mutation and every refusal audited, API tokens never accepted from
//! a cookie, logout clearing the cookies) and the live stream `/api/v1/stream` (scoped like
//! the lists, resumable with `Last-Event-ID`, heartbeat, `session_ended` on logout, capped).

use std::sync::Arc;
use std::time::Duration;

use mcpwatch_collector::auth::password;
use mcpwatch_collector::now_ms;
use mcpwatch_collector::store::admin;
use mcpwatch_collector::store::query::{roles, users};
use mcpwatch_tests::api::{admin_token, request_with, Api, Resp};
use mcpwatch_tests::client;
use mcpwatch_tests::process::CollectorProc;
use mcpwatch_tests::sim::{AckWait, SimAgent};
use mcpwatch_tests::sse::EventStream;
use mcpwatch_tests::{wait_for, Pki};
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery staple";
const SAME_ORIGIN: (&str, &str) = ("Sec-Fetch-Site", "same-origin");

struct Console {
    c: CollectorProc,
    admin: Api,
    admin_token: String,
    pki: Pki,
    rt: tokio::runtime::Runtime,
    _tmp: tempfile::TempDir,
}

impl Console {
    fn start(extra: &str) -> Console {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(&tmp.path().join("pki"));
        let c = CollectorProc::start(&pki, &tmp.path().join("c"), extra);
        let admin_token = admin_token(&c.db, "admin", None);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        Console {
            admin: Api::new(c.http, Some(&admin_token)),
            admin_token,
            c,
            pki,
            rt,
            _tmp: tmp,
        }
    }

    fn user(&self, name: &str, role: &str, selector: &str) {
        let hash = password::hash(PASSWORD).expect("hash");
        admin::with_db(&self.c.db, |c| {
            let uid = users::create_user(c, name, &hash, now_ms())?;
            roles::bind(c, uid, role, selector, now_ms())?;
            Ok(())
        })
        .expect("create user");
    }

    /// Signs in as a browser would: the session cookie's `name=value` and the CSRF token.
    fn browser_login(&self, name: &str) -> (String, String) {
        let body = json!({"username": name, "password": PASSWORD, "cookie": true}).to_string();
        let r = self.call("POST", "/api/v1/sessions", &[SAME_ORIGIN], Some(&body));
        assert_eq!(r.status, 201, "{}", r.body);
        let csrf = r.json()["csrf_token"]
            .as_str()
            .expect("csrf_token")
            .to_owned();
        assert!(
            r.json().get("token").is_none(),
            "a cookie login shows no credential: {}",
            r.body
        );
        let session = set_cookies(&r)
            .into_iter()
            .find(|c| c.starts_with("mcpwatch_session="))
            .expect("session cookie");
        let pair = session.split(';').next().unwrap().to_owned();
        (pair, csrf)
    }

    fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
        request_with(
            self.c.http,
            method,
            path,
            None,
            headers,
            body.map(str::as_bytes),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn agent(&self, name: &str) -> SimAgent {
        let certs = self.pki.agent(name);
        let tls: Arc<rustls::ClientConfig> =
            client::config(&self.pki.ca(), &certs.cert, &certs.key);
        self.rt
            .block_on(SimAgent::connect(self.c.ingest, tls, name))
            .first_series_id(0)
            .ack_wait(AckWait::SkipOthers)
    }

    fn label(&self, host: &str, team: &str) {
        let r = self.admin.send(
            "PUT",
            &format!("/api/v1/hosts/{host}/labels"),
            &json!({"labels": {"team": team}}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }

    fn audit(&self, query: &str) -> Vec<Value> {
        let r = self.admin.get(&format!("/api/v1/audit?{query}"));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["items"].as_array().cloned().unwrap_or_default()
    }
}

fn set_cookies(r: &Resp) -> Vec<String> {
    r.head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

#[test]
fn console_files_are_embedded_cached_and_compressed() {
    let con = Console::start("");
    let page = con.call("GET", "/", &[], None);
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control").as_deref(), Some("no-cache"));
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .contains("script-src 'self'"));
    assert!(
        !page.body.contains("<script>"),
        "no inline script: {}",
        page.body
    );
    let etag = page.header("etag").expect("etag");
    let again = con.call("GET", "/index.html", &[("If-None-Match", &etag)], None);
    assert_eq!(again.status, 304);

    let script = page
        .body
        .split('"')
        .find(|s| s.starts_with("/assets/") && s.ends_with(".js"))
        .expect("the page loads a hashed script")
        .to_owned();
    let plain = con.call("GET", &script, &[], None);
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.header("cache-control").as_deref(),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(
        plain.header("content-type").as_deref(),
        Some("text/javascript; charset=utf-8")
    );
    assert!(plain.header("content-encoding").is_none());
    let gz = con.call("GET", &script, &[("Accept-Encoding", "gzip, br")], None);
    assert_eq!(gz.header("content-encoding").as_deref(), Some("gzip"));
    let len = |r: &Resp| {
        r.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
    };
    assert!(
        len(&gz) * 2 < len(&plain),
        "{} vs {}",
        len(&gz),
        len(&plain)
    );

    // Anything else keeps the API's JSON 404; no traversal out of the embedded set.
    for path in [
        "/assets/missing.js",
        "/assets/..%2Fconfig.toml",
        &format!("{script}.gz"),
        "/hosts/web-1",
    ] {
        let r = con.call("GET", path, &[], None);
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.code(), "not_found", "{path}: {}", r.body);
    }
}

#[test]
fn console_cookie_sessions_need_the_csrf_token_and_a_same_origin_page() {
    let con = Console::start("");
    con.user("alice", "admin", "");
    let body = json!({"username": "alice", "password": PASSWORD, "cookie": true}).to_string();
    // Only the console's own page may open a cookie session.
    for site in [None, Some("cross-site"), Some("none")] {
        let headers: Vec<(&str, &str)> = site.map(|s| ("Sec-Fetch-Site", s)).into_iter().collect();
        let r = con.call("POST", "/api/v1/sessions", &headers, Some(&body));
        assert_eq!(
            (r.status, r.code().as_str()),
            (403, "csrf"),
            "{site:?}: {}",
            r.body
        );
        assert!(set_cookies(&r).is_empty());
    }
    let r = con.call("POST", "/api/v1/sessions", &[SAME_ORIGIN], Some(&body));
    let cookies = set_cookies(&r);
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    assert!(
        cookies[0].starts_with("mcpwatch_session=mcps_"),
        "{cookies:?}"
    );
    assert!(cookies[0].contains("HttpOnly") && cookies[0].contains("SameSite=Strict"));
    assert!(cookies[0].contains("Path=/") && !cookies[0].contains("Secure"));
    assert!(cookies[1].starts_with("mcpwatch_csrf=") && !cookies[1].contains("HttpOnly"));

    let (cookie, csrf) = con.browser_login("alice");
    let cookie_header = ("Cookie", cookie.as_str());
    let me = con.call("GET", "/api/v1/me", &[cookie_header], None);
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["actor"], "user:alice");
    assert_eq!(me.json()["csrf_token"], csrf.as_str());

    // A mutation with the cookie: refused without the token, with a wrong one, or marked
    // cross-site; each refusal audited.
    let token_body = json!({"name": "from-console"}).to_string();
    let wrong = "0".repeat(64);
    for headers in [
        vec![cookie_header],
        vec![cookie_header, ("X-CSRF-Token", wrong.as_str())],
        vec![
            cookie_header,
            ("X-CSRF-Token", csrf.as_str()),
            ("Sec-Fetch-Site", "cross-site"),
        ],
    ] {
        let r = con.call("POST", "/api/v1/tokens", &headers, Some(&token_body));
        assert_eq!(r.status, 403, "{headers:?}: {}", r.body);
        assert_eq!(r.code(), "csrf");
    }
    // The cross-site one is refused before the credential is even checked (so it cannot
    // keep the session alive): audited, but anonymously.
    let refused = con.audit("actor=user:alice&result=403&action=POST%20/api/v1/tokens");
    assert_eq!(refused.len(), 2, "{refused:?}");
    let cross = con.audit("actor=anonymous&result=403&action=POST%20/api/v1/tokens");
    assert_eq!(cross.len(), 1, "{cross:?}");
    assert!(con
        .c
        .metrics()
        .contains("mcpwatch_collector_csrf_refusals_total 3"));
    let ok = con.call(
        "POST",
        "/api/v1/tokens",
        &[cookie_header, ("X-CSRF-Token", &csrf), SAME_ORIGIN],
        Some(&token_body),
    );
    assert_eq!(ok.status, 201, "{}", ok.body);
    let api_token = ok.json()["token"].as_str().unwrap().to_owned();

    // An API token never works from a cookie; a bearer header needs no CSRF token.
    let in_cookie = format!("mcpwatch_session={api_token}");
    let r = con.call("GET", "/api/v1/me", &[("Cookie", &in_cookie)], None);
    assert_eq!(r.status, 401);
    let bearer = format!("Bearer {api_token}");
    let r = con.call(
        "POST",
        "/api/v1/tokens",
        &[
            ("Authorization", &bearer),
            ("Cookie", "mcpwatch_session=garbage"),
        ],
        Some(&json!({"name": "scripted"}).to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.body);

    // Logout clears both cookies and ends the session.
    let out = con.call(
        "DELETE",
        "/api/v1/sessions/current",
        &[cookie_header, ("X-CSRF-Token", &csrf)],
        None,
    );
    assert_eq!(out.status, 204, "{}", out.body);
    let cleared = set_cookies(&out);
    assert_eq!(cleared.len(), 2);
    assert!(
        cleared.iter().all(|c| c.contains("Max-Age=0")),
        "{cleared:?}"
    );
    assert_eq!(
        con.call("GET", "/api/v1/me", &[cookie_header], None).status,
        401
    );
}

#[test]
fn console_stream_is_scoped_resumable_and_ends_with_the_session() {
    let con =
        Console::start("[api]\nstream_heartbeat = \"1s\"\nstream_poll_interval = \"100ms\"\n");
    let mut web = con.agent("web-1");
    let mut db = con.agent("db-1");
    con.rt.block_on(async {
        web.send("mcpwatch_host_load1", "", 1.0).await;
        db.send("mcpwatch_host_load1", "", 1.0).await;
    });
    con.label("web-1", "a");
    con.label("db-1", "b");
    con.user("viewer-a", "viewer", "{team=\"a\"}");
    let (cookie, _csrf) = con.browser_login("viewer-a");
    let admin_auth = format!("Bearer {}", con.admin_token);

    let mut admin = EventStream::open(
        con.c.http,
        "/api/v1/stream",
        &[("Authorization", &admin_auth)],
    )
    .expect("admin stream");
    assert_eq!(admin.status, 200, "{}", admin.head);
    assert!(admin
        .head
        .to_ascii_lowercase()
        .contains("content-type: text/event-stream"));
    let mut viewer =
        EventStream::open(con.c.http, "/api/v1/stream", &[("Cookie", &cookie)]).expect("viewer");
    assert_eq!(viewer.status, 200, "{}", viewer.head);
    let beat = viewer.find(Duration::from_secs(5), |e| e.event == "heartbeat");
    assert!(beat.is_some(), "a heartbeat within the configured second");

    // Team b's host goes offline, then team a's: the admin sees both, the viewer only
    // team a's (and that one first: the feed is ordered, so team b's was filtered out).
    drop(db);
    let is_host = |h: &'static str| {
        move |e: &mcpwatch_tests::sse::SseEvent| e.event == "host" && e.data.contains(h)
    };
    let first = admin
        .find(Duration::from_secs(10), is_host("db-1"))
        .expect("db-1 offline");
    assert!(first.data.contains(r#""online":false"#), "{first:?}");
    drop(web);
    let web_off = admin
        .find(Duration::from_secs(10), is_host("web-1"))
        .expect("web-1 offline");
    let seen = viewer
        .find(Duration::from_secs(10), |e| e.event == "host")
        .expect("the viewer's host event");
    assert!(
        seen.data.contains("web-1"),
        "team b's host leaked: {seen:?}"
    );

    // Resume: after the first change the admin saw, the second is replayed; an unknown id
    // gets `reset`.
    let resumed = EventStream::open(
        con.c.http,
        "/api/v1/stream",
        &[
            ("Authorization", &admin_auth),
            ("Last-Event-ID", first.id.as_deref().unwrap()),
        ],
    );
    let mut resumed = resumed.expect("resume");
    let replayed = resumed
        .find(Duration::from_secs(5), |e| e.event == "host")
        .expect("replayed");
    assert_eq!(replayed.id, web_off.id, "{replayed:?}");
    let mut stale = EventStream::open(
        con.c.http,
        "/api/v1/stream?last_event_id=0-1",
        &[("Authorization", &admin_auth)],
    )
    .expect("stale");
    assert_eq!(
        stale
            .next(Duration::from_secs(5))
            .map(|e| e.event)
            .as_deref(),
        Some("reset")
    );

    // Logging out ends the viewer's stream at its next heartbeat.
    let r = con.call(
        "DELETE",
        "/api/v1/sessions/current",
        &[("Cookie", &cookie), ("X-CSRF-Token", &_csrf)],
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let ended = viewer.find(Duration::from_secs(5), |e| e.event == "session_ended");
    assert!(ended.is_some(), "session_ended after logout");
    assert!(
        viewer.next(Duration::from_secs(5)).is_none(),
        "the stream closes"
    );
    let anonymous = EventStream::open(con.c.http, "/api/v1/stream", &[]).expect("anonymous");
    assert_eq!(anonymous.status, 401);
}

#[test]
fn console_streams_are_capped_per_user_and_in_all() {
    let con = Console::start("[api]\nstream_max_clients = 3\nstream_max_per_user = 2\n");
    let open = |token: &str| {
        let auth = format!("Bearer {token}");
        EventStream::open(con.c.http, "/api/v1/stream", &[("Authorization", &auth)]).expect("open")
    };
    let (a, b) = (open(&con.admin_token), open(&con.admin_token));
    assert_eq!((a.status, b.status), (200, 200));
    // One holder may not take every place.
    let third = open(&con.admin_token);
    assert_eq!(third.status, 429, "{}", third.head);
    let other = admin_token(&con.c.db, "other", None);
    let c = open(&other);
    assert_eq!(c.status, 200, "{}", c.head);
    let last = admin_token(&con.c.db, "last", None);
    let over = open(&last);
    assert_eq!(over.status, 503, "{}", over.head);
    assert!(con
        .c
        .metrics()
        .contains("mcpwatch_collector_stream_refused_total 2"));
    // A closed stream frees its places once the server notices (at its next write).
    drop(a);
    wait_for("a freed stream slot", Duration::from_secs(30), || {
        let s = open(&con.admin_token);
        (s.status == 200).then_some(s)
    });
}
