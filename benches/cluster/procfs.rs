//! What `/proc` says about an agent process: memory (RSS, anonymous, PSS) and CPU ticks.

use anyhow::{Context, Result};
use tokio::process::Command;

/// The value in kB of the line `key:` of a /proc file (`VmRSS:  1234 kB`).
pub fn proc_kib(path: &str, key: &str) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    let line = text
        .lines()
        .find(|l| l.split(':').next() == Some(key))
        .with_context(|| format!("no {key} in {path}"))?;
    line.split_whitespace()
        .nth(1)
        .with_context(|| format!("empty {key} line in {path}"))?
        .parse()
        .with_context(|| format!("bad {key} line {line:?} in {path}"))
}

/// Memory of one agent in KiB.
pub struct Memory {
    /// VmRSS: every resident page mapped, shared binary pages included.
    pub rss: u64,
    /// RssAnon: resident anonymous pages (heap, stacks): what this agent alone costs.
    pub anon: u64,
    /// Pss: proportional set size (shared pages divided among the processes mapping them).
    pub pss: u64,
}

pub fn memory(pid: u32) -> Result<Memory> {
    let status = format!("/proc/{pid}/status");
    Ok(Memory {
        rss: proc_kib(&status, "VmRSS")?,
        anon: proc_kib(&status, "RssAnon")?,
        pss: proc_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss")?,
    })
}

/// utime + stime in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &text[text.rfind(')').context("no ')' in stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields
        .get(11)
        .context("no utime")?
        .parse()
        .context("utime")?;
    let stime: u64 = fields
        .get(12)
        .context("no stime")?
        .parse()
        .context("stime")?;
    Ok(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that fails). nix's `sysconf` is not
/// available with the features the shoal crate enables.
pub async fn clock_ticks() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().await;
    out.ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}
