//! Runs one script for an event handler or a template's command: `sh -c SCRIPT` in its own
//! process group, stdin fed, output captured (bounded), killed with its whole group past the
//! timeout. A query's handler also gets its [`Ran`] back (outcome and stdout), which is how
//! its answer is read.
//!
//! A run ends when the shell exits, not when its output pipes close: a handler that starts a
//! background child (`sleep 30 &`, a daemon) leaves that child holding the pipes. Output is
//! read for [`OUTPUT_GRACE`] more, then what is already in the pipes is taken without
//! waiting and the pipes are closed; the child keeps running (a write it makes to them later
//! gets EPIPE: redirect its output).

use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Output kept per stream, as in Serf.
const MAX_OUTPUT: usize = 8 * 1024;

/// How long output is still read after the shell exited, for pipes a background child of it
/// still holds open. Output the shell itself wrote is in the pipe already; this only bounds
/// the wait for an end-of-file that may never come.
pub const OUTPUT_GRACE: Duration = Duration::from_millis(100);

/// At most this many reads of what is already in a pipe once reading stops (a chatty
/// background child must not keep the run going).
const DRAIN_READS: usize = 16;

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
    /// A health check's run: its outcome is the caller's to log (only a debug line here, so
    /// a check failing every second does not log a warning every second).
    pub quiet: bool,
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
    /// Its stderr, at most [`MAX_OUTPUT`] bytes of it.
    pub stderr: Vec<u8>,
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
    // A handler that never reads stdin must not block us: write in the background and
    // ignore a closed pipe, as Serf does. Stopped (and the pipe closed) when the run ends.
    let feeder = child.stdin.take().map(|mut stdin| {
        let data = job.stdin;
        tokio::spawn(async move {
            let _ = stdin.write_all(&data).await;
        })
    });
    let (stop_out, out_stopped) = oneshot::channel();
    let (stop_err, err_stopped) = oneshot::channel();
    let stdout = tokio::spawn(capture(child.stdout.take(), out_stopped));
    let stderr = tokio::spawn(capture(child.stderr.take(), err_stopped));
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
    if let Some(feeder) = feeder {
        feeder.abort();
    }
    let until = tokio::time::Instant::now() + OUTPUT_GRACE;
    let (stdout, stdout_len) = collect(stdout, stop_out, until).await;
    let out = printable(&stdout, stdout_len);
    let (stderr, stderr_len) = collect(stderr, stop_err, until).await;
    let err = printable(&stderr, stderr_len);
    let ms = started.elapsed().as_millis() as u64;
    if job.quiet {
        debug!(script, event = %job.event, ms, ?outcome, stdout = %out, stderr = %err, "check run done");
    } else {
        log_outcome(script, &job.event, &outcome, timeout, ms, &out, &err);
    }
    if let Some(done) = done {
        let _ = done.send(Ran {
            outcome,
            stdout,
            stdout_len,
            stderr,
        });
    }
    outcome
}

/// The handler's log line for how its run ended.
fn log_outcome(
    script: &str,
    event: &str,
    outcome: &Outcome,
    timeout: Duration,
    ms: u64,
    out: &str,
    err: &str,
) {
    match outcome {
        Outcome::Exited(Some(0)) => {
            debug!(handler = script, event = %event, ms, stdout = %out, stderr = %err, "handler done");
            if !err.is_empty() {
                info!(handler = script, event = %event, stderr = %err, "handler wrote to stderr");
            }
        }
        Outcome::Exited(Some(code)) => warn!(
            handler = script, event = %event, ms, code, stderr = %err, stdout = %out,
            "handler failed"
        ),
        Outcome::Exited(None) => warn!(
            handler = script, event = %event, ms, stderr = %err, stdout = %out,
            "handler killed by a signal"
        ),
        Outcome::TimedOut => warn!(
            handler = script, event = %event, timeout_ms = timeout.as_millis() as u64,
            stderr = %err, "handler timed out and was killed"
        ),
        Outcome::SpawnFailed => {}
    }
}

/// A capture's result once its stream ended, or at `until` (then it is told to stop, takes
/// what is in the pipe and closes it).
async fn collect(
    mut task: JoinHandle<(Vec<u8>, usize)>,
    stop: oneshot::Sender<()>,
    until: tokio::time::Instant,
) -> (Vec<u8>, usize) {
    if let Ok(done) = tokio::time::timeout_at(until, &mut task).await {
        return done.unwrap_or_default();
    }
    let _ = stop.send(());
    task.await.unwrap_or_default()
}

/// Reads a stream to its end or until told to stop, keeping the first [`MAX_OUTPUT`]
/// bytes; returns them and the length of the whole. The stream is closed when it returns.
async fn capture(
    stream: Option<impl AsyncRead + Unpin>,
    mut stop: oneshot::Receiver<()>,
) -> (Vec<u8>, usize) {
    let Some(mut stream) = stream else {
        return (Vec::new(), 0);
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    let mut total = 0usize;
    let mut keep = |n: usize, buf: &[u8]| {
        total += n;
        let room = MAX_OUTPUT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    };
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return (kept, total),
                Ok(n) => keep(n, &buf),
            },
            // Reading is cancel-safe: nothing read is lost when this branch wins.
            _ = &mut stop => break,
        }
    }
    // Told to stop: take what is in the pipe already, without waiting for more.
    for _ in 0..DRAIN_READS {
        match tokio::time::timeout(Duration::ZERO, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => keep(n, &buf),
            _ => break,
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

    /// Issue 10: each such run used to cost 2 s (a second per pipe, waiting for an end of
    /// file the background child held off) and leak both pipes until the child exited.
    #[tokio::test]
    async fn a_background_child_does_not_hold_the_run_or_its_pipes() {
        let fds = || std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
        let dir = tempfile::tempdir().expect("tempdir");
        let pids = dir.path().join("pids");
        let background = format!("sleep 30 & echo $! >> {}", pids.display());
        let before = fds();
        let (done, ran) = oneshot::channel();
        let with_output = Job {
            done: Some(done),
            ..job("")
        };
        let started = Instant::now();
        let outcome = run(
            &format!("{background}; printf 'answer\\n'; echo oops >&2"),
            with_output,
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(outcome, Outcome::Exited(Some(0)));
        let ran = ran.await.expect("told");
        assert_eq!(ran.stdout, b"answer\n");
        for _ in 0..4 {
            run(&background, job(""), Duration::from_secs(10)).await;
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(4), "5 runs took {took:?}");
        // The pipes are closed though the sleeps still run (the test harness's own threads
        // may open a descriptor or two meanwhile).
        let after = fds();
        for pid in std::fs::read_to_string(&pids)
            .expect("pids")
            .split_whitespace()
        {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        assert!(
            after <= before + 2,
            "{before} descriptors before, {after} after"
        );
    }

    #[tokio::test]
    async fn exit_code_is_reported() {
        assert_eq!(
            run("exit 3", job(""), Duration::from_secs(10)).await,
            Outcome::Exited(Some(3))
        );
    }
}
