//! The container images (`deploy/container/Containerfile.*`, built from the static binaries
//! by `scripts/build-images.sh --debug --tag test`, which the test script runs): each
//! starts and reports its version, runs as a non-root user, and the collector image runs the
//! quickstart end to end (host network, loopback addresses only).

use std::process::Command;
use std::time::Duration;

use mcpwatch_tests::{free_addr, http_get, wait_for};

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker {args:?}: {e}"))
}

fn image(part: &str) -> String {
    let name = format!("mcpwatch-{part}:test");
    let found = docker(&["image", "inspect", "-f", "{{.Config.User}}", &name]);
    assert!(
        found.status.success(),
        "image {name} is missing: run ./scripts/test.sh (or scripts/build-images.sh --debug --tag test)"
    );
    name
}

/// Removes the container when the test ends, however it ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

#[test]
fn both_images_report_their_version_and_run_as_an_unprivileged_user() {
    for part in ["agent", "collector"] {
        let name = image(part);
        let out = docker(&["run", "--rm", "--network", "none", &name, "--version"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            text.trim(),
            format!("mcpwatch-{part} {}", env!("CARGO_PKG_VERSION"))
        );
        let user = docker(&["image", "inspect", "-f", "{{.Config.User}}", &name]);
        assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "65532:65532");
        // Nothing but the binary, the CA certificates and the data directory: no shell.
        let shell = docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "/bin/sh",
            &name,
        ]);
        assert!(!shell.status.success(), "{part} image has a shell");
    }
}

#[test]
fn the_collector_image_runs_the_quickstart_and_serves_healthz() {
    let name = image("collector");
    let (ingest, http, metrics, gateway) = (free_addr(), free_addr(), free_addr(), free_addr());
    let container = Container(format!("mcpwatch-quickstart-{}", std::process::id()));
    let started = docker(&[
        "run",
        "-d",
        "--name",
        &container.0,
        // The host's network namespace, so the test reaches its loopback addresses; every
        // listener below is on 127.0.0.1.
        "--network",
        "host",
        &name,
        "quickstart",
        "--dir",
        "/var/lib/mcpwatch/quickstart",
        "--ingest",
        &ingest.to_string(),
        "--http",
        &http.to_string(),
        "--agent-metrics",
        &metrics.to_string(),
        "--gateway",
        &gateway.to_string(),
    ]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let logs = || {
        let out = docker(&["logs", &container.0]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    wait_for(
        "quickstart /healthz in the image",
        Duration::from_secs(60),
        || http_get(http, "/healthz").ok().filter(|r| r.0 == 200),
    );
    // Its own agent streams to it: the collector counts one connected agent.
    wait_for(
        "the quickstart's agent connected",
        Duration::from_secs(60),
        || {
            let m = http_get(http, "/metrics").ok()?.1;
            (mcpwatch_tests::metric(&m, "mcpwatch_collector_agents_connected") == Some(1.0))
                .then_some(())
        },
    );
    let text = logs();
    assert!(text.contains("console"), "{text}");
}
