//! The OpenAPI document states the real contract: schemathesis (PyPI, in `target/pyvenv`,
//! installed by the test script) generates requests from it against a real collector with
//! an admin token — examples, coverage of every constraint, fuzzing and the stateful phase —
//! and checks every answer: no server error, every status documented, bodies and headers as
//! documented, schema-valid requests accepted and invalid ones refused. Zero failures.

use std::path::Path;
use std::process::Command;

use std::time::{Duration, Instant};

use mcpwatch_tests::api::{admin_token, Api};
use mcpwatch_tests::process::{AgentProc, CollectorProc};
use mcpwatch_tests::Pki;
use serde_json::json;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Examples per operation and phase: enough to cover every documented constraint's
/// boundaries, bounded so the run takes well under a minute on two cores.
const MAX_EXAMPLES: &str = "25";

#[test]
fn openapi_contract_holds_under_schemathesis() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&tmp.path().join("pki"));
    let c = CollectorProc::start(&pki, &tmp.path().join("c"), "");
    // Tokens 1..=5 are decoys: generated ids hit small numbers, and revoking the token the
    // run authenticates with would turn every later answer into a 401.
    for i in 0..5 {
        admin_token(&c.db, &format!("decoy-{i}"), None);
    }
    let token = admin_token(&c.db, "schemathesis", None);
    let api = Api::new(c.http, Some(&token));
    // Something to read and command: a real agent (it answers reloads and server actions)
    // with series and events, and a silence.
    let agent = AgentProc::start(
        &pki,
        &tmp.path().join("agent"),
        "contract-host",
        c.ingest,
        "1s",
        "16MiB",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !api.get("/api/v1/hosts").body.contains("contract-host") {
        assert!(Instant::now() < deadline, "the agent never showed up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let silence = api.send(
        "POST",
        "/api/v1/silences",
        &json!({"matchers": "{host=\"contract-host\"}", "duration": "1h", "comment": "c"}),
    );
    assert_eq!(silence.status, 201, "{}", silence.body);

    let python = repo().join("target/pyvenv/bin/schemathesis");
    let out = Command::new(&python)
        .arg("--config-file")
        .arg(repo().join("tests/schemathesis.toml"))
        .args([
            "run",
            &format!("http://{}/api/v1/openapi.json", c.http),
            "--url",
            &format!("http://{}", c.http),
            "-H",
            &format!("Authorization: Bearer {token}"),
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            "20261204",
            "--checks",
            "all",
            // One worker: Debian's Python 3.11 trips over its own AST recursion check
            // when hypothesis describes strategies from two threads at once.
            "--workers",
            "1",
            "--no-color",
            // The live stream never ends, so no generated request to it could complete;
            // its contract is tested in api_console.rs.
            "--exclude-path",
            "/api/v1/stream",
            // Revoking a certificate cannot be undone, and the stateful phase follows the
            // link from the host's certificate list to it: the agent this test commands
            // would be locked out for the rest of the run. Its contract is tested in
            // revocation.rs and api_matrix.rs.
            "--exclude-path",
            "/api/v1/hosts/{agent_id}/certificates/{serial}/revoke",
            // A second factor belongs to a login session's own account; this run
            // authenticates with a token, which they refuse (403) by design. Their contract
            // is tested in sign_in.rs and api_matrix.rs.
            "--exclude-path",
            "/api/v1/me/mfa",
            "--exclude-path",
            "/api/v1/me/mfa/totp",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        // Schemathesis keeps a cache of earlier failures in its working directory: a fresh
        // one each run, so every run starts from the same seed and nothing lands in the tree.
        .current_dir(tmp.path())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "run {}: {e} (the test script installs it)",
                python.display()
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found contract failures:\n{stdout}\n{stderr}"
    );
    // Every generating phase ran, the stateful one included (links between operations);
    // the examples phase has nothing to run (the document carries no examples).
    for phase in ["Coverage", "Fuzzing", "Stateful"] {
        let line = stdout
            .lines()
            .find(|l| l.contains(phase) && !l.contains("phase"))
            .unwrap_or_else(|| panic!("no {phase} phase in:\n{stdout}"));
        assert!(!line.contains('⏭'), "{phase} skipped:\n{stdout}");
    }
    println!("{stdout}");
    drop(agent);
}
