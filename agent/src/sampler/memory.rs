//! Physical memory and swap, from `/proc/meminfo` via sysinfo.

use mcpwatch_common::wire::SeriesKey;
use sysinfo::{MemoryRefreshKind, System};

use super::{
    as_f64, MEMORY_AVAILABLE_BYTES, MEMORY_TOTAL_BYTES, MEMORY_USED_BYTES, SWAP_TOTAL_BYTES,
    SWAP_USED_BYTES,
};

pub(super) struct MemorySampler {
    system: Option<System>,
}

impl MemorySampler {
    pub(super) fn new() -> Self {
        let system = System::new()
            .inspect_err(|e| tracing::warn!(error = %e, "memory metrics unavailable"))
            .ok();
        MemorySampler { system }
    }

    pub(super) fn sample(&mut self, out: &mut Vec<(SeriesKey, f64)>) {
        let Some(system) = self.system.as_mut() else {
            return;
        };
        system.refresh_memory_specifics(MemoryRefreshKind::everything());
        let total = system.total_memory();
        if total == 0 {
            // /proc/meminfo could not be read: report nothing rather than a host with no RAM.
            tracing::debug!("/proc/meminfo unreadable");
            return;
        }
        let available = system.available_memory().min(total);
        // Computed here with saturation: sysinfo's `used_memory()` subtracts unchecked.
        let used = total.saturating_sub(available);
        let swap_total = system.total_swap();
        let swap_used = swap_total.saturating_sub(system.free_swap());
        for (name, value) in [
            (MEMORY_TOTAL_BYTES, total),
            (MEMORY_USED_BYTES, used),
            (MEMORY_AVAILABLE_BYTES, available),
            (SWAP_TOTAL_BYTES, swap_total),
            (SWAP_USED_BYTES, swap_used),
        ] {
            out.push((SeriesKey::new(name, &[]), as_f64(value)));
        }
    }
}
