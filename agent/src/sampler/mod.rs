//! Host metrics sampler: CPU, memory, disks, network interfaces, load, uptime and process count.
//!
//! A [`Sampler`] is built once and [`Sampler::sample`] is called once per interval. Each family
//! reads the kernel files it reports straight from procfs, through descriptors opened once and
//! re-read with `pread` (`proc_file.rs`): a cycle opens one directory (/proc, for the process
//! count) and nothing else, where sysinfo opened and closed about fifty files. Never the
//! process table (DESIGN.md measured 2.8 ms per cycle for processes alone). CPU usage is a
//! difference between two reads, so the CPU family keeps the previous counters.
//!
//! Series names and help texts live in [`series_help`], so the Prometheus endpoint and the
//! wire agree on one list.

pub mod certificates;
mod cpu;
mod disk;
mod memory;
mod network;
mod proc_file;
mod system;

use mcpwatch_common::wire::SeriesKey;

/// How a series behaves over time, which decides its Prometheus TYPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A value that can go up and down.
    Gauge,
    /// A cumulative value that only resets when its source restarts; the name ends in `_total`.
    Counter,
}

pub const CPU_USAGE_RATIO: &str = "mcpwatch_host_cpu_usage_ratio";
pub const MEMORY_TOTAL_BYTES: &str = "mcpwatch_host_memory_total_bytes";
pub const MEMORY_USED_BYTES: &str = "mcpwatch_host_memory_used_bytes";
pub const MEMORY_AVAILABLE_BYTES: &str = "mcpwatch_host_memory_available_bytes";
pub const SWAP_TOTAL_BYTES: &str = "mcpwatch_host_swap_total_bytes";
pub const SWAP_USED_BYTES: &str = "mcpwatch_host_swap_used_bytes";
pub const LOAD1: &str = "mcpwatch_host_load1";
pub const LOAD5: &str = "mcpwatch_host_load5";
pub const LOAD15: &str = "mcpwatch_host_load15";
pub const DISK_TOTAL_BYTES: &str = "mcpwatch_host_disk_total_bytes";
pub const DISK_USED_BYTES: &str = "mcpwatch_host_disk_used_bytes";
pub const NETWORK_RECEIVE_BYTES_TOTAL: &str = "mcpwatch_host_network_receive_bytes_total";
pub const NETWORK_TRANSMIT_BYTES_TOTAL: &str = "mcpwatch_host_network_transmit_bytes_total";
pub const NETWORK_RECEIVE_ERRORS_TOTAL: &str = "mcpwatch_host_network_receive_errors_total";
pub const NETWORK_TRANSMIT_ERRORS_TOTAL: &str = "mcpwatch_host_network_transmit_errors_total";
pub const UPTIME_SECONDS: &str = "mcpwatch_host_uptime_seconds";
pub const PROCESSES: &str = "mcpwatch_host_processes";

/// Every series family the sampler can emit: (name, help text, kind), in exposition order.
/// Counter names carry their `_total` suffix, as they do on the wire.
pub fn series_help() -> &'static [(&'static str, &'static str, MetricKind)] {
    use MetricKind::{Counter, Gauge};
    &[
        (
            CPU_USAGE_RATIO,
            // No quotes in help texts: OpenMetrics requires them escaped there and
            // prometheus-client writes help verbatim.
            "Share of time the CPU was busy since the previous sample (0..1), per core and for \
             all cores together (cpu=total); may be 0 on the agent's first sample.",
            Gauge,
        ),
        (MEMORY_TOTAL_BYTES, "Physical memory installed.", Gauge),
        (
            MEMORY_USED_BYTES,
            "Physical memory in use (total minus available).",
            Gauge,
        ),
        (
            MEMORY_AVAILABLE_BYTES,
            "Physical memory available for new allocations without swapping (MemAvailable).",
            Gauge,
        ),
        (SWAP_TOTAL_BYTES, "Swap space configured.", Gauge),
        (SWAP_USED_BYTES, "Swap space in use.", Gauge),
        (LOAD1, "System load average over 1 minute.", Gauge),
        (LOAD5, "System load average over 5 minutes.", Gauge),
        (LOAD15, "System load average over 15 minutes.", Gauge),
        (DISK_TOTAL_BYTES, "Size of the mounted filesystem.", Gauge),
        (
            DISK_USED_BYTES,
            "Space of the mounted filesystem not available to unprivileged users (size minus \
             available, so root-reserved blocks count as used).",
            Gauge,
        ),
        (
            NETWORK_RECEIVE_BYTES_TOTAL,
            "Bytes received by the network interface since it came up.",
            Counter,
        ),
        (
            NETWORK_TRANSMIT_BYTES_TOTAL,
            "Bytes transmitted by the network interface since it came up.",
            Counter,
        ),
        (
            NETWORK_RECEIVE_ERRORS_TOTAL,
            "Receive errors on the network interface since it came up.",
            Counter,
        ),
        (
            NETWORK_TRANSMIT_ERRORS_TOTAL,
            "Transmit errors on the network interface since it came up.",
            Counter,
        ),
        (UPTIME_SECONDS, "Time since the host booted.", Gauge),
        (
            PROCESSES,
            "Number of processes on the host (numeric entries in /proc).",
            Gauge,
        ),
    ]
}

/// Samples host metrics; build once, call [`Sampler::sample`] once per interval.
pub struct Sampler {
    cpu: cpu::CpuSampler,
    memory: memory::MemorySampler,
    disk: disk::DiskSampler,
    network: network::NetworkSampler,
    system: system::SystemSampler,
    /// Series count of the previous cycle, to size the next vector in one allocation.
    last_len: usize,
}

impl Sampler {
    /// Builds the sampler and primes the CPU counters, so the first [`Sampler::sample`] a full
    /// interval later already reports real usage. A sample taken right after `new` reports
    /// CPU usage 0, because usage is the difference between two refreshes.
    /// `host_root`: where the host's root filesystem is mounted when the agent runs in a
    /// container (disk figures are read there).
    pub fn new(host_root: Option<std::path::PathBuf>) -> Sampler {
        let mut cpu = cpu::CpuSampler::new();
        cpu.sample(&mut Vec::new());
        Sampler {
            cpu,
            memory: memory::MemorySampler::new(),
            disk: disk::DiskSampler::new(host_root),
            network: network::NetworkSampler::new(),
            system: system::SystemSampler::new(),
            last_len: 64,
        }
    }

    /// Takes one sample of every family. A family whose source cannot be read this cycle is
    /// left out (and logged at debug level) rather than reported as zero.
    pub fn sample(&mut self) -> Vec<(SeriesKey, f64)> {
        let mut out = Vec::with_capacity(self.last_len);
        self.cpu.sample(&mut out);
        self.memory.sample(&mut out);
        self.disk.sample(&mut out);
        self.network.sample(&mut out);
        self.system.sample(&mut out);
        self.last_len = out.len();
        out
    }
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler::new(None)
    }
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler").finish_non_exhaustive()
    }
}

/// Lossless for every realistic value: f64 holds integers exactly up to 2^53 (8 PiB).
fn as_f64(v: u64) -> f64 {
    v as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    fn by_name<'a>(samples: &'a [(SeriesKey, f64)], name: &str) -> Vec<&'a (SeriesKey, f64)> {
        samples.iter().filter(|(k, _)| k.name == name).collect()
    }

    fn label<'a>(key: &'a SeriesKey, name: &str) -> Option<&'a str> {
        key.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn one(samples: &[(SeriesKey, f64)], name: &str) -> f64 {
        let found = by_name(samples, name);
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        found[0].1
    }

    fn sampled_twice() -> Vec<(SeriesKey, f64)> {
        let mut s = Sampler::new(None);
        let _ = s.sample();
        s.sample()
    }

    #[test]
    fn sampler_yields_every_family() {
        let samples = sampled_twice();
        let names: HashSet<&str> = samples.iter().map(|(k, _)| k.name.as_str()).collect();
        for (name, _, _) in series_help() {
            assert!(names.contains(name), "missing family {name}");
        }
        let known: HashSet<&str> = series_help().iter().map(|(n, _, _)| *n).collect();
        for name in &names {
            assert!(known.contains(name), "{name} has no help entry");
        }
    }

    #[test]
    fn sampler_counter_names_end_in_total_and_gauges_do_not() {
        for (name, help, kind) in series_help() {
            assert!(name.starts_with("mcpwatch_host_"), "{name}");
            assert!(!help.is_empty(), "{name}");
            assert!(!help.contains(['"', '\\', '\n']), "{name}: unescaped help");
            assert_eq!(
                name.ends_with("_total"),
                *kind == MetricKind::Counter,
                "{name}"
            );
        }
    }

    #[test]
    fn sampler_cpu_ratios_are_within_bounds_and_cover_every_core() {
        let samples = sampled_twice();
        let cpu = by_name(&samples, CPU_USAGE_RATIO);
        for (key, v) in &cpu {
            assert!((0.0..=1.0).contains(v), "{key:?} = {v}");
        }
        let cores: HashSet<&str> = cpu
            .iter()
            .filter_map(|(k, _)| label(k, "cpu"))
            .filter(|c| *c != "total")
            .collect();
        let parallelism = std::thread::available_parallelism()
            .expect("available_parallelism on Linux")
            .get();
        assert_eq!(cores.len(), parallelism, "{cores:?}");
        for i in 0..parallelism {
            assert!(
                cores.contains(i.to_string().as_str()),
                "core {i} in {cores:?}"
            );
        }
        assert_eq!(
            cpu.iter()
                .filter(|(k, _)| label(k, "cpu") == Some("total"))
                .count(),
            1
        );
    }

    #[test]
    fn sampler_memory_is_consistent() {
        let samples = sampled_twice();
        let total = one(&samples, MEMORY_TOTAL_BYTES);
        let used = one(&samples, MEMORY_USED_BYTES);
        let available = one(&samples, MEMORY_AVAILABLE_BYTES);
        assert!(total > 0.0);
        assert!(used <= total, "used {used} > total {total}");
        assert!(available <= total, "available {available} > total {total}");
        assert!(one(&samples, SWAP_USED_BYTES) <= one(&samples, SWAP_TOTAL_BYTES));
    }

    #[test]
    fn sampler_disks_are_real_and_unique() {
        let samples = sampled_twice();
        let totals = by_name(&samples, DISK_TOTAL_BYTES);
        assert!(!totals.is_empty());
        let mut mounts = HashSet::new();
        for (key, v) in &totals {
            assert!(*v > 0.0, "{key:?}");
            let mount = label(key, "mountpoint").expect("mountpoint label");
            assert!(
                mounts.insert(mount.to_owned()),
                "duplicate mountpoint {mount}"
            );
            assert!(label(key, "device").is_some() && label(key, "fstype").is_some());
        }
        let totals: HashMap<&str, f64> = totals
            .iter()
            .filter_map(|(k, v)| Some((label(k, "mountpoint")?, *v)))
            .collect();
        for (key, used) in by_name(&samples, DISK_USED_BYTES) {
            let mount = label(key, "mountpoint").expect("mountpoint label");
            assert!(*used <= totals[mount], "{key:?}");
        }
    }

    #[test]
    fn sampler_network_counters_are_monotonic() {
        let mut s = Sampler::new(None);
        let first = s.sample();
        // Generate some loopback traffic so "lo" has something to count.
        if let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") {
            if let Ok(addr) = listener.local_addr() {
                let _ = std::net::TcpStream::connect(addr);
            }
        }
        let second = s.sample();
        let before: HashMap<&SeriesKey, f64> = first
            .iter()
            .filter(|(k, _)| k.name.starts_with("mcpwatch_host_network_"))
            .map(|(k, v)| (k, *v))
            .collect();
        assert!(before.keys().any(|k| label(k, "interface") == Some("lo")));
        let mut compared = 0;
        for (key, after) in &second {
            if let Some(b) = before.get(key) {
                assert!(after >= b, "{key:?} went from {b} to {after}");
                compared += 1;
            }
        }
        assert_eq!(compared, before.len());
    }

    #[test]
    fn sampler_series_keys_are_unique() {
        let samples = sampled_twice();
        let mut seen = HashSet::new();
        for (key, _) in &samples {
            assert!(seen.insert(key), "duplicate {key:?}");
        }
    }

    #[test]
    fn sampler_system_values_are_plausible() {
        let samples = sampled_twice();
        assert!(one(&samples, UPTIME_SECONDS) > 0.0);
        // At least this test process exists.
        assert!(one(&samples, PROCESSES) >= 1.0);
        assert!(one(&samples, LOAD1) >= 0.0);
    }

    /// Not an assertion: prints the mean cost of one cycle (`cargo test -p mcpwatch-agent
    /// sampler_cycle_cost -- --nocapture`).
    #[test]
    fn sampler_cycle_cost() {
        let mut s = Sampler::new(None);
        let _ = s.sample();
        let cycles = 100u32;
        let start = std::time::Instant::now();
        let mut series = 0;
        for _ in 0..cycles {
            series = s.sample().len();
        }
        let per_cycle = start.elapsed() / cycles;
        eprintln!("sampler: {per_cycle:?} per cycle over {cycles} cycles, {series} series");
        assert!(series > 0);
    }
}
