//! Writing a template's DEST the way an operator expects of a config file.
//!
//! - **Atomically**: a temporary file beside the target, synced, then renamed over it; a
//!   reader (HAProxy reloading) sees the old file or the new one, never half of one.
//! - **Through a symlink**: when DEST is a symbolic link (`/etc/haproxy/haproxy.cfg ->
//!   /srv/conf/haproxy.cfg`), the file it points to is replaced and the link stays. A plain
//!   rename over DEST would replace the link with a regular file and leave the target stale
//!   (consul-template does that); writing through is what a link placed there asks for.
//! - **Keeping the mode and owner**: the new file gets the permission bits of the file it
//!   replaces (and its owner and group, when the agent may set them); a new file gets 0644,
//!   consul-template's default. A temporary file is created 0600, which is what DEST used to
//!   end up with.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of a DEST that did not exist.
pub const NEW_FILE_MODE: u32 = 0o644;

/// Symbolic links followed at most (Linux's own limit).
const MAX_LINKS: usize = 40;

/// Replaces the file DEST names (following symbolic links, even a dangling one) with `bytes`,
/// atomically, keeping its mode and owner. Returns the path written. Blocking.
pub fn write_dest(dest: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let target = resolve(dest)?;
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let old = fs::metadata(&target).ok();
    let mut tmp = tempfile::Builder::new()
        .prefix(".shoal-template-")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    let mode = old.as_ref().map_or(NEW_FILE_MODE, |m| m.mode() & 0o7777);
    if let Some(old) = &old {
        // Only root may give a file away; anyone else keeps their own ownership.
        let _ = std::os::unix::fs::fchown(tmp.as_file(), Some(old.uid()), Some(old.gid()));
    }
    // After the chown, which may clear set-id bits.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(&target).map_err(|e| e.error)?;
    Ok(target)
}

/// The path that `dest` finally names: `dest` itself unless it is a symbolic link, else its
/// target (relative targets are relative to the link's directory), link after link.
fn resolve(dest: &Path) -> io::Result<PathBuf> {
    let mut path = dest.to_path_buf();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let link = fs::read_link(&path)?;
                path = match path.parent() {
                    Some(dir) if link.is_relative() => dir.join(link),
                    _ => link,
                };
            }
            _ => return Ok(path),
        }
    }
    Err(io::Error::other(format!(
        "more than {MAX_LINKS} symbolic links to follow"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").mode() & 0o7777
    }

    #[test]
    fn a_new_file_is_0644_and_an_existing_one_keeps_its_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("haproxy.cfg");
        write_dest(&dest, b"one\n").expect("write");
        assert_eq!(fs::read(&dest).expect("read"), b"one\n");
        assert_eq!(mode(&dest), 0o644);
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o640)).expect("chmod");
        write_dest(&dest, b"two\n").expect("write");
        assert_eq!(fs::read(&dest).expect("read"), b"two\n");
        assert_eq!(mode(&dest), 0o640);
        let leftovers = fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(leftovers, 1, "no temporary file is left");
    }

    #[test]
    fn a_symlinked_dest_is_written_through_and_the_link_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real_dir = dir.path().join("srv");
        fs::create_dir(&real_dir).expect("mkdir");
        let target = real_dir.join("haproxy.cfg");
        fs::write(&target, "old\n").expect("write");
        fs::set_permissions(&target, fs::Permissions::from_mode(0o604)).expect("chmod");
        let link = dir.path().join("haproxy.cfg");
        std::os::unix::fs::symlink("srv/haproxy.cfg", &link).expect("symlink");
        let second = dir.path().join("current.cfg");
        std::os::unix::fs::symlink(&link, &second).expect("symlink");
        assert_eq!(write_dest(&second, b"new\n").expect("write"), target);
        assert!(
            fs::symlink_metadata(&link)
                .expect("link")
                .file_type()
                .is_symlink()
        );
        assert!(
            fs::symlink_metadata(&second)
                .expect("link")
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(&target).expect("read"), b"new\n");
        assert_eq!(mode(&target), 0o604);
        // A dangling link: its target is created.
        let dangling = dir.path().join("dangling.cfg");
        std::os::unix::fs::symlink("srv/created.cfg", &dangling).expect("symlink");
        write_dest(&dangling, b"x\n").expect("write");
        assert_eq!(
            fs::read(real_dir.join("created.cfg")).expect("read"),
            b"x\n"
        );
        // A loop is an error, not a hang.
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::os::unix::fs::symlink(&b, &a).expect("symlink");
        std::os::unix::fs::symlink(&a, &b).expect("symlink");
        let err = write_dest(&a, b"x").expect_err("loop");
        assert!(err.to_string().contains("symbolic links"), "{err}");
    }
}
