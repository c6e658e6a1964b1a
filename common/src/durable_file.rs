//! Crash-safe file replacement, the one implementation every writer of keys, certificates
//! and backups uses: write a temp file beside the target with its final mode from the first
//! byte, fsync it, rename it over the target, fsync the directory. A crash leaves the old
//! file or the new one, never a torn one, and a secret is never readable by others even
//! for an instant (the mode is set at creation, not by a later chmod).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The temp file `path` is written through: same directory (so the rename is atomic),
/// a suffix no reader of the directory takes for the real thing.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Creates `path` empty with `mode` (failing if it exists), for a writer that fills it by
/// other means (SQLite's `VACUUM INTO`) before [`commit`].
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

/// Flushes the file at `tmp` and renames it to `path`, then flushes the directory so the
/// rename survives a power loss.
pub fn commit(tmp: &Path, path: &Path) -> io::Result<()> {
    File::open(tmp)?.sync_all()?;
    fs::rename(tmp, path)?;
    sync_dir(path)
}

/// Like [`commit`] but never replaces: installs `tmp` as `path` only if nothing is there
/// (a hard link fails on an existing name, atomically, where a check before a rename would
/// race), then removes `tmp`. Fails with `AlreadyExists` otherwise, leaving `tmp` in place.
pub fn commit_new(tmp: &Path, path: &Path) -> io::Result<()> {
    File::open(tmp)?.sync_all()?;
    fs::hard_link(tmp, path)?;
    fs::remove_file(tmp)?;
    sync_dir(path)
}

/// Flushes the directory holding `path` (a rename or unlink in it is durable after this).
pub fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}

/// Replaces `path` with `bytes`, created with `mode`; creates the parent directory if
/// missing. A leftover temp file from an earlier crash is overwritten.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let tmp = temp_path(path);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = create_new(&tmp, mode)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    drop(f);
    fs::rename(&tmp, path)?;
    sync_dir(path)
}

/// Writes `bytes` to a new `path` (an old one, or a symlink there, is removed first, so
/// the file always gets `mode`) and fsyncs it, with no rename: for the first half of a
/// two-file install that renames later (see the agent's certificate renewal).
pub fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = create_new(path, mode)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn durable_write_replaces_with_mode_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("key.pem");
        write(&path, b"one", 0o600).unwrap();
        write(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("key.pem")]);
    }

    #[test]
    fn durable_create_new_refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        create_new(&path, 0o600).unwrap();
        assert_eq!(
            create_new(&path, 0o600).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        let tmp = temp_path(&path);
        assert!(tmp.to_string_lossy().contains("x.tmp-"));
        fs::write(&tmp, b"data").unwrap();
        commit(&tmp, &path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"data");
        fs::write(&tmp, b"other").unwrap();
        assert_eq!(
            commit_new(&tmp, &path).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(fs::read(&path).unwrap(), b"data", "never replaced");
        let fresh = dir.path().join("y");
        commit_new(&tmp, &fresh).unwrap();
        assert_eq!(fs::read(&fresh).unwrap(), b"other");
        assert!(!tmp.exists());
    }
}
