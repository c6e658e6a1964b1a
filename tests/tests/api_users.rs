//! Users, roles, bindings, tokens, sessions and the audit log through the real collector's
//! HTTP API, bootstrapped with the admin CLI on its database: lifecycles, revocation and
//! logout effective at once, no escalation, lockout, idle expiry, audit rows for allowed and
//! denied changes, and no password or token secret anywhere in the database files.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mcpwatch_tests::process::CollectorProc;
use mcpwatch_tests::{bin, wait_for, Pki};
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};

const ADMIN_PW: &str = "Adm1n-correct-horse";
const ALICE_PW: &str = "Wonderland-rabbit-42";
const ALICE_PW2: &str = "Looking-glass-queen-7";
const ALICE_PW3: &str = "Cheshire-grin-fades-9";

/// One HTTP/1.1 request (connection closed after it): (status, JSON body or Null, raw body).
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = bearer {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if body.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", payload.len()));
    s.write_all(head.as_bytes()).expect("write head");
    s.write_all(payload.as_bytes()).expect("write body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("response head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    let json = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or(Value::Null)
    };
    (status, json, body)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// A client bound to one collector.
struct Api(SocketAddr);

impl Api {
    fn get(&self, path: &str, t: &str) -> (u16, Value) {
        let (s, v, _) = call(self.0, "GET", path, Some(t), None);
        (s, v)
    }
    fn send(&self, method: &str, path: &str, t: Option<&str>, body: Value) -> (u16, Value) {
        let (s, v, _) = call(self.0, method, path, t, Some(&body));
        (s, v)
    }
    fn delete(&self, path: &str, t: &str) -> u16 {
        call(self.0, "DELETE", path, Some(t), None).0
    }
    fn post(&self, path: &str, t: &str) -> (u16, Value) {
        let (s, v, _) = call(self.0, "POST", path, Some(t), None);
        (s, v)
    }
    /// Logs in; the session token on 201, else the status.
    fn login(&self, user: &str, pw: &str) -> Result<String, u16> {
        let (s, v) = self.send(
            "POST",
            "/api/v1/sessions",
            None,
            json!({"username": user, "password": pw}),
        );
        if s == 201 {
            Ok(v["token"].as_str().expect("token").to_owned())
        } else {
            Err(s)
        }
    }
    fn me(&self, t: &str) -> u16 {
        self.get("/api/v1/me", t).0
    }
}

/// Runs the collector binary's admin CLI: (exit code, stdout, stderr).
fn cli(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(bin("mcpwatch-collector"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mcpwatch-collector");
    if let Some(text) = stdin {
        // The command may exit before reading (a refused argument): a broken pipe is fine.
        let _ = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes());
    }
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cli_ok(args: &[&str], stdin: Option<&str>) -> String {
    let (code, out, err) = cli(args, stdin);
    assert_eq!(code, 0, "{args:?} failed: {out}{err}");
    out
}

/// A collector with `[api]` settings, and its PKI kept alive beside it.
fn collector(dir: &Path, api: &str) -> CollectorProc {
    let pki = Pki::new(&dir.join("pki"));
    CollectorProc::start(&pki, &dir.join("collector"), &format!("[api]\n{api}\n"))
}

fn ro(db: &Path) -> Connection {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open db");
    c.busy_timeout(Duration::from_secs(5)).expect("busy");
    c
}

fn now_ms() -> i64 {
    mcpwatch_collector::now_ms()
}

/// Every file of the database (main, WAL, shared memory) and the logs, as bytes.
fn stored_bytes(c: &CollectorProc) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&c.dir).expect("read dir") {
        let p = entry.expect("entry").path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("collector.db") || name.ends_with(".log") {
            out.push((p.clone(), std::fs::read(&p).expect("read file")));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The secret part of a `mcpw_<id>_<secret>` or `mcps_<id>_<secret>` credential.
fn secret_of(token: &str) -> String {
    token.rsplit('_').next().expect("secret").to_owned()
}

fn audit_rows(api: &Api, t: &str, query: &str) -> Vec<Value> {
    let (s, v) = api.get(&format!("/api/v1/audit?limit=1000{query}"), t);
    assert_eq!(s, 200, "{v}");
    v["items"].as_array().expect("items").clone()
}

fn find_audit<'a>(rows: &'a [Value], actor: &str, action: &str, result: u64) -> &'a Value {
    rows.iter()
        .find(|r| r["actor"] == actor && r["action"] == action && r["result"] == result)
        .unwrap_or_else(|| panic!("no audit row {actor} {action} {result} in {rows:#?}"))
}

#[test]
fn users_roles_tokens_sessions_and_audit() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = collector(tmp.path(), "login_attempts_per_minute = 1000");
    let config = c.config.display().to_string();
    let api = Api(c.http);

    // Bootstrap through the CLI while the collector runs.
    let out = cli_ok(
        &[
            "user",
            "add",
            "admin",
            "--role",
            "admin",
            "--password-stdin",
            "--config",
            &config,
        ],
        Some(&format!("{ADMIN_PW}\n")),
    );
    assert!(out.contains("user admin created"), "{out}");
    assert_eq!(api.login("admin", "wrong-password-123"), Err(401));
    let admin = api.login("admin", ADMIN_PW).expect("admin login");
    let (s, me) = api.get("/api/v1/me", &admin);
    assert_eq!((s, me["actor"].as_str()), (200, Some("user:admin")));
    let admin_id = me["user_id"].as_i64().unwrap();
    let admin_session = me["session_id"].as_i64().unwrap();

    // Anonymous: 401.
    assert_eq!(call(api.0, "GET", "/api/v1/users", None, None).0, 401);

    // The OpenAPI document lists every route with its methods.
    let (s, doc, _) = call(api.0, "GET", "/api/v1/openapi.json", None, None);
    assert_eq!(s, 200);
    for (path, methods) in [
        ("/api/v1/users", &["get", "post"][..]),
        ("/api/v1/users/{id}", &["get"]),
        ("/api/v1/users/{id}/password", &["put"]),
        ("/api/v1/users/{id}/disable", &["post"]),
        ("/api/v1/users/{id}/enable", &["post"]),
        ("/api/v1/users/{id}/bindings", &["get", "post"]),
        ("/api/v1/users/{id}/bindings/{binding_id}", &["delete"]),
        ("/api/v1/roles", &["get"]),
        ("/api/v1/roles/{name}", &["put", "delete"]),
        ("/api/v1/tokens", &["get", "post"]),
        ("/api/v1/tokens/{id}", &["delete"]),
        ("/api/v1/sessions", &["get", "post"]),
        ("/api/v1/sessions/{id}", &["delete"]),
        ("/api/v1/sessions/current", &["delete"]),
        ("/api/v1/audit", &["get"]),
    ] {
        for m in methods {
            assert!(
                doc["paths"][path][m].is_object(),
                "{m} {path} missing from the document"
            );
        }
    }

    // Users: validation, creation, conflicts.
    let (s, v) = api.send(
        "POST",
        "/api/v1/users",
        Some(&admin),
        json!({"username": "alice", "password": "short"}),
    );
    assert_eq!(s, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at least 12"),
        "{v}"
    );
    let (s, v) = api.send(
        "POST",
        "/api/v1/users",
        Some(&admin),
        json!({"username": "alice", "password": "alice-in-wonderland-1"}),
    );
    assert_eq!(s, 422, "password containing the username: {v}");
    let (s, _) = api.send(
        "POST",
        "/api/v1/users",
        Some(&admin),
        json!({"username": "Alice!", "password": ALICE_PW}),
    );
    assert_eq!(s, 422, "bad username");
    let (s, v) = api.send(
        "POST",
        "/api/v1/users",
        Some(&admin),
        json!({"username": "alice", "password": ALICE_PW, "roles": ["nope"]}),
    );
    assert_eq!(s, 422, "unknown role: {v}");
    let (s, alice_row) = api.send(
        "POST",
        "/api/v1/users",
        Some(&admin),
        json!({"username": "alice", "password": ALICE_PW, "roles": ["viewer"]}),
    );
    assert_eq!(s, 201, "{alice_row}");
    assert_eq!(alice_row["bindings"][0]["role"], "viewer");
    let alice_id = alice_row["id"].as_i64().unwrap();
    let (s, _) = api.send(
        "POST",
        "/api/v1/users",
        Some(&admin),
        json!({"username": "alice", "password": ALICE_PW}),
    );
    assert_eq!(s, 409);
    let (s, users, raw) = call(api.0, "GET", "/api/v1/users", Some(&admin), None);
    assert_eq!(s, 200);
    assert_eq!(users.as_array().unwrap().len(), 2);
    assert!(!raw.contains("argon2") && !raw.contains("hash"), "{raw}");
    assert_eq!(api.get(&format!("/api/v1/users/{alice_id}"), &admin).0, 200);
    assert_eq!(api.get("/api/v1/users/999", &admin).0, 404);

    // Roles: custom ones come and go, built-in ones are fixed.
    let (s, v) = api.send(
        "PUT",
        "/api/v1/roles/auditor",
        Some(&admin),
        json!({"permissions": ["audit:read", "hosts:read"]}),
    );
    assert_eq!(s, 201, "{v}");
    let (s, _) = api.send(
        "PUT",
        "/api/v1/roles/auditor",
        Some(&admin),
        json!({"permissions": ["audit:read"]}),
    );
    assert_eq!(s, 200, "replace");
    let (s, _) = api.send(
        "PUT",
        "/api/v1/roles/admin",
        Some(&admin),
        json!({"permissions": ["hosts:read"]}),
    );
    assert_eq!(s, 409, "built-in roles are fixed");
    let (s, _) = api.send(
        "PUT",
        "/api/v1/roles/odd",
        Some(&admin),
        json!({"permissions": ["hosts:delete"]}),
    );
    assert_eq!(s, 422, "unknown permission");
    let (s, roles) = api.get("/api/v1/roles", &admin);
    assert_eq!(s, 200);
    let names: Vec<&str> = roles
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["admin", "auditor", "operator", "viewer"]);
    assert_eq!(api.delete("/api/v1/roles/operator", &admin), 409);

    // Bindings: selectors are checked; scoped bindings show up in the grants.
    let bindings = format!("/api/v1/users/{alice_id}/bindings");
    let (s, _) = api.send(
        "POST",
        &bindings,
        Some(&admin),
        json!({"role": "operator", "host_selector": "{team=\"a\""}),
    );
    assert_eq!(s, 422, "malformed selector");
    let (s, b) = api.send(
        "POST",
        &bindings,
        Some(&admin),
        json!({"role": "operator", "host_selector": "{team=\"a\"}"}),
    );
    assert_eq!(s, 201, "{b}");
    let (s, b2) = api.send("POST", &bindings, Some(&admin), json!({"role": "auditor"}));
    assert_eq!(s, 201, "{b2}");
    assert_eq!(
        api.delete("/api/v1/roles/auditor", &admin),
        409,
        "still bound"
    );
    let (s, list) = api.get(&bindings, &admin);
    assert_eq!((s, list.as_array().unwrap().len()), (200, 3));
    assert_eq!(api.delete(&format!("{bindings}/{}", b2["id"]), &admin), 204);
    assert_eq!(api.delete(&format!("{bindings}/{}", b2["id"]), &admin), 404);
    assert_eq!(api.delete("/api/v1/roles/auditor", &admin), 204);

    let alice = api.login("alice", ALICE_PW).expect("alice login");
    let (_, me) = api.get("/api/v1/me", &alice);
    let grants: Vec<&str> = me["grants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g.as_str())
        .collect();
    assert!(grants.contains(&"hosts:read"), "{grants:?}");
    assert!(
        grants.contains(&"servers:control@{team=\"a\"}"),
        "{grants:?}"
    );
    let alice_session = me["session_id"].as_i64().unwrap();

    // No escalation.
    let (s, _) = api.send(
        "POST",
        "/api/v1/tokens",
        Some(&alice),
        json!({"name": "root", "permissions": ["users:admin"]}),
    );
    assert_eq!(s, 403, "a token with a permission alice lacks");
    let (s, _) = api.send("POST", &bindings, Some(&alice), json!({"role": "admin"}));
    assert_eq!(s, 403, "alice binding herself");
    let (s, _) = api.send(
        "POST",
        "/api/v1/tokens",
        Some(&alice),
        json!({"name": "for-admin", "user_id": admin_id}),
    );
    assert_eq!(s, 403, "a token for another user");
    assert_eq!(api.get("/api/v1/users", &alice).0, 403);
    assert_eq!(api.get("/api/v1/audit", &alice).0, 403);
    let (s, _) = api.send(
        "PUT",
        &format!("/api/v1/users/{admin_id}/password"),
        Some(&alice),
        json!({"password": ALICE_PW2}),
    );
    assert_eq!(s, 403, "another user's password");

    // Tokens: shown once, narrowed, inherited limits, listed without secrets.
    let (s, tok) = api.send(
        "POST",
        "/api/v1/tokens",
        Some(&alice),
        json!({"name": "ci", "permissions": ["hosts:read"], "expires_in": "1h"}),
    );
    assert_eq!(s, 201, "{tok}");
    let alice_token = tok["token"].as_str().unwrap().to_owned();
    assert!(alice_token.starts_with("mcpw_"));
    assert!(tok["expires_ms"].as_i64().unwrap() > now_ms() + 3_500_000);
    let alice_token_id = tok["id"].as_i64().unwrap();
    let (s, me) = api.get("/api/v1/me", &alice_token);
    assert_eq!(s, 200);
    assert_eq!(me["actor"], "user:alice");
    // Only hosts:read, from both of alice's bindings (viewer everywhere, operator on team a).
    let mut grants: Vec<&str> = me["grants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g.as_str())
        .collect();
    grants.sort_unstable();
    assert_eq!(
        grants,
        ["hosts:read", "hosts:read@{team=\"a\"}"],
        "the token keeps only its subset"
    );
    // The narrowed token cannot widen itself, and passes its limit on.
    let (s, _) = api.send(
        "POST",
        "/api/v1/tokens",
        Some(&alice_token),
        json!({"name": "wider", "permissions": ["alerts:read"]}),
    );
    assert_eq!(s, 403);
    let (s, child) = api.send(
        "POST",
        "/api/v1/tokens",
        Some(&alice_token),
        json!({"name": "child"}),
    );
    assert_eq!(s, 201, "{child}");
    assert_eq!(child["permissions"], json!(["hosts:read"]));
    assert_eq!(
        child["expires_ms"], tok["expires_ms"],
        "a token made by a token never outlives it"
    );
    let (s, _) = api.send(
        "POST",
        "/api/v1/tokens",
        Some(&alice),
        json!({"name": "x", "expires_in": "1h", "expires_ms": now_ms() + 1000}),
    );
    assert_eq!(s, 422, "two expiries");
    let (s, _) = api.send(
        "POST",
        "/api/v1/tokens",
        Some(&alice),
        json!({"name": "x", "expires_in": "soon"}),
    );
    assert_eq!(s, 422);
    let (s, admin_tok) = api.send(
        "POST",
        "/api/v1/tokens",
        Some(&admin),
        json!({"name": "automation"}),
    );
    assert_eq!(s, 201);
    let admin_token = admin_tok["token"].as_str().unwrap().to_owned();
    let (s, for_alice) = api.send(
        "POST",
        "/api/v1/tokens",
        Some(&admin),
        json!({"name": "issued", "user_id": alice_id, "permissions": ["alerts:read"]}),
    );
    assert_eq!(s, 201, "users:admin issues a token for alice");
    assert_eq!(for_alice["user_id"], alice_id);
    let issued = for_alice["token"].as_str().unwrap().to_owned();
    assert_eq!(api.get("/api/v1/me", &issued).1["actor"], "user:alice");

    let (s, mine, raw) = call(api.0, "GET", "/api/v1/tokens", Some(&alice), None);
    assert_eq!(s, 200);
    assert_eq!(mine.as_array().unwrap().len(), 3, "{mine}");
    assert!(mine
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["user_id"] == alice_id && t.get("token").is_none() && t.get("hash").is_none()));
    assert!(!raw.contains(&secret_of(&alice_token)));
    let (_, all) = api.get("/api/v1/tokens", &admin);
    assert_eq!(all.as_array().unwrap().len(), 4);
    let (_, filtered) = api.get(&format!("/api/v1/tokens?user_id={admin_id}"), &admin);
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    assert_eq!(
        api.get(&format!("/api/v1/tokens?user_id={admin_id}"), &alice)
            .0,
        403
    );

    // Revocation: own token yes, someone else's is invisible; effective at once.
    assert_eq!(
        api.delete(&format!("/api/v1/tokens/{}", admin_tok["id"]), &alice),
        404
    );
    assert_eq!(api.me(&admin_token), 200);
    assert_eq!(
        api.delete(&format!("/api/v1/tokens/{alice_token_id}"), &alice),
        204
    );
    assert_eq!(api.me(&alice_token), 401, "revoked token refused at once");
    assert_eq!(api.me(child["token"].as_str().unwrap()), 200);

    // A CLI token works against the running collector; CLI revocation is immediate too.
    let cli_token = cli_ok(
        &[
            "token",
            "create",
            "from-cli",
            "--user",
            "alice",
            "--permission",
            "hosts:read",
            "--expires",
            "1d",
            "--config",
            &config,
        ],
        None,
    )
    .trim()
    .to_owned();
    assert!(cli_token.starts_with("mcpw_"), "{cli_token}");
    assert_eq!(api.me(&cli_token), 200);
    let cli_token_id = cli_token.split('_').nth(1).unwrap().to_owned();
    cli_ok(
        &["token", "revoke", &cli_token_id, "--config", &config],
        None,
    );
    assert_eq!(api.me(&cli_token), 401);
    let listing = cli_ok(&["token", "list", "--config", &config], None);
    assert!(
        listing.contains("from-cli") && listing.contains("revoked"),
        "{listing}"
    );
    assert!(!listing.contains(&secret_of(&cli_token)));

    // Sessions: own list, admin sees all; ending one is immediate.
    let (s, mine) = api.get("/api/v1/sessions", &alice);
    assert_eq!(s, 200);
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine[0]["id"], alice_session);
    assert!(mine[0].get("hash").is_none());
    let (_, all) = api.get("/api/v1/sessions", &admin);
    assert_eq!(all.as_array().unwrap().len(), 2);
    let (_, hers) = api.get(&format!("/api/v1/sessions?user_id={alice_id}"), &admin);
    assert_eq!(hers.as_array().unwrap().len(), 1);
    assert_eq!(
        api.get(&format!("/api/v1/sessions?user_id={admin_id}"), &alice)
            .0,
        403
    );
    assert_eq!(
        api.delete(&format!("/api/v1/sessions/{admin_session}"), &alice),
        404
    );
    assert_eq!(
        api.delete(&format!("/api/v1/sessions/{alice_session}"), &admin),
        204
    );
    assert_eq!(api.me(&alice), 401, "ended session refused at once");

    // Own password change: needs the current password; keeps this session only.
    let alice = api.login("alice", ALICE_PW).expect("alice again");
    let alice_other = api.login("alice", ALICE_PW).expect("second session");
    let pw_path = format!("/api/v1/users/{alice_id}/password");
    let (s, _) = api.send(
        "PUT",
        &pw_path,
        Some(&alice),
        json!({"password": ALICE_PW2}),
    );
    assert_eq!(s, 422, "current password missing");
    let (s, _) = api.send(
        "PUT",
        &pw_path,
        Some(&alice),
        json!({"password": ALICE_PW2, "current_password": "not-the-password-1"}),
    );
    assert_eq!(s, 422, "current password wrong");
    let (s, _) = api.send(
        "PUT",
        &pw_path,
        Some(&alice),
        json!({"password": "short", "current_password": ALICE_PW}),
    );
    assert_eq!(s, 422, "policy");
    let (s, v) = api.send(
        "PUT",
        &pw_path,
        Some(&alice),
        json!({"password": ALICE_PW2, "current_password": ALICE_PW}),
    );
    assert_eq!(s, 204, "{v}");
    assert_eq!(api.me(&alice), 200, "the session that changed it stays");
    assert_eq!(api.me(&alice_other), 401, "other sessions end");
    assert_eq!(api.login("alice", ALICE_PW), Err(401));
    // An admin resets it: every session of alice ends.
    let (s, _) = api.send(
        "PUT",
        &pw_path,
        Some(&admin),
        json!({"password": ALICE_PW3}),
    );
    assert_eq!(s, 204);
    assert_eq!(api.me(&alice), 401);

    // Disable: sessions and tokens stop at once, login refused; enable restores.
    let alice = api.login("alice", ALICE_PW3).expect("alice after reset");
    assert_eq!(api.me(&issued), 200);
    let (s, v) = api.post(&format!("/api/v1/users/{alice_id}/disable"), &admin);
    assert_eq!((s, &v["disabled"]), (200, &json!(true)), "{v}");
    assert_eq!(api.me(&alice), 401, "disabled user's session");
    assert_eq!(api.me(&issued), 401, "disabled user's token");
    assert_eq!(api.login("alice", ALICE_PW3), Err(401));
    assert_eq!(
        api.post(&format!("/api/v1/users/{admin_id}/disable"), &admin)
            .0,
        409,
        "no locking yourself out"
    );
    let (s, v) = api.post(&format!("/api/v1/users/{alice_id}/enable"), &admin);
    assert_eq!((s, &v["disabled"]), (200, &json!(false)));
    assert_eq!(api.me(&issued), 200);
    let alice = api.login("alice", ALICE_PW3).expect("alice enabled");

    // Logout ends the session at once.
    assert_eq!(api.delete("/api/v1/sessions/current", &alice), 204);
    assert_eq!(api.me(&alice), 401);

    // Audit: allowed and denied changes, with actor, action, result and source.
    let rows = audit_rows(&api, &admin, "");
    let created = find_audit(&rows, "user:admin", "POST /api/v1/users", 201);
    assert_eq!(created["source"], "127.0.0.1");
    assert_eq!(created["object"], "/api/v1/users");
    assert_eq!(created["session_id"], admin_session);
    find_audit(&rows, "user:admin", "PUT /api/v1/roles/{name}", 409);
    find_audit(&rows, "user:admin", "POST /api/v1/users/{id}/disable", 200);
    let denied_token = find_audit(&rows, "user:alice", "POST /api/v1/tokens", 403);
    assert_eq!(denied_token["source"], "127.0.0.1");
    assert!(
        rows.iter().any(|r| r["actor"] == "user:alice"
            && r["result"] == 403
            && r["detail"].as_str().unwrap().contains("users:admin")),
        "the refused token names the permission it asked for"
    );
    let denied_bind = find_audit(&rows, "user:alice", "POST /api/v1/users/{id}/bindings", 403);
    assert_eq!(
        denied_bind["object"],
        format!("/api/v1/users/{alice_id}/bindings")
    );
    find_audit(&rows, "user:alice", "GET /api/v1/users", 403);
    find_audit(&rows, "user:alice", "DELETE /api/v1/tokens/{id}", 404);
    find_audit(&rows, "anonymous", "GET /api/v1/users", 401);
    find_audit(&rows, "login:alice", "POST /api/v1/sessions", 401);
    let revoked = find_audit(&rows, "user:alice", "DELETE /api/v1/tokens/{id}", 204);
    assert!(revoked["token_id"].is_null() && revoked["session_id"].is_i64());
    // Filters and cursor paging, newest first.
    let hers = audit_rows(&api, &admin, "&actor=user:alice");
    assert!(!hers.is_empty() && hers.iter().all(|r| r["actor"] == "user:alice"));
    let posts = audit_rows(&api, &admin, "&action=POST%20/api/v1/tokens");
    assert!(posts.iter().all(|r| r["action"] == "POST /api/v1/tokens"));
    assert!(posts.len() >= 8, "{}", posts.len());
    let (_, page1) = api.get("/api/v1/audit?limit=3", &admin);
    let ids1: Vec<i64> = page1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids1.len(), 3);
    assert!(ids1.windows(2).all(|w| w[0] > w[1]));
    let cursor = page1["next_cursor"].as_i64().expect("cursor");
    let (_, page2) = api.get(&format!("/api/v1/audit?limit=3&cursor={cursor}"), &admin);
    assert!(page2["items"][0]["id"].as_i64().unwrap() < ids1[2]);
    let future = audit_rows(&api, &admin, &format!("&since_ms={}", now_ms() + 60_000));
    assert!(future.is_empty());
    let past = audit_rows(&api, &admin, "&until_ms=1");
    assert!(past.is_empty());
    let before_now = audit_rows(&api, &admin, &format!("&until_ms={}", now_ms() + 1));
    assert!(!before_now.is_empty());
    // Object and result filters: the refused binding above, found by what it touched.
    let object = format!("/api/v1/users/{alice_id}/bindings");
    let refused = audit_rows(&api, &admin, &format!("&result=403&object={object}"));
    assert!(!refused.is_empty());
    assert!(
        refused
            .iter()
            .all(|r| r["result"] == 403 && r["object"] == object.as_str()),
        "{refused:?}"
    );
    assert!(audit_rows(&api, &admin, &format!("&result=418&object={object}")).is_empty());
    assert_eq!(api.get("/api/v1/audit?limit=100000", &admin).0, 400);
    // The audit log cannot be rewritten, even by the database owner.
    let rw = Connection::open(&c.db).unwrap();
    rw.busy_timeout(Duration::from_secs(5)).unwrap();
    assert!(rw.execute("UPDATE audit_log SET result = 200", []).is_err());
    drop(rw);

    // The CLI sees what the API did.
    let users = cli_ok(&["user", "list", "--db", &c.db.display().to_string()], None);
    assert!(
        users.contains("alice") && users.contains("operator@{team=\"a\"}"),
        "{users}"
    );

    // No password, session or token secret in the database files (or the logs).
    let secrets: Vec<String> = [
        ADMIN_PW.to_owned(),
        ALICE_PW.to_owned(),
        ALICE_PW2.to_owned(),
        ALICE_PW3.to_owned(),
        secret_of(&admin),
        secret_of(&alice),
        secret_of(&alice_token),
        secret_of(&admin_token),
        secret_of(&issued),
        secret_of(&cli_token),
        secret_of(child["token"].as_str().unwrap()),
    ]
    .into();
    // The token hashes are there, so the scan really reads the token table.
    let hashes: Vec<String> = ro(&c.db)
        .prepare("SELECT hash FROM api_tokens")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        hashes.contains(&mcpwatch_collector::auth::credential::hash(&secret_of(
            &alice_token
        )))
    );
    c.stop();
    let files = stored_bytes(&c);
    assert!(files.iter().any(|(_, b)| b.len() > 4096));
    let mut found_hash = false;
    for (path, bytes) in &files {
        for s in &secrets {
            assert!(!contains(bytes, s), "{} contains a secret", path.display());
        }
        found_hash |= contains(bytes, &hashes[0]);
    }
    assert!(found_hash, "the scan should see the stored hashes");
}

#[test]
fn login_locks_after_five_failures_and_is_rate_limited() {
    let tmp = tempfile::tempdir().unwrap();
    let c = collector(tmp.path(), "login_attempts_per_minute = 8");
    let api = Api(c.http);
    let db = c.db.display().to_string();
    cli_ok(
        &[
            "user",
            "add",
            "bob",
            "--role",
            "viewer",
            "--password-stdin",
            "--db",
            &db,
        ],
        Some(ALICE_PW),
    );
    for i in 0..5 {
        assert_eq!(
            api.login("bob", "wrong-password-99"),
            Err(401),
            "attempt {i}"
        );
    }
    assert_eq!(
        api.login("bob", ALICE_PW),
        Err(401),
        "locked even with the right password"
    );
    let locked_until: i64 = ro(&c.db)
        .query_row(
            "SELECT locked_until_ms FROM users WHERE username = 'bob'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(locked_until > now_ms() + 60_000, "{locked_until}");
    let listing = cli_ok(&["user", "list", "--db", &db], None);
    assert!(listing.contains("locked"), "{listing}");
    // Break-glass: a new password from the CLI clears the lock.
    cli_ok(
        &["user", "passwd", "bob", "--password-stdin", "--db", &db],
        Some(&format!("{ALICE_PW2}\n")),
    );
    let bob = api.login("bob", ALICE_PW2).expect("login after passwd");
    assert_eq!(api.me(&bob), 200);
    // Eight attempts from this address this minute: the ninth is refused outright.
    assert_eq!(api.login("bob", "wrong-password-99"), Err(401));
    assert_eq!(api.login("bob", ALICE_PW2), Err(429));
    let rows = audit_rows(
        &api,
        &{
            // bob is a viewer: read the audit log with a CLI token.
            cli_ok(
                &[
                    "token",
                    "create",
                    "audit",
                    "--permission",
                    "audit:read",
                    "--db",
                    &db,
                ],
                None,
            )
            .trim()
            .to_owned()
        },
        "&action=POST%20/api/v1/sessions",
    );
    assert!(rows.iter().any(|r| r["result"] == 429));
    assert_eq!(rows.iter().filter(|r| r["result"] == 401).count(), 7);
}

#[test]
fn parallel_guesses_cannot_slip_past_the_lockout() {
    let tmp = tempfile::tempdir().unwrap();
    let c = collector(tmp.path(), "login_attempts_per_minute = 1000000");
    let db = c.db.display().to_string();
    cli_ok(
        &[
            "user",
            "add",
            "carol",
            "--role",
            "viewer",
            "--password-stdin",
            "--db",
            &db,
        ],
        Some(ALICE_PW),
    );
    // 24 wrong guesses at once (retried while the server sheds load), then the right
    // password: every guess is counted before its hash is checked, so the account is locked
    // and the right password fails too.
    let addr = c.http;
    let guesses: Vec<_> = (0..24)
        .map(|i| {
            std::thread::spawn(move || loop {
                // 503: every password check is busy and this guess was not made; retry it.
                match Api(addr).login("carol", &format!("wrong-password-{i:02}")) {
                    Err(503) => continue,
                    r => break r,
                }
            })
        })
        .collect();
    for g in guesses {
        let r = g.join().unwrap();
        assert_eq!(r, Err(401));
    }
    let api = Api(c.http);
    assert_eq!(api.login("carol", ALICE_PW), Err(401), "locked");
    let (failed, locked_until): (i64, i64) = ro(&c.db)
        .query_row(
            "SELECT failed_logins, locked_until_ms FROM users WHERE username = 'carol'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(failed >= 5, "{failed} attempts counted");
    assert!(locked_until > now_ms(), "{locked_until}");
}

#[test]
fn idle_sessions_expire() {
    let tmp = tempfile::tempdir().unwrap();
    // Three seconds, not one: a loaded machine can take over a second between the login and
    // the first request, which must still find the session alive.
    let c = collector(tmp.path(), "session_idle_timeout = \"3s\"");
    let api = Api(c.http);
    let db = c.db.display().to_string();
    cli_ok(
        &[
            "user",
            "add",
            "carol",
            "--role",
            "viewer",
            "--password-stdin",
            "--db",
            &db,
        ],
        Some(ALICE_PW),
    );
    let carol = api.login("carol", ALICE_PW).expect("login");
    let (s, me) = api.get("/api/v1/me", &carol);
    assert_eq!(s, 200);
    let id = me["session_id"].as_i64().unwrap();
    // Wait, without touching the session, until it has been idle for over three seconds.
    let conn = ro(&c.db);
    wait_for("the session to be idle 3s", Duration::from_secs(30), || {
        let last: i64 = conn
            .query_row(
                "SELECT last_seen_ms FROM sessions WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .ok()?;
        (now_ms() - last > 3_100).then_some(())
    });
    assert_eq!(api.me(&carol), 401, "idle session refused");
    // A fresh login works.
    let carol = api.login("carol", ALICE_PW).expect("login again");
    assert_eq!(api.me(&carol), 200);
}

#[test]
fn admin_cli_on_the_database() {
    let tmp = tempfile::tempdir().unwrap();
    let db_path = tmp.path().join("data/collector.db");
    let db = db_path.display().to_string();
    let d = ["--db", db.as_str()];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(d.iter())
            .map(|s| (*s).to_owned())
            .collect()
    };
    let run = |args: &[&str], stdin: Option<&str>| {
        let a = with(args);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        cli(&refs, stdin)
    };

    // Configuration errors exit 64, naming the file.
    let (code, _, err) = cli(
        &["user", "list", "--config", "/nonexistent/collector.toml"],
        None,
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("/nonexistent/collector.toml"), "{err}");
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[ingest]\nlisten = 5\n").unwrap();
    let (code, _, err) = cli(
        &["role", "list", "--config", &bad.display().to_string()],
        None,
    );
    assert_eq!(code, 64, "{err}");
    let (code, _, _) = cli(&["user", "list", "--config", "x.toml", "--db", &db], None);
    assert_eq!(code, 2, "--config and --db together");

    // Users.
    let (code, _, err) = run(&["user", "add", "dave", "--role", "operator"], None);
    assert_eq!(code, 1);
    assert!(err.contains("--password-stdin"), "{err}");
    let (code, _, err) = run(
        &["user", "add", "dave", "--password-stdin"],
        Some("short\n"),
    );
    assert_eq!(code, 1);
    assert!(err.contains("at least 12"), "{err}");
    let (code, _, err) = run(&["user", "add", "Dave", "--password-stdin"], Some(ALICE_PW));
    assert_eq!(code, 1);
    assert!(err.contains("username"), "{err}");
    let (code, _, err) = run(
        &["user", "add", "dave", "--role", "nope", "--password-stdin"],
        Some(ALICE_PW),
    );
    assert_eq!(code, 1);
    assert!(err.contains("unknown role"), "{err}");
    let pwfile = tmp.path().join("pw");
    std::fs::write(&pwfile, format!("{ALICE_PW}\n")).unwrap();
    let (code, out, err) = run(
        &[
            "user",
            "add",
            "dave",
            "--role",
            "operator",
            "--hosts",
            "{team=\"b\"}",
            "--password-file",
            &pwfile.display().to_string(),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dave"));
    let (code, _, err) = run(&["user", "add", "dave", "--password-stdin"], Some(ALICE_PW));
    assert_eq!(code, 1);
    assert!(err.contains("exists"), "{err}");
    let (_, out, _) = run(&["user", "list"], None);
    assert!(
        out.contains("dave") && out.contains("operator@{team=\"b\"}"),
        "{out}"
    );
    let (code, _, _) = run(
        &["user", "passwd", "dave", "--password-stdin"],
        Some(ALICE_PW2),
    );
    assert_eq!(code, 0);
    let (code, _, err) = run(
        &["user", "passwd", "nobody", "--password-stdin"],
        Some(ALICE_PW2),
    );
    assert_eq!(code, 1);
    assert!(err.contains("no user"), "{err}");
    assert_eq!(run(&["user", "disable", "dave"], None).0, 0);
    assert!(run(&["user", "list"], None).1.contains("disabled"));
    assert_eq!(run(&["user", "enable", "dave"], None).0, 0);

    // Roles.
    let (code, _, err) = run(
        &["role", "add", "team-b", "--permission", "hosts:nope"],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("unknown permission"), "{err}");
    let (code, out, _) = run(
        &[
            "role",
            "add",
            "team-b",
            "--permission",
            "hosts:read,metrics:read",
        ],
        None,
    );
    assert_eq!(code, 0);
    assert!(out.contains("created"));
    assert_eq!(
        run(
            &["role", "add", "admin", "--permission", "hosts:read"],
            None
        )
        .0,
        1
    );
    let (code, _, err) = run(
        &["role", "bind", "dave", "team-b", "--hosts", "{team="],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("selector"), "{err}");
    assert_eq!(run(&["role", "bind", "dave", "team-b"], None).0, 0);
    let (code, _, err) = run(&["role", "delete", "team-b"], None);
    assert_eq!(code, 1);
    assert!(err.contains("still bound"), "{err}");
    assert_eq!(run(&["role", "unbind", "dave", "team-b"], None).0, 0);
    assert_eq!(run(&["role", "delete", "team-b"], None).0, 0);
    assert_eq!(run(&["role", "delete", "team-b"], None).0, 1);
    let (_, out, _) = run(&["role", "list"], None);
    assert!(out.contains("viewer") && !out.contains("team-b"), "{out}");

    // Tokens: printed once, stored as a hash.
    let (code, out, err) = run(
        &[
            "token",
            "create",
            "deploy",
            "--user",
            "dave",
            "--expires",
            "7d",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let token = out.trim().to_owned();
    assert!(token.starts_with("mcpw_"), "{out}");
    assert!(err.contains("only"), "{err}");
    let (code, _, err) = run(&["token", "create", "x", "--expires", "soon"], None);
    assert_eq!(code, 2, "clap refuses the duration: {err}");
    let (code, _, _) = run(&["token", "create", "x", "--user", "nobody"], None);
    assert_eq!(code, 1);
    let stored: String = ro(&db_path)
        .query_row(
            "SELECT hash FROM api_tokens WHERE name = 'deploy'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        stored,
        mcpwatch_collector::auth::credential::hash(&secret_of(&token))
    );
    let id = token.split('_').nth(1).unwrap().to_owned();
    let (_, out, _) = run(&["token", "list"], None);
    assert!(
        out.contains("deploy") && out.contains("dave") && out.contains("active"),
        "{out}"
    );
    assert!(!out.contains(&secret_of(&token)));
    assert_eq!(run(&["token", "revoke", &id], None).0, 0);
    assert!(run(&["token", "list"], None).1.contains("revoked"));
    assert_eq!(run(&["token", "revoke", "999"], None).0, 1);

    for (path, bytes) in std::fs::read_dir(db_path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.clone(), std::fs::read(p).unwrap()))
    {
        for s in [ALICE_PW, ALICE_PW2, &secret_of(&token)] {
            assert!(!contains(&bytes, s), "{} holds a secret", path.display());
        }
    }
}

/// A session id is never handed out twice: after alice's session ends, bob's login gets a new
/// id, so audit rows of two users never share one (ids were reused before schema v6).
#[test]
fn session_ids_are_never_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let c = collector(tmp.path(), "");
    let api = Api(c.http);
    let db = c.db.display().to_string();
    for user in ["alice", "bob"] {
        cli_ok(
            &[
                "user",
                "add",
                user,
                "--role",
                "viewer",
                "--password-stdin",
                "--db",
                &db,
            ],
            Some(ALICE_PW),
        );
    }
    let session_of = |token: &str| api.get("/api/v1/me", token).1["session_id"].as_i64();
    let alice = api.login("alice", ALICE_PW).expect("login");
    let first = session_of(&alice).expect("session id");
    assert_eq!(api.delete("/api/v1/sessions/current", &alice), 204);
    let bob = api.login("bob", ALICE_PW).expect("login");
    let second = session_of(&bob).expect("session id");
    assert!(second > first, "session id {first} reused as {second}");
    let shared: i64 = ro(&c.db)
        .query_row(
            "SELECT count(DISTINCT actor) FROM audit_log WHERE session_id = ?1",
            [first],
            |r| r.get(0),
        )
        .expect("audit");
    assert!(
        shared <= 1,
        "two actors share session id {first} in the audit log"
    );
}

/// Adds `carol` (viewer) with ALICE_PW; logs her in: (session token, user id).
fn carol(c: &CollectorProc) -> (String, i64) {
    let db = c.db.display().to_string();
    cli_ok(
        &[
            "user",
            "add",
            "carol",
            "--role",
            "viewer",
            "--password-stdin",
            "--db",
            &db,
        ],
        Some(ALICE_PW),
    );
    let api = Api(c.http);
    let token = api.login("carol", ALICE_PW).expect("login");
    let id = api.get("/api/v1/me", &token).1["user_id"]
        .as_i64()
        .expect("user id");
    (token, id)
}

/// Guessing the current password through `PUT /users/{id}/password` is limited per address
/// like login: attempts beyond `login_attempts_per_minute` get 429 (before, every guess got
/// its answer).
#[test]
fn password_change_guesses_are_rate_limited_like_login() {
    let tmp = tempfile::tempdir().unwrap();
    let c = collector(
        tmp.path(),
        "login_attempts_per_minute = 5\nlockout_after = 100",
    );
    let (token, id) = carol(&c); // attempt 1: the login
    let api = Api(c.http);
    let path = format!("/api/v1/users/{id}/password");
    let guess = |n: u32| {
        api.send(
            "PUT",
            &path,
            Some(&token),
            json!({"password": ALICE_PW2, "current_password": format!("wrong-guess-{n}")}),
        )
        .0
    };
    let statuses: Vec<u16> = (0..6).map(guess).collect();
    assert_eq!(statuses[..4], [422, 422, 422, 422], "{statuses:?}");
    assert_eq!(statuses[4..], [429, 429], "{statuses:?}");
}

/// 24 wrong current passwords at once, then the right one: every guess is counted before its
/// hash is checked, so the account locks and the right password is refused too.
#[test]
fn parallel_password_change_guesses_lock_the_account() {
    let tmp = tempfile::tempdir().unwrap();
    let c = collector(tmp.path(), "login_attempts_per_minute = 1000000");
    let (token, id) = carol(&c);
    let addr = c.http;
    let guesses: Vec<_> = (0..24)
        .map(|i| {
            let token = token.clone();
            std::thread::spawn(move || loop {
                let body = json!({"password": ALICE_PW2,
                                  "current_password": format!("wrong-password-{i:02}")});
                // 503: every password check is busy and this guess was not made; retry it.
                match Api(addr)
                    .send(
                        "PUT",
                        &format!("/api/v1/users/{id}/password"),
                        Some(&token),
                        body,
                    )
                    .0
                {
                    503 => continue,
                    s => break s,
                }
            })
        })
        .collect();
    for g in guesses {
        assert_eq!(g.join().unwrap(), 422);
    }
    let right = Api(addr).send(
        "PUT",
        &format!("/api/v1/users/{id}/password"),
        Some(&token),
        json!({"password": ALICE_PW2, "current_password": ALICE_PW}),
    );
    assert_eq!(right.0, 422, "locked: {:?}", right.1);
    let (failed, locked_until): (i64, i64) = ro(&c.db)
        .query_row(
            "SELECT failed_logins, locked_until_ms FROM users WHERE username = 'carol'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(failed >= 5, "{failed} attempts counted");
    assert!(locked_until > now_ms(), "{locked_until}");
    assert_eq!(Api(addr).login("carol", ALICE_PW), Err(401), "locked");
}
