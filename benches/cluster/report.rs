//! Statistics, formatting and the plain-text report: [`Table`], the targets and the header.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Instant;

use tokio::process::Command;

use crate::SHOAL;
use crate::settings::{SerfChoice, Settings};

/// Targets (lan profile, N = 20).
pub const TARGET_RSS_MIB: f64 = 4.0;

pub const TARGET_MEMBERS_MS: f64 = 5.0;

pub const TARGET_LEAVE_S: f64 = 0.5;

pub const TARGET_FAIL_S: f64 = 4.0;

/// The cluster size the targets are stated for.
pub const TARGET_N: usize = 20;

/// Which agent a report is about: shoal, or Serf run through the same scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Peer {
    Shoal,
    Serf,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Shoal => "shoal",
            Peer::Serf => "Serf",
        }
    }

    /// The signal of the leave scenario: SIGTERM leaves in shoal; Serf leaves on SIGINT
    /// (`skip_leave_on_interrupt` is false by default) and not on SIGTERM.
    pub fn leave_signal(self) -> &'static str {
        match self {
            Peer::Shoal => "SIGTERM",
            Peer::Serf => "SIGINT",
        }
    }

    /// A target cell: shown for shoal, `-` for Serf (the targets are shoal's).
    pub fn target(self, cell: String) -> String {
        match self {
            Peer::Shoal => cell,
            Peer::Serf => "-".into(),
        }
    }
}

/// splitmix64: enough randomness for picking join targets and victims, reproducible by seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

pub fn fmax(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Median (mean of the two middle values for an even count); infinity sorts last.
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let mid = s.len() / 2;
    if s.len() % 2 == 1 {
        s[mid]
    } else {
        (s[mid - 1] + s[mid]) / 2.0
    }
}

/// Nearest-rank percentile.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

pub fn fmt_s(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v.is_infinite() {
        "timeout".into()
    } else {
        format!("{v:.3} s")
    }
}

pub fn fmt_num(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "n/a".into()
    }
}

pub fn ok(pass: bool) -> &'static str {
    if pass { "ok" } else { "MISS" }
}

/// A list cut to its first few entries (`a, b, c +5 more`).
pub fn short_list<T: std::fmt::Display>(items: &[T]) -> String {
    const SHOWN: usize = 5;
    let mut out = items
        .iter()
        .take(SHOWN)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        let _ = write!(out, " +{} more", items.len() - SHOWN);
    }
    out
}

/// Plain-text table: first column left-aligned, the others right-aligned.
pub struct Table {
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(head: &[&str]) -> Self {
        Self {
            rows: vec![head.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// A row `label | median | worst | target` over per-run durations in seconds.
    pub fn timing(&mut self, label: &str, values: &[f64], target: String) {
        self.row(vec![
            label.to_string(),
            fmt_s(median(values)),
            fmt_s(fmax(values)),
            target,
        ]);
    }

    /// A row `label | max | mean | target` over per-agent values, the numbers with `decimals`
    /// decimals.
    pub fn metric(&mut self, label: &str, values: &[f64], decimals: usize, target: String) {
        self.row(vec![
            label.to_string(),
            fmt_num(fmax(values), decimals),
            fmt_num(mean(values), decimals),
            target,
        ]);
    }

    pub fn render(&self, indent: &str) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::from(indent);
            for (c, width) in widths.iter().enumerate() {
                let cell = row.get(c).map_or("", String::as_str);
                if c == 0 {
                    let _ = write!(line, "{cell:<width$}");
                } else {
                    let _ = write!(line, "  {cell:>width$}");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

pub fn progress(msg: &str) {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    eprintln!("[{:7.1}s] {msg}", start.elapsed().as_secs_f64());
}

/// The 1, 5 and 15 minute load averages of `/proc/loadavg`, e.g. `2.72 3.49 5.33` (empty if
/// unreadable). The machine may be shared, so the report states it at the start and the end.
pub fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn print_header(s: &Settings, clk_tck: f64) {
    let version = Command::new(SHOAL)
        .arg("version")
        .output()
        .await
        .ok()
        // `shoal version` prints the version and the protocol range on separate lines; the
        // header keeps them on one.
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_else(|| "unknown".into());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("shoal cluster benchmark");
    println!("  binary    {SHOAL} ({version})");
    println!(
        "  machine   {cpus} CPUs, kernel {}, load average at start {}",
        kernel.trim(),
        load_average()
    );
    println!(
        "  settings  nodes {:?}, idle {} s, kills {}, leaves {}, members runs {}, loss {}, \
         wait deadline {} s, seed {}, CLK_TCK {clk_tck}",
        s.nodes,
        s.idle.as_secs(),
        s.kills,
        s.leaves,
        s.members_runs,
        s.loss
            .map_or("off".to_string(), |p| format!("{p} at N={}", s.loss_nodes)),
        s.timeout.as_secs(),
        s.seed
    );
    println!(
        "  convergence {}",
        s.convergence.map_or("off".to_string(), |c| format!(
            "N={}, {} runs, {} s partitions{}",
            c.n,
            c.runs,
            c.partition.as_secs(),
            if c.snat { "" } else { ", no source NAT" }
        ))
    );
    match &s.serf {
        SerfChoice::Found(path) => {
            let version = Command::new(path).arg("version").output().await.ok();
            let version = version
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string()
                })
                .unwrap_or_else(|| "unknown".into());
            println!(
                "  serf      {} ({version}): run through the same scenarios (--no-serf skips it)",
                path.display()
            );
        }
        SerfChoice::Missing(why) => {
            println!("  serf      SKIPPED, the Serf columns are left out: {why}")
        }
        SerfChoice::Off => println!("  serf      skipped (--no-serf)"),
    }
    let t = shoal_core::Profile::Lan.timings();
    println!(
        "  profile   lan (probe {} ms, suspicion S >= {} ms: down after 2S unconfirmed, S/2 with \
         3 confirmations; refused port down after {} ms), handlers coalesced 100 ms",
        t.probe_period.as_millis(),
        t.suspicion_min.as_millis(),
        t.refused_down.as_millis()
    );
}
