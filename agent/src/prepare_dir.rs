//! `mcpwatch-agent prepare-dir PATH --owner UID:GID [--mode OCTAL]`: gives the agent's state
//! directory on a node (a Kubernetes hostPath, created root-owned) to the unprivileged user
//! the agent runs as. Run by an init container holding only CAP_CHOWN and CAP_FOWNER, so it
//! never needs to read what it may not: it walks as root, children first, and does not
//! descend into a directory already owned by the user (done on an earlier start).
//!
//! It works on file descriptors, never on paths below PATH: each directory is opened
//! relative to its parent with `O_NOFOLLOW` and checked to be the entry that was looked at,
//! entries are changed relative to that descriptor without following links, and the walk
//! stays on PATH's filesystem. A link, a swapped directory or a mount planted by whoever
//! can write there therefore cannot turn this into a chown of something else on the node.
//! Regular files with other names elsewhere (hard links) are refused, not changed.

use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Gid, Mode, OFlags, Stat, Uid, CWD};

/// Why the directory could not be prepared; names the path.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("{0}: must be an absolute path other than /")]
    Path(PathBuf),
    #[error("--owner {0:?}: expected UID:GID (numbers)")]
    Owner(String),
    #[error("--mode {0:?}: expected octal permission bits (e.g. 0700)")]
    Mode(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: refused ({1})")]
    Refused(PathBuf, &'static str),
}

fn io(path: &Path) -> impl FnOnce(rustix::io::Errno) -> PrepareError + '_ {
    move |e| PrepareError::Io {
        path: path.to_owned(),
        source: e.into(),
    }
}

/// `UID:GID` as numbers.
pub fn parse_owner(text: &str) -> Result<(u32, u32), PrepareError> {
    let bad = || PrepareError::Owner(text.to_owned());
    let (uid, gid) = text.split_once(':').ok_or_else(bad)?;
    Ok((
        uid.parse().map_err(|_| bad())?,
        gid.parse().map_err(|_| bad())?,
    ))
}

/// Octal permission bits, at most 0o7777.
pub fn parse_mode(text: &str) -> Result<u32, PrepareError> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| PrepareError::Mode(text.to_owned()))
}

/// What a run changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Prepared {
    /// Entries given to the owner or given their mode (PATH included).
    pub changed: usize,
}

/// The owner to give entries to.
#[derive(Clone, Copy)]
struct Owner {
    uid: u32,
    gid: u32,
}

impl Owner {
    fn owns(&self, st: &Stat) -> bool {
        st.st_uid == self.uid && st.st_gid == self.gid
    }

    fn ids(&self) -> (Option<Uid>, Option<Gid>) {
        (Some(Uid::from_raw(self.uid)), Some(Gid::from_raw(self.gid)))
    }
}

fn open_dir<Fd: AsFd>(at: Fd, name: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        at,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Creates `path` if needed and gives it, and everything under it on its filesystem, to
/// `uid:gid`; `path` gets `mode`. A directory already owned is only given its mode: the walk
/// changes children first, so an owned top means a finished tree (and as root without
/// CAP_DAC_READ_SEARCH it could not read an owned 0700 directory anyway).
pub fn prepare(path: &Path, uid: u32, gid: u32, mode: u32) -> Result<Prepared, PrepareError> {
    if !path.is_absolute() || path.parent().is_none() {
        return Err(PrepareError::Path(path.to_owned()));
    }
    std::fs::create_dir_all(path).map_err(|source| PrepareError::Io {
        path: path.to_owned(),
        source,
    })?;
    // A link in PATH's own place is refused (ELOOP or ENOTDIR), not followed.
    let top = open_dir(CWD, path).map_err(io(path))?;
    let st = rustix::fs::fstat(&top).map_err(io(path))?;
    let owner = Owner { uid, gid };
    let mut done = Prepared::default();
    if !owner.owns(&st) {
        walk(&top, path, st.st_dev, owner, &mut done)?;
        let (u, g) = owner.ids();
        rustix::fs::fchown(&top, u, g).map_err(io(path))?;
        done.changed += 1;
    }
    if st.st_mode & 0o7777 != mode || done.changed > 0 {
        rustix::fs::fchmod(&top, Mode::from_raw_mode(mode)).map_err(io(path))?;
        if done.changed == 0 {
            done.changed = 1;
        }
    }
    Ok(done)
}

/// Gives what is under the directory `dir` (at `path`, for messages) to the owner,
/// children first.
fn walk(
    dir: &OwnedFd,
    path: &Path,
    dev: u64,
    owner: Owner,
    done: &mut Prepared,
) -> Result<(), PrepareError> {
    let mut names: Vec<std::ffi::CString> = Vec::new();
    for entry in Dir::read_from(dir).map_err(io(path))? {
        let entry = entry.map_err(io(path))?;
        let name: &CStr = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    let (u, g) = owner.ids();
    for name in names {
        let rel = Path::new(
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name.to_bytes()),
        );
        let here = path.join(rel);
        let st = rustix::fs::statat(dir, rel, AtFlags::SYMLINK_NOFOLLOW).map_err(io(&here))?;
        if st.st_dev != dev || owner.owns(&st) {
            // Another filesystem mounted here is not ours; an owned entry is done.
            continue;
        }
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let child = open_dir(dir, rel).map_err(io(&here))?;
                let opened = rustix::fs::fstat(&child).map_err(io(&here))?;
                if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino) {
                    return Err(PrepareError::Refused(here, "replaced during the walk"));
                }
                walk(&child, &here, dev, owner, done)?;
                rustix::fs::fchown(&child, u, g).map_err(io(&here))?;
            }
            FileType::RegularFile => {
                // Opened, not named, so what is checked is what is changed.
                let file = rustix::fs::openat(
                    dir,
                    rel,
                    OFlags::RDONLY
                        | OFlags::NOFOLLOW
                        | OFlags::NONBLOCK
                        | OFlags::NOCTTY
                        | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io(&here))?;
                let opened = rustix::fs::fstat(&file).map_err(io(&here))?;
                if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino) {
                    return Err(PrepareError::Refused(here, "replaced during the walk"));
                }
                if opened.st_nlink > 1 {
                    return Err(PrepareError::Refused(
                        here,
                        "a file with other names (hard links)",
                    ));
                }
                rustix::fs::fchown(&file, u, g).map_err(io(&here))?;
            }
            // Links (changed themselves), sockets, pipes: by name, never followed.
            _ => {
                rustix::fs::chownat(dir, rel, u, g, AtFlags::SYMLINK_NOFOLLOW).map_err(io(&here))?
            }
        }
        done.changed += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn owner_and_mode_are_parsed_strictly() {
        assert_eq!(parse_owner("65532:65532").unwrap(), (65532, 65532));
        for bad in ["65532", "a:b", ":1", "1:", "-1:2"] {
            assert!(parse_owner(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_mode("0700").unwrap(), 0o700);
        assert!(parse_mode("0800").is_err());
        assert!(parse_mode("17777").is_err());
    }

    #[test]
    fn a_tree_is_given_to_the_owner_without_following_links_and_a_ready_one_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "x").unwrap();
        let state = tmp.path().join("state");
        std::fs::create_dir_all(state.join("spool/seg")).unwrap();
        std::fs::write(state.join("spool/seg/1"), "batch").unwrap();
        std::os::unix::fs::symlink(&outside, state.join("link")).unwrap();
        // This test runs as whoever runs it: give the tree to that same user (chown to
        // oneself needs no capability) and check what was walked and what was not.
        let me = std::fs::metadata(tmp.path()).unwrap();
        let (uid, gid) = (me.uid(), me.gid());
        let done = prepare(&state, uid, gid, 0o700).unwrap();
        // Everything below already had the owner, so only the top changed (for its mode).
        assert_eq!(done.changed, 1, "only the top needed its mode");
        assert_eq!(
            std::fs::metadata(&state).unwrap().permissions().mode() & 0o7777,
            0o700
        );
        // Ready now: nothing to do.
        assert_eq!(
            prepare(&state, uid, gid, 0o700).unwrap(),
            Prepared::default()
        );
        // The link's target kept its mode and owner.
        assert_eq!(std::fs::metadata(&outside).unwrap().uid(), uid);
        assert!(matches!(
            prepare(Path::new("relative"), uid, gid, 0o700),
            Err(PrepareError::Path(_))
        ));
        assert!(matches!(
            prepare(Path::new("/"), uid, gid, 0o700),
            Err(PrepareError::Path(_))
        ));
        // A link in PATH's place is refused, not followed.
        let link_dir = tmp.path().join("linked");
        std::os::unix::fs::symlink(&state, &link_dir).unwrap();
        assert!(prepare(&link_dir, uid, gid, 0o700).is_err());
    }

    #[test]
    fn a_root_run_hands_every_entry_over() {
        // Giving files to another user takes root (CAP_CHOWN): the test suite runs as root.
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        std::fs::create_dir_all(state.join("spool/seg")).unwrap();
        std::fs::write(state.join("spool/seg/1"), "batch").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", state.join("link")).unwrap();
        let done = prepare(&state, 65532, 65532, 0o700).unwrap();
        assert_eq!(done.changed, 5, "state, spool, seg, 1 and the link");
        for p in ["", "spool", "spool/seg", "spool/seg/1"] {
            let m = std::fs::metadata(state.join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (65532, 65532), "{p}");
        }
        let link = std::fs::symlink_metadata(state.join("link")).unwrap();
        assert_eq!(link.uid(), 65532);
        assert_eq!(
            std::fs::metadata("/etc/passwd").unwrap().uid(),
            0,
            "not followed"
        );
        assert_eq!(
            prepare(&state, 65532, 65532, 0o700).unwrap(),
            Prepared::default()
        );
        // An owned top with another mode gets its mode, without a walk.
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(prepare(&state, 65532, 65532, 0o700).unwrap().changed, 1);

        // A hard link to a file elsewhere (a node file, as planted) is refused, not changed.
        let other = tmp.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let node_file = tmp.path().join("node-file");
        std::fs::write(&node_file, "secret").unwrap();
        std::fs::hard_link(&node_file, other.join("planted")).unwrap();
        let err = prepare(&other, 65532, 65532, 0o700).unwrap_err();
        assert!(matches!(err, PrepareError::Refused(_, _)), "{err}");
        assert_eq!(
            std::fs::metadata(&node_file).unwrap().uid(),
            0,
            "left alone"
        );
    }
}
