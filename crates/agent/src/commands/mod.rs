//! Client commands: each talks to an agent's control API.

use shoal_proto::{Client, ClientError};
use thiserror::Error;

use crate::cli::ClientArgs;
use crate::token::{check_token, read_token_file};

pub mod event;
pub mod force_leave;
pub mod info;
pub mod join;
pub mod keys;
pub mod leave;
pub mod members;
pub mod monitor;
pub mod primary;
pub mod query;
pub mod reachability;
pub mod tags;

/// Why a client command failed. `main` prints it after `shoal: ` and exits 2 (1 for
/// `info --joined`, which Docker reads as unhealthy).
#[derive(Debug, Error)]
pub enum CliError {
    /// The control request failed; see [`ClientError`] for what the agent may have done.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A `members` filter is not a valid regular expression. Nothing was asked.
    #[error("invalid {flag} regular expression {re:?}: {source}")]
    Regex {
        /// The flag (`--status`, `--name`, `--tag`).
        flag: &'static str,
        /// The expression given.
        re: String,
        /// Why it does not compile.
        source: regex_lite::Error,
    },
    /// A `members --tag` filter is not `KEY=REGEX`. Nothing was asked.
    #[error("invalid --tag {0:?}: expected KEY=REGEX")]
    TagFilter(String),
    /// `info --joined`: the agent lists no other live member.
    #[error("not joined: no other live member")]
    NotJoined,
    /// `primary GROUP`: not a group name. Nothing was asked.
    #[error("invalid group {0:?}: 1 to 128 ASCII letters, digits, '-', '_' or '.'")]
    Group(String),
    /// The answer could not be printed as JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// `monitor`: the agent ended the stream (it stopped, or this reader fell behind).
    #[error("the agent ended the monitor stream (it has stopped, or this reader fell behind)")]
    StreamEnded,
    /// `monitor`: SIGINT could not be caught. Nothing was asked.
    #[error("cannot listen for SIGINT: {0}")]
    Signal(std::io::Error),
    /// `keys`: some member failed or did not answer (the summary says which).
    #[error("key operation incomplete:\n{0}")]
    KeysFailed(String),
    /// Writing to stdout failed.
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
    /// The control token could not be read, or is not a usable token. Nothing was asked.
    #[error("control token {from}: {reason}")]
    Token {
        /// Where it came from: the file, or `SHOAL_CONTROL_TOKEN`.
        from: String,
        /// Why it cannot be used.
        reason: String,
    },
}

impl ClientArgs {
    /// The client for these flags: the address, and the token from `--token-file` (or
    /// `SHOAL_CONTROL_TOKEN_FILE`), else from `SHOAL_CONTROL_TOKEN`, else none.
    pub fn client(&self) -> Result<Client, CliError> {
        let token = match (&self.token_file, std::env::var("SHOAL_CONTROL_TOKEN")) {
            (Some(path), _) => Some(read_token_file(path).map_err(|reason| CliError::Token {
                from: format!("file {}", path.display()),
                reason,
            })?),
            (None, Ok(text)) if !text.is_empty() => {
                Some(check_token(&text).map_err(|reason| CliError::Token {
                    from: "SHOAL_CONTROL_TOKEN".into(),
                    reason,
                })?)
            }
            (None, _) => None,
        };
        Ok(Client::new(&self.control).with_token(token))
    }
}

/// Pads columns two spaces apart, like Serf's `columnize`.
pub fn columns(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.iter().map(Vec::len).max().unwrap_or(0))
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        let trimmed = out.trim_end_matches(' ').len();
        out.truncate(trimmed);
        out.push('\n');
    }
    out
}
