//! Starting an agent process and reading its readiness line with `tokio::process` (the
//! benchmark drives many agents from one current-thread runtime).

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::ready::{ReadyError, parse_ready};
use shoal_proto::Ready;

/// Starts `cmd` with stdin closed and stdout piped, and hands back stdout for
/// [`read_ready`]. Keep the reader alive as long as the agent runs: dropping it closes the
/// pipe the agent writes to.
pub fn spawn_piped(cmd: &mut Command) -> Result<(Child, BufReader<ChildStdout>), ReadyError> {
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(ReadyError::Spawn)?;
    let stdout = child.stdout.take().ok_or(ReadyError::Exited)?;
    Ok((child, BufReader::new(stdout)))
}

/// Reads and parses the readiness line, waiting at most `limit`.
pub async fn read_ready(
    stdout: &mut BufReader<ChildStdout>,
    limit: Duration,
) -> Result<Ready, ReadyError> {
    let mut line = String::new();
    match tokio::time::timeout(limit, stdout.read_line(&mut line)).await {
        Err(_) => Err(ReadyError::Timeout(limit)),
        Ok(Err(e)) => Err(ReadyError::Read(e)),
        Ok(Ok(0)) => Err(ReadyError::Exited),
        Ok(Ok(_)) => parse_ready(&line),
    }
}

/// [`spawn_piped`], then [`read_ready`]. On `Err` after the start the process is killed
/// and reaped.
pub async fn spawn_and_read_ready(
    cmd: &mut Command,
    limit: Duration,
) -> Result<(Child, BufReader<ChildStdout>, Ready), ReadyError> {
    let (mut child, mut stdout) = spawn_piped(cmd)?;
    match read_ready(&mut stdout, limit).await {
        Ok(ready) => Ok((child, stdout, ready)),
        Err(e) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            Err(e)
        }
    }
}
