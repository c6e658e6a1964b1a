//! A kernel text file (`/proc/stat`, `/proc/meminfo`, …) opened once and re-read each cycle
//! with `pread` from offset 0, into a buffer kept between cycles: one system call per read
//! for the usual sizes, no open or close per cycle. procfs regenerates a file's content when
//! it is read from offset 0, so a kept descriptor sees fresh values every time.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use rustix::event::{PollFd, PollFlags, Timespec};

/// Files above this are cut here (`/proc/stat` on a 256-core host is about 40 KiB).
const MAX_BYTES: usize = 1 << 20;

pub(super) struct ProcFile {
    path: PathBuf,
    file: Option<File>,
    /// The last content read; its allocation is reused by the next read.
    text: String,
}

impl ProcFile {
    pub(super) fn new(path: impl Into<PathBuf>) -> ProcFile {
        ProcFile {
            path: path.into(),
            file: None,
            text: String::with_capacity(4096),
        }
    }

    /// Whether the kernel flags the file as changed since it was opened or last flagged
    /// (`POLLPRI`: `/proc/self/mounts` does so when the mount table changes). `true` when the
    /// file is not open yet or cannot be polled, so the caller reads it.
    pub(super) fn changed(&self) -> bool {
        let Some(file) = &self.file else {
            return true;
        };
        let mut fds = [PollFd::new(file, PollFlags::PRI)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match rustix::event::poll(&mut fds, Some(&now)) {
            Ok(_) => fds[0].revents().intersects(PollFlags::PRI | PollFlags::ERR),
            Err(_) => true,
        }
    }

    /// The whole file now, as text (bytes that are not UTF-8 are replaced).
    pub(super) fn read(&mut self) -> io::Result<&str> {
        let file = match &mut self.file {
            Some(file) => file,
            slot => slot.insert(File::open(&self.path)?),
        };
        let mut buf = std::mem::take(&mut self.text).into_bytes();
        buf.clear();
        let mut offset = 0usize;
        loop {
            if buf.len() == offset {
                let grow = buf.capacity().max(4096).min(MAX_BYTES - offset);
                if grow == 0 {
                    break;
                }
                buf.resize(offset + grow, 0);
            }
            let read = match file.read_at(&mut buf[offset..], offset as u64) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Opened again next time (the file may have been replaced).
                    self.file = None;
                    return Err(e);
                }
            };
            offset += read;
            // procfs (seq_file) fills what it is given unless the content ends: a short read
            // is the end, which saves the `pread` that would return 0.
            if read == 0 || offset < buf.len() {
                break;
            }
        }
        buf.truncate(offset);
        // Validated once; the conversion keeps the allocation (bad bytes are replaced).
        self.text = String::from_utf8(buf)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Ok(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rereads_fresh_content_through_one_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "first\n").unwrap();
        let mut file = ProcFile::new(&path);
        assert_eq!(file.read().unwrap(), "first\n");
        // Rewritten in place (same inode), longer than the buffer's first size.
        let long = "x".repeat(10_000);
        std::fs::write(&path, &long).unwrap();
        assert_eq!(file.read().unwrap(), long);
        std::fs::write(&path, "short").unwrap();
        assert_eq!(file.read().unwrap(), "short");
    }

    #[test]
    fn proc_files_read_whole_and_fresh() {
        let mut stat = ProcFile::new("/proc/stat");
        let text = stat.read().unwrap().to_owned();
        assert!(text.starts_with("cpu "), "{text}");
        assert!(text.contains("\nbtime "), "read to the end: {text}");
        // Uptime moves every 10 ms: reading through the same descriptor sees it move.
        let mut uptime = ProcFile::new("/proc/uptime");
        let mut seconds = || -> f64 {
            let text = uptime.read().unwrap();
            text.split(' ').next().unwrap().parse().unwrap()
        };
        let first = seconds();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while seconds() <= first {
            assert!(std::time::Instant::now() < deadline, "uptime never moved");
            std::thread::yield_now();
        }
    }

    #[test]
    fn the_mount_table_is_flagged_only_when_it_changes() {
        let mut mounts = ProcFile::new("/proc/self/mounts");
        assert!(mounts.changed(), "not read yet");
        assert!(mounts.read().unwrap().contains(" / "));
        assert!(!mounts.changed(), "unchanged since it was opened");
        let mut plain = ProcFile::new("/proc/uptime");
        plain.read().unwrap();
        assert!(
            !plain.changed(),
            "files that do not signal read as unchanged"
        );
    }

    #[test]
    fn a_missing_file_is_an_error_and_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("later");
        let mut file = ProcFile::new(&path);
        assert!(file.read().is_err());
        std::fs::write(&path, "now").unwrap();
        assert_eq!(file.read().unwrap(), "now");
    }
}
