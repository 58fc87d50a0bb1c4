//! Zombie reaping for an agent running as PID 1 (the container entrypoint).
//!
//! Orphans anywhere in the container are re-parented to PID 1 and must be reaped, or they stay
//! zombies. But the agent's own children (handlers, template renders and commands, the
//! supervised app) are waited for by tokio, which needs their exit status: a blanket
//! `waitpid(-1)` would steal it. So every child the agent spawns is registered here while
//! tokio owns it, and on SIGCHLD the reaper collects only zombies that are not registered.
//! Registering happens right after `spawn` with no await in between, so on the agent's
//! single-threaded runtime the reaper can never run in that gap.

use std::collections::BTreeSet;
use std::sync::Mutex;

use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{debug, warn};

static OWNED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn owned() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    OWNED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Marks `pid` as a child tokio waits for; the reaper leaves it alone.
pub fn register(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        owned().insert(pid);
    }
}

/// Forgets `pid` once tokio has collected it.
pub fn unregister(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        owned().remove(&pid);
    }
}

/// Zombie children of this process that nobody else waits for (from /proc).
fn orphaned_zombies() -> Vec<i32> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let owned = owned();
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| !owned.contains(pid))
        .filter(|pid| {
            // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces and parens.
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
                let mut fields = rest.split_whitespace();
                fields.next() == Some("Z") && fields.next() == Some(me.as_str())
            })
        })
        .collect()
}

/// When this process is PID 1, reaps orphaned zombies on every SIGCHLD until the runtime ends.
pub fn spawn_if_pid1() {
    if std::process::id() != 1 {
        return;
    }
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(s) => s,
        Err(error) => {
            warn!(%error, "running as PID 1 but cannot watch SIGCHLD: orphans will not be reaped");
            return;
        }
    };
    tokio::spawn(async move {
        while sigchld.recv().await.is_some() {
            for pid in orphaned_zombies() {
                if waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).is_ok() {
                    debug!(pid, "reaped an orphaned process");
                }
            }
        }
    });
}
