//! The systemd units: `systemd-analyze verify` accepts them (with ExecStart pointed at the
//! built binaries), and they carry what issue 2 requires: Type=notify with a watchdog,
//! restart on failure, the hardening set and a writable data directory only. And the install
//! steps (scripts/install.sh, which the README runs) leave files the units' user can read.

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
            // The fixed user scripts/install.sh creates and gives the files to.
            "User=mcpwatch\n",
            "Group=mcpwatch\n",
            &format!("ExecStart=/usr/bin/{binary} run --config /etc/mcpwatch/"),
        ] {
            assert!(text.contains(required), "{name} lacks {required:?}");
        }
        assert!(
            !text.contains("DynamicUser=yes"),
            "{name}: a dynamic user cannot read root:mcpwatch files"
        );
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

/// Runs the README's install steps (scripts/install.sh) for the collector and an agent into a
/// scratch root, then checks as the service user (uid/gid from the scratch root's passwd,
/// groups as systemd would set them) that check-config passes for both, that the agent is in
/// the docker group, and that the CA key is out of the service's reach.
#[test]
fn install_steps_leave_files_the_service_user_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    assert!(
        is_root,
        "the install test needs root (useradd --root, chown, setpriv): run it as CI does"
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // The service user must be able to traverse the scratch root, as it can /.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\ndocker:x:4242:\n").unwrap();
    for f in ["etc/shadow", "etc/gshadow"] {
        std::fs::write(root.join(f), "").unwrap();
    }
    let bin_dir = bin("mcpwatch-collector").parent().unwrap().to_owned();
    bin("mcpwatch-agent");
    let script = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/install.sh"
    ));
    let install = |args: &[&str]| {
        let out = Command::new("bash")
            .arg(script)
            .args(args)
            .arg("--root")
            .arg(root)
            .arg("--bin-dir")
            .arg(&bin_dir)
            .output()
            .expect("run install.sh");
        assert!(
            out.status.success(),
            "install.sh {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    install(&["collector", "--name", "collector.test"]);
    install(&["agent", "--name", "web-1"]);
    // Twice: the steps are idempotent (keys, CA and configs kept).
    install(&["agent", "--name", "web-1"]);

    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let user: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("mcpwatch:"))
        .expect("mcpwatch user created")
        .split(':')
        .collect();
    let (uid, gid) = (user[2], user[3]);
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(
        group.lines().any(|l| l == "docker:x:4242:mcpwatch"),
        "agent user not in the docker group:\n{group}"
    );
    let as_service = |program: &Path, args: &[&str]| {
        Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg(format!("--groups={gid},4242"))
            .arg(program)
            .args(args)
            .output()
            .expect("setpriv")
    };
    for role in ["collector", "agent"] {
        let config = root.join(format!("etc/mcpwatch/{role}.toml"));
        let out = as_service(
            &root.join(format!("usr/bin/mcpwatch-{role}")),
            &["check-config", "--config", config.to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "{role} check-config as the service user:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ca_key = root.join("etc/mcpwatch/pki/ca.key");
    assert!(ca_key.exists());
    let out = as_service(Path::new("/bin/cat"), &[ca_key.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "the service user can read the CA key"
    );
}
