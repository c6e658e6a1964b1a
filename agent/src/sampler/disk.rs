//! Filesystem size and usage per mount point, from `/proc/mounts` and `statvfs` via sysinfo.

use std::collections::HashSet;

use mcpwatch_common::wire::SeriesKey;
use sysinfo::{DiskRefreshKind, Disks};

use super::{as_f64, DISK_TOTAL_BYTES, DISK_USED_BYTES};

pub(super) struct DiskSampler {
    disks: Option<Disks>,
    /// Reused across cycles to dedupe mount points without a fresh allocation each time.
    seen: HashSet<String>,
}

impl DiskSampler {
    pub(super) fn new() -> Self {
        let disks = Disks::new()
            .inspect_err(|e| tracing::warn!(error = %e, "disk metrics unavailable"))
            .ok();
        DiskSampler {
            disks,
            seen: HashSet::new(),
        }
    }

    pub(super) fn sample(&mut self, out: &mut Vec<(SeriesKey, f64)>) {
        let Some(disks) = self.disks.as_mut() else {
            return;
        };
        // Storage only: the disk kind (rotational or not) and I/O counters cost extra reads
        // under /sys and /proc/diskstats that nothing here reports. Re-reading /proc/mounts
        // each cycle picks up mounts and unmounts; `true` drops the unmounted ones.
        disks.refresh_specifics(true, DiskRefreshKind::nothing().with_storage());
        self.seen.clear();
        for disk in disks.iter() {
            let total = disk.total_space();
            // Pseudo filesystems report a size of 0; they are not storage.
            if total == 0 {
                continue;
            }
            let mountpoint = disk.mount_point().to_string_lossy();
            // The same mount point can be listed twice (stacked or bind mounts); the first
            // entry in /proc/mounts is kept, which is the one mounted first.
            if !self.seen.insert(mountpoint.to_string()) {
                continue;
            }
            let device = disk.name().to_string_lossy();
            let fstype = disk.file_system().to_string_lossy();
            let labels = [
                ("mountpoint", mountpoint.as_ref()),
                ("device", device.as_ref()),
                ("fstype", fstype.as_ref()),
            ];
            let used = total.saturating_sub(disk.available_space());
            out.push((SeriesKey::new(DISK_TOTAL_BYTES, &labels), as_f64(total)));
            out.push((SeriesKey::new(DISK_USED_BYTES, &labels), as_f64(used)));
        }
    }
}
