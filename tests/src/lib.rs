//! Test and benchmark harness: dev PKI in temp dirs, the real `mcpwatch-collector` and
//! `mcpwatch-agent` binaries as child processes on loopback, and a raw protocol client for
//! driving the collector with hand-made (and hostile) frames.

pub mod api;
pub mod client;
pub mod db;
pub mod docker;
pub mod ingest_load;
pub mod mcp_load;
pub mod oidc_provider;
pub mod process;
pub mod procfs;
pub mod receivers;
pub mod rig;
pub mod sim;
pub mod sse;
pub mod tsdb;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A loopback address with a port that was free a moment ago, below the kernel's ephemeral
/// range (32768..=60999 on Linux): a port from that range can be taken, between this call
/// and the test's bind, as the source port of any outgoing connection on the machine (an
/// agent's uplink, a browser's fetch), which then holds it for as long as it lives.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Spread parallel test processes over the range, then walk it.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() % 12_000) * 7;
    for _ in 0..12_000 {
        let port = 20_000 + (start + NEXT.fetch_add(1, Ordering::Relaxed) * 7919) % 12_000;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            return l.local_addr().expect("local addr");
        }
    }
    // Everything below the ephemeral range is taken: let the kernel choose.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr")
}

/// Names the agent binary to run instead of the one beside the test executable: the static
/// musl build the project ships (`scripts/build-release.sh`; `scripts/test.sh` runs the
/// end-to-end tests against its debug build too, and the benchmarks measure it).
pub const AGENT_BIN_ENV: &str = "MCPWATCH_AGENT_BIN";

/// Path of a workspace binary, next to the test executable's target dir (the agent's may be
/// overridden by [`AGENT_BIN_ENV`]).
pub fn bin(name: &str) -> PathBuf {
    if name == "mcpwatch-agent" {
        if let Some(path) = std::env::var_os(AGENT_BIN_ENV) {
            let path = PathBuf::from(path);
            assert!(
                path.exists(),
                "{AGENT_BIN_ENV}={} is missing",
                path.display()
            );
            return path;
        }
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/test-hash → target/debug/name
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A dev PKI: CA, collector certificate, and agent certificates issued on demand.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        mcpwatch_common::certs::init(dir, &[]).expect("certs init");
        Pki {
            dir: dir.to_owned(),
        }
    }

    pub fn agent(&self, name: &str) -> mcpwatch_common::certs::CertPaths {
        mcpwatch_common::certs::issue_agent(&self.dir, name).expect("issue agent cert")
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
}

/// Polls `check` every 20 ms until it returns Some or `timeout` passes (then panics with
/// `what`). For waiting on another process's observable state, which no event announces.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// GET `path` over plain HTTP/1.1; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of an unlabelled metric line `name value` in a Prometheus exposition.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Asserts that `promtool check metrics` accepts `exposition`; fails with a pointer to the
/// test script when promtool is missing.
pub fn promtool_check(what: &str, exposition: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): run ./scripts/test.sh, which installs it")
        });
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed for {what}:\n{}{}\n---\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
