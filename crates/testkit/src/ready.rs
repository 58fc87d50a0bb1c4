//! Starting an agent process and reading its readiness line (blocking, `std::process`).
//!
//! The agent prints one JSON line ([`shoal_proto::ReadyLine`]) on stdout once it is ready;
//! with port 0 it is the only place the real ports are found. A thread reads that line and
//! then keeps draining stdout, so the agent never writes into a closed pipe.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use shoal_proto::{Ready, ReadyLine};

/// Why no readiness line was read.
#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    /// The process could not be started.
    #[error("cannot start the agent: {0}")]
    Spawn(#[source] std::io::Error),
    /// Nothing was printed within the limit; the process may still be running.
    #[error("no readiness line within {0:?}")]
    Timeout(Duration),
    /// Stdout closed before a line came: the process exited (or closed stdout).
    #[error("the agent exited before it printed its readiness line")]
    Exited,
    /// Reading stdout failed.
    #[error("reading the agent's stdout: {0}")]
    Read(#[source] std::io::Error),
    /// The first line is not a readiness line.
    #[error("unexpected readiness line {line:?}: {error}")]
    Parse {
        /// The line as printed (without its newline).
        line: String,
        /// What did not parse.
        #[source]
        error: serde_json::Error,
    },
}

/// Parses a readiness line (surrounding white space is ignored).
pub fn parse_ready(line: &str) -> Result<Ready, ReadyError> {
    serde_json::from_str::<ReadyLine>(line.trim())
        .map(|l| l.ready)
        .map_err(|error| ReadyError::Parse {
            line: line.trim_end().to_string(),
            error,
        })
}

/// The first stdout line of a process started by [`spawn_with_ready`], read by a thread.
pub struct ReadyReader {
    /// One message at most: the first line, or the read error. Dropped without a message on
    /// end of file. Unbounded, but it carries a single value.
    line: mpsc::Receiver<std::io::Result<String>>,
}

impl ReadyReader {
    /// Waits at most `limit` for the readiness line and parses it. Does not touch the
    /// process: on `Err` it may still be running.
    pub fn wait(&self, limit: Duration) -> Result<Ready, ReadyError> {
        match self.line.recv_timeout(limit) {
            Ok(Ok(line)) => parse_ready(&line),
            Ok(Err(e)) => Err(ReadyError::Read(e)),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(ReadyError::Timeout(limit)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(ReadyError::Exited),
        }
    }
}

/// Starts `cmd` with stdin closed and stdout piped (stderr is the caller's choice, usually a
/// log file) and returns at once; [`ReadyReader::wait`] then waits for the readiness line.
/// Lets a test start many agents before it waits for any.
pub fn spawn_with_ready(cmd: &mut Command) -> Result<(Child, ReadyReader), ReadyError> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(ReadyError::Spawn)?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(ReadyError::Exited);
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        match lines.next() {
            Some(line) => {
                let _ = tx.send(line);
            }
            None => return,
        }
        drop(tx);
        for _ in lines {}
    });
    Ok((child, ReadyReader { line: rx }))
}

/// Starts `cmd` as [`spawn_with_ready`] does and waits at most `limit` for its readiness
/// line. On `Err` the process has been killed and reaped.
pub fn spawn_and_read_ready(
    cmd: &mut Command,
    limit: Duration,
) -> Result<(Child, Ready), ReadyError> {
    let (mut child, reader) = spawn_with_ready(cmd)?;
    match reader.wait(limit) {
        Ok(ready) => Ok((child, ready)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_readiness_line_is_read_from_the_first_line_of_stdout() {
        let line = r#"{"ready":{"advertise":"127.0.0.1:1","control":"127.0.0.1:2","gossip":"127.0.0.1:1","name":"x"}}"#;
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &format!("echo '{line}'; echo more; exec sleep 5")]);
        let (mut child, ready) =
            spawn_and_read_ready(&mut cmd, Duration::from_secs(10)).expect("ready");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(ready.name, "x");
        assert_eq!(ready.control, "127.0.0.1:2");
    }

    #[test]
    fn an_early_exit_and_a_bad_line_are_told_apart() {
        let mut cmd = Command::new("true");
        let got = spawn_and_read_ready(&mut cmd, Duration::from_secs(10));
        assert!(matches!(got, Err(ReadyError::Exited)), "{got:?}");
        let mut cmd = Command::new("echo");
        cmd.arg("hello");
        let got = spawn_and_read_ready(&mut cmd, Duration::from_secs(10));
        assert!(matches!(got, Err(ReadyError::Parse { .. })), "{got:?}");
    }
}
