//! Mounted filesystems from `/proc/self/mounts` (re-read each cycle through one descriptor)
//! and `statvfs` on each: size and space not available to unprivileged users. Pseudo and
//! network filesystems are skipped (statvfs on a hard NFS mount can hang), as are mounts
//! under /sys, /proc and /run; a mount point is reported once.

use std::collections::HashSet;

use mcpwatch_common::wire::SeriesKey;

use super::proc_file::ProcFile;
use super::{as_f64, DISK_TOTAL_BYTES, DISK_USED_BYTES};

/// Filesystems that hold no user data, or that `statvfs` may block on.
const SKIPPED_TYPES: &[&str] = &[
    "rootfs",
    "sysfs",
    "proc",
    "devtmpfs",
    "cgroup",
    "cgroup2",
    "pstore",
    "squashfs",
    "rpc_pipefs",
    "iso9660",
    "devpts",
    "hugetlbfs",
    "mqueue",
    "tmpfs",
    "cifs",
    "nfs",
    "nfs4",
    "autofs",
    "binfmt_misc",
    "bpf",
    "configfs",
    "debugfs",
    "fusectl",
    "securityfs",
    "tracefs",
    "nsfs",
];

/// A mount table field with the kernel's octal escapes (space, tab, newline, backslash)
/// undone.
fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_owned();
    }
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The mounts worth reporting: (device, mount point, filesystem type).
fn mounts(text: &str) -> Vec<(String, String, String)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split(' ');
        let (Some(device), Some(mountpoint), Some(fstype)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let mountpoint = unescape(mountpoint);
        let pseudo = SKIPPED_TYPES.contains(&fstype)
            || mountpoint.starts_with("/sys")
            || mountpoint.starts_with("/proc")
            || (mountpoint.starts_with("/run") && !mountpoint.starts_with("/run/media"))
            || device.starts_with("sunrpc");
        if pseudo || !seen.insert(mountpoint.clone()) {
            continue;
        }
        out.push((unescape(device), mountpoint, fstype.to_owned()));
    }
    out
}

pub(super) struct DiskSampler {
    mounts: ProcFile,
    /// The mounts worth reporting, read again only when the kernel says the table changed
    /// (generating it costs more than everything else the sampler reads).
    table: Vec<(String, String, String)>,
}

impl DiskSampler {
    pub(super) fn new() -> Self {
        DiskSampler {
            mounts: ProcFile::new("/proc/self/mounts"),
            table: Vec::new(),
        }
    }

    pub(super) fn sample(&mut self, out: &mut Vec<(SeriesKey, f64)>) {
        if self.mounts.changed() {
            match self.mounts.read() {
                Ok(text) => self.table = mounts(text),
                Err(e) => {
                    tracing::debug!(error = %e, "/proc/self/mounts unreadable");
                    self.table.clear();
                    return;
                }
            }
        }
        for (device, mountpoint, fstype) in &self.table {
            let Ok(stat) = rustix::fs::statvfs(mountpoint.as_str()) else {
                // Unmounted since, or not ours to see: no series this cycle.
                continue;
            };
            let block = stat.f_frsize;
            let total = stat.f_blocks.saturating_mul(block);
            if total == 0 {
                continue;
            }
            let available = stat.f_bavail.saturating_mul(block);
            let labels = [
                ("mountpoint", mountpoint.as_str()),
                ("device", device.as_str()),
                ("fstype", fstype.as_str()),
            ];
            let used = total.saturating_sub(available);
            out.push((SeriesKey::new(DISK_TOTAL_BYTES, &labels), as_f64(total)));
            out.push((SeriesKey::new(DISK_USED_BYTES, &labels), as_f64(used)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_and_repeated_mounts_are_skipped_and_escapes_undone() {
        let text = "proc /proc proc rw 0 0\n\
                    /dev/vda1 / ext4 rw 0 0\n\
                    tmpfs /tmp tmpfs rw 0 0\n\
                    /dev/vdb /data\\040dir xfs rw 0 0\n\
                    /dev/vdb /data\\040dir xfs rw 0 0\n\
                    server:/x /mnt nfs4 rw 0 0\n\
                    tmpfs /run/user tmpfs rw 0 0\n";
        assert_eq!(
            mounts(text),
            vec![
                ("/dev/vda1".into(), "/".into(), "ext4".into()),
                ("/dev/vdb".into(), "/data dir".into(), "xfs".into()),
            ]
        );
    }

    #[test]
    fn the_root_filesystem_is_reported() {
        let mut sampler = DiskSampler::new();
        let mut out = Vec::new();
        sampler.sample(&mut out);
        let root = out.iter().any(|(key, value)| {
            key.name == DISK_TOTAL_BYTES
                && key
                    .labels
                    .iter()
                    .any(|(k, v)| k == "mountpoint" && v == "/")
                && *value > 0.0
        });
        assert!(root, "{out:?}");
    }
}
