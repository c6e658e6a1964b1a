//! The systemd units: `systemd-analyze verify` accepts them (with ExecStart pointed at the
//! built binaries), and they carry what issue 2 requires: Type=notify with a watchdog,
//! restart on failure, the hardening set and a writable data directory only.

use std::path::Path;
use std::process::Command;

use mcpwatch_tests::bin;

fn unit(name: &str) -> String {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn units_verify_and_carry_the_required_settings() {
    let tmp = tempfile::tempdir().unwrap();
    for binary in ["mcpwatch-agent", "mcpwatch-collector"] {
        let name = format!("{binary}.service");
        let text = unit(&name);
        for required in [
            "Type=notify",
            "WatchdogSec=",
            "Restart=on-failure",
            "RestartPreventExitStatus=64",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "ReadWritePaths=/var/lib/mcpwatch",
            "CapabilityBoundingSet=\n",
            "ExecReload=/bin/kill -HUP $MAINPID",
            &format!("ExecStart=/usr/bin/{binary} run --config /etc/mcpwatch/"),
        ] {
            assert!(text.contains(required), "{name} lacks {required:?}");
        }
        let local = text.replace(
            &format!("/usr/bin/{binary}"),
            bin(binary).to_str().expect("utf-8 path"),
        );
        std::fs::write(tmp.path().join(&name), local).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(tmp.path().join("mcpwatch-agent.service"))
        .arg(tmp.path().join("mcpwatch-collector.service"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-analyze ({e}): run ./scripts/test.sh, which installs it")
        });
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
