//! Sign-in of local accounts through the real collector: the password policy (length,
//! common passwords, the username, reuse of recent ones, maximum age), TOTP enrollment and
//! login with it (codes good once, recovery codes good once, guesses lock the account),
//! `[auth] require_mfa` holding an admin's session to enrollment, and an admin's reset,
//! audited.

use std::path::Path;

use mcpwatch_collector::auth::totp;
use mcpwatch_collector::store::admin::with_db;
use mcpwatch_tests::api::{admin_token, local_user, Api, Resp};
use mcpwatch_tests::process::CollectorProc;
use mcpwatch_tests::Pki;
use serde_json::{json, Value};

const ADMIN_PW: &str = "Adm1n-correct-horse";
const BOB_PW: &str = "Tundra-kettle-fig-42";

fn collector(dir: &Path, auth: &str) -> CollectorProc {
    let pki = Pki::new(&dir.join("pki"));
    // Every test signs in many times from one address: the per-address limit is not what
    // they are about.
    let config = format!("[api]\nlogin_attempts_per_minute = 1000\n[auth]\n{auth}\n");
    CollectorProc::start(&pki, &dir.join("collector"), &config)
}

fn login(api: &Api, user: &str, pw: &str, code: Option<&str>) -> Resp {
    let mut body = json!({"username": user, "password": pw});
    if let Some(c) = code {
        body["totp"] = json!(c);
    }
    Api::new(api.addr, None).send("POST", "/api/v1/sessions", &body)
}

fn session(api: &Api, user: &str, pw: &str, code: Option<&str>) -> Api {
    let r = login(api, user, pw, code);
    assert_eq!(r.status, 201, "login {user}: {}", r.body);
    Api::new(api.addr, r.json()["token"].as_str())
}

fn now_s() -> u64 {
    (mcpwatch_collector::now_ms() / 1000) as u64
}

/// Enrolls TOTP for the session's user (whose password is `pw`): the secret, and the
/// recovery codes.
fn enroll(s: &Api, pw: &str) -> (Vec<u8>, Vec<String>) {
    let start = |pw: &str| {
        s.send(
            "POST",
            "/api/v1/me/mfa/totp",
            &json!({"current_password": pw}),
        )
    };
    // A session alone (a stolen cookie) cannot bind a factor.
    let e = start("not-the-password-1");
    assert_eq!(e.status, 422, "{}", e.body);
    assert!(e.body.contains("current_password is wrong"), "{}", e.body);
    let e = start(pw);
    assert_eq!(e.status, 201, "{}", e.body);
    let v = e.json();
    assert!(v["otpauth_uri"]
        .as_str()
        .unwrap()
        .starts_with("otpauth://totp/mcpwatch:"));
    assert!(v["qr_svg"].as_str().unwrap().starts_with("<svg"));
    let secret = totp::from_base32(v["secret"].as_str().unwrap()).unwrap();
    // A wrong first code activates nothing.
    let wrong = s.send(
        "POST",
        "/api/v1/me/mfa/totp/confirm",
        &json!({"code": "000000"}),
    );
    if totp::code_at(&secret, now_s()).unwrap() != "000000" {
        assert_eq!(wrong.status, 422, "{}", wrong.body);
    }
    let code = totp::code_at(&secret, now_s()).unwrap();
    let c = s.send(
        "POST",
        "/api/v1/me/mfa/totp/confirm",
        &json!({"code": code}),
    );
    assert_eq!(c.status, 200, "{}", c.body);
    let codes: Vec<String> = c.json()["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    (secret, codes)
}

fn audit_actions(api: &Api) -> Vec<Value> {
    let r = api.get("/api/v1/audit?limit=1000");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["items"].as_array().unwrap().clone()
}

#[test]
fn sign_in_password_policy_refuses_short_common_and_reused_passwords() {
    let tmp = tempfile::tempdir().unwrap();
    let c = collector(tmp.path(), "min_password_length = 14\npassword_history = 3");
    let admin = Api::new(c.http, Some(&admin_token(&c.db, "root", None)));
    let create = |name: &str, pw: &str| {
        admin.send(
            "POST",
            "/api/v1/users",
            &json!({"username": name, "password": pw, "roles": ["viewer"]}),
        )
    };
    for (pw, why) in [
        ("Short-pw-12", "at least 14 characters"),
        ("iloveyou123456", "most common"),
        ("Qwerty1234567890!", "most common"),
        ("my-carol-password-1", "must not contain the username"),
    ] {
        let r = create("carol", pw);
        assert_eq!(r.status, 422, "{pw}: {}", r.body);
        assert!(
            r.json()["error"]["message"].as_str().unwrap().contains(why),
            "{pw}: {}",
            r.body
        );
    }
    let pws = [
        "Tundra-kettle-fig-42",
        "Glacier-lantern-oak-7",
        "Meadow-violin-rust-19",
        "Harbor-pepper-moth-33",
    ];
    let r = create("carol", pws[0]);
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_i64().unwrap();
    let carol = session(&admin, "carol", pws[0], None);
    let change = |from: &str, to: &str| {
        carol.send(
            "PUT",
            &format!("/api/v1/users/{id}/password"),
            &json!({"password": to, "current_password": from}),
        )
    };
    // The current password, then one of the last three, are refused with the reason.
    let r = change(pws[0], pws[0]);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("differ from the last 3"), "{}", r.body);
    assert_eq!(change(pws[0], pws[1]).status, 204);
    let r = change(pws[1], pws[0]);
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(change(pws[1], pws[2]).status, 204);
    assert_eq!(change(pws[2], pws[3]).status, 204);
    // Four changes back, the first one is usable again.
    assert_eq!(change(pws[3], pws[0]).status, 204);
    // An admin's reset follows the same policy, but is not compared with the user's old
    // passwords: the answer would tell the admin what they were.
    let reset = |pw: &str| {
        admin.send(
            "PUT",
            &format!("/api/v1/users/{id}/password"),
            &json!({"password": pw}),
        )
    };
    let r = reset("Short-pw-12");
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(reset(pws[3]).status, 204);
    // An admin changing its own password gives the current one like anyone.
    let root_id = local_user(&c.db, "root", ADMIN_PW, "admin", "");
    let root = session(&admin, "root", ADMIN_PW, None);
    let own = |body: Value| root.send("PUT", &format!("/api/v1/users/{root_id}/password"), &body);
    let r = own(json!({"password": "Glacier-lantern-oak-7"}));
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.contains("current_password is required"),
        "{}",
        r.body
    );
    let r = own(json!({"password": "Glacier-lantern-oak-7", "current_password": ADMIN_PW}));
    assert_eq!(r.status, 204, "{}", r.body);
}

#[test]
fn sign_in_an_expired_password_must_be_changed_before_anything_else() {
    let tmp = tempfile::tempdir().unwrap();
    let c = collector(tmp.path(), "password_max_age = \"1d\"");
    let id = local_user(&c.db, "dave", BOB_PW, "viewer", "");
    // Set two days ago.
    with_db(&c.db, |conn| {
        conn.execute(
            "UPDATE users SET password_changed_ms = ?2 WHERE id = ?1",
            rusqlite::params![id, mcpwatch_collector::now_ms() - 2 * 86_400_000],
        )?;
        Ok(())
    })
    .unwrap();
    let api = Api::new(c.http, None);
    let dave = session(&api, "dave", BOB_PW, None);
    let me = dave.get("/api/v1/me");
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["restriction"], "password_expired");
    let hosts = dave.get("/api/v1/hosts");
    assert_eq!(
        (hosts.status, hosts.code().as_str()),
        (403, "password_expired"),
        "{}",
        hosts.body
    );
    let r = dave.send(
        "PUT",
        &format!("/api/v1/users/{id}/password"),
        &json!({"password": "Glacier-lantern-oak-7", "current_password": BOB_PW}),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    // The same session goes on, unrestricted.
    assert_eq!(dave.get("/api/v1/hosts").status, 200);
    assert!(dave.get("/api/v1/me").json().get("restriction").is_none());
}

#[test]
fn sign_in_totp_codes_and_recovery_codes_work_once_and_guesses_lock_the_account() {
    let tmp = tempfile::tempdir().unwrap();
    let c = collector(tmp.path(), "require_mfa = \"admins\"");
    local_user(&c.db, "root", ADMIN_PW, "admin", "");
    let bob_id = local_user(&c.db, "bob", BOB_PW, "viewer", "");
    let api = Api::new(c.http, None);

    // The admin must enrol before anything else; the enrolling session is then free.
    let root = session(&api, "root", ADMIN_PW, None);
    assert_eq!(
        root.get("/api/v1/me").json()["restriction"],
        "mfa_enrollment_required"
    );
    let users = root.get("/api/v1/users");
    assert_eq!(
        (users.status, users.code().as_str()),
        (403, "mfa_enrollment_required")
    );
    let tokens = root.send("POST", "/api/v1/tokens", &json!({"name": "ci"}));
    assert_eq!(
        tokens.status, 403,
        "no token from a session without its second factor"
    );
    let status = root.get("/api/v1/me/mfa").json();
    assert_eq!(
        (status["required"].as_bool(), status["enabled"].as_bool()),
        (Some(true), Some(false))
    );
    let (root_secret, root_codes) = enroll(&root, ADMIN_PW);
    assert_eq!(root.get("/api/v1/users").status, 200);
    assert_eq!(root.get("/api/v1/me/mfa").json()["recovery_codes_left"], 10);
    let again = root.send(
        "POST",
        "/api/v1/me/mfa/totp",
        &json!({"current_password": ADMIN_PW}),
    );
    assert_eq!(again.status, 409, "one factor at a time: {}", again.body);

    // Login now needs the code; the password alone (the console's first step) is answered
    // `mfa_required` and counts as no failure, however often.
    for _ in 0..7 {
        let r = login(&api, "root", ADMIN_PW, None);
        assert_eq!(
            (r.status, r.code().as_str()),
            (401, "mfa_required"),
            "{}",
            r.body
        );
    }
    // Each code (time step) works once; typed as apps show it ("123 456").
    let next = totp::code_at(&root_secret, now_s() + 30).unwrap();
    let spaced = format!("{} {}", &next[..3], &next[3..]);
    let fresh = session(&api, "root", ADMIN_PW, Some(&spaced));
    assert!(fresh.get("/api/v1/me").json().get("restriction").is_none());
    let replay = login(&api, "root", ADMIN_PW, Some(&next));
    assert_eq!(replay.status, 401, "a code is good once: {}", replay.body);
    let older = totp::code_at(&root_secret, now_s()).unwrap();
    if older != next {
        assert_eq!(
            login(&api, "root", ADMIN_PW, Some(&older)).status,
            401,
            "steps only move forward"
        );
    }
    // A recovery code, typed loosely, works once.
    let loose = root_codes[0].to_uppercase().replace('-', " ");
    assert_eq!(login(&api, "root", ADMIN_PW, Some(&loose)).status, 201);
    assert_eq!(
        login(&api, "root", ADMIN_PW, Some(&root_codes[0])).status,
        401
    );
    assert_eq!(fresh.get("/api/v1/me/mfa").json()["recovery_codes_left"], 9);

    // An admin cannot strip its own factor through the API (a stolen session would).
    let root_id = fresh.get("/api/v1/me").json()["user_id"].as_i64().unwrap();
    let own = fresh.send(
        "DELETE",
        &format!("/api/v1/users/{root_id}/mfa"),
        &json!({}),
    );
    assert_eq!(own.status, 422, "{}", own.body);
    assert!(own.body.contains("user mfa-reset"), "{}", own.body);

    // bob (a viewer: not required) enrols anyway, which ends his other sessions; guessing
    // his codes locks him out like guessing his password, though each guess came with the
    // right password.
    let bob_elsewhere = session(&api, "bob", BOB_PW, None);
    let bob = session(&api, "bob", BOB_PW, None);
    let (bob_secret, _) = enroll(&bob, BOB_PW);
    assert_eq!(
        bob_elsewhere.get("/api/v1/me").status,
        401,
        "other session ended"
    );
    assert_eq!(bob.get("/api/v1/me").status, 200, "the enrolling one stays");
    let good = totp::code_at(&bob_secret, now_s()).unwrap();
    let bad = if good == "123456" { "654321" } else { "123456" };
    for i in 0..5 {
        assert_eq!(
            login(&api, "bob", BOB_PW, Some(bad)).status,
            401,
            "guess {i}"
        );
    }
    let locked = login(
        &api,
        "bob",
        BOB_PW,
        Some(&totp::code_at(&bob_secret, now_s() + 30).unwrap()),
    );
    assert_eq!(locked.status, 401, "locked even with the right code");

    // The admin resets bob's factor: audited, his sessions end.
    let r = fresh.send("DELETE", &format!("/api/v1/users/{bob_id}/mfa"), &json!({}));
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(bob.get("/api/v1/me").status, 401);
    let rows = audit_actions(&fresh);
    assert!(
        rows.iter().any(|r| r["action"]
            .as_str()
            .is_some_and(|a| a.ends_with("/users/{id}/mfa"))
            && r["result"] == 204
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("second factor of bob reset"))),
        "{rows:#?}"
    );
    assert!(
        rows.iter().any(|r| r["detail"]
            .as_str()
            .is_some_and(|d| d.contains("second factor wrong"))),
        "wrong codes are audited"
    );
    assert_eq!(
        fresh.get(&format!("/api/v1/users/{bob_id}")).json()["mfa_enabled"],
        false
    );
}
