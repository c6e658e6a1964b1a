//! The HTTP API's permission matrix (issue 5), from one table: every route of the running
//! collector's OpenAPI document × {anonymous, viewer, operator, admin, a role scoped to team A
//! acting on team B's host, an expired session, a revoked token, a token lacking the
//! permission} → the status the route's requirement calls for. A route of the document
//! missing from the table (or a row the document does not have) fails the test, and any
//! difference prints the whole matrix.
//!
//! Real processes: one collector with an alert rule and a webhook receiver (a local capture
//! server, so test-sends succeed), and two simulated agents, `host-a` (labels `team=a`) and
//! `host-b` (`team=b`), whose samples fire an alert on each before they disconnect (server
//! control then answers 503). Every request on a route that changes something gets a fresh
//! object made just before it (silence, user, role, token, session, binding, rule,
//! receiver), so no result depends on the order of the matrix. Users are made in the
//! database as the admin CLI does, and log in through the API.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mcpwatch_collector::auth::credential::{self, Kind};
use mcpwatch_collector::auth::password;
use mcpwatch_collector::now_ms;
use mcpwatch_collector::store::query::{certificates, roles, tokens, users};
use mcpwatch_collector::store::{admin, StoreError};
use mcpwatch_tests::api::{admin_token, request, Resp};
use mcpwatch_tests::client;
use mcpwatch_tests::process::CollectorProc;
use mcpwatch_tests::receivers::{HttpCapture, Reply};
use mcpwatch_tests::sim::{fast_alerting, test_high_rules, AckWait, SimAgent};
use mcpwatch_tests::{wait_for, Pki};
use rusqlite::Connection;
use serde_json::{json, Value};

const HOST_A: &str = "host-a";
const HOST_B: &str = "host-b";
const PASSWORD: &str = "Matrix-correct-horse-42";
const HMAC_KEY: &str = "api-matrix-hmac-secret";
/// The webhook receiver of the configuration.
const RECEIVER: &str = "hook";
/// The configured rule (fires on `test_value > 0.5`).
const RULE: &str = "test_high";

// ---- the table -----------------------------------------------------------------------------

/// What a route requires of its caller.
#[derive(Debug, Clone, Copy)]
enum Need {
    /// Login: no credential needed. The matrix sends wrong credentials, so every caller
    /// gets 401 whatever its `Authorization` header.
    Public,
    /// Any live credential: the caller's own identity, session, tokens.
    Authenticated,
    /// The permission for some hosts or all: lists (filtered by the caller's scope) and
    /// fleet-wide objects readable with it.
    Perm(&'static str),
    /// The permission on the object's host. The matrix targets team B's host (or its alert,
    /// or a silence limited to it): 403 without the permission, 404 (invisible) when the
    /// permission is scoped to team A.
    HostPerm(&'static str),
    /// Creates an object limited to team B's host, named in the request body: the
    /// permission for that host, 403 otherwise (scoped to team A included).
    HostCreate(&'static str),
    /// Fleet-wide configuration: the permission unscoped, 403 otherwise (a scoped grant of
    /// a global permission grants nothing).
    Global(&'static str),
    /// A fleet-wide object of a kind teams may own (a rule, a receiver): the permission
    /// unscoped; 403 without it; 404 (invisible) when it is scoped to team A, whose grants
    /// reach only objects owned inside team A.
    Owned(&'static str),
    /// Another user's token or session: `users:admin` unscoped, else 404 (invisible).
    OtherUsers,
    /// Public data, no credential looked at: every caller gets the allowed answer.
    Open,
    /// The caller's own account, through a login session only (its second factor): 403 for
    /// an API token, even one of a user.
    OwnSession,
}

/// `(method, path template as in the OpenAPI document, requirement, status when allowed)`.
const TABLE: &[(&str, &str, Need, u16)] = &[
    // sessions
    ("POST", "/api/v1/sessions", Need::Public, 201),
    (
        "DELETE",
        "/api/v1/sessions/current",
        Need::Authenticated,
        204,
    ),
    ("GET", "/api/v1/me", Need::Authenticated, 200),
    ("GET", "/api/v1/sessions", Need::Authenticated, 200),
    ("DELETE", "/api/v1/sessions/{id}", Need::OtherUsers, 204),
    // single sign-on: not configured here, so 404 to everyone (`oidc.rs` tests it)
    ("GET", "/api/v1/oidc", Need::Open, 404),
    ("GET", "/api/v1/oidc/login", Need::Open, 404),
    ("GET", "/api/v1/oidc/callback", Need::Open, 404),
    // second factors; the enrollment row runs first, so the confirmation finds one waiting
    ("GET", "/api/v1/me/mfa", Need::OwnSession, 200),
    ("POST", "/api/v1/me/mfa/totp", Need::OwnSession, 201),
    ("POST", "/api/v1/me/mfa/totp/confirm", Need::OwnSession, 422),
    (
        "DELETE",
        "/api/v1/users/{id}/mfa",
        Need::Global("users:admin"),
        204,
    ),
    // hosts
    ("GET", "/api/v1/hosts", Need::Perm("hosts:read"), 200),
    ("GET", "/api/v1/fleet", Need::Perm("hosts:read"), 200),
    (
        "GET",
        "/api/v1/hosts/{agent_id}",
        Need::HostPerm("hosts:read"),
        200,
    ),
    (
        "PUT",
        "/api/v1/hosts/{agent_id}/labels",
        Need::HostPerm("hosts:write"),
        200,
    ),
    (
        "POST",
        "/api/v1/hosts/{agent_id}/revoke",
        Need::HostPerm("hosts:write"),
        200,
    ),
    (
        "POST",
        "/api/v1/hosts/{agent_id}/unrevoke",
        Need::HostPerm("hosts:write"),
        200,
    ),
    (
        "GET",
        "/api/v1/hosts/{agent_id}/servers",
        Need::HostPerm("hosts:read"),
        200,
    ),
    (
        "GET",
        "/api/v1/hosts/{agent_id}/servers/{server}/tools",
        Need::HostPerm("hosts:read"),
        200,
    ),
    // The agent is offline: the allowed answer is 503 agent_offline.
    (
        "POST",
        "/api/v1/hosts/{agent_id}/servers/{server}/{action}",
        Need::HostPerm("servers:control"),
        503,
    ),
    (
        "POST",
        "/api/v1/hosts/{agent_id}/reload",
        Need::HostPerm("servers:control"),
        503,
    ),
    (
        "GET",
        "/api/v1/hosts/{agent_id}/certificates",
        Need::HostPerm("hosts:read"),
        200,
    ),
    (
        "POST",
        "/api/v1/hosts/{agent_id}/certificates/{serial}/revoke",
        Need::HostPerm("hosts:write"),
        200,
    ),
    // enrollment: the agent's route checks its bootstrap token, never a bearer
    ("POST", "/api/v1/enroll", Need::Public, 201),
    ("GET", "/api/v1/enroll/ca", Need::Open, 200),
    (
        "GET",
        "/api/v1/enroll-tokens",
        Need::Perm("hosts:enroll"),
        200,
    ),
    (
        "POST",
        "/api/v1/enroll-tokens",
        Need::HostCreate("hosts:enroll"),
        201,
    ),
    (
        "POST",
        "/api/v1/enroll-tokens/{id}/revoke",
        Need::HostPerm("hosts:enroll"),
        204,
    ),
    ("GET", "/api/v1/events", Need::Perm("hosts:read"), 200),
    // metrics
    ("GET", "/api/v1/series", Need::Perm("metrics:read"), 200),
    (
        "GET",
        "/api/v1/query_range",
        Need::HostPerm("metrics:read"),
        200,
    ),
    // alerts
    ("GET", "/api/v1/alerts", Need::Perm("alerts:read"), 200),
    (
        "GET",
        "/api/v1/alerts/history",
        Need::Perm("alerts:read"),
        200,
    ),
    (
        "GET",
        "/api/v1/alerts/pending",
        Need::Perm("alerts:read"),
        200,
    ),
    (
        "GET",
        "/api/v1/alerts/{fingerprint}",
        Need::HostPerm("alerts:read"),
        200,
    ),
    (
        "POST",
        "/api/v1/alerts/{fingerprint}/ack",
        Need::HostPerm("alerts:ack"),
        200,
    ),
    // silences
    ("GET", "/api/v1/silences", Need::Perm("alerts:read"), 200),
    (
        "POST",
        "/api/v1/silences",
        Need::HostCreate("silences:write"),
        201,
    ),
    (
        "GET",
        "/api/v1/silences/{id}",
        Need::HostPerm("alerts:read"),
        200,
    ),
    (
        "DELETE",
        "/api/v1/silences/{id}",
        Need::HostPerm("silences:write"),
        204,
    ),
    // rules: a fleet-wide rule is read with fleet-wide alerts:read (its selectors name every
    // team's hosts) and changed with fleet-wide rules:write; team A's grants list only team
    // A's rules and are refused a fleet-wide one (403 to write it: the owner scope is in the
    // request or the stored rule).
    ("GET", "/api/v1/rules", Need::Perm("alerts:read"), 200),
    (
        "GET",
        "/api/v1/rules/{name}",
        Need::Owned("alerts:read"),
        200,
    ),
    (
        "PUT",
        "/api/v1/rules/{name}",
        Need::Global("rules:write"),
        200,
    ),
    (
        "DELETE",
        "/api/v1/rules/{name}",
        Need::Global("rules:write"),
        200,
    ),
    (
        "POST",
        "/api/v1/rules/dry-run",
        Need::Global("rules:write"),
        200,
    ),
    // receivers: fleet-wide ones read and changed with fleet-wide receivers:write; team A's
    // grants list only team A's. Create, replace and delete act on fresh receivers defined
    // through the API; test-send reaches the capture server.
    (
        "GET",
        "/api/v1/receivers",
        Need::Perm("receivers:write"),
        200,
    ),
    (
        "POST",
        "/api/v1/receivers",
        Need::Global("receivers:write"),
        201,
    ),
    (
        "GET",
        "/api/v1/receivers/{name}",
        Need::Owned("receivers:write"),
        200,
    ),
    (
        "PUT",
        "/api/v1/receivers/{name}",
        Need::Global("receivers:write"),
        200,
    ),
    (
        "DELETE",
        "/api/v1/receivers/{name}",
        Need::Owned("receivers:write"),
        200,
    ),
    (
        "POST",
        "/api/v1/receivers/{name}/test",
        Need::Owned("receivers:write"),
        200,
    ),
    // routes defined through the API: as receivers (a fleet-wide route needs fleet-wide
    // receivers:write; team A's grants see only team A's routes).
    ("GET", "/api/v1/routes", Need::Perm("receivers:write"), 200),
    (
        "GET",
        "/api/v1/routes/{name}",
        Need::Owned("receivers:write"),
        200,
    ),
    (
        "PUT",
        "/api/v1/routes/{name}",
        Need::Global("receivers:write"),
        201,
    ),
    (
        "DELETE",
        "/api/v1/routes/{name}",
        Need::Owned("receivers:write"),
        204,
    ),
    // notifications: the delivery log and dead letters, seen through alerts:read on the
    // alert's host; a dead letter about team B's host is retried or discarded with
    // alerts:ack there; a fleet-wide receiver's bulk retry needs fleet-wide receivers:write.
    (
        "GET",
        "/api/v1/notifications",
        Need::Perm("alerts:read"),
        200,
    ),
    (
        "GET",
        "/api/v1/notifications/dead",
        Need::Perm("alerts:read"),
        200,
    ),
    (
        "POST",
        "/api/v1/notifications/dead/{id}/retry",
        Need::HostPerm("alerts:ack"),
        200,
    ),
    (
        "DELETE",
        "/api/v1/notifications/dead/{id}",
        Need::HostPerm("alerts:ack"),
        200,
    ),
    (
        "POST",
        "/api/v1/notifications/dead/retry",
        Need::Owned("receivers:write"),
        200,
    ),
    // users, roles, bindings
    ("GET", "/api/v1/users", Need::Global("users:admin"), 200),
    ("POST", "/api/v1/users", Need::Global("users:admin"), 201),
    (
        "GET",
        "/api/v1/users/{id}",
        Need::Global("users:admin"),
        200,
    ),
    (
        "PUT",
        "/api/v1/users/{id}/password",
        Need::Global("users:admin"),
        204,
    ),
    (
        "POST",
        "/api/v1/users/{id}/disable",
        Need::Global("users:admin"),
        200,
    ),
    (
        "POST",
        "/api/v1/users/{id}/enable",
        Need::Global("users:admin"),
        200,
    ),
    (
        "GET",
        "/api/v1/users/{id}/bindings",
        Need::Global("users:admin"),
        200,
    ),
    (
        "POST",
        "/api/v1/users/{id}/bindings",
        Need::Global("users:admin"),
        201,
    ),
    (
        "DELETE",
        "/api/v1/users/{id}/bindings/{binding_id}",
        Need::Global("users:admin"),
        204,
    ),
    ("GET", "/api/v1/roles", Need::Global("users:admin"), 200),
    (
        "PUT",
        "/api/v1/roles/{name}",
        Need::Global("users:admin"),
        201,
    ),
    (
        "DELETE",
        "/api/v1/roles/{name}",
        Need::Global("users:admin"),
        204,
    ),
    // tokens: one's own, or another user's with users:admin
    ("GET", "/api/v1/tokens", Need::Authenticated, 200),
    ("POST", "/api/v1/tokens", Need::Authenticated, 201),
    ("DELETE", "/api/v1/tokens/{id}", Need::OtherUsers, 204),
    // audit
    ("GET", "/api/v1/audit", Need::Global("audit:read"), 200),
    // backups of the whole database
    ("GET", "/api/v1/backups", Need::Global("admin:backup"), 200),
    ("POST", "/api/v1/backups", Need::Global("admin:backup"), 201),
    // the live stream (only its head is read)
    ("GET", "/api/v1/stream", Need::Perm("hosts:read"), 200),
];

// ---- the principals --------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    Viewer,
    Operator,
    Admin,
    /// A user bound to `admin` for `{team="a"}`, acting on team B's objects.
    Scoped,
    ExpiredSession,
    RevokedToken,
    /// The admin user's token limited to `hosts:read`.
    Lacking,
}

const WHO: [Who; 8] = [
    Who::Anonymous,
    Who::Viewer,
    Who::Operator,
    Who::Admin,
    Who::Scoped,
    Who::ExpiredSession,
    Who::RevokedToken,
    Who::Lacking,
];

const VIEWER: &[&str] = &["hosts:read", "metrics:read", "alerts:read"];
const OPERATOR: &[&str] = &[
    "hosts:read",
    "metrics:read",
    "alerts:read",
    "alerts:ack",
    "silences:write",
    "servers:control",
];
const ALL: &[&str] = &[
    "hosts:read",
    "hosts:write",
    "hosts:enroll",
    "metrics:read",
    "alerts:read",
    "alerts:ack",
    "silences:write",
    "rules:write",
    "receivers:write",
    "servers:control",
    "users:admin",
    "audit:read",
    "admin:backup",
];

impl Who {
    fn label(self) -> &'static str {
        match self {
            Who::Anonymous => "anonymous",
            Who::Viewer => "viewer",
            Who::Operator => "operator",
            Who::Admin => "admin",
            Who::Scoped => "scoped-a",
            Who::ExpiredSession => "expired",
            Who::RevokedToken => "revoked",
            Who::Lacking => "lacking",
        }
    }

    /// Whether the credential is a live login session.
    fn session(self) -> bool {
        matches!(self, Who::Viewer | Who::Operator | Who::Admin | Who::Scoped)
    }

    /// Whether the credential authenticates at all.
    fn live(self) -> bool {
        !matches!(
            self,
            Who::Anonymous | Who::ExpiredSession | Who::RevokedToken
        )
    }

    fn perms(self) -> &'static [&'static str] {
        match self {
            Who::Viewer => VIEWER,
            Who::Operator => OPERATOR,
            Who::Admin | Who::Scoped => ALL,
            Who::Lacking => &["hosts:read"],
            Who::Anonymous | Who::ExpiredSession | Who::RevokedToken => &[],
        }
    }

    fn holds(self, p: &str) -> bool {
        self.perms().contains(&p)
    }

    /// Holds `p` for every host (team B's included).
    fn holds_everywhere(self, p: &str) -> bool {
        self.holds(p) && self != Who::Scoped
    }
}

/// The status `who` must get on a route needing `need` that answers `ok` when allowed.
fn expected(need: Need, ok: u16, who: Who) -> u16 {
    if let Need::Open = need {
        return ok;
    }
    if !who.live() {
        return 401;
    }
    match need {
        Need::Public => 401,
        Need::Authenticated => ok,
        Need::Perm(p) if who.holds(p) => ok,
        Need::Perm(_) => 403,
        Need::HostPerm(p) | Need::Owned(p) if !who.holds(p) => 403,
        Need::HostPerm(p) | Need::Owned(p) if !who.holds_everywhere(p) => 404,
        Need::HostPerm(_) | Need::Owned(_) => ok,
        Need::HostCreate(p) | Need::Global(p) if who.holds_everywhere(p) => ok,
        Need::HostCreate(_) | Need::Global(_) => 403,
        Need::OtherUsers if who.holds_everywhere("users:admin") => ok,
        Need::OtherUsers => 404,
        Need::OwnSession if who.session() => ok,
        Need::OwnSession => 403,
        Need::Open => ok,
    }
}

// ---- the fixture -----------------------------------------------------------------------------

/// What the requests of the matrix need: the collector, a userless admin token for making
/// fresh objects, each principal's credential, and team B's objects.
struct Ctx {
    addr: SocketAddr,
    db: PathBuf,
    /// A token without a user (every permission), as the admin CLI makes.
    admin_token: String,
    /// Credential of each principal of `WHO` (None: anonymous).
    creds: Vec<Option<String>>,
    /// User id of each principal that is a user logged in with a session.
    session_users: Vec<Option<i64>>,
    /// A user no principal is: owner of the "other user's" tokens and sessions.
    owner: i64,
    /// The capture server's URL, for receivers defined through the API.
    hook_url: String,
    /// Password hash given to users made straight in the database.
    pw_hash: String,
    /// Fingerprint of the alert firing on team B's host.
    alert_b: String,
    /// A silence limited to team B's host.
    silence_b: i64,
    counter: Cell<u32>,
}

/// One concrete request of the matrix.
struct Req {
    path: String,
    body: Option<Value>,
    /// The credential to send instead of the principal's usual one.
    cred: Option<Option<String>>,
    /// Requests the admin token sends afterwards to restore shared state.
    restore: Vec<(&'static str, String)>,
}

impl Req {
    fn at(path: impl Into<String>) -> Req {
        Req {
            path: path.into(),
            body: None,
            cred: None,
            restore: Vec::new(),
        }
    }

    fn body(mut self, v: Value) -> Req {
        self.body = Some(v);
        self
    }
}

fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cred: Option<&str>,
    body: Option<&Value>,
) -> Resp {
    let bytes = body.map(|b| b.to_string().into_bytes());
    request(addr, method, path, cred, bytes.as_deref())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

impl Ctx {
    fn fresh(&self, prefix: &str) -> String {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        format!("{prefix}-{n}")
    }

    /// A request with the admin token that must succeed; its JSON answer.
    fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let r = call(
            self.addr,
            method,
            path,
            Some(&self.admin_token),
            body.as_ref(),
        );
        assert!(
            (200..300).contains(&r.status),
            "setup {method} {path} answered {}: {}",
            r.status,
            r.body
        );
        r.json()
    }

    /// A fresh user (made as the admin CLI does), optionally disabled and bound to `viewer`;
    /// returns its id and the binding's id.
    fn user(&self, disabled: bool, bound: bool) -> (i64, Option<i64>) {
        let name = self.fresh("target");
        db_write(&self.db, |c| {
            let id = users::create_user(c, &name, &self.pw_hash, now_ms())?;
            if disabled {
                users::set_disabled(c, id, true)?;
            }
            let binding = if bound {
                Some(roles::bind(c, id, "viewer", "", now_ms())?.id)
            } else {
                None
            };
            Ok((id, binding))
        })
    }

    /// A fresh live session of `user`: (id, bearer credential).
    fn session(&self, user: i64) -> (i64, String) {
        session_in(&self.db, user, now_ms(), now_ms() + 3_600_000)
    }

    /// A fresh silence limited to team B's host; its id.
    fn new_silence_b(&self) -> i64 {
        let v = self.admin(
            "POST",
            "/api/v1/silences",
            Some(json!({
                "matchers": format!("{{host=\"{HOST_B}\"}}"),
                "duration": "1h",
                "comment": "permission matrix",
            })),
        );
        v["id"].as_i64().expect("silence id")
    }

    /// A fleet-wide route to the configured receiver, for rules no alert matches.
    fn route_body(&self) -> Value {
        json!({ "matchers": "{alertname=\"permission_matrix\"}", "receivers": [RECEIVER] })
    }

    /// A fresh dead letter of the configured receiver about team B's host; its id.
    fn dead_letter_b(&self) -> i64 {
        let fingerprint = self.fresh("dead");
        let payload = json!({
            "fingerprint": fingerprint, "status": "firing", "severity": "high",
            "rule": "test_high", "summary": "permission matrix", "description": "",
            "runbook_url": null, "labels": { "alertname": "test_high", "host": HOST_B },
            "value": 1.0, "starts_at_ms": now_ms(), "ends_at_ms": null, "group_key": "matrix",
        });
        db_write(&self.db, |c| {
            c.execute(
                "INSERT INTO dead_letters (receiver, group_key, fingerprint, payload, created_ms,
                     failed_ms, attempts, reason) VALUES (?1, 'matrix', ?2, ?3, ?4, ?4, 1, 'test')",
                rusqlite::params![RECEIVER, fingerprint, payload.to_string(), now_ms()],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// A webhook receiver definition for the API, to the capture server, its HMAC key
    /// given as a value (sealed by the collector).
    fn api_receiver(&self, name: &str) -> Value {
        json!({
            "type": "webhook",
            "name": name,
            "url": self.hook_url,
            "secret": {"value": HMAC_KEY},
        })
    }

    fn put_rule(&self, name: &str) {
        self.admin(
            "PUT",
            &format!("/api/v1/rules/{name}"),
            Some(harmless_rule()),
        );
    }

    /// The concrete request for `who` on the route `method template`, with any fresh
    /// object it acts on made just before.
    fn prepare(&self, method: &str, template: &str, who: Who, idx: usize) -> Req {
        let api = "/api/v1";
        match (method, template) {
            ("POST", "/api/v1/sessions") => Req::at(template).body(json!({
                "username": "nobody-at-all",
                "password": "Not-the-password-123",
            })),
            ("DELETE", "/api/v1/sessions/current") => {
                // Logging out ends the session: give session users a fresh one.
                let mut r = Req::at(template);
                if let Some(uid) = self.session_users[idx] {
                    r.cred = Some(Some(self.session(uid).1));
                }
                r
            }
            ("GET", "/api/v1/me")
            | ("GET", "/api/v1/oidc")
            | ("GET", "/api/v1/oidc/login")
            | ("GET", "/api/v1/oidc/callback")
            | ("GET", "/api/v1/me/mfa")
            | ("GET", "/api/v1/sessions")
            | ("GET", "/api/v1/hosts")
            | ("GET", "/api/v1/fleet")
            | ("GET", "/api/v1/events")
            | ("GET", "/api/v1/series")
            | ("GET", "/api/v1/alerts")
            | ("GET", "/api/v1/alerts/history")
            | ("GET", "/api/v1/alerts/pending")
            | ("GET", "/api/v1/silences")
            | ("GET", "/api/v1/rules")
            | ("GET", "/api/v1/receivers")
            | ("GET", "/api/v1/routes")
            | ("GET", "/api/v1/notifications")
            | ("GET", "/api/v1/notifications/dead")
            | ("GET", "/api/v1/users")
            | ("GET", "/api/v1/roles")
            | ("GET", "/api/v1/tokens")
            | ("GET", "/api/v1/audit")
            | ("GET", "/api/v1/backups")
            | ("POST", "/api/v1/backups")
            | ("GET", "/api/v1/enroll/ca")
            | ("GET", "/api/v1/enroll-tokens")
            | ("GET", "/api/v1/stream") => Req::at(template),
            ("GET", "/api/v1/hosts/{agent_id}/certificates") => {
                Req::at(format!("{api}/hosts/{HOST_B}/certificates"))
            }
            ("POST", "/api/v1/hosts/{agent_id}/certificates/{serial}/revoke") => {
                let serial = format!("ab{:04x}", self.counter.get() + 1);
                let _ = self.fresh("serial");
                let info = mcpwatch_common::cert_info::CertInfo {
                    identity: HOST_B.into(),
                    serial: serial.clone(),
                    not_before_s: 0,
                    not_after_s: 4_000_000_000,
                    is_ca: false,
                };
                db_write(&self.db, |c| {
                    certificates::record_issued(c, &info, "enroll", None, now_ms())
                });
                Req::at(format!("{api}/hosts/{HOST_B}/certificates/{serial}/revoke"))
            }
            ("POST", "/api/v1/enroll") => Req::at(template).body(json!({
                "token": format!("mcpe_999999_{}", "0".repeat(64)),
                "csr_pem": mcpwatch_common::csr::request("matrix").expect("csr").csr_pem,
            })),
            ("POST", "/api/v1/enroll-tokens") => Req::at(template).body(json!({
                "name": HOST_B,
                "labels": {"team": "b"},
            })),
            ("POST", "/api/v1/enroll-tokens/{id}/revoke") => {
                let t = self.admin(
                    "POST",
                    "/api/v1/enroll-tokens",
                    Some(json!({"name": HOST_B, "labels": {"team": "b"}})),
                );
                Req::at(format!("{api}/enroll-tokens/{}/revoke", t["id"]))
            }
            ("DELETE", "/api/v1/sessions/{id}") => {
                let (id, _) = self.session(self.owner);
                Req::at(format!("{api}/sessions/{id}"))
            }
            ("GET", "/api/v1/hosts/{agent_id}") => Req::at(format!("{api}/hosts/{HOST_B}")),
            ("PUT", "/api/v1/hosts/{agent_id}/labels") => {
                Req::at(format!("{api}/hosts/{HOST_B}/labels"))
                    .body(json!({"labels": {"team": "b"}}))
            }
            ("POST", "/api/v1/hosts/{agent_id}/revoke") => {
                let mut r = Req::at(format!("{api}/hosts/{HOST_B}/revoke"));
                r.restore
                    .push(("POST", format!("{api}/hosts/{HOST_B}/unrevoke")));
                r
            }
            ("POST", "/api/v1/hosts/{agent_id}/unrevoke") => {
                self.admin("POST", &format!("{api}/hosts/{HOST_B}/revoke"), None);
                let mut r = Req::at(format!("{api}/hosts/{HOST_B}/unrevoke"));
                r.restore
                    .push(("POST", format!("{api}/hosts/{HOST_B}/unrevoke")));
                r
            }
            ("GET", "/api/v1/hosts/{agent_id}/servers") => {
                Req::at(format!("{api}/hosts/{HOST_B}/servers"))
            }
            ("GET", "/api/v1/hosts/{agent_id}/servers/{server}/tools") => Req::at(format!(
                "{api}/hosts/{HOST_B}/servers/fixture/tools?range=30m"
            )),
            ("POST", "/api/v1/hosts/{agent_id}/servers/{server}/{action}") => {
                Req::at(format!("{api}/hosts/{HOST_B}/servers/fixture/restart"))
            }
            ("POST", "/api/v1/hosts/{agent_id}/reload") => {
                Req::at(format!("{api}/hosts/{HOST_B}/reload"))
            }
            ("GET", "/api/v1/query_range") => {
                let end = now_ms();
                Req::at(format!(
                    "{api}/query_range?host={HOST_B}&name=test_value&start_ms={}&end_ms={end}&step_ms=60000",
                    end - 600_000
                ))
            }
            ("GET", "/api/v1/alerts/{fingerprint}") => {
                Req::at(format!("{api}/alerts/{}", self.alert_b))
            }
            ("POST", "/api/v1/alerts/{fingerprint}/ack") => {
                Req::at(format!("{api}/alerts/{}/ack", self.alert_b))
                    .body(json!({"comment": "permission matrix"}))
            }
            ("POST", "/api/v1/silences") => Req::at(template).body(json!({
                "matchers": format!("{{host=\"{HOST_B}\"}}"),
                "duration": "1h",
                "comment": "permission matrix",
            })),
            ("GET", "/api/v1/silences/{id}") => {
                Req::at(format!("{api}/silences/{}", self.silence_b))
            }
            ("DELETE", "/api/v1/silences/{id}") => {
                Req::at(format!("{api}/silences/{}", self.new_silence_b()))
            }
            ("GET", "/api/v1/rules/{name}") => Req::at(format!("{api}/rules/{RULE}")),
            ("PUT", "/api/v1/rules/{name}") => {
                Req::at(format!("{api}/rules/{}", self.fresh("matrix_put"))).body(harmless_rule())
            }
            ("DELETE", "/api/v1/rules/{name}") => {
                let name = self.fresh("matrix_delete");
                self.put_rule(&name);
                Req::at(format!("{api}/rules/{name}"))
            }
            ("POST", "/api/v1/rules/dry-run") => Req::at(template).body(json!({
                "selector": "test_value",
                "function": "last",
                "window": "10m",
                "critical": 0.5,
            })),
            ("POST", "/api/v1/receivers") => {
                Req::at(template).body(self.api_receiver(&self.fresh("api-hook")))
            }
            ("GET", "/api/v1/receivers/{name}") => Req::at(format!("{api}/receivers/{RECEIVER}")),
            ("PUT", "/api/v1/receivers/{name}") => {
                let name = self.fresh("api-hook-put");
                self.admin("POST", "/api/v1/receivers", Some(self.api_receiver(&name)));
                Req::at(format!("{api}/receivers/{name}")).body(self.api_receiver(&name))
            }
            ("DELETE", "/api/v1/receivers/{name}") => {
                let name = self.fresh("api-hook-delete");
                self.admin("POST", "/api/v1/receivers", Some(self.api_receiver(&name)));
                Req::at(format!("{api}/receivers/{name}"))
            }
            ("GET", "/api/v1/routes/{name}") => {
                let name = self.fresh("route");
                self.admin(
                    "PUT",
                    &format!("/api/v1/routes/{name}"),
                    Some(self.route_body()),
                );
                Req::at(format!("{api}/routes/{name}"))
            }
            ("PUT", "/api/v1/routes/{name}") => {
                let name = self.fresh("route");
                Req::at(format!("{api}/routes/{name}")).body(self.route_body())
            }
            ("DELETE", "/api/v1/routes/{name}") => {
                let name = self.fresh("route");
                self.admin(
                    "PUT",
                    &format!("/api/v1/routes/{name}"),
                    Some(self.route_body()),
                );
                Req::at(format!("{api}/routes/{name}"))
            }
            ("POST", "/api/v1/notifications/dead/{id}/retry") => Req::at(format!(
                "{api}/notifications/dead/{}/retry",
                self.dead_letter_b()
            )),
            ("DELETE", "/api/v1/notifications/dead/{id}") => {
                Req::at(format!("{api}/notifications/dead/{}", self.dead_letter_b()))
            }
            ("POST", "/api/v1/notifications/dead/retry") => {
                self.dead_letter_b();
                Req::at(template).body(json!({ "receiver": RECEIVER }))
            }
            ("POST", "/api/v1/receivers/{name}/test") => {
                Req::at(format!("{api}/receivers/{RECEIVER}/test"))
            }
            ("POST", "/api/v1/users") => Req::at(template).body(json!({
                "username": self.fresh("created"),
                "password": "Matrix-new-user-pass-9",
                "roles": ["viewer"],
            })),
            ("GET", "/api/v1/users/{id}") => Req::at(format!("{api}/users/{}", self.owner)),
            ("GET", "/api/v1/users/{id}/bindings") => {
                Req::at(format!("{api}/users/{}/bindings", self.owner))
            }
            ("PUT", "/api/v1/users/{id}/password") => {
                let (id, _) = self.user(false, false);
                Req::at(format!("{api}/users/{id}/password"))
                    .body(json!({"password": "Another-fresh-pass-77"}))
            }
            ("POST", "/api/v1/me/mfa/totp") => {
                Req::at(template).body(json!({"current_password": PASSWORD}))
            }
            // Not digits: never a code, whatever the clock.
            ("POST", "/api/v1/me/mfa/totp/confirm") => {
                Req::at(template).body(json!({"code": "abcdef"}))
            }
            ("DELETE", "/api/v1/users/{id}/mfa") => {
                let (id, _) = self.user(false, false);
                Req::at(format!("{api}/users/{id}/mfa"))
            }
            ("POST", "/api/v1/users/{id}/disable") => {
                let (id, _) = self.user(false, true);
                Req::at(format!("{api}/users/{id}/disable"))
            }
            ("POST", "/api/v1/users/{id}/enable") => {
                let (id, _) = self.user(true, true);
                Req::at(format!("{api}/users/{id}/enable"))
            }
            ("POST", "/api/v1/users/{id}/bindings") => {
                let (id, _) = self.user(false, false);
                Req::at(format!("{api}/users/{id}/bindings")).body(json!({"role": "viewer"}))
            }
            ("DELETE", "/api/v1/users/{id}/bindings/{binding_id}") => {
                let (id, binding) = self.user(false, true);
                let binding = binding.expect("binding");
                Req::at(format!("{api}/users/{id}/bindings/{binding}"))
            }
            ("PUT", "/api/v1/roles/{name}") => {
                Req::at(format!("{api}/roles/{}", self.fresh("matrix-role")))
                    .body(json!({"permissions": ["hosts:read", "alerts:read"]}))
            }
            ("DELETE", "/api/v1/roles/{name}") => {
                let name = self.fresh("matrix-gone");
                self.admin(
                    "PUT",
                    &format!("{api}/roles/{name}"),
                    Some(json!({"permissions": ["hosts:read"]})),
                );
                Req::at(format!("{api}/roles/{name}"))
            }
            ("POST", "/api/v1/tokens") => {
                Req::at(template).body(json!({"name": self.fresh("own-token")}))
            }
            ("DELETE", "/api/v1/tokens/{id}") => {
                let t = self.admin(
                    "POST",
                    "/api/v1/tokens",
                    Some(json!({"name": self.fresh("owners-token"), "user_id": self.owner})),
                );
                Req::at(format!(
                    "{api}/tokens/{}",
                    t["id"].as_i64().expect("token id")
                ))
            }
            _ => panic!(
                "no request recipe for {method} {template} (as {}): add one to prepare()",
                who.label()
            ),
        }
    }
}

/// A rule that never fires (its metric does not exist).
fn harmless_rule() -> Value {
    json!({
        "selector": "matrix_metric_nobody_sends",
        "function": "last",
        "window": "1m",
        "critical": 1.0,
        "severity": "low",
    })
}

/// A write straight on the database, as the admin CLI does (IMMEDIATE transaction).
fn db_write<T>(db: &Path, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> T {
    admin::with_db(db, f).expect("database write")
}

/// A session of `user` straight in the database: (id, bearer credential).
fn session_in(db: &Path, user: i64, created_ms: i64, expires_ms: i64) -> (i64, String) {
    let secret = credential::secret().expect("secret");
    let hash = credential::hash(&secret);
    let id = db_write(db, |c| {
        tokens::create_session(
            c,
            &tokens::NewSession {
                user_id: user,
                hash,
                now_ms: created_ms,
                expires_ms,
                source: "127.0.0.1".into(),
                mfa_ms: None,
                sso: false,
            },
        )
    });
    (id, credential::format(Kind::Session, id, &secret))
}

/// Every `(METHOD, path)` the OpenAPI document lists under `/api/v1`.
fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("document has paths");
    let mut out = BTreeSet::new();
    for (path, item) in paths {
        // The operational routes beside the API have their own rule (the scrape token, or
        // none): tests/prometheus.rs and tests/api_http.rs.
        if ["/federate", "/metrics", "/healthz", "/readyz"].contains(&path.as_str()) {
            continue;
        }
        assert!(
            path.starts_with("/api/v1/"),
            "route outside /api/v1: {path}"
        );
        for m in [
            "get", "put", "post", "delete", "patch", "head", "options", "trace",
        ] {
            if item.get(m).is_some() {
                out.insert((m.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// One cell of the matrix.
struct Outcome {
    expected: u16,
    actual: u16,
    /// A 2xx answer to the team-A caller that mentions team B's host.
    leak: bool,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.expected == self.actual && !self.leak
    }
}

fn render(rows: &[(String, Need, Vec<Outcome>)]) -> String {
    let mut out = String::new();
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let _ = write!(out, "{:w$}  {:28}", "route", "needs");
    for who in WHO {
        let _ = write!(out, " {:>10}", who.label());
    }
    out.push('\n');
    for (route, need, cells) in rows {
        let _ = write!(out, "{route:w$}  {:28}", format!("{need:?}"));
        for c in cells {
            let mark = if c.leak {
                "L"
            } else if c.ok() {
                " "
            } else {
                "✗"
            };
            let _ = write!(out, " {:>9}{mark}", format!("{}/{}", c.expected, c.actual));
        }
        out.push('\n');
    }
    out.push_str("cells: expected/actual; ✗ = differs; L = the answer to the team-A caller names team B's host\n");
    out
}

// ---- the test --------------------------------------------------------------------------------

#[test]
fn api_permission_matrix_every_route_every_principal() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&tmp.path().join("pki"));
    let dir = tmp.path().join("c");
    std::fs::create_dir_all(&dir).expect("mkdir collector dir");
    std::fs::write(dir.join("rules.toml"), test_high_rules("10m")).expect("write rules");
    std::fs::write(dir.join("hmac"), format!("{HMAC_KEY}\n")).expect("hmac key");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let hook = rt.block_on(HttpCapture::start(Reply::status(200)));
    let c = CollectorProc::start(
        &pki,
        &dir,
        &format!(
            "[api]\nlogin_attempts_per_minute = 10000\ncommand_timeout = \"2s\"\n\
             receiver_url_allow = [\"127.0.0.0/8\"]\n\
             [enroll]\nca_key = \"{ca_key}\"\n\
             [backup]\ndir = \"backups\"\ninterval = \"0s\"\nkeep = 2\n\
             [alerting]\n{fast}\
             [[receiver]]\ntype = \"webhook\"\nname = \"{RECEIVER}\"\nurl = \"{}\"\n\
             secret = {{ file = \"hmac\" }}\n",
            hook.url("/hook"),
            fast = fast_alerting("4h"),
            ca_key = pki.dir.join("ca.key").display(),
        ),
    );
    let admin_tok = admin_token(&c.db, "matrix-admin", None);
    let as_admin = |method: &str, path: &str, body: Option<Value>| -> Value {
        let r = call(c.http, method, path, Some(&admin_tok), body.as_ref());
        assert!(
            (200..300).contains(&r.status),
            "setup {method} {path} answered {}: {}",
            r.status,
            r.body
        );
        r.json()
    };

    // Two hosts, an alert firing on each, labelled by team; then both agents go away.
    // Each sends `test_value{i="1"} 1` now and waits for its Ack (the sample is committed
    // and the rule evaluated); the connections stay open until dropped.
    let conns: Vec<SimAgent> = [HOST_A, HOST_B]
        .into_iter()
        .map(|id| {
            let certs = pki.agent(id);
            let tls = client::config(&pki.ca(), &certs.cert, &certs.key);
            rt.block_on(async {
                let mut agent = SimAgent::connect(c.ingest, tls, id)
                    .await
                    .ack_wait(AckWait::SkipOthers);
                agent.send("test_value", "1", 1.0).await;
                agent
            })
        })
        .collect();
    for (host, team) in [(HOST_A, "a"), (HOST_B, "b")] {
        as_admin(
            "PUT",
            &format!("/api/v1/hosts/{host}/labels"),
            Some(json!({"labels": {"team": team}})),
        );
    }
    let mut alert_b = String::new();
    for host in [HOST_A, HOST_B] {
        let fp = wait_for(
            &format!("an alert on {host}"),
            Duration::from_secs(10),
            || {
                let v = as_admin("GET", &format!("/api/v1/alerts?host={host}"), None);
                v["items"][0]["fingerprint"].as_str().map(str::to_owned)
            },
        );
        if host == HOST_B {
            alert_b = fp;
        }
    }
    drop(conns);
    for host in [HOST_A, HOST_B] {
        wait_for(&format!("{host} offline"), Duration::from_secs(10), || {
            (as_admin("GET", &format!("/api/v1/hosts/{host}"), None)["online"] == false)
                .then_some(())
        });
    }

    // Users (as the admin CLI makes them), logged in through the API.
    let pw_hash = password::hash(PASSWORD).expect("hash");
    let ids = db_write(&c.db, |conn| {
        let mut ids = Vec::new();
        for (name, role, selector) in [
            ("viewer", "viewer", ""),
            ("operator", "operator", ""),
            ("admin", "admin", ""),
            ("scoped", "admin", r#"{team="a"}"#),
            ("owner", "viewer", ""),
        ] {
            let id = users::create_user(conn, name, &pw_hash, now_ms())?;
            roles::bind(conn, id, role, selector, now_ms())?;
            ids.push(id);
        }
        Ok(ids)
    });
    let (viewer_id, operator_id, admin_id, scoped_id, owner) =
        (ids[0], ids[1], ids[2], ids[3], ids[4]);
    let login = |user: &str| -> String {
        let r = call(
            c.http,
            "POST",
            "/api/v1/sessions",
            None,
            Some(&json!({"username": user, "password": PASSWORD})),
        );
        assert_eq!(r.status, 201, "login {user}: {}", r.body);
        r.json()["token"]
            .as_str()
            .expect("session token")
            .to_owned()
    };
    let viewer = login("viewer");
    let operator = login("operator");
    let admin_session = login("admin");
    let scoped = login("scoped");
    // The admin user's token limited to hosts:read, and one revoked at once.
    let lacking = call(
        c.http,
        "POST",
        "/api/v1/tokens",
        Some(&admin_session),
        Some(&json!({"name": "hosts-read-only", "permissions": ["hosts:read"]})),
    );
    assert_eq!(lacking.status, 201, "{}", lacking.body);
    let lacking = lacking.json()["token"].as_str().expect("token").to_owned();
    let revoked = call(
        c.http,
        "POST",
        "/api/v1/tokens",
        Some(&admin_session),
        Some(&json!({"name": "revoked-at-once"})),
    );
    assert_eq!(revoked.status, 201, "{}", revoked.body);
    let revoked_json = revoked.json();
    let r = call(
        c.http,
        "DELETE",
        &format!("/api/v1/tokens/{}", revoked_json["id"]),
        Some(&admin_session),
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let revoked = revoked_json["token"].as_str().expect("token").to_owned();
    // The admin user's session that ended an hour ago.
    let (_, expired) = session_in(&c.db, admin_id, now_ms() - 7_200_000, now_ms() - 3_600_000);

    let creds: Vec<Option<String>> = WHO
        .iter()
        .map(|w| match w {
            Who::Anonymous => None,
            Who::Viewer => Some(viewer.clone()),
            Who::Operator => Some(operator.clone()),
            Who::Admin => Some(admin_session.clone()),
            Who::Scoped => Some(scoped.clone()),
            Who::ExpiredSession => Some(expired.clone()),
            Who::RevokedToken => Some(revoked.clone()),
            Who::Lacking => Some(lacking.clone()),
        })
        .collect();
    let session_users: Vec<Option<i64>> = WHO
        .iter()
        .map(|w| match w {
            Who::Viewer => Some(viewer_id),
            Who::Operator => Some(operator_id),
            Who::Admin => Some(admin_id),
            Who::Scoped => Some(scoped_id),
            _ => None,
        })
        .collect();
    let mut ctx = Ctx {
        addr: c.http,
        db: c.db.clone(),
        admin_token: admin_tok.clone(),
        creds,
        session_users,
        owner,
        hook_url: hook.url("/api-hook"),
        pw_hash,
        alert_b,
        silence_b: 0,
        counter: Cell::new(0),
    };
    ctx.silence_b = ctx.new_silence_b();
    let setup_time = started.elapsed();

    // The routes: the document against the table.
    let doc = call(c.http, "GET", "/api/v1/openapi.json", None, None);
    assert_eq!(doc.status, 200, "{}", doc.body);
    let documented = documented_routes(&doc.json());
    let mut problems = Vec::new();
    let mut tabled = BTreeSet::new();
    for (m, p, _, _) in TABLE {
        if !tabled.insert((m.to_string(), p.to_string())) {
            problems.push(format!("route listed twice in the table: {m} {p}"));
        }
    }
    for (m, p) in documented.difference(&tabled) {
        problems.push(format!("route missing from the table: {m} {p}"));
    }
    for (m, p) in tabled.difference(&documented) {
        problems.push(format!(
            "table row for a route the document does not have: {m} {p}"
        ));
    }

    // The matrix.
    let mut rows = Vec::new();
    for &(method, template, need, ok) in TABLE {
        if !documented.contains(&(method.to_owned(), template.to_owned())) {
            continue;
        }
        let mut cells = Vec::new();
        for (idx, who) in WHO.into_iter().enumerate() {
            let req = ctx.prepare(method, template, who, idx);
            let cred = req.cred.clone().unwrap_or_else(|| ctx.creds[idx].clone());
            let resp = call(
                c.http,
                method,
                &req.path,
                cred.as_deref(),
                req.body.as_ref(),
            );
            for (m, p) in &req.restore {
                ctx.admin(m, p, None);
            }
            let leak = who == Who::Scoped
                && (200..300).contains(&resp.status)
                && resp.body.contains(HOST_B);
            let cell = Outcome {
                expected: expected(need, ok, who),
                actual: resp.status,
                leak,
            };
            if !cell.ok() {
                problems.push(format!(
                    "{method} {template} as {} ({}): expected {}, got {}{}: {}",
                    who.label(),
                    req.path,
                    cell.expected,
                    cell.actual,
                    if leak { " naming host-b" } else { "" },
                    resp.body.chars().take(300).collect::<String>()
                ));
            }
            cells.push(cell);
        }
        rows.push((format!("{method} {template}"), need, cells));
    }
    eprintln!(
        "permission matrix: {} routes × {} principals in {:.1?} (setup {:.1?})",
        rows.len(),
        WHO.len(),
        started.elapsed(),
        setup_time
    );
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}\n\n{}",
        problems.len(),
        problems.join("\n"),
        render(&rows)
    );
    drop(hook);
}
