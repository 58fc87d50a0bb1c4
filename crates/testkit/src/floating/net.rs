//! Running system tools, and the namespaces of one lab: created with a unique prefix, deleted
//! (with everything still running in them) by [`Namespaces`]' `Drop`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A system tool's path, preferring /usr/sbin and /sbin (often not on a normal user's PATH).
pub fn tool(name: &str) -> PathBuf {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Whether `name` is installed (in the usual system directories or on the PATH).
pub fn installed(name: &str) -> bool {
    tool(name).is_file()
        || std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(name).is_file()))
}

/// Runs `args[0] args[1..]` to the end; `Err` names the command and carries its stderr.
pub fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(tool(args[0]))
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether this process runs as root (needed to create namespaces).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The process ids in namespace `ns` (`ip netns pids`); empty if it cannot be read.
pub fn pids_in(ns: &str) -> Vec<i32> {
    run(&["ip", "netns", "pids", ns])
        .map(|out| {
            out.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Sends `signal` to every process in namespace `ns`.
pub fn signal_all_in(ns: &str, signal: Signal) {
    for pid in pids_in(ns) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// Kills `pids` at one instant, as a crash would: SIGSTOP to all of them first, then SIGKILL.
/// Killed one by one, a child that a parent's death signals (Keepalived's VRRP process gets
/// SIGTERM when its parent dies) would shut down cleanly in between, and hand over at once.
pub fn crash(pids: &[i32]) {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
    }
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// The namespaces created so far; `Drop` kills what runs in them and deletes them.
#[derive(Debug, Default)]
pub struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    /// Creates namespace `name` with its loopback up.
    pub fn add(&mut self, name: &str) -> Result<(), String> {
        run(&["ip", "netns", "add", name])?;
        self.names.push(name.to_string());
        run(&["ip", "-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // A namespace with processes in it outlives `ip netns del`: kill them first.
        for ns in &self.names {
            signal_all_in(ns, Signal::SIGKILL);
        }
        for ns in self.names.iter().rev() {
            if let Err(e) = run(&["ip", "netns", "del", ns]) {
                eprintln!("floating-ip lab cleanup: {e}");
            }
        }
    }
}

/// Deletes namespaces named `PREFIX-PID-...` (and their `/etc/netns` directories) left by
/// processes that were killed before their `Drop` ran: no process PID any more, nothing
/// running in them (a namespace whose processes cannot be listed is kept).
pub fn remove_stale(prefix: &str) {
    let Ok(list) = run(&["ip", "netns", "list"]) else {
        return;
    };
    for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = ns
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let running = run(&["ip", "netns", "pids", ns]).map_or(true, |p| !p.trim().is_empty());
        if !running && run(&["ip", "netns", "del", ns]).is_ok() {
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
    }
}
