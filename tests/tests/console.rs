//! The web console in a real Chromium (Debian `chromium`, driven by npm `playwright-core`
//! from `console/e2e/`) against a real collector with two real agents: sign-in, the fleet
//! updating live when an agent stops, the audit log, a team-scoped viewer who sees only
//! their hosts and whose forced requests are refused and audited, CSRF, CSP and
//! accessibility (axe-core) on every page, screenshots in light and dark under
//! `target/console-screenshots`. A second collector with a 3 s idle timeout covers session
//! expiry. The browser side asks this side to stop an agent over a line protocol on its
//! stdout/stdin (`@control stop-agent NAME` → `@ok`). A third collector has one agent
//! supervising the fixture MCP server in Docker, for the MCP server page. A fourth signs in
//! through a real OpenID Connect provider (single sign-on, group-mapped roles and scopes).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mcpwatch_tests::api::{admin_token, local_user, Api};
use mcpwatch_tests::docker::{ensure_dockerd, unique_name};
use mcpwatch_tests::mcp_load::HttpSession;
use mcpwatch_tests::oidc_provider::{connect, OidcProvider};
use mcpwatch_tests::process::{AgentProc, CollectorProc};
use mcpwatch_tests::receivers::{HttpCapture, Reply};
use mcpwatch_tests::rig::{stdio_server, Cleanup};
use mcpwatch_tests::{wait_for, Pki};
use serde_json::json;

const ADMIN_PASSWORD: &str = "console admin password 1";
const VIEWER_PASSWORD: &str = "console viewer password 1";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs one e2e file under node's test runner with `env`, answering its control requests
/// with `control`; panics with node's output when a test fails.
fn run_browser(file: &str, env: &[(&str, String)], mut control: impl FnMut(&str) -> bool) {
    let console = repo().join("console");
    assert!(
        console.join("node_modules/playwright-core").exists(),
        "console/node_modules is missing: run scripts/test.sh (it runs npm ci)"
    );
    let shots = repo().join("target/console-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let mut node = Command::new("node")
        // The file runs in this process (not under `--test`, which would run it in a child
        // whose stdin and stdout the control protocol cannot reach).
        .arg("--test-reporter=spec")
        .arg(format!("e2e/{file}"))
        .current_dir(&console)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("SCREENSHOT_DIR", &shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node (Node 20 is on every machine this runs on)");
    let mut stdin = node.stdin.take().expect("stdin");
    let stdout = BufReader::new(node.stdout.take().expect("stdout"));
    let mut stderr = node.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let mut output = String::new();
    for line in stdout.lines() {
        let Ok(line) = line else { break };
        if let Some(request) = line.trim().strip_prefix("@control ") {
            let ok = control(request);
            let _ = writeln!(stdin, "{}", if ok { "@ok" } else { "@failed" });
            let _ = stdin.flush();
        }
        output.push_str(&line);
        output.push('\n');
    }
    let status = node.wait().expect("wait node");
    let errors = err_reader.join().unwrap_or_default();
    assert!(
        status.success(),
        "browser tests failed:\n{output}\n{errors}"
    );
    let summary = |l: &str| l.trim_start_matches(['ℹ', '#', ' ']).trim().to_owned();
    assert!(
        output.lines().any(|l| summary(l) == "fail 0")
            && !output.lines().any(|l| summary(l) == "pass 0"),
        "{output}"
    );
}

#[test]
fn console_in_chromium_fleet_live_scoping_csrf_csp_and_accessibility() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&tmp.path().join("pki"));
    // Every test signs in again from 127.0.0.1: more than the default 10 logins a minute
    // one address may try.
    // A webhook receiver on loopback for the receivers page's test send (its HMAC secret in
    // a file beside the config).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut hook = rt.block_on(HttpCapture::start(Reply::status(200)));
    // A receiver that refuses its first notification (a dead letter for the notifications
    // page to retry), and an escalation policy for host-a's alerts.
    let refuser = rt.block_on(HttpCapture::start(Reply::status(200)));
    refuser.push(Reply::status(400).with_body("bad request"));
    std::fs::create_dir_all(tmp.path().join("c")).expect("mkdir");
    std::fs::write(tmp.path().join("c/hmac"), "console-test-secret\n").expect("hmac");
    let webhook = |name: &str, url: String| {
        format!(
            "[[receiver]]\ntype = \"webhook\"\nname = \"{name}\"\nurl = \"{url}\"\n\
             secret = {{ file = \"hmac\" }}\n"
        )
    };
    let c = CollectorProc::start(
        &pki,
        &tmp.path().join("c"),
        &format!(
            "[api]\nlogin_attempts_per_minute = 200\nreceiver_url_allow = [\"127.0.0.0/8\"]\n\
             [alerting]\ndefault_receivers = [\"hook\"]\n{}{}\
             [[escalation]]\nname = \"oncall\"\nsteps = [{{ after = \"0s\", receivers = [\"hook\"] }}, \
             {{ after = \"1h\", receivers = [\"refuser\"] }}]\n\
             [[route]]\nmatchers = '{{alertname=\"console_uptime\", host=\"host-a\"}}'\nreceivers = []\n\
             escalation = \"oncall\"\n\
             [[route]]\nmatchers = '{{alertname=\"console_uptime\", host=\"host-b\"}}'\n\
             receivers = [\"refuser\"]\n",
            webhook("hook", hook.url("/hook")),
            webhook("refuser", refuser.url("/refuser")),
        ),
    );
    let token = admin_token(&c.db, "e2e-admin", None);
    let admin_api = Api::new(c.http, Some(&token));
    let mut agents = [
        AgentProc::start(
            &pki,
            &tmp.path().join("a"),
            "host-a",
            c.ingest,
            "1s",
            "16MiB",
        ),
        AgentProc::start(
            &pki,
            &tmp.path().join("b"),
            "host-b",
            c.ingest,
            "1s",
            "16MiB",
        ),
    ];
    for (host, team) in [("host-a", "a"), ("host-b", "b")] {
        wait_for("the agent registers", Duration::from_secs(30), || {
            let r = admin_api.get(&format!("/api/v1/hosts/{host}"));
            (r.status == 200).then_some(())
        });
        let r = admin_api.send(
            "PUT",
            &format!("/api/v1/hosts/{host}/labels"),
            &json!({"labels": {"team": team}}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    local_user(&c.db, "admin", ADMIN_PASSWORD, "admin", "");
    local_user(&c.db, "viewer", VIEWER_PASSWORD, "viewer", "{team=\"a\"}");
    // A rule that fires on every host, for the alert page.
    let r = admin_api.send(
        "PUT",
        "/api/v1/rules/console_uptime",
        &json!({"selector": "mcpwatch_host_uptime_seconds", "critical": 1.0,
                "summary": "the host is up"}),
    );
    assert!(r.status == 200 || r.status == 201, "{}", r.body);
    wait_for(
        "console_uptime fires on host-a",
        Duration::from_secs(30),
        || {
            let r = admin_api.get("/api/v1/alerts?rule=console_uptime&host=host-a");
            (r.json()["items"].as_array().is_some_and(|a| !a.is_empty())).then_some(())
        },
    );
    // Team a's own rule (it never fires) and receiver, for the owner columns.
    let r = admin_api.send(
        "PUT",
        "/api/v1/rules/team_a_uptime",
        &json!({"selector": "mcpwatch_host_uptime_seconds", "critical": 1e15,
                "owner": "{team=\"a\"}"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = admin_api.send(
        "POST",
        "/api/v1/receivers",
        &json!({"type": "teams", "name": "team-a-teams", "owner": "{team=\"a\"}",
                "webhook_url": {"value": hook.url("/teams")}}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    wait_for(
        "host-b's alert dead-lettered at the refuser",
        Duration::from_secs(30),
        || {
            let r = admin_api.get("/api/v1/notifications/dead?receiver=refuser");
            (r.json()["items"].as_array().is_some_and(|a| !a.is_empty())).then_some(())
        },
    );

    run_browser(
        "console.test.mjs",
        &[
            ("CONSOLE_URL", format!("http://{}/", c.http)),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
            ("VIEWER_PASSWORD", VIEWER_PASSWORD.into()),
        ],
        |request| match request.split_once(' ') {
            Some(("stop-agent", name)) => match agents.iter_mut().find(|a| a.name == name) {
                Some(a) => {
                    a.stop();
                    true
                }
                None => false,
            },
            _ => false,
        },
    );

    // What the viewer forced through the browser was refused and audited under their name.
    let r = admin_api.get("/api/v1/audit?actor=user:viewer&result=403");
    let refused = r.json()["items"].as_array().cloned().unwrap_or_default();
    assert!(
        refused
            .iter()
            .any(|a| a["object"] == "/api/v1/hosts/host-a/servers/web/restart"),
        "{}",
        r.body
    );
    let r = admin_api.get("/api/v1/audit?actor=user:viewer&result=404");
    assert!(r.body.contains("/api/v1/hosts/host-b"), "{}", r.body);
    let r = admin_api.get("/api/v1/audit?actor=user:admin&result=403");
    assert!(
        r.body.contains("\"POST /api/v1/tokens\""),
        "the CSRF refusal: {}",
        r.body
    );
    // The receivers page's test notification reached the webhook (among the real alerts'
    // notifications: the test one is in group `mcpwatch-test`).
    let test_sent = rt.block_on(async {
        for _ in 0..200 {
            let sent = hook.next().await;
            if String::from_utf8_lossy(&sent.body).contains("\"group_key\":\"mcpwatch-test\"") {
                return Some(sent);
            }
        }
        None
    });
    assert_eq!(test_sent.expect("the test notification").path, "/hook");
}

/// The quickstart as a newcomer runs it (without Docker here: the demo server has a test of
/// its own in cli.rs), plus a second agent with a certificate from the quickstart's PKI.
#[test]
fn console_in_chromium_quickstart_fleet_with_a_second_agent() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("qs");
    let addrs = [(); 4].map(|_| mcpwatch_tests::free_addr());
    let out = tmp.path().join("stdout");
    let log = tmp.path().join("stdout.log");
    let mut quickstart = mcpwatch_tests::process::quickstart_command(&dir, addrs)
        .env(
            "DOCKER_HOST",
            format!("unix://{}", tmp.path().join("no-docker.sock").display()),
        )
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("run the quickstart");
    let password_file = dir.join("admin.password");
    let password = mcpwatch_tests::process::wait_while_running(
        &mut quickstart,
        &[&out, &log],
        "the quickstart's admin password",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(&password_file)
                .ok()
                .filter(|p| !p.trim().is_empty())
        },
    );
    let pki = Pki {
        dir: dir.join("pki"),
    };
    let mut second = Some(AgentProc::start(
        &pki,
        &tmp.path().join("second"),
        "second",
        addrs[0],
        "200ms",
        "16MiB",
    ));
    second.as_ref().expect("just started").wait_acked_more(1.0);
    run_browser(
        "quickstart.test.mjs",
        &[
            ("CONSOLE_URL", format!("http://{}/", addrs[1])),
            ("ADMIN_PASSWORD", password.trim().to_owned()),
        ],
        |request| match request {
            "stop-second" => second.take().is_some_and(|mut a| a.stop().success()),
            _ => false,
        },
    );
    mcpwatch_tests::process::signal(&quickstart, "INT");
    assert!(quickstart.wait().expect("quickstart exit").success());
}

#[test]
fn console_in_chromium_session_expiry() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&tmp.path().join("pki"));
    let c = CollectorProc::start(
        &pki,
        &tmp.path().join("c"),
        "[api]\nsession_idle_timeout = \"3s\"\nstream_heartbeat = \"1s\"\n",
    );
    local_user(&c.db, "admin", ADMIN_PASSWORD, "admin", "");
    run_browser(
        "expiry.test.mjs",
        &[
            ("CONSOLE_URL", format!("http://{}/", c.http)),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
        ],
        |_| false,
    );
}

#[test]
fn console_in_chromium_two_factor_enrollment_and_sign_in() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&tmp.path().join("pki"));
    let c = CollectorProc::start(
        &pki,
        &tmp.path().join("c"),
        "[auth]\nrequire_mfa = \"admins\"\n",
    );
    local_user(&c.db, "admin", ADMIN_PASSWORD, "admin", "");
    run_browser(
        "mfa.test.mjs",
        &[
            ("CONSOLE_URL", format!("http://{}/", c.http)),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
        ],
        |_| false,
    );
    // The enrolment and both sign-ins are in the audit log, the secret nowhere in it.
    let conn = rusqlite::Connection::open(&c.db).expect("db");
    let notes: Vec<String> = conn
        .prepare("SELECT detail FROM audit_log ORDER BY id")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert!(
        notes
            .iter()
            .any(|d| d.contains("TOTP second factor enabled")),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|d| d.contains("second factor wrong")),
        "{notes:?}"
    );
}

#[test]
fn console_in_chromium_single_sign_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&tmp.path().join("pki"));
    let mut c = CollectorProc::start(
        &pki,
        &tmp.path().join("c"),
        "[api]\nlogin_attempts_per_minute = 200\n",
    );
    let mut op = OidcProvider::new(&tmp.path().join("op"));
    let users = |bob: &str| json!({"alice": {"groups": ["sre"]}, "bob": {"groups": [bob]}});
    connect(
        &mut c,
        &mut op,
        "[[oidc.group_binding]]\ngroup = \"sre\"\nrole = \"operator\"\n\
         [[oidc.group_binding]]\ngroup = \"team-a\"\nrole = \"viewer\"\nscope = 'team=\"a\"'\n\
         [[oidc.group_binding]]\ngroup = \"team-b\"\nrole = \"viewer\"\nscope = 'team=\"b\"'\n",
        &users("team-b"),
    );
    let admin_api = Api::new(c.http, Some(&admin_token(&c.db, "e2e-admin", None)));
    let _agents: Vec<AgentProc> = [("host-a", "a"), ("host-b", "b")]
        .into_iter()
        .map(|(host, team)| {
            let a = AgentProc::start(&pki, &tmp.path().join(host), host, c.ingest, "1s", "16MiB");
            wait_for("the agent registers", Duration::from_secs(30), || {
                (admin_api.get(&format!("/api/v1/hosts/{host}")).status == 200).then_some(())
            });
            let r = admin_api.send(
                "PUT",
                &format!("/api/v1/hosts/{host}/labels"),
                &json!({"labels": {"team": team}}),
            );
            assert_eq!(r.status, 200, "{}", r.body);
            a
        })
        .collect();
    run_browser(
        "sso.test.mjs",
        &[("CONSOLE_URL", format!("http://{}/", c.http))],
        |request| match request {
            "move-bob team-a" => {
                op.set_users(&users("team-a"));
                true
            }
            "stop-provider" => {
                op.stop();
                true
            }
            _ => false,
        },
    );
    // Each sign-in is audited under the account it opened.
    let r = admin_api.get("/api/v1/audit?actor=user:bob&limit=100");
    let rows = r.json()["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        rows.iter()
            .filter(|a| a["action"] == "GET /api/v1/oidc/callback" && a["result"] == 201)
            .count(),
        2,
        "{}",
        r.body
    );
}

#[test]
fn console_in_chromium_mcp_server_page_with_docker() {
    ensure_dockerd();
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&tmp.path().join("pki"));
    let c = CollectorProc::start(
        &pki,
        &tmp.path().join("c"),
        "[api]\nlogin_attempts_per_minute = 200\n",
    );
    let token = admin_token(&c.db, "e2e-admin", None);
    let admin_api = Api::new(c.http, Some(&token));
    local_user(&c.db, "admin", ADMIN_PASSWORD, "admin", "");
    local_user(&c.db, "viewer", VIEWER_PASSWORD, "viewer", "");
    let id = unique_name("console");
    let _cleanup = Cleanup(id.clone());
    let mut agent = AgentProc::configure(&pki, &tmp.path().join("a"), &id, c.ingest, "1s", "64MiB");
    // A stdio server: the gateway bridges it, so the calls below get plain JSON answers.
    agent.append_config(&stdio_server(
        "web",
        &["--change-tools-after", "3"],
        "1s",
        "[mcp_server.backoff]\ninitial = \"1s\"\nmax = \"1s\"\n",
    ));
    agent.restart();
    let events = |kind: &str| {
        admin_api
            .get(&format!("/api/v1/events?host={id}&server=web&kind={kind}"))
            .json()["items"]
            .as_array()
            .map_or(0, Vec::len)
    };
    wait_for("the drift is flagged", Duration::from_secs(60), || {
        (events("tool_drift") > 0).then_some(())
    });
    // Five calls through the gateway, for the tools table.
    let gateway = agent.gateway_addr;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut s = HttpSession::open(gateway, "/mcp/web")
            .await
            .expect("gateway session");
        for i in 0..5 {
            assert!(
                s.echo(i + 1, "console").await,
                "echo {i} through the gateway"
            );
        }
        s.close().await;
    });
    wait_for(
        "the calls reach the collector",
        Duration::from_secs(30),
        || {
            let r = admin_api.get(&format!("/api/v1/hosts/{id}/servers/web/tools?range=15m"));
            (r.json()["tools"]
                .as_array()?
                .iter()
                .any(|t| t["tool"] == "echo" && t["calls"].as_f64() >= Some(5.0)))
            .then_some(())
        },
    );
    // A rule that holds on the host for an hour before it fires: pending all along.
    let r = admin_api.send(
        "PUT",
        "/api/v1/rules/console_pending",
        &json!({"selector": "mcpwatch_host_uptime_seconds", "critical": 1.0, "for": "1h"}),
    );
    assert!(r.status == 200 || r.status == 201, "{}", r.body);

    run_browser(
        "server.test.mjs",
        &[
            ("CONSOLE_URL", format!("http://{}/", c.http)),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
            ("VIEWER_PASSWORD", VIEWER_PASSWORD.into()),
            ("HOST_ID", id.clone()),
        ],
        |_| false,
    );
    // What the buttons did, as the audit log has it.
    let r = admin_api.get("/api/v1/audit?actor=user:admin&result=200");
    for action in ["approve-drift", "restart", "stop", "start"] {
        assert!(
            r.body
                .contains(&format!("/api/v1/hosts/{id}/servers/web/{action}")),
            "{action}: {}",
            r.body
        );
    }
    assert!(events("drift_approved") > 0);
    agent.stop();
}
