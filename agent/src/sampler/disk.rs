//! Mounted filesystems from `/proc/self/mounts` (re-read each cycle through one descriptor)
//! and `statvfs` on each: size and space not available to unprivileged users. Pseudo,
//! network and FUSE filesystems are skipped (statvfs on a hard NFS mount or a dead FUSE
//! daemon can hang), as are container layers (overlay) and volumes (under the container
//! engines' and kubelet's directories) and mounts under /sys, /proc and /run; a mount
//! point is reported once.
//!
//! In a container with the host's root mounted at `host_root` (`[sampling] host_root`),
//! only mounts under it are reported, named as the host names them.

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
    "overlay",
    "fuse",
    "ramfs",
];

/// Where container engines and the kubelet keep containers' layers and volumes: a host's
/// disks are reported, not every container's view of them.
const CONTAINER_DIRS: &[&str] = &[
    "/var/lib/docker",
    "/var/lib/containers",
    "/var/lib/containerd",
    "/var/lib/kubelet",
    "/var/snap",
];

/// `path` with `root` taken off the front, when it is `root` or under it.
fn under_root(path: &str, root: &str) -> Option<String> {
    match path.strip_prefix(root) {
        Some("") => Some("/".to_owned()),
        Some(rest) if rest.starts_with('/') => Some(rest.to_owned()),
        _ => None,
    }
}

fn is_under(path: &str, dir: &str) -> bool {
    under_root(path, dir).is_some()
}

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

/// A mount worth reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    device: String,
    /// Where the agent reaches it (statvfs).
    path: String,
    /// As the host names it (the label).
    mountpoint: String,
    fstype: String,
}

/// The mounts worth reporting, given where the host's root is (`None`: it is ours).
fn mounts(text: &str, host_root: Option<&str>) -> Vec<Mount> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split(' ');
        let (Some(device), Some(path), Some(fstype)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = unescape(path);
        let mountpoint = match host_root {
            None => path.clone(),
            Some(root) => match under_root(&path, root) {
                Some(m) => m,
                None => continue,
            },
        };
        let m = mountpoint.as_str();
        let skipped = SKIPPED_TYPES.contains(&fstype)
            || fstype.starts_with("fuse.")
            || is_under(m, "/sys")
            || is_under(m, "/proc")
            || (is_under(m, "/run") && !is_under(m, "/run/media"))
            || CONTAINER_DIRS.iter().any(|d| is_under(m, d))
            || device.starts_with("sunrpc");
        if skipped || !seen.insert(mountpoint.clone()) {
            continue;
        }
        out.push(Mount {
            device: unescape(device),
            path,
            mountpoint,
            fstype: fstype.to_owned(),
        });
    }
    out
}

pub(super) struct DiskSampler {
    mounts: ProcFile,
    /// The mounts worth reporting, read again only when the kernel says the table changed
    /// (generating it costs more than everything else the sampler reads).
    table: Vec<Mount>,
    host_root: Option<String>,
}

impl DiskSampler {
    pub(super) fn new(host_root: Option<std::path::PathBuf>) -> Self {
        DiskSampler {
            mounts: ProcFile::new("/proc/self/mounts"),
            table: Vec::new(),
            // Mount table paths are compared as text; a trailing slash would match nothing.
            host_root: host_root.map(|p| p.to_string_lossy().trim_end_matches('/').to_owned()),
        }
    }

    pub(super) fn sample(&mut self, out: &mut Vec<(SeriesKey, f64)>) {
        if self.mounts.changed() {
            match self.mounts.read() {
                Ok(text) => self.table = mounts(text, self.host_root.as_deref()),
                Err(e) => {
                    tracing::debug!(error = %e, "/proc/self/mounts unreadable");
                    self.table.clear();
                    return;
                }
            }
        }
        for Mount {
            device,
            path,
            mountpoint,
            fstype,
        } in &self.table
        {
            let Ok(stat) = rustix::fs::statvfs(path.as_str()) else {
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
        let named: Vec<(String, String)> = mounts(text, None)
            .into_iter()
            .map(|m| (m.device, m.mountpoint))
            .collect();
        assert_eq!(
            named,
            vec![
                ("/dev/vda1".into(), "/".into()),
                ("/dev/vdb".into(), "/data dir".into()),
            ]
        );
    }

    #[test]
    fn container_layers_volumes_and_fuse_are_skipped() {
        let text = "overlay /var/lib/docker/overlay2/abc/merged overlay rw 0 0\n\
                    /dev/vda1 /var/lib/kubelet/pods/x/volumes/pv ext4 rw 0 0\n\
                    sshfs#h: /mnt/remote fuse.sshfs rw 0 0\n\
                    /dev/vda1 / ext4 rw 0 0\n\
                    /dev/vdc /var/lib/dockerish xfs rw 0 0\n";
        let names: Vec<String> = mounts(text, None)
            .into_iter()
            .map(|m| m.mountpoint)
            .collect();
        assert_eq!(names, ["/", "/var/lib/dockerish"]);
    }

    #[test]
    fn in_a_container_only_the_hosts_mounts_count_named_as_the_host_names_them() {
        // A pod: its own overlay root, bind mounts of single files, the host's root at
        // /host/root (with the host's submounts under it, propagated).
        let text = "overlay / overlay rw 0 0\n\
                    /dev/vda1 /etc/hosts ext4 rw 0 0\n\
                    /dev/vda1 /host/root ext4 ro 0 0\n\
                    /dev/vdb /host/root/data xfs ro 0 0\n\
                    /dev/vdb /host/rootless xfs ro 0 0\n\
                    tmpfs /host/root/run tmpfs ro 0 0\n\
                    /dev/vda1 /host/root/var/lib/kubelet/pods/p/v ext4 ro 0 0\n";
        let got: Vec<(String, String)> = mounts(text, Some("/host/root"))
            .into_iter()
            .map(|m| (m.path, m.mountpoint))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/host/root".into(), "/".into()),
                ("/host/root/data".into(), "/data".into()),
            ]
        );
    }

    #[test]
    fn the_root_filesystem_is_reported() {
        let mut sampler = DiskSampler::new(None);
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
