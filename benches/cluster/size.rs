//! One cluster size: start N agents, measure an idle window, time `shoal members`, pause,
//! kill and stop agents one at a time and time how fast every survivor lists and handles it.
//! The report ([`SizeReport`]) is the same for Serf (`crate::serf`), which runs the same
//! scenarios.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shoal_testkit::{clean_command, log_tail};
use tokio::process::Command;

use crate::SHOAL;
use crate::agents::{Agent, Cluster, SETTLE, start_cluster, stats_of_all};
use crate::depart::{Depart, DepartRun, observe_all, render_departs, signal_clocks};
use crate::handlers::handler_file;
use crate::idle::{IdleReport, Probe, measure_procs, render_idle};
use crate::lister::Lister;
use crate::pause::{PauseRun, pause_run, render_pauses};
use crate::report::{
    Peer, Rng, TARGET_MEMBERS_MS, Table, fmax, fmt_num, fmt_s, median, ok, percentile, progress,
};
use crate::settings::Settings;

/// Deadline for the initial convergence (no loss).
pub const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);

pub struct SizeReport {
    pub peer: Peer,
    pub n: usize,
    pub spawn: Duration,
    pub converge: std::result::Result<Duration, String>,
    /// Seconds until all listed N alive, of the main start and the `--join-runs` cold starts
    /// after it (infinity: not by the deadline).
    pub joins: Vec<f64>,
    pub idle: IdleReport,
    pub cli_ms: Vec<f64>,
    pub cli_errors: Vec<String>,
    pub api_ms: Vec<f64>,
    pub pauses: Vec<PauseRun>,
    pub kills: Vec<DepartRun>,
    pub leaves: Vec<DepartRun>,
}

pub async fn bench_size(n: usize, s: &Settings, rng: &mut Rng, clk_tck: f64) -> Result<SizeReport> {
    let mut cluster = Cluster::new(&format!("n{n}"), s.keep_logs)?;
    progress(&format!("[N={n}] starting {n} agents"));
    let (spawn, converge) = start_cluster(&mut cluster, n, rng, CONVERGE_DEADLINE).await?;
    log_startup(&format!("N={n}"), n, spawn, &converge);

    progress(&format!("[N={n}] idle window of {} s", s.idle.as_secs()));
    let idle = measure_idle(&cluster, s.idle, clk_tck).await?;

    progress(&format!(
        "[N={n}] timing `shoal members` x{}",
        s.members_runs
    ));
    let target = cluster.agents.first().context("no agent")?;
    let control = target.control.clone();
    let members = move || {
        let mut cmd = Command::from(clean_command(SHOAL));
        cmd.args(["members", "--control", &control]);
        cmd
    };
    let (cli_ms, cli_errors) = time_cli(&members, s.members_runs).await;
    let api_ms = time_members_api(&Lister::Shoal(target.client.clone()), s.members_runs).await;

    let mut pauses = Vec::new();
    for i in 0..s.pauses {
        let run = shoal_pause(&mut cluster, rng, s).await?;
        log_pause(&format!("N={n}"), i, s.pauses, &run);
        pauses.push(run);
    }
    let mut kills = Vec::new();
    for i in 0..s.kills {
        let run = depart_run(&mut cluster, Depart::Kill, rng, s.timeout).await?;
        log_depart(&format!("N={n}"), Depart::Kill, i, s.kills, &run);
        kills.push(run);
    }
    let mut leaves = Vec::new();
    for i in 0..s.leaves {
        let run = depart_run(&mut cluster, Depart::Leave, rng, s.timeout).await?;
        log_depart(&format!("N={n}"), Depart::Leave, i, s.leaves, &run);
        leaves.push(run);
    }
    cluster.stop().await;
    let mut joins = vec![secs(&converge)];
    for run in 0..s.join_runs {
        let mut cluster = Cluster::new(&format!("join-n{n}"), false)?;
        let (spawn, converge) = start_cluster(&mut cluster, n, rng, s.timeout).await?;
        // Each start's line, so that a timeout says who lagged.
        log_startup(
            &format!("N={n} cold start {}/{}", run + 1, s.join_runs),
            n,
            spawn,
            &converge,
        );
        joins.push(secs(&converge));
        cluster.stop().await;
    }
    progress(&format!(
        "[N={n}] cold starts: all list {n} alive after {joins:.3?} s"
    ));
    Ok(SizeReport {
        peer: Peer::Shoal,
        n,
        spawn,
        converge,
        joins,
        idle,
        cli_ms,
        cli_errors,
        api_ms,
        pauses,
        kills,
        leaves,
    })
}

/// A convergence time in seconds, infinity if it timed out.
pub fn secs(converge: &Result<Duration, String>) -> f64 {
    converge
        .as_ref()
        .map_or(f64::INFINITY, Duration::as_secs_f64)
}

/// Progress line of a startup.
pub fn log_startup(tag: &str, n: usize, spawn: Duration, converge: &Result<Duration, String>) {
    match converge {
        Ok(d) => progress(&format!(
            "[{tag}] spawned in {:.2} s, all list {n} alive after {:.2} s",
            spawn.as_secs_f64(),
            d.as_secs_f64()
        )),
        Err(why) => progress(&format!("[{tag}] convergence timeout: {why}")),
    }
}

/// Progress line of a pause run.
pub fn log_pause(tag: &str, i: usize, of: usize, run: &PauseRun) {
    progress(&format!(
        "[{tag}] pause {}/{of}: {} listed failed by {} of {}, member-failed by {}",
        i + 1,
        run.victim,
        run.listed_failed.len(),
        run.observers,
        run.handled.len()
    ));
}

/// Progress line of a kill or leave run.
pub fn log_depart(tag: &str, how: Depart, i: usize, of: usize, run: &DepartRun) {
    progress(&format!(
        "[{tag}] {} {}/{of}: {} listed {} everywhere {}, handled everywhere {}, replacement \
         converged {}",
        match how {
            Depart::Kill => "kill",
            Depart::Leave => "leave",
        },
        i + 1,
        run.victim,
        how.status(),
        fmt_s(run.all_seen()),
        fmt_s(run.all_handled()),
        fmt_s(run.rejoin)
    ));
}

/// The idle window of a shoal cluster: [`measure_procs`] plus the agents' own gossip counters
/// and the convergence check after it.
async fn measure_idle(cluster: &Cluster, idle: Duration, clk_tck: f64) -> Result<IdleReport> {
    let mut probes = Vec::new();
    for a in &cluster.agents {
        let addr: SocketAddr = a.advertise.parse().context("agent address")?;
        probes.push(Probe {
            pid: a.pid,
            port: addr.port(),
        });
    }
    let clients = cluster.clients();
    let stats0 = stats_of_all(&clients).await;
    let t0 = Instant::now();
    let mut report = measure_procs("shoal", &probes, idle, clk_tck).await;
    let stats1 = stats_of_all(&clients).await;
    let secs = t0.elapsed().as_secs_f64();
    for (a, b) in stats0.iter().zip(&stats1) {
        match (a, b) {
            (Some(a), Some(b)) => {
                let bytes = b.bytes_out.saturating_sub(a.bytes_out) as f64;
                report.bytes_per_s.push(bytes / secs);
                let packets = b.packets_out.saturating_sub(a.packets_out) as f64;
                report.pkts_per_s.push(packets / secs);
            }
            _ => report.missing += 1,
        }
    }
    report.stable = cluster.check_converged().await;
    Ok(report)
}

/// Pauses a random agent other than the first (see [`pause_run`]), then waits for every agent
/// to list every agent alive again.
async fn shoal_pause(cluster: &mut Cluster, rng: &mut Rng, s: &Settings) -> Result<PauseRun> {
    if cluster.agents.len() < 2 {
        bail!("need at least two agents");
    }
    let victim = &cluster.agents[1 + rng.below(cluster.agents.len() - 1)];
    let observers = cluster
        .agents
        .iter()
        .filter(|a| a.name != victim.name)
        .map(|a| {
            let file = handler_file(&cluster.handlers, &a.name, "member-failed");
            (a.name.clone(), Lister::Shoal(a.client.clone()), file)
        })
        .collect();
    let mut run = pause_run(&victim.name, victim.pid, observers, s.pause).await?;
    run.back = cluster
        .converge(Instant::now(), s.timeout)
        .await
        .map(|_| ());
    tokio::time::sleep(SETTLE).await;
    Ok(run)
}

/// Runs a CLI (`make()` builds the command) `runs` times, after one untimed warm-up; the
/// times (ms, spawn to exit with the output read) and the errors.
pub async fn time_cli(make: &dyn Fn() -> Command, runs: usize) -> (Vec<f64>, Vec<String>) {
    let mut times = Vec::new();
    let mut errors = Vec::new();
    for i in 0..=runs {
        let mut cmd = make();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let start = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(10), cmd.output()).await;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        let error = match result {
            Err(_) => Some("timed out after 10 s".to_string()),
            Ok(Err(e)) => Some(format!("cannot run: {e}")),
            Ok(Ok(out)) if !out.status.success() => Some(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Ok(Ok(out)) if out.stdout.is_empty() => Some("empty output".to_string()),
            Ok(Ok(_)) => None,
        };
        match error {
            Some(e) => errors.push(e),
            None if i > 0 => times.push(ms),
            None => {}
        }
    }
    (times, errors)
}

/// The same request from this process (no process start): the agent's share of the CLI time.
pub async fn time_members_api(lister: &Lister, runs: usize) -> Vec<f64> {
    let mut times = Vec::new();
    let _ = lister.statuses().await;
    for _ in 0..runs {
        let start = Instant::now();
        if lister.statuses().await.is_some() {
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times
}

/// Kills (SIGKILL) or stops (SIGTERM) a random agent other than the first, times how long each
/// survivor takes to list it failed/left and to run its handler, then starts a replacement and
/// waits for it to converge and settle.
pub async fn depart_run(
    cluster: &mut Cluster,
    how: Depart,
    rng: &mut Rng,
    timeout: Duration,
) -> Result<DepartRun> {
    if cluster.agents.len() < 2 {
        bail!("need at least two agents");
    }
    let idx = 1 + rng.below(cluster.agents.len() - 1);
    let mut victim = cluster.agents.remove(idx);
    let victim_name = victim.name.clone();
    let survivors: Vec<String> = cluster.agents.iter().map(|a| a.name.clone()).collect();
    let watched = cluster
        .agents
        .iter()
        .map(|a| {
            let file = handler_file(&cluster.handlers, &a.name, how.event());
            (Lister::Shoal(a.client.clone()), file)
        })
        .collect();

    let clocks = signal_clocks()?;
    match how {
        Depart::Kill => victim
            .child
            .start_kill()
            .with_context(|| format!("kill -9 {victim_name}"))?,
        Depart::Leave => {
            let pid = i32::try_from(victim.pid).context("pid out of range")?;
            kill(Pid::from_raw(pid), Signal::SIGTERM)
                .with_context(|| format!("SIGTERM {victim_name}"))?;
        }
    }
    // Reap the victim while the survivors are observed.
    let observing = observe_all(watched, &victim_name, how, clocks, timeout);
    let (exit, (seen, handled)) = tokio::join!(reap_victim(&mut victim, how, clocks.1), observing);

    let (rejoin, rejoin_note) = replace(cluster, rng, timeout).await?;

    Ok(DepartRun {
        victim: victim_name,
        survivors,
        seen,
        handled,
        exit: (how == Depart::Leave).then_some(exit),
        rejoin,
        rejoin_note,
    })
}

/// Waits (10 s at the most, then kills it) for the victim to exit; says how it did, and for a
/// leave that did not exit cleanly shows its log.
async fn reap_victim(victim: &mut Agent, how: Depart, start: Instant) -> String {
    let exit = match tokio::time::timeout(Duration::from_secs(10), victim.child.wait()).await {
        Ok(Ok(status)) => format!("{status} after {:.2} s", start.elapsed().as_secs_f64()),
        Ok(Err(e)) => format!("wait failed: {e}"),
        Err(_) => {
            let _ = victim.child.start_kill();
            let _ = victim.child.wait().await;
            "still running after 10 s; killed".to_string()
        }
    };
    if how == Depart::Leave && !exit.starts_with("exit status: 0") {
        progress(&format!(
            "{} did not exit cleanly on SIGTERM ({exit}); log:\n{}",
            victim.name,
            log_tail(&victim.log, 5)
        ));
    }
    exit
}

/// Starts a replacement agent and waits for every agent to list it alive, then settles.
/// Returns the time it took (infinity on timeout) and why it timed out.
async fn replace(
    cluster: &mut Cluster,
    rng: &mut Rng,
    timeout: Duration,
) -> Result<(f64, Option<String>)> {
    let since = Instant::now();
    cluster.spawn(rng).await?;
    let (rejoin, rejoin_note) = match cluster.converge(since, timeout).await {
        Ok(d) => (d.as_secs_f64(), None),
        Err(why) => {
            progress(&format!("replacement did not converge: {why}"));
            (f64::INFINITY, Some(why))
        }
    };
    tokio::time::sleep(SETTLE).await;
    Ok((rejoin, rejoin_note))
}

impl SizeReport {
    /// The report of this size: startup, idle, members latency, pauses, kills and leaves.
    pub fn render(&self) -> String {
        let n = self.n;
        let mut out = format!("\n=== {}, N = {n} (lan profile) ===\n", self.peer.name());
        let _ = writeln!(
            out,
            "startup: {n} agents spawned in {:.2} s; every agent lists {n} alive after {}",
            self.spawn.as_secs_f64(),
            match &self.converge {
                Ok(d) => format!("{:.2} s", d.as_secs_f64()),
                Err(why) => format!("TIMEOUT ({why})"),
            }
        );
        let runs: Vec<String> = self.joins.iter().map(|&t| fmt_s(t)).collect();
        let _ = writeln!(
            out,
            "cold starts (this one and {} more): all list {n} alive after median {}, worst {} \
             ({})",
            self.joins.len().saturating_sub(1),
            fmt_s(median(&self.joins)),
            fmt_s(fmax(&self.joins)),
            runs.join(", ")
        );
        out.push_str(&render_idle(&self.idle, n, self.peer));
        out.push_str(&self.render_latency());
        out.push_str(&render_pauses(&self.pauses));
        out.push_str(&render_departs(n, Depart::Kill, &self.kills, self.peer));
        out.push_str(&render_departs(n, Depart::Leave, &self.leaves, self.peer));
        out
    }

    /// The members-latency table: the CLI, and the same request in-process.
    fn render_latency(&self) -> String {
        let mut out = format!("\nmembers latency ({} runs):\n", self.cli_ms.len());
        let mut t = Table::new(&["", "median", "p99", "target"]);
        let cli_med = median(&self.cli_ms);
        let (cli, api) = match self.peer {
            Peer::Shoal => (
                "`shoal members` CLI (ms)",
                "GET /v1/members in-process (ms)",
            ),
            Peer::Serf => ("`serf members` CLI (ms)", "members RPC in-process (ms)"),
        };
        let target = format!(
            "< {TARGET_MEMBERS_MS} (median) {}",
            ok(cli_med < TARGET_MEMBERS_MS && self.cli_errors.is_empty())
        );
        t.row(vec![
            cli.into(),
            fmt_num(cli_med, 2),
            fmt_num(percentile(&self.cli_ms, 99.0), 2),
            self.peer.target(target),
        ]);
        t.row(vec![
            api.into(),
            fmt_num(median(&self.api_ms), 2),
            fmt_num(percentile(&self.api_ms, 99.0), 2),
            "-".into(),
        ]);
        out.push_str(&t.render("  "));
        if !self.cli_errors.is_empty() {
            let _ = writeln!(
                out,
                "  CLI errors: {} (first: {})",
                self.cli_errors.len(),
                self.cli_errors[0]
            );
        }
        out
    }
}
