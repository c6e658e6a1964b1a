//! Docker for end-to-end tests: a daemon that answers (started on demand, loopback only), the
//! MCP fixture packaged `FROM scratch` as `mcpwatch-fixture:test`, and containers that are
//! removed when the test drops them.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Tag of the fixture image built by [`fixture_image`].
pub const FIXTURE_IMAGE: &str = "mcpwatch-fixture:test";

/// How long a started dockerd may take to answer.
const DOCKERD_START: Duration = Duration::from_secs(60);

/// Whether a Docker daemon answers `docker version`.
pub fn docker_answers() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure a daemon answers, starting `dockerd --bridge=none --iptables=false
/// --ip-masq=false` when none does. Within one test process the check runs once; across the
/// test binaries that run in parallel, two may start dockerd at the same moment, and dockerd's
/// own pid file (/var/run/docker.pid) lets only one of them live: every caller then waits for
/// whichever daemon answers.
pub fn ensure_dockerd() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        if docker_answers() {
            return;
        }
        let log = std::env::temp_dir().join("mcpwatch-tests-dockerd.log");
        let out = File::create(&log).expect("create dockerd log");
        let err = out.try_clone().expect("clone dockerd log handle");
        let mut daemon = Command::new("dockerd")
            .args(["--bridge=none", "--iptables=false", "--ip-masq=false"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: the daemon outlives this test process and a Ctrl-C
            // aimed at the tests.
            .process_group(0)
            .spawn()
            .expect("spawn dockerd (is docker.io installed?)");
        // Reap it if it exits (e.g. it lost the pid-file race); the thread never holds up
        // the test process's exit.
        std::thread::spawn(move || daemon.wait());
        let deadline = Instant::now() + DOCKERD_START;
        while !docker_answers() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within {DOCKERD_START:?}; see {}",
                log.display()
            );
            // No event announces a daemon's readiness; poll its API.
            std::thread::sleep(Duration::from_millis(200));
        }
    });
}

/// The workspace root (the tests crate sits directly below it).
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
}

/// Builds the static fixture binary (a no-op when it is up to date) and returns its path.
pub fn static_fixture_binary() -> PathBuf {
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(&root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // Flags cargo may hand to the test process must not leak into this build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args([
            "build",
            "--profile",
            "fixture",
            "-p",
            "mcpwatch-mcp-fixture",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run cargo");
    assert!(
        output.status.success(),
        "static fixture build failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("x86_64-unknown-linux-gnu/fixture/mcp-fixture");
    assert!(bin.exists(), "{} missing after the build", bin.display());
    bin
}

/// Builds (once per test process) the fixture image `FROM scratch` with the static binary as
/// its entrypoint, and returns its tag. Test binaries run in parallel and may build it at the
/// same time: cargo serialises the binary builds, and identical `docker build`s just retag.
/// A bollard client for the local daemon (started if needed), at the daemon's API version.
pub async fn bollard_client() -> bollard::Docker {
    ensure_dockerd();
    bollard::Docker::connect_with_local_defaults()
        .expect("docker client")
        // Debian's engine may speak an older API than bollard's default.
        .negotiate_version()
        .await
        .expect("docker API version")
}

pub fn fixture_image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            ensure_dockerd();
            let bin = static_fixture_binary();
            let ctx = tempfile::tempdir().expect("tempdir");
            std::fs::copy(&bin, ctx.path().join("mcp-fixture")).expect("copy fixture binary");
            std::fs::write(
                ctx.path().join("Dockerfile"),
                "FROM scratch\n\
                 LABEL mcpwatch.test=fixture\n\
                 COPY mcp-fixture /mcp-fixture\n\
                 ENTRYPOINT [\"/mcp-fixture\"]\n",
            )
            .expect("write Dockerfile");
            let mut last = String::new();
            // A concurrent build of the same image can make one of them fail on the tag;
            // the retry then finds the layers cached.
            for _ in 0..3 {
                let out = docker(&[
                    "build",
                    "-q",
                    "-t",
                    FIXTURE_IMAGE,
                    &ctx.path().to_string_lossy(),
                ]);
                if out.status.success() {
                    return FIXTURE_IMAGE.to_owned();
                }
                last = String::from_utf8_lossy(&out.stderr).into_owned();
            }
            panic!("docker build of {FIXTURE_IMAGE} failed: {last}");
        })
        .clone()
}

/// Runs the docker CLI to completion.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        // The classic builder needs no buildx plugin and no network for FROM scratch.
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::null())
        .output()
        .expect("run docker")
}

/// A name no other container of this or any concurrent test run has.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A container this test started; force-removed on drop whatever happened.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `docker run -d --rm --name <unique> ARGS...` (ARGS: options, image, command).
    pub fn run(prefix: &str, args: &[&str]) -> Container {
        let name = unique_name(prefix);
        // Own the name before starting, so even a half-failed `run` gets cleaned up.
        let container = Container { name };
        let mut full = vec!["run", "-d", "--rm", "--name", &container.name];
        full.extend_from_slice(args);
        let out = docker(&full);
        assert!(
            out.status.success(),
            "docker run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        container
    }

    /// For a container started some other way under `name`.
    pub fn adopt(name: String) -> Container {
        Container { name }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}

/// IDs of all containers (any state) carrying `label` (`key=value`).
pub fn containers_with_label(label: &str) -> Vec<String> {
    let filter = format!("label={label}");
    let out = docker(&["ps", "-aq", "--no-trunc", "--filter", &filter]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Whether container `id` (still) has `var` (`KEY=value`) in its environment.
pub fn container_has_env(id: &str, var: &str) -> bool {
    let out = docker(&[
        "inspect",
        "--format",
        "{{range .Config.Env}}{{println .}}{{end}}",
        id,
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l == var)
}

/// A dockerd of a test's own (own socket, data and exec roots), so a test can stop and
/// restart a Docker engine without disturbing the shared one other tests use.
pub struct PrivateDockerd {
    pub dir: PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateDockerd {
    pub fn start(dir: &std::path::Path) -> PrivateDockerd {
        std::fs::create_dir_all(dir).expect("mkdir");
        let mut d = PrivateDockerd {
            dir: dir.to_owned(),
            child: None,
        };
        d.restart();
        d
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// The docker CLI against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        let host = self.host();
        let mut all = vec!["-H", host.as_str()];
        all.extend_from_slice(args);
        docker(&all)
    }

    /// Starts the daemon (again) and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "private dockerd already running");
        let log = std::fs::File::create(self.dir.join("dockerd.log")).expect("log");
        let child = Command::new("dockerd")
            .arg("-H")
            .arg(self.host())
            .arg("--data-root")
            .arg(self.dir.join("data"))
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("docker.pid"))
            .args(["--bridge=none", "--iptables=false", "--ip-masq=false"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !self.docker(&["version"]).status.success() {
            assert!(
                std::time::Instant::now() < deadline,
                "private dockerd did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM and wait: a clean daemon stop, which also stops its containers.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Copies an image from the shared daemon into this one.
    pub fn load_image(&self, image: &str) {
        let mut save = Command::new("docker")
            .args(["save", image])
            .stdout(Stdio::piped())
            .spawn()
            .expect("docker save");
        let stdout = save.stdout.take().expect("piped stdout");
        let out = Command::new("docker")
            .args(["-H", &self.host(), "load"])
            .stdin(stdout)
            .output()
            .expect("docker load");
        assert!(
            save.wait().expect("docker save").success(),
            "docker save {image}"
        );
        assert!(
            out.status.success(),
            "docker load: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            let out = self.docker(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                self.docker(&["rm", "-f", id]);
            }
        }
        self.stop();
    }
}
