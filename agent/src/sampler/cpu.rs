//! CPU usage ratio, total and per core, from sysinfo's `/proc/stat` differences.

use std::time::Instant;

use mcpwatch_common::wire::SeriesKey;
use sysinfo::{CpuRefreshKind, System};

use super::CPU_USAGE_RATIO;

pub(super) struct CpuSampler {
    system: Option<System>,
    /// Usage is a difference between two refreshes of `/proc/stat`; sysinfo ignores a refresh
    /// closer than `MINIMUM_CPU_UPDATE_INTERVAL` to the previous one, so before this instant
    /// it would still hold the since-boot average from the priming refresh. We report 0
    /// until then.
    valid_from: Instant,
    /// Label values "0".."N-1", built once instead of formatting them every cycle.
    core_labels: Vec<String>,
}

impl CpuSampler {
    pub(super) fn new() -> Self {
        let system = match System::new() {
            Ok(mut system) => {
                // Priming refresh: fills the CPU list and the baseline for the first diff.
                system.refresh_cpu_specifics(CpuRefreshKind::nothing().with_usage());
                Some(system)
            }
            Err(e) => {
                tracing::warn!(error = %e, "CPU metrics unavailable");
                None
            }
        };
        CpuSampler {
            system,
            valid_from: Instant::now() + sysinfo::MINIMUM_CPU_UPDATE_INTERVAL,
            core_labels: Vec::new(),
        }
    }

    pub(super) fn sample(&mut self, out: &mut Vec<(SeriesKey, f64)>) {
        let Some(system) = self.system.as_mut() else {
            return;
        };
        system.refresh_cpu_specifics(CpuRefreshKind::nothing().with_usage());
        let valid = Instant::now() >= self.valid_from;
        let cpus = system.cpus();
        if cpus.is_empty() {
            tracing::debug!("no CPU found in /proc/stat");
            return;
        }
        let ratio = |percent: f32| {
            if valid {
                to_ratio(percent)
            } else {
                0.0
            }
        };
        out.push((
            SeriesKey::new(CPU_USAGE_RATIO, &[("cpu", "total")]),
            ratio(system.global_cpu_usage()),
        ));
        while self.core_labels.len() < cpus.len() {
            self.core_labels.push(self.core_labels.len().to_string());
        }
        for (cpu, label) in cpus.iter().zip(&self.core_labels) {
            out.push((
                SeriesKey::new(CPU_USAGE_RATIO, &[("cpu", label)]),
                ratio(cpu.usage()),
            ));
        }
    }
}

/// sysinfo reports percent; Prometheus convention is a 0..1 ratio. Clamped because rounding
/// in the kernel's tick accounting can overshoot slightly.
fn to_ratio(percent: f32) -> f64 {
    let r = f64::from(percent) / 100.0;
    if r.is_finite() {
        r.clamp(0.0, 1.0)
    } else {
        0.0
    }
}
