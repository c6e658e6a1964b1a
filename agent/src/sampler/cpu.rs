//! CPU usage from `/proc/stat`: the busy share of each core's time, and of all cores
//! together, between two samples (the first sample has nothing to compare with: 0).

use mcpwatch_common::wire::SeriesKey;

use super::proc_file::ProcFile;
use super::CPU_USAGE_RATIO;

/// Jiffies of one `cpu` line: (busy, total). Idle is `idle + iowait`; guest time is already
/// inside `user` / `nice`, so it is not added again.
fn times(fields: &str) -> Option<(u64, u64)> {
    let mut values = fields.split_ascii_whitespace().map(|v| v.parse::<u64>());
    let mut next = || values.next().unwrap_or(Ok(0)).ok();
    let (user, nice, system, idle) = (next()?, next()?, next()?, next()?);
    let (iowait, irq, softirq, steal) = (next()?, next()?, next()?, next()?);
    let idle = idle.saturating_add(iowait);
    let total = [user, nice, system, irq, softirq, steal]
        .into_iter()
        .fold(idle, u64::saturating_add);
    Some((total.saturating_sub(idle), total))
}

/// The share of `now` over `before` that was busy, 0..1 (0 without a previous sample).
fn ratio(before: Option<(u64, u64)>, now: (u64, u64)) -> f64 {
    let Some((busy0, total0)) = before else {
        return 0.0;
    };
    let total = now.1.saturating_sub(total0);
    if total == 0 {
        return 0.0;
    }
    (now.0.saturating_sub(busy0) as f64 / total as f64).clamp(0.0, 1.0)
}

pub(super) struct CpuSampler {
    stat: ProcFile,
    /// The previous sample: all cores, then each core by its number.
    total: Option<(u64, u64)>,
    cores: Vec<Option<(u64, u64)>>,
    core_labels: Vec<String>,
}

impl CpuSampler {
    pub(super) fn new() -> Self {
        CpuSampler {
            stat: ProcFile::new("/proc/stat"),
            total: None,
            cores: Vec::new(),
            core_labels: Vec::new(),
        }
    }

    pub(super) fn sample(&mut self, out: &mut Vec<(SeriesKey, f64)>) {
        let text = match self.stat.read() {
            Ok(text) => text,
            Err(e) => {
                tracing::debug!(error = %e, "/proc/stat unreadable");
                return;
            }
        };
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("cpu") else {
                // The cpu lines come first.
                break;
            };
            let (id, fields) = rest.split_once(' ').unwrap_or((rest, ""));
            let Some(now) = times(fields) else { continue };
            if id.is_empty() {
                let value = ratio(self.total.replace(now), now);
                out.push((SeriesKey::new(CPU_USAGE_RATIO, &[("cpu", "total")]), value));
                continue;
            }
            let Ok(core) = id.parse::<usize>() else {
                continue;
            };
            if core >= self.cores.len() {
                // Bounded by the kernel's CPU numbers (a hostile /proc is not a concern).
                self.cores.resize(core + 1, None);
            }
            while self.core_labels.len() <= core {
                self.core_labels.push(self.core_labels.len().to_string());
            }
            let value = ratio(self.cores[core].replace(now), now);
            let label = self.core_labels[core].as_str();
            out.push((SeriesKey::new(CPU_USAGE_RATIO, &[("cpu", label)]), value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_share_between_two_samples() {
        let before = times(" 100 0 50 800 50 0 0 0 0 0").unwrap();
        assert_eq!(before, (150, 1000));
        let now = times(" 200 0 100 1550 100 0 0 0 0 0").unwrap();
        assert!((ratio(Some(before), now) - 150.0 / 950.0).abs() < 1e-9);
        assert_eq!(ratio(None, now), 0.0);
        // Counters that went backwards (a hotplugged core) read as idle, never negative.
        assert_eq!(ratio(Some(now), before), 0.0);
        // Old kernels with fewer columns.
        assert_eq!(times(" 1 2 3 4").unwrap(), (6, 10));
        assert!(times(" x 2 3 4").is_none());
    }

    #[test]
    fn samples_every_core_and_the_total_from_the_real_file() {
        let mut sampler = CpuSampler::new();
        let mut out = Vec::new();
        sampler.sample(&mut out);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert!(out.len() > cores, "{out:?}");
        assert_eq!(
            out[0].0,
            SeriesKey::new(CPU_USAGE_RATIO, &[("cpu", "total")])
        );
        assert!(out.iter().all(|(_, v)| *v == 0.0), "first sample: {out:?}");
        out.clear();
        sampler.sample(&mut out);
        assert!(out.iter().all(|(_, v)| (0.0..=1.0).contains(v)), "{out:?}");
    }
}
