//! `--tags-file PATH`: the agent's tags kept across restarts, as Serf keeps them. The file is a
//! JSON object of tag keys to values; it is rewritten atomically after every runtime change
//! (`shoal tags`, SIGHUP), and at start it wins over `--tag` and the config file's `[tags]`.

use std::collections::BTreeMap;
use std::path::Path;

use thiserror::Error;

/// A tags file that cannot be read or written.
#[derive(Debug, Error)]
pub enum TagsFileError {
    /// Reading failed (other than "not there yet"). The agent does not start.
    #[error("cannot read tags file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a JSON object of strings. The agent does not start.
    #[error("tags file {path} is not a JSON object of strings: {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// Writing failed. The tags changed in the cluster but the file keeps the old ones.
    #[error("cannot write tags file {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// The tags in the file at `path`; `Ok(None)` when there is no file yet.
pub fn load(path: &Path) -> Result<Option<BTreeMap<String, String>>, TagsFileError> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TagsFileError::Read {
                path: path.display().to_string(),
                source,
            });
        }
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| TagsFileError::Corrupt {
            path: path.display().to_string(),
            message: e.to_string(),
        })
}

/// Replaces the file at `path` with `tags`, atomically, off the async runtime's thread.
pub async fn save(path: &Path, tags: &BTreeMap<String, String>) -> Result<(), TagsFileError> {
    let write_error = |source| TagsFileError::Write {
        path: path.display().to_string(),
        source,
    };
    let json =
        serde_json::to_vec_pretty(tags).map_err(|e| write_error(std::io::Error::other(e)))?;
    let target = path.to_path_buf();
    tokio::task::spawn_blocking(move || shoal_core::fs::write_atomically(&target, &json))
        .await
        .map_err(|e| write_error(std::io::Error::other(e)))?
        .map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tags_round_trip_through_the_file_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tags.json");
        assert_eq!(load(&path).expect("missing is fine"), None);
        let tags = BTreeMap::from([("role".to_string(), "web".to_string())]);
        save(&path, &tags).await.expect("save");
        assert_eq!(load(&path).expect("load"), Some(tags));
        std::fs::write(&path, b"[1, 2]").expect("write");
        let err = load(&path).expect_err("corrupt").to_string();
        assert!(err.contains("not a JSON object"), "{err}");
    }
}
