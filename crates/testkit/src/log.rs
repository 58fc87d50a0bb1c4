//! An agent's log (its stderr, redirected to a file), shown when something failed.

use std::path::Path;

/// The last `lines` lines of the file at `path`, or a note saying why it cannot be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Prints `---- HEADING (last N lines) ----` and the log's last `lines` lines on stderr; for
/// the `Drop` of an agent whose test is panicking.
pub fn print_log_tail(heading: &str, path: &Path, lines: usize) {
    eprintln!("---- {heading} (last {lines} lines) ----");
    let tail = log_tail(path, lines);
    if !tail.is_empty() {
        eprintln!("{tail}");
    }
}
