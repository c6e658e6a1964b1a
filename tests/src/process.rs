//! The real binaries as child processes: config files written into a temp dir, stderr to a
//! log file, readiness awaited over HTTP, SIGTERM / SIGKILL / SIGHUP on demand.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::{bin, free_addr, http_get, wait_for, Pki};

/// Sends a signal by name (`TERM`, `HUP`, `STOP`...) with kill(1): std only has SIGKILL.
pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {}", child.id());
}

fn spawn(binary: &str, args: &[&str], log: &Path, envs: &[(&str, &str)]) -> Child {
    let err = File::create(log).expect("create log");
    let mut cmd = Command::new(bin(binary));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .env("RUST_LOG", "info");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn")
}

/// Spawns `binary` and waits until GET `ready_path` on `addr` answers 200; panics with the
/// process's log if it exits first.
fn start_ready(
    binary: &str,
    config: &Path,
    log: &Path,
    envs: &[(&str, &str)],
    addr: SocketAddr,
    ready_path: &str,
) -> Child {
    try_start_ready(binary, config, log, envs, addr, ready_path)
        .unwrap_or_else(|early| panic!("{binary} exited early: {early}"))
}

/// As [`start_ready`], but an early exit is returned (with the process's log) instead of a
/// panic.
fn try_start_ready(
    binary: &str,
    config: &Path,
    log: &Path,
    envs: &[(&str, &str)],
    addr: SocketAddr,
    ready_path: &str,
) -> Result<Child, String> {
    let config = config.display().to_string();
    let mut child = spawn(binary, &["run", "--config", &config], log, envs);
    wait_for(
        &format!("{binary} {ready_path}"),
        Duration::from_secs(30),
        || {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                return Some(Err(format!("{status}\n{log}")));
            }
            matches!(http_get(addr, ready_path), Ok((200, _))).then_some(Ok(()))
        },
    )?;
    Ok(child)
}

fn kill9(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// SIGTERM and wait for exit.
fn stop(child: &mut Option<Child>) -> ExitStatus {
    let mut c = child.take().expect("running");
    signal(&c, "TERM");
    c.wait().expect("wait")
}

/// Every `PREFIX.N.log` of `dir` for N in 1..=starts, concatenated.
fn logs(dir: &Path, prefix: &str, starts: u32) -> String {
    (1..=starts)
        .map(|i| std::fs::read_to_string(dir.join(format!("{prefix}.{i}.log"))).unwrap_or_default())
        .collect()
}

/// A collector's config file (and what it says) in a directory of its own.
pub struct CollectorFiles {
    pub config: PathBuf,
    pub ingest: SocketAddr,
    pub http: SocketAddr,
    pub db: PathBuf,
}

impl CollectorFiles {
    /// Writes `dir/collector.toml` on free loopback ports; extra lines go into `[ingest]`.
    pub fn write(pki: &Pki, dir: &Path, ingest_extra: &str) -> CollectorFiles {
        std::fs::create_dir_all(dir).expect("mkdir");
        let ingest = free_addr();
        let http = free_addr();
        let config = dir.join("collector.toml");
        let db = dir.join("collector.db");
        // A copy of the CA, so reload tests can change the bundle this collector trusts.
        let ca = dir.join("ca-bundle.crt");
        std::fs::copy(pki.ca(), &ca).expect("copy CA bundle");
        std::fs::write(
            &config,
            format!(
                "shutdown_grace = \"5s\"\n[ingest]\nlisten = \"{ingest}\"\n{ingest_extra}\n\
                 [tls]\nca = \"{ca}\"\ncert = \"{p}/collector.crt\"\nkey = \"{p}/collector.key\"\n\
                 [store]\npath = \"{db}\"\n[http]\nlisten = \"{http}\"\n",
                ca = ca.display(),
                p = pki.dir.display(),
                db = db.display(),
            ),
        )
        .expect("write config");
        CollectorFiles {
            config,
            ingest,
            http,
            db,
        }
    }
}

/// A collector process with its config, database and log in `dir`.
pub struct CollectorProc {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub ingest: SocketAddr,
    pub http: SocketAddr,
    pub db: PathBuf,
    pub log: PathBuf,
    starts: u32,
}

impl CollectorProc {
    /// Writes a config (extra TOML lines go into `[ingest]`) and starts the collector.
    /// A free port can be taken by another test between `free_addr` and the collector's
    /// bind: that start is retried on fresh ports (the config is written again).
    pub fn start(pki: &Pki, dir: &Path, ingest_extra: &str) -> CollectorProc {
        for _ in 0..5 {
            let CollectorFiles {
                config,
                ingest,
                http,
                db,
            } = CollectorFiles::write(pki, dir, ingest_extra);
            let mut c = CollectorProc {
                child: None,
                dir: dir.to_owned(),
                config,
                ingest,
                http,
                db,
                log: dir.join("collector.log"),
                starts: 1,
            };
            c.log = dir.join("collector.1.log");
            match try_start_ready(
                "mcpwatch-collector",
                &c.config,
                &c.log,
                &[],
                c.http,
                "/readyz",
            ) {
                Ok(child) => {
                    c.child = Some(child);
                    return c;
                }
                Err(early) if early.contains("Address already in use") => continue,
                Err(early) => panic!("mcpwatch-collector exited early: {early}"),
            }
        }
        panic!("mcpwatch-collector: no free ports after 5 tries");
    }

    /// Starts the process again (after a kill) and waits until `/readyz` answers 200.
    pub fn restart(&mut self) {
        self.restart_with_env(&[]);
    }

    /// [`Self::restart`] with extra environment variables (e.g. `RUST_LOG`, which the
    /// harness otherwise sets to `info`).
    pub fn restart_with_env(&mut self, envs: &[(&str, &str)]) {
        assert!(self.child.is_none(), "collector already running");
        self.starts += 1;
        self.log = self.dir.join(format!("collector.{}.log", self.starts));
        self.child = Some(start_ready(
            "mcpwatch-collector",
            &self.config,
            &self.log,
            envs,
            self.http,
            "/readyz",
        ));
    }

    pub fn kill9(&mut self) {
        kill9(&mut self.child);
    }

    /// SIGTERM and wait for exit.
    pub fn stop(&mut self) -> ExitStatus {
        stop(&mut self.child)
    }

    /// Moves this (stopped) collector's config to `dir`, its database path to
    /// `dir/collector.db` (not copied), same ports: a replacement machine for a restore.
    pub fn relocate(&mut self, dir: &Path) {
        assert!(self.child.is_none(), "stop the collector first");
        std::fs::create_dir_all(dir).expect("mkdir");
        let db = dir.join("collector.db");
        let text = std::fs::read_to_string(&self.config).expect("collector config");
        let text = text.replace(
            &format!("path = \"{}\"", self.db.display()),
            &format!("path = \"{}\"", db.display()),
        );
        assert!(
            text.contains(&db.display().to_string()),
            "db path not in config"
        );
        let config = dir.join("collector.toml");
        std::fs::write(&config, text).expect("write config");
        self.dir = dir.to_owned();
        self.config = config;
        self.db = db;
        self.starts = 0;
    }

    pub fn metrics(&self) -> String {
        http_get(self.http, "/metrics")
            .map(|r| r.1)
            .unwrap_or_default()
    }

    /// All logs this collector wrote so far, across restarts.
    pub fn logs(&self) -> String {
        logs(&self.dir, "collector", self.starts)
    }
}

impl Drop for CollectorProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An agent process with config, spool and log in `dir`.
pub struct AgentProc {
    pub child: Option<Child>,
    /// Extra environment for the agent process (e.g. DOCKER_HOST).
    pub env: Vec<(String, String)>,
    pub name: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub metrics_addr: SocketAddr,
    /// The agent's MCP gateway (`[gateway] listen`), a free loopback port per agent.
    pub gateway_addr: SocketAddr,
    pub spool: PathBuf,
    starts: u32,
}

impl AgentProc {
    /// Issues a certificate for `name`, writes a config pointing at `collector` sampling
    /// every `interval` with a spool of `spool_max`, and starts the agent.
    pub fn start(
        pki: &Pki,
        dir: &Path,
        name: &str,
        collector: SocketAddr,
        interval: &str,
        spool_max: &str,
    ) -> AgentProc {
        let mut a = AgentProc::configure(pki, dir, name, collector, interval, spool_max);
        a.restart();
        a
    }

    /// Like [`AgentProc::start`] without starting: edit `config`, then `restart()`.
    pub fn configure(
        pki: &Pki,
        dir: &Path,
        name: &str,
        collector: SocketAddr,
        interval: &str,
        spool_max: &str,
    ) -> AgentProc {
        std::fs::create_dir_all(dir).expect("mkdir");
        let certs = pki.agent(name);
        let metrics_addr = free_addr();
        let gateway_addr = free_addr();
        let config = dir.join("agent.toml");
        let spool = dir.join("spool");
        std::fs::write(
            &config,
            format!(
                "shutdown_grace = \"5s\"\nstate_dir = \"{state}\"\n[sampling]\ninterval = \"{interval}\"\n[collector]\naddress = \"{collector}\"\nserver_name = \"localhost\"\n\
                 [tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\
                 [spool]\ndir = \"{spool}\"\nmax_size = \"{spool_max}\"\n[metrics]\nlisten = \"{metrics_addr}\"\n\
                 [uplink]\nbackoff_min = \"50ms\"\nbackoff_max = \"500ms\"\n\
                 [gateway]\nlisten = \"{gateway_addr}\"\n",
                ca = pki.ca().display(),
                cert = certs.cert.display(),
                key = certs.key.display(),
                spool = spool.display(),
                state = dir.join("state").display(),
            ),
        )
        .expect("write config");
        AgentProc {
            child: None,
            env: Vec::new(),
            name: name.to_owned(),
            dir: dir.to_owned(),
            config,
            metrics_addr,
            gateway_addr,
            spool,
            starts: 0,
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "agent already running");
        self.starts += 1;
        let log = self.dir.join(format!("agent.{}.log", self.starts));
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // A port that was free when picked can be taken by another test's process before the
        // agent binds it: pick another and try again (the log names the listener).
        for attempt in 0.. {
            let started = try_start_ready(
                "mcpwatch-agent",
                &self.config,
                &log,
                &env,
                self.metrics_addr,
                "/healthz",
            );
            let early = match started {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(early) => early,
            };
            let in_use = early.contains("Address already in use");
            let gateway = early.contains("bind gateway listener");
            let metrics = early.contains("bind metrics listener");
            if attempt >= 3 || !in_use || !(gateway || metrics) {
                panic!("mcpwatch-agent exited early: {early}");
            }
            let text = std::fs::read_to_string(&self.config).expect("agent config");
            let (old, new) = if gateway {
                let new = free_addr();
                let old = std::mem::replace(&mut self.gateway_addr, new);
                (old, new)
            } else {
                let new = free_addr();
                let old = std::mem::replace(&mut self.metrics_addr, new);
                (old, new)
            };
            let text = text.replace(&format!("\"{old}\""), &format!("\"{new}\""));
            std::fs::write(&self.config, text).expect("agent config");
        }
    }

    pub fn metrics(&self) -> String {
        http_get(self.metrics_addr, "/metrics")
            .map(|r| r.1)
            .unwrap_or_default()
    }

    pub fn metric(&self, name: &str) -> f64 {
        crate::metric(&self.metrics(), name).unwrap_or(f64::NAN)
    }

    /// `name{server="SERVER"}` on the agent's /metrics.
    pub fn metric_labelled(&self, name: &str, server: &str) -> Option<f64> {
        crate::metric(&self.metrics(), &format!("{name}{{server=\"{server}\"}}"))
    }

    pub fn kill9(&mut self) {
        kill9(&mut self.child);
    }

    /// SIGTERM and wait for exit (the agent drains to the collector first).
    pub fn stop(&mut self) -> ExitStatus {
        stop(&mut self.child)
    }

    pub fn logs(&self) -> String {
        logs(&self.dir, "agent", self.starts)
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The counters the agent logs when it stops: (collected, dropped, pending records).
pub fn final_counts(log: &str) -> (u64, u64, u64) {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("agent stopped"))
        .unwrap_or_else(|| panic!("no 'agent stopped' line in agent log:\n{log}"));
    let field = |name: &str| -> u64 {
        let at = line
            .find(&format!("{name}="))
            .unwrap_or_else(|| panic!("{name} missing in {line}"));
        line[at + name.len() + 1..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} unparsable in {line}"))
    };
    (
        field("samples_collected"),
        field("samples_dropped"),
        field("pending_records"),
    )
}

impl AgentProc {
    /// Appends TOML (e.g. `[[mcp_server]]` tables) to the config; takes effect on the next
    /// start or SIGHUP.
    pub fn append_config(&self, toml: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.config)
            .expect("open agent config");
        f.write_all(toml.as_bytes()).expect("append agent config");
    }

    /// Batches the collector has acknowledged so far (NaN when the agent is down).
    pub fn acked(&self) -> f64 {
        self.metric("mcpwatch_agent_batches_acked_total")
    }

    /// Waits until at least `more` further batches are acknowledged.
    pub fn wait_acked_more(&self, more: f64) {
        let target = self.acked().max(0.0) + more;
        wait_for("batches acknowledged", Duration::from_secs(60), || {
            (self.acked() >= target).then_some(())
        });
    }
}

/// The usual fixture: a fresh temp dir with a PKI, a collector, and agent `web-1` sampling
/// every 100 ms, already streaming (3 batches acked) when `start` returns.
pub struct Pair {
    // Fields drop in order: processes before the directory they live in.
    pub agent: AgentProc,
    pub collector: CollectorProc,
    pub pki: Pki,
    pub tmp: tempfile::TempDir,
}

impl Pair {
    pub fn start() -> Pair {
        Pair::with_collector("")
    }

    /// With extra `[ingest]` lines for the collector.
    pub fn with_collector(ingest_extra: &str) -> Pair {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(&tmp.path().join("pki"));
        let collector = CollectorProc::start(&pki, &tmp.path().join("c"), ingest_extra);
        let agent = AgentProc::start(
            &pki,
            &tmp.path().join("a"),
            "web-1",
            collector.ingest,
            "100ms",
            "256MiB",
        );
        agent.wait_acked_more(3.0);
        Pair {
            agent,
            collector,
            pki,
            tmp,
        }
    }
}

/// `mcpwatch-collector quickstart --dir DIR` on `[ingest, http, agent metrics, gateway]`;
/// the caller adds options, environment and output.
pub fn quickstart_command(dir: &Path, addrs: [SocketAddr; 4]) -> Command {
    let [ingest, http, agent, gateway] = addrs;
    let mut c = Command::new(bin("mcpwatch-collector"));
    c.arg("quickstart")
        .arg("--dir")
        .arg(dir)
        .args(["--ingest", &ingest.to_string()])
        .args(["--http", &http.to_string()])
        .args(["--agent-metrics", &agent.to_string()])
        .args(["--gateway", &gateway.to_string()]);
    c
}

/// [`wait_for`] on a child process's observable state, failing at once if the child exits
/// first; either failure prints the child's output files (`logs`), so a CI failure says why.
pub fn wait_while_running<T>(
    child: &mut Child,
    logs: &[&Path],
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let outputs = || {
        logs.iter()
            .map(|p| {
                let text = std::fs::read_to_string(p).unwrap_or_else(|e| format!("({e})"));
                format!("--- {}\n{text}", p.display())
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "waiting for {what}: the process exited ({status})\n{}",
                outputs()
            );
        }
        if std::time::Instant::now() >= deadline {
            panic!("timed out waiting for {what}\n{}", outputs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
