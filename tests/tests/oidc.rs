//! Single sign-on against a real OpenID Connect provider (npm `oidc-provider` on loopback,
//! `console/e2e/oidc-provider.mjs`), walked without a browser: accounts made on first
//! sign-in, groups mapped to role bindings and recomputed at every sign-in (manual ones
//! kept), password sign-in off for those accounts, key rotation, the provider down; and
//! every forged or replayed answer refused with its reason and audited. The browser flow is
//! `console.rs`'s single sign-on test.

use std::net::SocketAddr;
use std::path::Path;

use mcpwatch_tests::api::{admin_token, local_user, request_with, Api, Resp};
use mcpwatch_tests::oidc_provider::{connect, OidcProvider, Walk};
use mcpwatch_tests::process::CollectorProc;
use mcpwatch_tests::{metric, Pki};
use serde_json::{json, Value};

const ROOT_PW: &str = "Root-correct-horse-42";

/// A collector with `[oidc]` pointing at a provider (started here) that knows `users`.
fn setup(dir: &Path, users: &Value) -> (CollectorProc, OidcProvider) {
    let pki = Pki::new(&dir.join("pki"));
    let mut c = CollectorProc::start(
        &pki,
        &dir.join("c"),
        "[api]\nlogin_attempts_per_minute = 1000\n",
    );
    let mut op = OidcProvider::new(&dir.join("op"));
    connect(
        &mut c,
        &mut op,
        "[[oidc.group_binding]]\ngroup = \"sre\"\nrole = \"operator\"\nscope = 'team=\"a\"'\n\
         [[oidc.group_binding]]\ngroup = \"staff\"\nrole = \"viewer\"\n",
        users,
    );
    (c, op)
}

/// The browser's arrival at the callback (with the binding cookie it got at the start).
fn deliver(collector: SocketAddr, path: &str, binding: &str) -> Resp {
    let cookie = format!("mcpwatch_oidc={binding}");
    request_with(collector, "GET", path, None, &[("Cookie", &cookie)], None).expect("callback")
}

/// Where a refused callback sends the browser: its `sso_error` code.
fn sso_error(r: &Resp) -> String {
    assert_eq!(r.status, 302, "{}\n{}", r.head, r.body);
    let location = r.header("location").unwrap_or_default();
    location
        .strip_prefix("/?sso_error=")
        .unwrap_or_else(|| panic!("not refused: {location}"))
        .to_owned()
}

/// The session a successful callback opened, as a bearer client.
fn session(collector: SocketAddr, r: &Resp) -> Api {
    assert_eq!(r.status, 302, "{}\n{}", r.head, r.body);
    assert_eq!(r.header("location").as_deref(), Some("/"));
    let token = r
        .head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .find_map(|(_, v)| v.trim().strip_prefix("mcpwatch_session="))
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie: {}", r.head))
        .to_owned();
    Api::new(collector, Some(&token))
}

/// Signs `user` in through the provider; the callback's answer.
fn sign_in(c: &CollectorProc, op: &OidcProvider, user: &str) -> Resp {
    match op.walk(c.http, user) {
        Walk::Back { path, binding } => deliver(c.http, &path, &binding),
        Walk::Refused(to) => panic!("sign-in of {user} not started: {to}"),
    }
}

fn grants(api: &Api) -> Vec<String> {
    let me = api.get("/api/v1/me");
    assert_eq!(me.status, 200, "{}", me.body);
    me.json()["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap().to_owned())
        .collect()
}

/// Audit rows of the callback route, newest first.
fn callback_audit(admin: &Api) -> Vec<Value> {
    let r = admin.get("/api/v1/audit?limit=500");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "GET /api/v1/oidc/callback")
        .cloned()
        .collect()
}

#[test]
fn oidc_sign_in_maps_groups_to_roles_and_recomputes_them_at_every_sign_in() {
    let tmp = tempfile::tempdir().unwrap();
    let users = json!({
        "alice": {"groups": ["sre", "staff"]},
        "carol": {"groups": ["contractors"]},
        "dave": {"groups": ["staff"]},
    });
    let (c, mut op) = setup(tmp.path(), &users);
    let admin = Api::new(c.http, Some(&admin_token(&c.db, "root-token", None)));
    let info = Api::new(c.http, None).get("/api/v1/oidc");
    assert_eq!(info.json()["display_name"], "Test IdP", "{}", info.body);

    // First sign-in makes the account, bound as its groups say.
    let alice = session(c.http, &sign_in(&c, &op, "alice"));
    let g = grants(&alice);
    assert!(g.contains(&"alerts:ack@{team=\"a\"}".to_owned()), "{g:?}");
    assert!(g.contains(&"hosts:read".to_owned()), "{g:?}");
    assert!(
        !g.iter().any(|p| p == "alerts:ack"),
        "operator only on team a: {g:?}"
    );
    let listed = admin.get("/api/v1/users").json();
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "alice")
        .cloned()
        .expect("alice listed");
    assert_eq!(row["sso"], true);
    let alice_id = row["id"].as_i64().unwrap();
    assert!(row["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["origin"] == "oidc"));
    // The session lasts at most `[oidc] session_lifetime`.
    let sessions = alice.get("/api/v1/sessions").json();
    let expires = sessions["items"][0]["expires_ms"]
        .as_i64()
        .or_else(|| sessions[0]["expires_ms"].as_i64())
        .unwrap_or_else(|| panic!("{sessions}"));
    assert!(
        expires <= mcpwatch_collector::now_ms() + 3_600_000,
        "{sessions}"
    );

    // Its tokens last no longer than one of its sessions (its groups may change meanwhile).
    let token = alice.send("POST", "/api/v1/tokens", &json!({"name": "ci"}));
    assert_eq!(token.status, 201, "{}", token.body);
    let token_expires = token.json()["expires_ms"].as_i64().expect("capped");
    assert!(
        token_expires <= mcpwatch_collector::now_ms() + 3_600_000,
        "{}",
        token.body
    );

    // A binding made by hand stays; the provider's groups decide the rest at each sign-in.
    let manual = admin.send(
        "POST",
        &format!("/api/v1/users/{alice_id}/bindings"),
        &json!({"role": "viewer", "host_selector": "{team=\"z\"}"}),
    );
    assert_eq!(manual.status, 201, "{}", manual.body);
    op.set_users(&json!({"alice": {"groups": ["staff"]}, "dave": {"groups": ["staff"]}}));
    let again = session(c.http, &sign_in(&c, &op, "alice"));
    let g = grants(&again);
    assert!(
        !g.iter().any(|p| p.starts_with("alerts:ack")),
        "left sre: {g:?}"
    );
    assert!(
        g.contains(&"hosts:read@{team=\"z\"}".to_owned()),
        "manual kept: {g:?}"
    );
    // Bindings are read per request: the older session changed at once too.
    assert!(!grants(&alice).iter().any(|p| p.starts_with("alerts:ack")));

    // Password sign-in is off for accounts of single sign-on, even with a password set.
    let set = admin.send(
        "PUT",
        &format!("/api/v1/users/{alice_id}/password"),
        &json!({"password": "Glacier-lantern-oak-7"}),
    );
    assert_eq!(set.status, 204, "{}", set.body);
    let pw = Api::new(c.http, None).send(
        "POST",
        "/api/v1/sessions",
        &json!({"username": "alice", "password": "Glacier-lantern-oak-7"}),
    );
    assert_eq!(pw.status, 401, "{}", pw.body);

    // No group that grants anything; a local account's name; a user the provider does not know.
    op.set_users(&json!({"carol": {"groups": ["contractors"]}, "dave": {"groups": ["staff"]}}));
    assert_eq!(sso_error(&sign_in(&c, &op, "carol")), "no_access");
    assert!(
        !admin.get("/api/v1/users").body.contains("\"carol\""),
        "a refused first sign-in makes no account"
    );
    local_user(&c.db, "dave", ROOT_PW, "viewer", "");
    assert_eq!(sso_error(&sign_in(&c, &op, "dave")), "name_taken");

    // The provider rotates its signing key: the new key is fetched when a token names it.
    op.set_users(&json!({"alice": {"groups": ["sre"]}}));
    op.restart(true);
    let rotated = session(c.http, &sign_in(&c, &op, "alice"));
    assert!(grants(&rotated).contains(&"alerts:ack@{team=\"a\"}".to_owned()));

    // The provider down: the button answers a clear error; local accounts still sign in.
    op.stop();
    let down = request_with(c.http, "GET", "/api/v1/oidc/login", None, &[], None).unwrap();
    assert_eq!(sso_error(&down), "provider_unavailable");
    local_user(&c.db, "root", ROOT_PW, "admin", "");
    let local = Api::new(c.http, None).send(
        "POST",
        "/api/v1/sessions",
        &json!({"username": "root", "password": ROOT_PW}),
    );
    assert_eq!(local.status, 201, "{}", local.body);

    let rows = callback_audit(&admin);
    let detail = |r: &Value| r["detail"].as_str().unwrap_or("").to_owned();
    assert!(
        rows.iter().any(|r| r["result"] == 201
            && r["actor"] == "user:alice"
            && detail(r).contains("(account created)")),
        "{rows:#?}"
    );
    assert!(
        rows.iter()
            .any(|r| r["result"] == 401 && detail(r).contains("none of the groups of carol")),
        "{rows:#?}"
    );
    let refused = metric(
        &c.metrics(),
        "mcpwatch_collector_sso_refused_total{reason=\"no_access\"}",
    );
    assert_eq!(refused, Some(1.0));
}

#[test]
fn oidc_refuses_tampered_replayed_and_forged_answers_and_audits_each() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, op) = setup(tmp.path(), &json!({"alice": {"groups": ["staff"]}}));
    let admin = Api::new(c.http, Some(&admin_token(&c.db, "root-token", None)));
    let walk = |user: &str| match op.walk(c.http, user) {
        Walk::Back { path, binding } => (path, binding),
        Walk::Refused(to) => panic!("not started: {to}"),
    };
    let param = |path: &str, name: &str| {
        path.split(['?', '&'])
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in {path}"))
            .to_owned()
    };

    // Another site cannot start a sign-in for a visitor; a malformed callback is refused.
    let cross = request_with(
        c.http,
        "GET",
        "/api/v1/oidc/login",
        None,
        &[("Sec-Fetch-Site", "cross-site")],
        None,
    )
    .unwrap();
    assert_eq!(sso_error(&cross), "cross_site");
    let doubled = deliver(c.http, "/api/v1/oidc/callback?state=a&state=b&code=c", "x");
    assert_eq!(sso_error(&doubled), "expired_or_tampered");

    // A tampered state matches no sign-in under way.
    let (path, binding) = walk("alice");
    let state = param(&path, "state");
    let tampered = path.replace(&state, &format!("{state}x"));
    assert_eq!(
        sso_error(&deliver(c.http, &tampered, &binding)),
        "expired_or_tampered"
    );
    // Another browser's callback (no binding of its own) is refused, and uses it up.
    assert_eq!(
        sso_error(&deliver(c.http, &path, "not-this-browser")),
        "other_browser"
    );
    assert_eq!(
        sso_error(&deliver(c.http, &path, &binding)),
        "expired_or_tampered"
    );

    // A good one works once; replayed, its state is gone; its code in a new sign-in is
    // refused by the provider.
    let (path, binding) = walk("alice");
    session(c.http, &deliver(c.http, &path, &binding));
    assert_eq!(
        sso_error(&deliver(c.http, &path, &binding)),
        "expired_or_tampered"
    );
    let used_code = param(&path, "code");
    let (fresh, fresh_binding) = walk("alice");
    let replayed = fresh.replace(&param(&fresh, "code"), &used_code);
    assert_eq!(
        sso_error(&deliver(c.http, &replayed, &fresh_binding)),
        "token_refused"
    );

    // The provider says no.
    let (path, binding) = walk("alice");
    let denied = format!(
        "/api/v1/oidc/callback?error=access_denied&state={}",
        param(&path, "state")
    );
    assert_eq!(
        sso_error(&deliver(c.http, &denied, &binding)),
        "provider_refused"
    );

    // ID tokens that must not pass.
    for (mode, reason) in [
        ("wrong_nonce", "wrong nonce"),
        ("unknown_key", "signed by an unknown key"),
        ("expired", "expired"),
        ("wrong_aud", "wrong audience"),
    ] {
        op.tamper(mode);
        let (path, binding) = walk("alice");
        assert_eq!(
            sso_error(&deliver(c.http, &path, &binding)),
            "token_refused",
            "{mode}"
        );
        let rows = callback_audit(&admin);
        let newest = &rows[0];
        assert_eq!(newest["result"], 401, "{mode}: {newest}");
        assert!(
            newest["detail"].as_str().unwrap_or("").contains(reason),
            "{mode}: {newest}"
        );
    }
    op.tamper("none");
    session(c.http, &sign_in(&c, &op, "alice"));

    let rows = callback_audit(&admin);
    for reason in [
        "no sign-in is under way with this state",
        "started in another browser",
        "refused the code",
        "refused the sign-in: access_denied",
    ] {
        assert!(
            rows.iter()
                .any(|r| r["result"] == 401 && r["detail"].as_str().unwrap_or("").contains(reason)),
            "{reason}: {rows:#?}"
        );
    }
    let m = c.metrics();
    assert_eq!(
        metric(
            &m,
            "mcpwatch_collector_sso_refused_total{reason=\"token_refused\"}"
        ),
        Some(5.0)
    );
}
