//! Atomic file replacement, shared by the snapshot, the members file and templates.

use std::path::Path;

/// Replaces `path` with `bytes` atomically: a temporary file in the same directory, synced,
/// then renamed over it. A crash leaves the old or the new content, never half of one.
/// Blocking: call it from a blocking task, not from the gossip loop.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
