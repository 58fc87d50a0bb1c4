//! Private namespaces and iptables: re-executing the bench under `unshare`, the system
//! tools, and the iptables rules (drop counters, the partition's [`Cut`], per-agent source
//! NAT). Everything here runs only inside the private namespaces it checks it is in.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

/// Sends SIGTERM to the inner run if it is still running when dropped, so it kills its agents.
pub struct TermOnDrop(pub Option<i32>);

impl Drop for TermOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
}

/// `/proc/self/ns/<kind>` (`net:[4026531840]`), to tell namespaces apart.
pub fn own_namespace(kind: &str) -> Result<String> {
    Ok(std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .with_context(|| format!("cannot read /proc/self/ns/{kind}"))?
        .to_string_lossy()
        .into_owned())
}

/// Re-executes this bench as `unshare FLAGS -- <exe> ARGS`, forwards its progress (stderr) and
/// returns the first stdout line that parses as `T`. `Err` says why there is no result: unshare
/// missing or refused, the inner run failed or did not finish within `limit`.
pub async fn reexec_unshared<T: DeserializeOwned>(
    flags: &[&str],
    args: &[String],
    limit: Duration,
) -> std::result::Result<T, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the bench executable: {e}"))?;
    let mut cmd = Command::new("unshare");
    cmd.args(flags).arg("--").arg(&exe).args(args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return Err(format!("cannot run `unshare`: {e}")),
    };
    let mut guard = TermOnDrop(child.id().and_then(|pid| i32::try_from(pid).ok()));
    let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err("the inner run's stdout or stderr is not piped".into());
    };
    // Forward the inner run's progress, keeping the last lines for an error message.
    let forward = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut tail: Vec<String> = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("  [netns] {line}");
            tail.push(line);
            if tail.len() > 3 {
                tail.remove(0);
            }
        }
        tail
    });
    let read_out = async {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out).await;
        out
    };
    let (out, status) = match tokio::time::timeout(limit, async {
        let out = read_out.await;
        (out, child.wait().await)
    })
    .await
    {
        Ok(done) => done,
        Err(_) => {
            drop(guard);
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
            }
            return Err(format!(
                "the inner run did not finish within {} s",
                limit.as_secs()
            ));
        }
    };
    guard.0 = None;
    let tail = forward.await.unwrap_or_default();
    let mut parse_error = None;
    for line in out.lines().filter(|l| l.starts_with('{')) {
        match serde_json::from_str::<T>(line) {
            Ok(outcome) => return Ok(outcome),
            Err(e) => parse_error = Some(e),
        }
    }
    let status = match status {
        Ok(st) => st.to_string(),
        Err(e) => format!("wait failed: {e}"),
    };
    Err(format!(
        "`unshare {}` or the inner run failed ({status}{}): {}",
        flags.join(" "),
        parse_error.map_or(String::new(), |e| format!(
            "; its result did not parse: {e}"
        )),
        tail.join(" | ")
    ))
}

/// A system tool, preferring /usr/sbin and /sbin (often not on a normal user's PATH).
pub fn tool(name: &str) -> PathBuf {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

pub async fn run_tool(name: &str, args: &[&str]) -> Result<String> {
    let path = tool(name);
    let out = Command::new(&path)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {}", path.display()))?;
    if !out.status.success() {
        bail!(
            "`{name} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Packets into lo so far (first INPUT rule) and packets dropped (the DROP rule).
pub async fn iptables_counters() -> Option<(u64, u64)> {
    let out = run_tool("iptables", &["-L", "INPUT", "-n", "-v", "-x"])
        .await
        .ok()?;
    let pkts = |line: &str| line.split_whitespace().next()?.parse::<u64>().ok();
    let mut rules = out
        .lines()
        .filter_map(|l| Some((pkts(l)?, l.contains("DROP"))));
    let (seen, _) = rules.next()?;
    let (dropped, _) = rules.find(|&(_, drop)| drop)?;
    Some((seen, dropped))
}

/// Packets dropped so far by the DROP rules of INPUT.
pub async fn dropped_packets() -> Option<u64> {
    let out = run_tool("iptables", &["-L", "INPUT", "-n", "-v", "-x"])
        .await
        .ok()?;
    Some(
        out.lines()
            .filter(|l| l.contains("DROP"))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum(),
    )
}

/// The two DROP rules of the partition; deleted on drop if still in place.
pub struct Cut {
    pub rules: Vec<Vec<String>>,
    pub active: bool,
}

impl Cut {
    pub fn new(side_a: usize, n: usize) -> Self {
        let a = format!("127.0.0.1-127.0.0.{side_a}");
        let b = format!("127.0.0.{}-127.0.0.{n}", side_a + 1);
        let rule = |src: &str, dst: &str| -> Vec<String> {
            [
                "INPUT",
                "-m",
                "iprange",
                "--src-range",
                src,
                "--dst-range",
                dst,
                "-j",
                "DROP",
            ]
            .iter()
            .map(ToString::to_string)
            .collect()
        };
        Self {
            rules: vec![rule(&a, &b), rule(&b, &a)],
            active: false,
        }
    }

    pub async fn apply(&mut self, op: &str) -> Result<()> {
        for rule in &self.rules {
            let mut args = vec![op];
            args.extend(rule.iter().map(String::as_str));
            run_tool("iptables", &args).await?;
        }
        Ok(())
    }

    pub async fn install(&mut self) -> Result<()> {
        self.active = true;
        self.apply("-A").await
    }

    pub async fn remove(&mut self) -> Result<()> {
        self.apply("-D").await?;
        self.active = false;
        Ok(())
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        if self.active {
            for rule in &self.rules {
                let _ = std::process::Command::new(tool("iptables"))
                    .arg("-D")
                    .args(rule)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// Agent K of the simultaneous start runs as uid (and gid) UID_BASE + K, so that an iptables
/// owner match can give its connections its own source address.
pub const UID_BASE: u32 = 40_000;

/// Gives every agent's connections its own source address: a TCP connect from a socket that is
/// not bound (the agent's push-pull) leaves from 127.0.0.1, whoever makes it; agent K runs as
/// uid UID_BASE+K and this rewrites its 127.0.0.1 to 127.0.0.K, as if each agent had an
/// address of its own (a container). Without it the partition's iprange rules would drop every
/// push-pull into the second half and let every push-pull from it into the first half through.
pub async fn source_nat(n: usize) -> Result<()> {
    for k in 1..=n {
        let uid = (UID_BASE + k as u32).to_string();
        let ip = format!("127.0.0.{k}");
        run_tool(
            "iptables",
            &[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-s",
                "127.0.0.1",
                "-m",
                "owner",
                "--uid-owner",
                &uid,
                "-j",
                "SNAT",
                "--to-source",
                &ip,
            ],
        )
        .await
        .context("per-agent source NAT (iptables owner match + SNAT)")?;
    }
    Ok(())
}
