//! Per-process CPU time and memory from /proc, for the benchmarks.

/// Clock ticks per second for /proc/PID/stat times (USER_HZ, 100 on Linux/x86_64).
const TICKS_PER_S: f64 = 100.0;

/// User + system CPU time of `pid` in milliseconds.
pub fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1000.0 / TICKS_PER_S)
}

/// A `Vm*` field of /proc/PID/status in MiB (VmRSS now, VmHWM peak).
pub fn mem_mb(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The parent of `pid` (for a container's process: its containerd shim).
pub fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the name: state, then ppid.
    stat[stat.rfind(')')? + 2..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The pid of the first process whose command name (`/proc/PID/comm`) is `name`.
pub fn pid_of(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim_end() == name).then_some(pid)
    })
}

/// CPU time the whole machine has spent busy (all CPUs, everything but idle and iowait) in
/// milliseconds, from /proc/stat: a window's delta shows whether the cores were saturated
/// and how much went to processes a benchmark does not measure.
pub fn machine_busy_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: f64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Some(busy * 1000.0 / TICKS_PER_S)
}

/// Resident memory of `pid` by mapping, in MiB, largest first: each file by its path,
/// `[heap]`, `[stack]`, and `anonymous` for the rest (thread stacks, allocator arenas).
pub fn rss_by_mapping(pid: u32) -> Vec<(String, f64)> {
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return Vec::new();
    };
    let mut by: std::collections::HashMap<String, f64> = std::collections::HashMap::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping header: address perms offset dev inode [path].
            current = fields.nth(4).unwrap_or("anonymous").to_owned();
        } else if first == "Rss:" {
            let kb: f64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            *by.entry(current.clone()).or_default() += kb / 1024.0;
        }
    }
    let mut v: Vec<(String, f64)> = by.into_iter().filter(|(_, mb)| *mb >= 0.05).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

/// A numeric field of /proc/PID/status without unit (`Threads`).
pub fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.split(':').next() == Some(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Context switches (voluntary and not) of all threads of `pid`, summed.
pub fn context_switches(pid: u32) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0.0;
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        total += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .sum::<f64>();
    }
    Some(total)
}
