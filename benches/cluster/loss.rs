//! The loss run: N agents in a private network namespace where iptables drops a share of
//! every packet into lo; counts false failures (members listed failed, handlers run).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::agents::{Cluster, REQUEST_TIMEOUT, start_cluster};
use crate::handlers::{handler_file, handler_lines, handler_runs};
use crate::lister::Lister;
use crate::netns::{iptables_counters, own_namespace, reexec_unshared, run_tool};
use crate::report::{Peer, Rng, Table, ok, progress};
use crate::settings::Settings;

/// Poll period of every agent during the loss run's idle window.
pub const LOSS_POLL: Duration = Duration::from_millis(200);

/// Deadline for the initial convergence under loss.
pub const LOSS_CONVERGE_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Debug, Serialize, Deserialize)]
pub enum LossOutcome {
    Skipped(String),
    Done(LossReport),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LossReport {
    pub peer: Peer,
    pub n: usize,
    pub loss: f64,
    /// The drop rule went in only once the cluster had converged.
    pub late: bool,
    pub spawn_s: f64,
    pub converge_s: Option<f64>,
    pub converge_note: Option<String>,
    pub window_s: f64,
    /// Times an agent's poll showed a member `failed` that the previous poll did not.
    pub failed_transitions: usize,
    /// `observer -> member` pairs that were ever listed failed.
    pub failed_pairs: Vec<String>,
    pub suspect_transitions: usize,
    /// member-failed handler runs during the window.
    pub handler_runs: usize,
    /// member-failed handler lines (one per member per run) during the window: (observer,
    /// member) false failures, whatever the handler coalescing.
    pub handler_lines: usize,
    /// member-failed handler runs before the window (while converging).
    pub handler_runs_before: usize,
    pub polls: usize,
    pub poll_errors: usize,
    /// Packets into lo and packets the rule dropped, during the whole run.
    pub lo_packets: Option<u64>,
    pub dropped: Option<u64>,
    pub stable: Option<String>,
}

/// Runs the loss scenario in a private network namespace (`unshare --net`, as root) by
/// re-executing this binary with `--in-netns`.
/// `late`: the drop rule only once the cluster converged; `serf`: run Serf instead of shoal.
pub async fn outer_loss_run(s: &Settings, p: f64, late: bool, serf: Option<&Path>) -> LossOutcome {
    match outer_loss_run_inner(s, p, late, serf).await {
        Ok(outcome) => outcome,
        Err(e) => LossOutcome::Skipped(format!("{e:#}")),
    }
}

pub async fn outer_loss_run_inner(
    s: &Settings,
    p: f64,
    late: bool,
    serf: Option<&Path>,
) -> Result<LossOutcome> {
    let netns = own_namespace("net")?;
    progress(&format!(
        "[loss] re-running inside `unshare --net` ({} {} agents, loss {p}{})",
        s.loss_nodes,
        if serf.is_some() { "Serf" } else { "shoal" },
        if late { ", after convergence" } else { "" }
    ));
    let mut args: Vec<String> = vec!["--in-netns".into(), netns, "--loss".into(), p.to_string()];
    args.extend(["--loss-nodes".into(), s.loss_nodes.to_string()]);
    args.extend(["--idle-secs".into(), s.idle.as_secs().to_string()]);
    args.extend(["--timeout-secs".into(), s.timeout.as_secs().to_string()]);
    args.extend(["--seed".into(), s.seed.to_string()]);
    if s.keep_logs {
        args.push("--keep-logs".into());
    }
    if late {
        args.push("--loss-late".into());
    }
    if let Some(serf) = serf {
        args.extend(["--loss-serf".into(), serf.display().to_string()]);
    }
    let limit = s.idle + LOSS_CONVERGE_DEADLINE + Duration::from_secs(120);
    Ok(
        match reexec_unshared::<LossOutcome>(&["--net"], &args, limit).await {
            Ok(outcome) => outcome,
            Err(why) => LossOutcome::Skipped(why),
        },
    )
}

/// Brings lo up and installs the counting rule and (unless `late`) the random-drop rule,
/// refusing to touch the parent's namespace.
pub async fn setup_netns(parent_ns: &str, p: f64, late: bool) -> Result<()> {
    let own = own_namespace("net")?;
    if own == parent_ns {
        bail!("not in a private network namespace ({own}); refusing to add an iptables rule");
    }
    run_tool("ip", &["link", "set", "lo", "up"]).await?;
    // A rule without a target only counts: every packet into lo, for the drop ratio.
    run_tool("iptables", &["-A", "INPUT", "-i", "lo"]).await?;
    if !late {
        install_drop(p).await?;
    }
    Ok(())
}

/// The random-drop rule: every packet into lo dropped with probability `p`.
pub async fn install_drop(p: f64) -> Result<()> {
    run_tool(
        "iptables",
        &[
            "-A",
            "INPUT",
            "-i",
            "lo",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &p.to_string(),
            "-j",
            "DROP",
        ],
    )
    .await?;
    Ok(())
}

/// The inner run: sets the namespace up, runs `scenario` (shoal's [`loss_scenario`] or
/// Serf's) and prints its outcome as JSON for the outer run.
pub async fn inner_loss_run(
    s: &Settings,
    parent_ns: &str,
    scenario: impl Future<Output = Result<LossReport>>,
) -> Result<()> {
    let outcome = match setup_netns(parent_ns, s.loss_p, s.loss_late).await {
        Err(e) => LossOutcome::Skipped(format!("{e:#}")),
        Ok(()) => LossOutcome::Done(scenario.await?),
    };
    println!(
        "{}",
        serde_json::to_string(&outcome).context("serialize the loss result")?
    );
    Ok(())
}

#[derive(Default)]
pub struct WatchStats {
    pub polls: usize,
    pub errors: usize,
    pub failed_transitions: usize,
    pub suspect_transitions: usize,
    pub failed_members: BTreeSet<String>,
}

/// Polls one agent every [`LOSS_POLL`] until `end`, counting members newly listed failed or
/// suspect.
pub async fn watch_agent(lister: Lister, end: Instant) -> WatchStats {
    let mut stats = WatchStats::default();
    let mut last: HashMap<String, String> = HashMap::new();
    while Instant::now() < end {
        let tick = Instant::now();
        stats.polls += 1;
        match lister.statuses().await {
            None => stats.errors += 1,
            Some(view) => {
                for (name, status) in view {
                    let before = last.get(&name).map(String::as_str);
                    if status == "failed" && before != Some("failed") {
                        stats.failed_transitions += 1;
                        stats.failed_members.insert(name.clone());
                    }
                    if status == "suspect" && before != Some("suspect") {
                        stats.suspect_transitions += 1;
                    }
                    last.insert(name, status);
                }
            }
        }
        tokio::time::sleep_until((tick + LOSS_POLL).into()).await;
    }
    stats
}

pub async fn loss_scenario(s: &Settings, rng: &mut Rng) -> Result<LossReport> {
    let n = s.loss_nodes;
    let counters0 = iptables_counters().await;
    let mut cluster = Cluster::new("loss", s.keep_logs)?;
    progress(&format!("[loss N={n}] starting {n} agents"));
    let (spawn, converge) = start_cluster(&mut cluster, n, rng, LOSS_CONVERGE_DEADLINE).await?;
    let agents: Vec<(String, Lister)> = cluster
        .agents
        .iter()
        .map(|a| (a.name.clone(), Lister::Shoal(a.client.clone())))
        .collect();
    let files: Vec<PathBuf> = cluster
        .agents
        .iter()
        .map(|a| handler_file(&cluster.handlers, &a.name, "member-failed"))
        .collect();
    let mut report = LossReport::new(Peer::Shoal, s, spawn, converge);
    loss_window(s, &mut report, agents, &files, counters0).await?;
    report.stable = cluster.check_converged().await.err();
    cluster.stop().await;
    Ok(report)
}

impl LossReport {
    /// A report of N = `--loss-nodes` agents of `peer` before the window.
    pub fn new(
        peer: Peer,
        s: &Settings,
        spawn: Duration,
        converge: std::result::Result<Duration, String>,
    ) -> Self {
        let n = s.loss_nodes;
        match &converge {
            Ok(d) => progress(&format!(
                "[loss N={n}] all list {n} alive after {:.2} s",
                d.as_secs_f64()
            )),
            Err(why) => progress(&format!("[loss N={n}] convergence timeout: {why}")),
        }
        Self {
            peer,
            n,
            loss: s.loss_p,
            late: s.loss_late,
            spawn_s: spawn.as_secs_f64(),
            converge_s: converge.as_ref().ok().map(Duration::as_secs_f64),
            converge_note: converge.err(),
            window_s: 0.0,
            failed_transitions: 0,
            failed_pairs: Vec::new(),
            suspect_transitions: 0,
            handler_runs: 0,
            handler_lines: 0,
            handler_runs_before: 0,
            polls: 0,
            poll_errors: 0,
            dropped: None,
            lo_packets: None,
            stable: None,
        }
    }
}

/// The loss run's window, for shoal's or Serf's cluster (`agents`: name and member list,
/// `files`: their member-failed handler files): with `--loss-late` the drop rule goes in
/// first; then every agent is polled for `--idle-secs`, and the handler runs and drop counters
/// are read.
pub async fn loss_window(
    s: &Settings,
    report: &mut LossReport,
    agents: Vec<(String, Lister)>,
    files: &[PathBuf],
    mut counters0: Option<(u64, u64)>,
) -> Result<()> {
    let n = report.n;
    if s.loss_late {
        install_drop(s.loss_p).await?;
        counters0 = iptables_counters().await;
    }
    let runs_before: usize = files.iter().map(|f| handler_runs(f)).sum();
    let lines_before: usize = files.iter().map(|f| handler_lines(f)).sum();
    report.handler_runs_before = runs_before;
    progress(&format!(
        "[loss N={n}] idle window of {} s, polling every agent every {} ms",
        s.idle.as_secs(),
        LOSS_POLL.as_millis()
    ));
    let start = Instant::now();
    let end = start + s.idle;
    let mut set = JoinSet::new();
    for (name, lister) in agents {
        set.spawn(async move { (name, watch_agent(lister, end).await) });
    }
    while let Some(joined) = set.join_next().await {
        let (observer, stats) = joined.context("a watcher task failed")?;
        report.polls += stats.polls;
        report.poll_errors += stats.errors;
        report.failed_transitions += stats.failed_transitions;
        report.suspect_transitions += stats.suspect_transitions;
        for member in stats.failed_members {
            report.failed_pairs.push(format!("{observer}->{member}"));
        }
    }
    report.window_s = start.elapsed().as_secs_f64();
    report.failed_pairs.sort();
    let runs_after: usize = files.iter().map(|f| handler_runs(f)).sum();
    report.handler_runs = runs_after.saturating_sub(runs_before);
    let lines_after: usize = files.iter().map(|f| handler_lines(f)).sum();
    report.handler_lines = lines_after.saturating_sub(lines_before);
    if let (Some((seen0, dropped0)), Some((seen1, dropped1))) =
        (counters0, iptables_counters().await)
    {
        report.lo_packets = Some(seen1.saturating_sub(seen0));
        report.dropped = Some(dropped1.saturating_sub(dropped0));
    }
    progress(&format!(
        "[loss N={n}] failed listings {}, member-failed handler runs {}",
        report.failed_transitions, report.handler_runs
    ));
    Ok(())
}

/// The loss run section: the drop rule, the startup, and the false failures of the window.
pub fn render_loss(outcome: &LossOutcome) -> String {
    let mut out = String::new();
    let r = match outcome {
        LossOutcome::Skipped(why) => {
            let _ = writeln!(out, "\n=== loss run ===\nloss run SKIPPED: {why}");
            return out;
        }
        LossOutcome::Done(r) => r,
    };
    let _ = writeln!(
        out,
        "\n=== loss run, {} ===\nN = {}, {:.0}% random drop of every packet into lo (iptables \
         statistic), private netns{}",
        r.peer.name(),
        r.n,
        r.loss * 100.0,
        if r.late {
            "; the drop rule went in once the cluster had converged"
        } else {
            ""
        }
    );
    if let (Some(d), Some(total)) = (r.dropped, r.lo_packets) {
        let _ = writeln!(
            out,
            "  packets dropped by the rule: {d} of {total} ({:.1}%)",
            if total > 0 {
                d as f64 * 100.0 / total as f64
            } else {
                0.0
            }
        );
    }
    let _ = writeln!(
        out,
        "  startup: spawned in {:.2} s; every agent lists {} alive after {}",
        r.spawn_s,
        r.n,
        match (r.converge_s, &r.converge_note) {
            (Some(s), _) => format!("{s:.2} s"),
            (None, Some(why)) => format!("TIMEOUT ({why})"),
            (None, None) => "TIMEOUT".into(),
        }
    );
    let _ = writeln!(
        out,
        "  member-failed handler runs while converging: {}",
        r.handler_runs_before
    );
    let _ = writeln!(
        out,
        "  idle window {:.1} s: {} member-list polls, one per agent every {:.0} ms on average \
         ({} unanswered within {} s: the loss hits the control API's TCP too):",
        r.window_s,
        r.polls,
        if r.polls > 0 {
            r.window_s * 1000.0 * r.n as f64 / r.polls as f64
        } else {
            f64::NAN
        },
        r.poll_errors,
        REQUEST_TIMEOUT.as_secs()
    );
    out.push_str(&render_loss_window(r));
    out
}

/// The window's table of false failures, who listed whom failed, and the final check.
fn render_loss_window(r: &LossReport) -> String {
    let mut out = String::new();
    let mut t = Table::new(&["", "count", "target"]);
    let zero = r.failed_transitions == 0 && r.handler_runs == 0;
    t.row(vec![
        "an agent newly listed a member failed".into(),
        r.failed_transitions.to_string(),
        format!("0 {}", ok(r.failed_transitions == 0)),
    ]);
    t.row(vec![
        "member-failed handler runs".into(),
        r.handler_runs.to_string(),
        format!("0 {}", ok(r.handler_runs == 0)),
    ]);
    t.row(vec![
        "  member-failed lines (observer, member)".into(),
        r.handler_lines.to_string(),
        "-".into(),
    ]);
    t.row(vec![
        "an agent newly listed a member suspect".into(),
        r.suspect_transitions.to_string(),
        "-".into(),
    ]);
    out.push_str(&t.render("  "));
    if !r.failed_pairs.is_empty() {
        let shown: Vec<&str> = r.failed_pairs.iter().take(12).map(String::as_str).collect();
        let _ = writeln!(
            out,
            "  observer->member listed failed: {}{}",
            shown.join(", "),
            if r.failed_pairs.len() > shown.len() {
                format!(" (+{} more)", r.failed_pairs.len() - shown.len())
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(
        out,
        "  after the window: {}; zero false failures: {}",
        match &r.stable {
            None => format!("every agent lists {} alive", r.n),
            Some(why) => format!("NOT STABLE: {why}"),
        },
        if zero { "yes" } else { "NO" }
    );
    out
}
