//! `--snapshot PATH`: the members this node knew, written atomically whenever the view changes,
//! so a restarted node rejoins them without `--join`. Also records whether the node left
//! gracefully: such a node does not rejoin from its snapshot unless told to (`--rejoin`), and
//! the newest user event it handled, so a restart never runs an event again (Serf's
//! `event-clock`), and likewise the newest query it handled (Serf's `query-clock`). Files
//! written before those fields existed load with none.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::membership::Status;
use crate::view::View;

/// The current file format version.
pub const FORMAT: u32 = 1;

/// What the snapshot file holds (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// Format version, [`FORMAT`].
    pub format: u32,
    /// This node's name when it was written.
    pub name: String,
    /// True once the node left the cluster gracefully.
    pub left: bool,
    /// Members worth rejoining: every other member not known to have left.
    pub members: Vec<SnapshotMember>,
    /// The newest user-event Lamport time this node handled (or skipped as history when it
    /// joined); after a restart only later events run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_ltime: Option<u64>,
    /// The newest query Lamport time this node handled; after a restart only later queries
    /// are handled, and its own queries are stamped later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_ltime: Option<u64>,
}

/// What a starting node takes from its snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// Members to rejoin (none after a graceful leave without `--rejoin`).
    pub seeds: Vec<SocketAddr>,
    /// See [`SnapshotFile::event_ltime`]; kept even when the members are not rejoined.
    pub event_ltime: Option<u64>,
    /// See [`SnapshotFile::query_ltime`]; kept likewise.
    pub query_ltime: Option<u64>,
}

/// One remembered member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMember {
    /// Its name.
    pub name: String,
    /// Its gossip address.
    pub addr: SocketAddr,
}

/// A snapshot that cannot be used. The node starts without it.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// The file could not be read.
    #[error("cannot read snapshot {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is corrupt or truncated.
    #[error("snapshot {path} is corrupt or truncated: {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl SnapshotFile {
    /// The file content for a published view.
    pub fn from_view(view: &View) -> Self {
        let members = view
            .members
            .iter()
            .filter(|m| m.addr != view.local.addr && m.status != Status::Left)
            .map(|m| SnapshotMember {
                name: m.name.clone(),
                addr: m.addr,
            })
            .collect();
        Self {
            format: FORMAT,
            name: view.local.name.clone(),
            left: view.left,
            members,
            event_ltime: view.event_ltime,
            query_ltime: view.query_ltime,
        }
    }

    /// The remembered members' addresses, `advertise` (this node) excluded.
    pub fn seeds(&self, advertise: SocketAddr) -> Vec<SocketAddr> {
        self.members
            .iter()
            .map(|m| m.addr)
            .filter(|a| *a != advertise)
            .collect()
    }
}

/// What to start with from the snapshot at `path`: nothing when there is no file or it cannot
/// be read (logged); no seeds when the node left gracefully last time and `rejoin` is off.
pub fn restore(path: &Path, rejoin: bool, advertise: SocketAddr) -> Restored {
    match load(path) {
        Ok(None) => Restored::default(),
        Ok(Some(file)) if file.left && !rejoin => {
            tracing::info!(path = %path.display(),
                "this node left the cluster gracefully last time: not rejoining its snapshot (use --rejoin)");
            Restored {
                seeds: Vec::new(),
                event_ltime: file.event_ltime,
                query_ltime: file.query_ltime,
            }
        }
        Ok(Some(file)) => {
            let seeds = file.seeds(advertise);
            tracing::info!(path = %path.display(), members = seeds.len(), "rejoining members from the snapshot");
            Restored {
                seeds,
                event_ltime: file.event_ltime,
                query_ltime: file.query_ltime,
            }
        }
        Err(error) => {
            tracing::warn!(%error, "ignoring the snapshot");
            Restored::default()
        }
    }
}

/// Reads the snapshot at `path`; `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> Result<Option<SnapshotFile>, SnapshotError> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SnapshotError::Read {
                path: path.display().to_string(),
                source,
            });
        }
    };
    let corrupt = |message: String| SnapshotError::Corrupt {
        path: path.display().to_string(),
        message,
    };
    let file: SnapshotFile = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
    if file.format != FORMAT {
        return Err(corrupt(format!(
            "unknown format {} (expected {FORMAT})",
            file.format
        )));
    }
    Ok(Some(file))
}

/// Writes `file` to `path` atomically (see [`crate::fs::write_atomically`]).
pub fn write(path: &Path, file: &SnapshotFile) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
    crate::fs::write_atomically(path, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SnapshotFile {
        SnapshotFile {
            format: FORMAT,
            name: "n1".into(),
            left: false,
            members: vec![SnapshotMember {
                name: "n2".into(),
                addr: "127.0.0.1:7948".parse().expect("addr"),
            }],
            event_ltime: Some(41),
            query_ltime: Some(3),
        }
    }

    #[test]
    fn snapshot_round_trips_through_an_atomic_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("snap.json");
        assert!(load(&path).expect("missing is fine").is_none());
        write(&path, &sample()).expect("write");
        assert_eq!(load(&path).expect("load"), Some(sample()));
    }

    #[test]
    fn a_file_without_an_event_clock_still_loads_and_the_clock_survives_a_graceful_leave() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("snap.json");
        let old = r#"{"format":1,"name":"n1","left":true,"members":[{"name":"n2","addr":"127.0.0.1:7948"}]}"#;
        std::fs::write(&path, old).expect("write");
        let file = load(&path).expect("load").expect("present");
        assert_eq!((file.event_ltime, file.query_ltime), (None, None));
        let me: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        write(
            &path,
            &SnapshotFile {
                event_ltime: Some(7),
                query_ltime: Some(9),
                ..file
            },
        )
        .expect("write");
        let restored = restore(&path, false, me);
        assert_eq!(
            restored,
            Restored {
                seeds: Vec::new(),
                event_ltime: Some(7),
                query_ltime: Some(9),
            }
        );
        assert_eq!(restore(&path, true, me).seeds.len(), 1);
    }

    #[test]
    fn truncated_or_garbage_snapshots_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("snap.json");
        let full = serde_json::to_vec(&sample()).expect("json");
        std::fs::write(&path, &full[..full.len() / 2]).expect("write");
        let err = load(&path).expect_err("truncated").to_string();
        assert!(err.contains("corrupt or truncated"), "{err}");
        std::fs::write(&path, b"\x00\xffgarbage").expect("write");
        assert!(load(&path).is_err());
    }
}
