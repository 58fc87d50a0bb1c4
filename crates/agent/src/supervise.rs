//! `shoal agent [flags] -- COMMAND ARGS`: the agent runs the app as its child.
//!
//! The app gets the agent's stdin, stdout and stderr and its own process group (so a terminal's
//! Ctrl-C reaches it once, through the agent). When the agent is stopped it leaves the cluster
//! first, waits `--stop-delay` so load balancers drop this member, then passes the signal on
//! and waits for the app (at most `--stop-timeout`, then SIGKILL). When the app exits on its
//! own, the agent leaves and exits with the app's status.

use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tracing::{info, warn};

use crate::reaper;

/// The supervised app.
pub struct App {
    child: Child,
    pid: Option<u32>,
    name: String,
}

impl App {
    /// Starts `command` (program and arguments).
    pub fn start(command: &[String]) -> std::io::Result<Self> {
        let (program, args) = command
            .split_first()
            .ok_or_else(|| std::io::Error::other("no command given after --"))?;
        let child = Command::new(program).args(args).process_group(0).spawn()?;
        let pid = child.id();
        reaper::register(pid);
        info!(app = %program, pid = pid.unwrap_or(0), "app started");
        Ok(Self {
            child,
            pid,
            name: program.clone(),
        })
    }

    /// Sends `signal` to the app's main process (as Docker does to PID 1; its children are the
    /// app's business), or with `group` to its whole process group.
    fn send(&self, signal: Signal, group: bool) {
        let Some(pid) = self
            .pid
            .and_then(|p| i32::try_from(p).ok())
            .map(Pid::from_raw)
        else {
            return;
        };
        let result = if group {
            killpg(pid, signal)
        } else {
            kill(pid, signal)
        };
        if let Err(error) = result {
            warn!(app = %self.name, %error, signal = signal.as_str(), "could not signal the app");
        }
    }

    /// Forwards `signal` to the app.
    pub fn signal(&self, signal: Signal) {
        self.send(signal, false);
    }

    /// Kills the app and every process of its group.
    pub fn kill_all(&self) {
        self.send(Signal::SIGKILL, true);
    }

    /// Waits for the app to exit.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait().await;
        reaper::unregister(self.pid);
        status
    }

    /// Sends `signal`, waits up to `timeout`, then kills the group. Returns the exit status.
    pub async fn stop(&mut self, signal: Signal, timeout: Duration) -> Option<ExitStatus> {
        self.signal(signal);
        match tokio::time::timeout(timeout, self.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                warn!(app = %self.name, timeout_ms = timeout.as_millis() as u64, "app did not stop in time; killing it");
                self.kill_all();
                self.wait().await.ok()
            }
        }
    }
}

/// The exit code that stands for `status`: its code, or 128 + signal number (as a shell does).
pub fn exit_code(status: Option<ExitStatus>) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => u8::try_from(code).unwrap_or(1),
            (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(1),
            _ => 1,
        },
        None => 1,
    }
}
