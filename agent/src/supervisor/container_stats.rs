//! Per-server container metrics for the sampler: supervisor state from a
//! [`ServerStatus`] snapshot (no Docker call), CPU and memory from the container's cgroup
//! files (microseconds), and only when those cannot be found a one-shot stats call.
//!
//! DESIGN.md measured the streaming stats API at 1–2 s per container; cgroup files are read
//! in µs, so that is the normal path. Supported layouts: cgroup v1 with the cgroupfs driver
//! (`cpuacct/docker/<id>`) or the systemd driver (`…/system.slice/docker-<id>.scope`), and
//! cgroup v2 (`system.slice/docker-<id>.scope`, `docker/<id>`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mcpwatch_common::wire::SeriesKey;

use super::docker::DockerApi;
use super::status::{ServerPhase, ServerStatus};
use crate::sampler::MetricKind;

pub const SERVER_UP: &str = "mcpwatch_server_up";
pub const SERVER_RESTARTS_TOTAL: &str = "mcpwatch_server_restarts_total";
pub const SERVER_UPTIME_SECONDS: &str = "mcpwatch_server_uptime_seconds";
pub const SERVER_LAST_EXIT_CODE: &str = "mcpwatch_server_last_exit_code";
pub const SERVER_OOM_KILLED: &str = "mcpwatch_server_oom_killed";
pub const SERVER_CPU_SECONDS_TOTAL: &str = "mcpwatch_server_cpu_seconds_total";
pub const SERVER_MEMORY_BYTES: &str = "mcpwatch_server_memory_bytes";
pub const SERVER_CRASHLOOP_ATTEMPT: &str = "mcpwatch_server_crashloop_attempt";
pub const SERVER_CRASHLOOP_NEXT_DELAY_SECONDS: &str =
    "mcpwatch_server_crashloop_next_delay_seconds";
pub const SERVER_GAVE_UP: &str = "mcpwatch_server_gave_up";
pub const SERVER_STATE: &str = "mcpwatch_server_state";
pub const SERVER_HEALTHY: &str = "mcpwatch_server_healthy";

/// Every phase, so the state set always has one series at 1 and the rest at 0.
const PHASES: [ServerPhase; 6] = [
    ServerPhase::Pending,
    ServerPhase::Running,
    ServerPhase::BackingOff,
    ServerPhase::Stopped,
    ServerPhase::Exited,
    ServerPhase::GaveUp,
];

/// Every series family emitted here: (name, help, kind), all labelled `server`.
pub fn series_help() -> &'static [(&'static str, &'static str, MetricKind)] {
    use MetricKind::{Counter, Gauge};
    &[
        (
            SERVER_UP,
            "1 when the server's container is running.",
            Gauge,
        ),
        (
            SERVER_STATE,
            "1 for the server's current phase (pending, running, backing_off, stopped, exited, gave_up), 0 for the others.",
            Gauge,
        ),
        (
            SERVER_HEALTHY,
            "1 when the container runs and its MCP probes have not crossed the failure threshold.",
            Gauge,
        ),
        (
            SERVER_RESTARTS_TOTAL,
            "Restarts performed by this agent (crash loop, unhealthy, command) since it started.",
            Counter,
        ),
        (
            SERVER_UPTIME_SECONDS,
            "Time since the container last started; 0 when it is not running.",
            Gauge,
        ),
        (
            SERVER_LAST_EXIT_CODE,
            "Exit code of the container's last exit (absent until it has exited once).",
            Gauge,
        ),
        (
            SERVER_OOM_KILLED,
            "1 when the container's last exit was an out-of-memory kill.",
            Gauge,
        ),
        (
            SERVER_CPU_SECONDS_TOTAL,
            "CPU time used by the running container (resets when the container restarts).",
            Counter,
        ),
        (
            SERVER_MEMORY_BYTES,
            "Memory working set of the running container (usage minus inactive page cache, \
             as docker stats shows).",
            Gauge,
        ),
        (
            SERVER_CRASHLOOP_ATTEMPT,
            "Restarts in the current crash loop; 0 once the server has run for the reset period.",
            Gauge,
        ),
        (
            SERVER_CRASHLOOP_NEXT_DELAY_SECONDS,
            "Delay the next crash-loop restart would wait.",
            Gauge,
        ),
        (
            SERVER_GAVE_UP,
            "1 when the restart budget is exhausted and the server is left down.",
            Gauge,
        ),
    ]
}

/// Where one container's usage figures live.
#[derive(Debug, Clone, PartialEq)]
enum CgroupFiles {
    V1 {
        cpu_usage_ns: PathBuf,
        memory_usage: PathBuf,
        memory_stat: PathBuf,
    },
    V2 {
        cpu_stat: PathBuf,
        memory_current: PathBuf,
        memory_stat: PathBuf,
    },
}

/// Reads container CPU and memory; keep one across cycles (it caches cgroup paths).
pub struct ContainerStats {
    api: DockerApi,
    cgroup_root: PathBuf,
    files: HashMap<String, CgroupFiles>,
}

impl ContainerStats {
    /// `api` is only used for the stats fallback (a clone of the supervisor's is fine).
    pub fn new(api: DockerApi) -> Self {
        Self::with_cgroup_root(api, "/sys/fs/cgroup")
    }

    /// For tests: a fake cgroup tree.
    pub fn with_cgroup_root(api: DockerApi, root: impl Into<PathBuf>) -> Self {
        ContainerStats {
            api,
            cgroup_root: root.into(),
            files: HashMap::new(),
        }
    }

    /// One sample of every server in `servers` at `now_ms` (ms since the epoch).
    pub async fn sample(&mut self, servers: &[ServerStatus], now_ms: i64) -> Vec<(SeriesKey, f64)> {
        let mut out = Vec::with_capacity(servers.len() * 10);
        // Forget containers that are gone, so the cache cannot grow without bound.
        self.files.retain(|id, _| {
            servers
                .iter()
                .any(|s| s.container_id.as_deref() == Some(id.as_str()))
        });
        for s in servers {
            let key = |name: &str| SeriesKey::new(name, &[("server", s.server.as_str())]);
            let flag = |b: bool| if b { 1.0 } else { 0.0 };
            out.push((key(SERVER_UP), flag(s.running)));
            out.push((key(SERVER_RESTARTS_TOTAL), s.restarts_total as f64));
            let uptime = match (s.running, s.started_at_ms) {
                (true, Some(t)) => (now_ms.saturating_sub(t)).max(0) as f64 / 1000.0,
                _ => 0.0,
            };
            out.push((key(SERVER_UPTIME_SECONDS), uptime));
            if let Some(code) = s.last_exit_code {
                out.push((key(SERVER_LAST_EXIT_CODE), code as f64));
            }
            out.push((key(SERVER_OOM_KILLED), flag(s.oom_killed)));
            out.push((
                key(SERVER_CRASHLOOP_ATTEMPT),
                f64::from(s.crashloop_attempt),
            ));
            out.push((
                key(SERVER_CRASHLOOP_NEXT_DELAY_SECONDS),
                s.next_delay.as_secs_f64(),
            ));
            out.push((key(SERVER_GAVE_UP), flag(s.gave_up)));
            out.push((key(SERVER_HEALTHY), flag(s.running && !s.unhealthy)));
            for phase in PHASES {
                out.push((
                    SeriesKey::new(
                        SERVER_STATE,
                        &[("server", s.server.as_str()), ("state", phase.as_str())],
                    ),
                    flag(s.phase == phase),
                ));
            }
            if let (true, Some(id)) = (s.running, s.container_id.as_deref()) {
                let (cpu, mem) = self.usage(id).await;
                if let Some(cpu) = cpu {
                    out.push((key(SERVER_CPU_SECONDS_TOTAL), cpu));
                }
                if let Some(mem) = mem {
                    out.push((key(SERVER_MEMORY_BYTES), mem as f64));
                }
            }
        }
        out
    }

    /// (CPU seconds, memory bytes) of a running container: cgroup files, else one-shot
    /// stats; `None` for what neither could tell.
    async fn usage(&mut self, id: &str) -> (Option<f64>, Option<u64>) {
        if let Some(files) = self
            .files
            .get(id)
            .cloned()
            .or_else(|| find_cgroup(&self.cgroup_root, id))
        {
            if let Some(u) = read_cgroup(&files) {
                self.files.insert(id.to_owned(), files);
                return (Some(u.0), Some(u.1));
            }
            self.files.remove(id);
        }
        match self.api.stats_once(id).await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(container = %id, error = %e, "container stats unavailable");
                (None, None)
            }
        }
    }
}

/// The cgroup files of container `id` under `root`, if any layout matches.
fn find_cgroup(root: &Path, id: &str) -> Option<CgroupFiles> {
    // The id goes into a path: accept only what Docker ids are made of.
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let groups = [
        format!("docker/{id}"),
        format!("system.slice/docker-{id}.scope"),
    ];
    for g in &groups {
        let dir = root.join(g);
        if dir.join("cpu.stat").is_file() && dir.join("memory.current").is_file() {
            return Some(CgroupFiles::V2 {
                cpu_stat: dir.join("cpu.stat"),
                memory_current: dir.join("memory.current"),
                memory_stat: dir.join("memory.stat"),
            });
        }
    }
    for g in &groups {
        let mem = root.join("memory").join(g);
        if !mem.join("memory.usage_in_bytes").is_file() {
            continue;
        }
        for cpu_dir in ["cpuacct", "cpu,cpuacct", "cpuacct,cpu"] {
            let cpu = root.join(cpu_dir).join(g).join("cpuacct.usage");
            if cpu.is_file() {
                return Some(CgroupFiles::V1 {
                    cpu_usage_ns: cpu,
                    memory_usage: mem.join("memory.usage_in_bytes"),
                    memory_stat: mem.join("memory.stat"),
                });
            }
        }
    }
    None
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// The value of `key` in a `key value` per line file (memory.stat, cpu.stat).
fn stat_value(p: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(p).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// (CPU seconds, memory working set bytes).
fn read_cgroup(files: &CgroupFiles) -> Option<(f64, u64)> {
    match files {
        CgroupFiles::V1 {
            cpu_usage_ns,
            memory_usage,
            memory_stat,
        } => {
            let cpu = read_u64(cpu_usage_ns)? as f64 / 1e9;
            let usage = read_u64(memory_usage)?;
            let inactive = stat_value(memory_stat, "total_inactive_file").unwrap_or(0);
            Some((cpu, usage.saturating_sub(inactive)))
        }
        CgroupFiles::V2 {
            cpu_stat,
            memory_current,
            memory_stat,
        } => {
            let cpu = stat_value(cpu_stat, "usage_usec")? as f64 / 1e6;
            let usage = read_u64(memory_current)?;
            let inactive = stat_value(memory_stat, "inactive_file").unwrap_or(0);
            Some((cpu, usage.saturating_sub(inactive)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn cgroup_v1_cgroupfs_layout() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            &format!("cpuacct/docker/{ID}/cpuacct.usage"),
            "2500000000\n",
        );
        write(
            d.path(),
            &format!("memory/docker/{ID}/memory.usage_in_bytes"),
            "10000\n",
        );
        write(
            d.path(),
            &format!("memory/docker/{ID}/memory.stat"),
            "cache 5\ntotal_inactive_file 4000\n",
        );
        let f = find_cgroup(d.path(), ID).unwrap();
        assert_eq!(read_cgroup(&f), Some((2.5, 6000)));
        assert_eq!(find_cgroup(d.path(), "../../etc"), None);
    }

    #[test]
    fn cgroup_v2_systemd_layout() {
        let d = tempfile::tempdir().unwrap();
        let g = format!("system.slice/docker-{ID}.scope");
        write(
            d.path(),
            &format!("{g}/cpu.stat"),
            "usage_usec 1500000\nuser_usec 1\n",
        );
        write(d.path(), &format!("{g}/memory.current"), "8192\n");
        write(
            d.path(),
            &format!("{g}/memory.stat"),
            "anon 1\ninactive_file 192\n",
        );
        let f = find_cgroup(d.path(), ID).unwrap();
        assert_eq!(read_cgroup(&f), Some((1.5, 8000)));
    }

    #[tokio::test]
    async fn samples_name_every_family() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            &format!("docker/{ID}/cpu.stat"),
            "usage_usec 2000000\n",
        );
        write(d.path(), &format!("docker/{ID}/memory.current"), "4096\n");
        // Never contacted: the cgroup files answer.
        let api = DockerApi::at_socket("/nonexistent/docker.sock", "a");
        let mut stats = ContainerStats::with_cgroup_root(api, d.path());
        let status = ServerStatus {
            server: "files".into(),
            container_id: Some(ID.into()),
            phase: super::super::ServerPhase::Running,
            running: true,
            unhealthy: false,
            restarts_total: 2,
            started_at_ms: Some(1_000),
            last_exit_code: Some(137),
            oom_killed: true,
            crashloop_attempt: 1,
            next_delay: Duration::from_secs(20),
            gave_up: false,
            stopped_by_command: false,
        };
        let out = stats.sample(&[status], 11_000).await;
        let get = |name: &str| {
            out.iter().find(|(k, _)| k.name == name).map(|(k, v)| {
                assert_eq!(k.labels[0], ("server".to_string(), "files".to_string()));
                *v
            })
        };
        let state = |phase: &str| {
            out.iter()
                .find(|(k, _)| {
                    k.name == SERVER_STATE
                        && k.labels.iter().any(|(n, v)| n == "state" && v == phase)
                })
                .map(|(_, v)| *v)
        };
        assert_eq!(get(SERVER_UP), Some(1.0));
        assert_eq!(get(SERVER_RESTARTS_TOTAL), Some(2.0));
        assert_eq!(get(SERVER_UPTIME_SECONDS), Some(10.0));
        assert_eq!(get(SERVER_LAST_EXIT_CODE), Some(137.0));
        assert_eq!(get(SERVER_OOM_KILLED), Some(1.0));
        assert_eq!(get(SERVER_CPU_SECONDS_TOTAL), Some(2.0));
        assert_eq!(get(SERVER_MEMORY_BYTES), Some(4096.0));
        assert_eq!(get(SERVER_CRASHLOOP_ATTEMPT), Some(1.0));
        assert_eq!(get(SERVER_CRASHLOOP_NEXT_DELAY_SECONDS), Some(20.0));
        assert_eq!(get(SERVER_GAVE_UP), Some(0.0));
        assert_eq!(get(SERVER_HEALTHY), Some(1.0));
        assert_eq!(state("running"), Some(1.0));
        for other in ["pending", "backing_off", "stopped", "exited", "gave_up"] {
            assert_eq!(state(other), Some(0.0), "{other}");
        }
        for (name, _, _) in series_help() {
            assert!(get(name).is_some(), "{name}");
        }
    }
}
