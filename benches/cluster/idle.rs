//! The idle window of a cluster, shoal's or Serf's: CPU and memory from `/proc`, wire traffic
//! from iptables counters ([`crate::traffic`]), both the same for either agent; shoal's own
//! gossip counters are added by the caller.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::procfs::{Memory, cpu_ticks, memory};
use crate::report::{Peer, TARGET_RSS_MIB, Table, fmax, ok};
use crate::traffic::PortCounter;

pub struct IdleReport {
    pub window: Duration,
    pub rss_mib: Vec<f64>,
    pub anon_mib: Vec<f64>,
    pub pss_mib: Vec<f64>,
    pub cpu_per_min: Vec<f64>,
    /// shoal's own counters (`stats.bytes_out`, UDP + TCP payload); empty for Serf.
    pub bytes_per_s: Vec<f64>,
    pub pkts_per_s: Vec<f64>,
    /// Wire packets and bytes (IP headers included) per agent per second: the cluster's
    /// iptables count over the window divided by N; `Err` says why there is none.
    pub wire: std::result::Result<(f64, f64), String>,
    pub missing: usize,
    pub stable: std::result::Result<(), String>,
}

/// One agent process to measure: its pid and its gossip port (UDP and TCP).
#[derive(Clone, Copy)]
pub struct Probe {
    pub pid: u32,
    pub port: u16,
}

/// Sleeps through the idle window and measures CPU, memory and wire traffic of `probes`.
/// `stable` is left `Ok`; the caller checks convergence after the window.
pub async fn measure_procs(
    tag: &str,
    probes: &[Probe],
    idle: Duration,
    clk_tck: f64,
) -> IdleReport {
    let ports: Vec<u16> = probes.iter().map(|p| p.port).collect();
    let counter = PortCounter::install(tag, &ports).await;
    let wire0 = match &counter {
        Ok(c) => c.read().await.map_err(|e| format!("{e:#}")),
        Err(e) => Err(format!("{e:#}")),
    };
    let t0 = Instant::now();
    let cpu0: Vec<Option<u64>> = probes.iter().map(|p| cpu_ticks(p.pid).ok()).collect();
    tokio::time::sleep(idle).await;
    let cpu1: Vec<Option<u64>> = probes.iter().map(|p| cpu_ticks(p.pid).ok()).collect();
    let window = t0.elapsed();
    let wire1 = match &counter {
        Ok(c) => c.read().await.map_err(|e| format!("{e:#}")),
        Err(e) => Err(format!("{e:#}")),
    };
    drop(counter);
    let mem: Vec<Option<Memory>> = probes.iter().map(|p| memory(p.pid).ok()).collect();
    let secs = window.as_secs_f64();
    let per_agent = secs * probes.len().max(1) as f64;
    let mut report = IdleReport {
        window,
        rss_mib: Vec::new(),
        anon_mib: Vec::new(),
        pss_mib: Vec::new(),
        cpu_per_min: Vec::new(),
        bytes_per_s: Vec::new(),
        pkts_per_s: Vec::new(),
        wire: match (wire0, wire1) {
            (Ok(a), Ok(b)) => Ok((
                b.0.saturating_sub(a.0) as f64 / per_agent,
                b.1.saturating_sub(a.1) as f64 / per_agent,
            )),
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        missing: 0,
        stable: Ok(()),
    };
    for i in 0..probes.len() {
        match (&mem[i], cpu0[i], cpu1[i]) {
            (Some(m), Some(a), Some(b)) => {
                report.rss_mib.push(m.rss as f64 / 1024.0);
                report.anon_mib.push(m.anon as f64 / 1024.0);
                report.pss_mib.push(m.pss as f64 / 1024.0);
                let ticks = b.saturating_sub(a) as f64;
                report.cpu_per_min.push(ticks / clk_tck / secs * 60.0);
            }
            _ => report.missing += 1,
        }
    }
    report
}

/// The idle table: memory, CPU, wire traffic and (shoal) the agent's own gossip counters.
pub fn render_idle(idle: &IdleReport, n: usize, peer: Peer) -> String {
    let mut out = format!(
        "\nidle, per agent ({:.1} s window{}):\n",
        idle.window.as_secs_f64(),
        if idle.missing > 0 {
            format!(", {} agents with missing samples", idle.missing)
        } else {
            String::new()
        }
    );
    let mut t = Table::new(&["", "max", "mean", "target (N=20)"]);
    let rss_max = fmax(&idle.rss_mib);
    let rss_target = format!("<= {TARGET_RSS_MIB} {}", ok(rss_max <= TARGET_RSS_MIB));
    t.metric(
        "RSS, VmRSS (MiB)",
        &idle.rss_mib,
        2,
        peer.target(rss_target),
    );
    let anon = "  of which anonymous, RssAnon (MiB)";
    t.metric(anon, &idle.anon_mib, 2, "-".into());
    let pss = "PSS, binary pages shared (MiB)";
    t.metric(pss, &idle.pss_mib, 2, "-".into());
    t.metric("CPU (s per min)", &idle.cpu_per_min, 3, "-".into());
    if peer == Peer::Shoal {
        t.metric("gossip out (bytes/s)", &idle.bytes_per_s, 0, "-".into());
        t.metric("gossip out (packets/s)", &idle.pkts_per_s, 1, "-".into());
    }
    match &idle.wire {
        Ok((pkts, bytes)) => {
            let cell = |v: f64, d: usize| vec![String::new(), format!("{v:.d$}")];
            let mut row = vec!["wire, iptables (packets/s)".to_string()];
            row.extend(cell(*pkts, 1));
            row.push("-".into());
            t.row(row);
            let mut row = vec!["wire, iptables (bytes/s)".to_string()];
            row.extend(cell(*bytes, 0));
            row.push("-".into());
            t.row(row);
        }
        Err(_) => t.row(vec![
            "wire, iptables".into(),
            "n/a".into(),
            "n/a".into(),
            "-".into(),
        ]),
    }
    out.push_str(&t.render("  "));
    if let Err(why) = &idle.wire {
        let _ = writeln!(out, "  wire traffic not counted: {why}");
    }
    let _ = writeln!(
        out,
        "  after the window: {}",
        match &idle.stable {
            Ok(()) => format!("every agent still lists {n} alive"),
            Err(why) => format!("NOT STABLE: {why}"),
        }
    );
    out
}
