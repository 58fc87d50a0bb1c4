//! The private directory that holds `SHOAL_MEMBERS_FILE`, and the clean-up of the ones that
//! agents killed before they could remove theirs left behind.
//!
//! Each agent makes `$TMPDIR/shoal-members-XXXXXX` (mode 0700) and holds an exclusive
//! `flock` on the `lock` file in it for as long as it runs; the kernel drops the lock when the
//! process dies, however it dies. At start, every such directory of this user whose lock can
//! be taken belongs to no running agent and is removed (in the background: events are not
//! held up by it). A directory whose lock is held is a
//! live agent's and is left alone (many agents may share one host and one `/tmp`).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};
use tempfile::TempDir;
use tracing::{debug, info, warn};

/// The directories' name prefix.
pub const PREFIX: &str = "shoal-members-";
/// The lock file's name in each.
const LOCK: &str = "lock";
/// A directory with no lock file yet may be an agent's that is creating it right now: it is
/// taken for stale only once it is older than this.
const NO_LOCK_GRACE: Duration = Duration::from_secs(60);

/// The directory, removed when dropped, and its lock, held as long as it lives.
pub struct MembersDir {
    // Field order: the lock is released after the directory is gone.
    dir: TempDir,
    _lock: Flock<File>,
}

impl MembersDir {
    /// Creates the directory (in `parent`, normally the system's temporary directory) and
    /// locks it. Quick: the clean-up of stale ones is [`MembersDir::remove_stale`].
    pub fn create(parent: &Path) -> std::io::Result<MembersDir> {
        let dir = tempfile::Builder::new().prefix(PREFIX).tempdir_in(parent)?;
        let file = File::create(dir.path().join(LOCK))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| std::io::Error::from(errno))?;
        Ok(MembersDir { dir, _lock: lock })
    }

    /// Removes the stale directories beside this one; returns how many. It reads the whole
    /// parent directory: call it from a blocking task.
    pub fn remove_stale(parent: &Path, own: &Path) -> usize {
        let Ok(uid) = std::fs::metadata(own).map(|m| m.uid()) else {
            return 0;
        };
        let removed = remove_stale(parent, uid, own);
        if removed > 0 {
            info!(removed, dir = %parent.display(),
                "removed members-file directories left by agents that did not stop cleanly");
        }
        removed
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes the directories in `parent` named [`PREFIX`]… that `uid` owns, other than `own`,
/// whose lock no process holds. Returns how many were removed.
fn remove_stale(parent: &Path, uid: u32, own: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = entry.file_name().to_string_lossy().starts_with(PREFIX)
            && path != own
            // Never followed: a symbolic link is not a directory here.
            && std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if ours && is_stale(&path) {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => removed += 1,
                Err(error) => {
                    warn!(dir = %path.display(), %error, "could not remove a stale members-file directory")
                }
            }
        }
    }
    removed
}

/// Whether no running agent holds `dir`'s lock.
fn is_stale(dir: &Path) -> bool {
    let lock_path: PathBuf = dir.join(LOCK);
    match File::open(&lock_path) {
        // Dropping the lock at once: the directory is removed right after, and an agent
        // never takes a lock it did not create.
        Ok(file) => Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok(),
        Err(_) => {
            let old = std::fs::symlink_metadata(dir)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > NO_LOCK_GRACE);
            debug!(dir = %dir.display(), old, "members-file directory without a lock file");
            old
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_agents_directory_is_removed_and_a_live_ones_is_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let live = MembersDir::create(tmp.path()).expect("live");
        // A crashed agent's: its lock file exists, nobody holds it.
        let dead = tmp.path().join(format!("{PREFIX}dead01"));
        std::fs::create_dir(&dead).expect("mkdir");
        std::fs::write(dead.join(LOCK), "").expect("lock");
        std::fs::write(dead.join("members.json"), "{}").expect("file");
        // Being created right now: no lock file yet, and new.
        let young = tmp.path().join(format!("{PREFIX}young1"));
        std::fs::create_dir(&young).expect("mkdir");
        // Somebody else's name.
        let other = tmp.path().join("shoal-other");
        std::fs::create_dir(&other).expect("mkdir");
        let next = MembersDir::create(tmp.path()).expect("next");
        assert_eq!(MembersDir::remove_stale(tmp.path(), next.path()), 1);
        assert!(!dead.exists());
        assert!(live.path().exists(), "a live agent's directory is kept");
        assert!(young.exists() && other.exists());
        let path = next.path().to_path_buf();
        drop(next);
        assert!(!path.exists(), "removed when dropped");
    }
}
