//! `mcpwatch-agent prepare-dir PATH --owner UID:GID [--mode OCTAL]`: gives the agent's state
//! directory on a node (a Kubernetes hostPath, created root-owned) to the unprivileged user
//! the agent runs as. Run by an init container holding only CAP_CHOWN and CAP_FOWNER, so it
//! never needs to read what it may not: it walks as root, children first, and does not
//! descend into a directory already owned by the user (done on an earlier start).
//!
//! Symbolic links are changed themselves, never followed, and the walk stays on PATH's
//! filesystem: a link or mount planted in the directory cannot turn this into a chown of
//! something else on the node.

use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PrepareError + '_ {
    move |source| PrepareError::Io {
        path: path.to_owned(),
        source,
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
    /// Entries given to the owner (PATH included).
    pub changed: usize,
}

/// Creates `path` if needed and gives it, and everything under it on its filesystem, to
/// `uid:gid`; `path` gets `mode`. A directory already right is left alone at once.
pub fn prepare(path: &Path, uid: u32, gid: u32, mode: u32) -> Result<Prepared, PrepareError> {
    if !path.is_absolute() || path.parent().is_none() {
        return Err(PrepareError::Path(path.to_owned()));
    }
    std::fs::create_dir_all(path).map_err(io(path))?;
    let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
    if !meta.is_dir() {
        return Err(PrepareError::Io {
            path: path.to_owned(),
            source: std::io::Error::other("not a directory (a link is not followed)"),
        });
    }
    let mut done = Prepared::default();
    if meta.uid() == uid && meta.gid() == gid && meta.mode() & 0o7777 == mode {
        return Ok(done);
    }
    walk(path, meta.dev(), uid, gid, &mut done)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))?;
    lchown(path, Some(uid), Some(gid)).map_err(io(path))?;
    done.changed += 1;
    Ok(done)
}

/// Gives what is under `dir` to `uid:gid`, children first.
fn walk(dir: &Path, dev: u64, uid: u32, gid: u32, done: &mut Prepared) -> Result<(), PrepareError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        if meta.dev() != dev {
            // Another filesystem mounted here: not ours to change.
            continue;
        }
        let owned = meta.uid() == uid && meta.gid() == gid;
        if meta.is_dir() && !owned {
            walk(&path, dev, uid, gid, done)?;
        }
        if !owned {
            lchown(&path, Some(uid), Some(gid)).map_err(io(&path))?;
            done.changed += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
