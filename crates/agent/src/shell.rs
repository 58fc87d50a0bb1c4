//! Runs one script for an event handler or a template's command: `sh -c SCRIPT` in its own
//! process group, stdin fed, output captured (bounded), killed with its whole group past the
//! timeout. A query's handler also gets its [`Ran`] back (outcome and stdout), which is how
//! its answer is read.

use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

/// Output kept per stream, as in Serf.
const MAX_OUTPUT: usize = 8 * 1024;

/// One invocation.
#[derive(Default)]
pub struct Job {
    /// Event name for logs (`member-join`, ...).
    pub event: String,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Bytes written to stdin, which is then closed.
    pub stdin: Vec<u8>,
    /// A shorter timeout than the handler's (a query's time left).
    pub timeout: Option<Duration>,
    /// Told how the run ended and what it printed (a query's answer).
    pub done: Option<oneshot::Sender<Ran>>,
}

/// How a run ended and what it wrote to stdout.
#[derive(Debug, PartialEq, Eq)]
pub struct Ran {
    /// How it ended.
    pub outcome: Outcome,
    /// Its stdout, at most [`MAX_OUTPUT`] bytes of it.
    pub stdout: Vec<u8>,
    /// How many bytes it wrote to stdout in all.
    pub stdout_len: usize,
}

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exited with this code (`None`: killed by a signal).
    Exited(Option<i32>),
    /// Killed at the timeout.
    TimedOut,
    /// Could not be started.
    SpawnFailed,
}

/// Runs `script` for `job`, never longer than `timeout` (or the job's own, if shorter).
pub async fn run(script: &str, job: Job, timeout: Duration) -> Outcome {
    let timeout = job.timeout.map_or(timeout, |t| t.min(timeout));
    let started = Instant::now();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .envs(job.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(error) => {
            warn!(handler = script, event = %job.event, %error, "handler could not be started");
            return Outcome::SpawnFailed;
        }
    };
    let pid = child.id();
    crate::reaper::register(pid);
    if let Some(mut stdin) = child.stdin.take() {
        let data = job.stdin;
        // A handler that never reads stdin must not block us: write in the background and
        // ignore a closed pipe, as Serf does.
        tokio::spawn(async move {
            let _ = stdin.write_all(&data).await;
        });
    }
    let stdout = tokio::spawn(capture(child.stdout.take()));
    let stderr = tokio::spawn(capture(child.stderr.take()));
    let done = job.done;
    let outcome = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => Outcome::Exited(status.code()),
        Ok(Err(error)) => {
            warn!(handler = script, %error, "waiting for handler failed");
            Outcome::Exited(None)
        }
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.kill().await;
            Outcome::TimedOut
        }
    };
    crate::reaper::unregister(pid);
    let grace = Duration::from_secs(1);
    let (stdout, stdout_len) = tokio::time::timeout(grace, stdout)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let out = printable(&stdout, stdout_len);
    let (stderr, stderr_len) = tokio::time::timeout(grace, stderr)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let err = printable(&stderr, stderr_len);
    let ms = started.elapsed().as_millis() as u64;
    match &outcome {
        Outcome::Exited(Some(0)) => {
            debug!(handler = script, event = %job.event, ms, stdout = %out, stderr = %err, "handler done");
            if !err.is_empty() {
                info!(handler = script, event = %job.event, stderr = %err, "handler wrote to stderr");
            }
        }
        Outcome::Exited(code) => warn!(
            handler = script, event = %job.event, ms, code = ?code, stderr = %err, stdout = %out,
            "handler failed"
        ),
        Outcome::TimedOut => warn!(
            handler = script, event = %job.event, timeout_ms = timeout.as_millis() as u64,
            stderr = %err, "handler timed out and was killed"
        ),
        Outcome::SpawnFailed => {}
    }
    if let Some(done) = done {
        let _ = done.send(Ran {
            outcome,
            stdout,
            stdout_len,
        });
    }
    outcome
}

/// Reads a stream to its end, keeping the first [`MAX_OUTPUT`] bytes; returns them and the
/// length of the whole.
async fn capture(stream: Option<impl AsyncRead + Unpin>) -> (Vec<u8>, usize) {
    let Some(mut stream) = stream else {
        return (Vec::new(), 0);
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    let mut total = 0usize;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n;
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (kept, total)
}

/// Captured output for the log: trimmed, with a note when it was cut.
fn printable(kept: &[u8], total: usize) -> String {
    let mut text = String::from_utf8_lossy(kept).trim_end().to_string();
    if total > kept.len() {
        text.push_str(&format!(" [truncated: {total} bytes in all]"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(stdin: &str) -> Job {
        Job {
            event: "member-join".into(),
            env: vec![("SERF_EVENT".into(), "member-join".into())],
            stdin: stdin.as_bytes().to_vec(),
            ..Job::default()
        }
    }

    #[tokio::test]
    async fn a_run_reports_its_stdout_and_a_job_timeout_shortens_the_handlers() {
        let (done, ran) = oneshot::channel();
        let first = Job {
            done: Some(done),
            ..job("")
        };
        run(
            "printf 'token\\n'; head -c 9000 /dev/zero >/dev/null",
            first,
            Duration::from_secs(10),
        )
        .await;
        let ran = ran.await.expect("told");
        assert_eq!(ran.outcome, Outcome::Exited(Some(0)));
        assert_eq!((ran.stdout, ran.stdout_len), (b"token\n".to_vec(), 6));
        let (done, ran) = oneshot::channel();
        let second = Job {
            done: Some(done),
            timeout: Some(Duration::from_millis(200)),
            ..job("")
        };
        let started = Instant::now();
        let outcome = run(
            "head -c 9000 /dev/zero; sleep 30",
            second,
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(outcome, Outcome::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        let ran = ran.await.expect("told");
        assert_eq!((ran.stdout.len(), ran.stdout_len), (MAX_OUTPUT, 9000));
    }

    #[tokio::test]
    async fn handler_gets_stdin_and_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let script = format!("cat > {0}; echo \"$SERF_EVENT\" >> {0}", out.display());
        assert_eq!(
            run(&script, job("a\tb\n"), Duration::from_secs(10)).await,
            Outcome::Exited(Some(0))
        );
        assert_eq!(
            std::fs::read_to_string(out).expect("out"),
            "a\tb\nmember-join\n"
        );
    }

    #[tokio::test]
    async fn hung_handler_and_its_children_are_killed_at_the_timeout() {
        let outcome = run("sleep 30 & sleep 30", job(""), Duration::from_millis(200)).await;
        assert_eq!(outcome, Outcome::TimedOut);
    }

    #[tokio::test]
    async fn exit_code_is_reported() {
        assert_eq!(
            run("exit 3", job(""), Duration::from_secs(10)).await,
            Outcome::Exited(Some(3))
        );
    }
}
