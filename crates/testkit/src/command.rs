//! Commands with a clean environment.

use std::process::Command;

/// A command for `program` without the caller's `SHOAL_*` variables: a `SHOAL_JOIN` or
/// `SHOAL_CONTROL` in the developer's shell must not reach the agents or the CLI. Variables
/// the caller sets afterwards with [`Command::env`] are passed as usual.
///
/// `tokio::process::Command::from(clean_command(p))` gives the async version.
pub fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SHOAL_") {
            cmd.env_remove(key);
        }
    }
    cmd
}
