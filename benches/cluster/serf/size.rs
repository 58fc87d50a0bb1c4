//! One cluster size with Serf: the same scenarios, in the same order, with the same polls and
//! deadlines as shoal's (`crate::size`), into the same [`SizeReport`]. The differences are
//! Serf's: `serf members -rpc-addr` is the CLI, the member list is read over Serf's RPC, and
//! the leave is SIGINT (Serf leaves gracefully on SIGINT by default, `skip_leave_on_interrupt`
//! being false; on SIGTERM it does not leave unless `leave_on_terminate`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shoal_testkit::log_tail;
use tokio::process::Command;

use crate::agents::SETTLE;
use crate::depart::{Depart, DepartRun, observe_all, signal_clocks};
use crate::handlers::{handler_file, handler_spec};
use crate::idle::{IdleReport, Probe, measure_procs};
use crate::pause::{PauseRun, pause_run};
use crate::report::{Peer, Rng, progress};
use crate::serf::{SerfAgent, SerfCluster};
use crate::settings::Settings;
use crate::size::{
    CONVERGE_DEADLINE, SizeReport, log_depart, log_pause, log_startup, secs, time_cli,
    time_members_api,
};

/// The per-size scenarios with `serf` at N = `n`.
pub async fn bench_serf_size(
    n: usize,
    s: &Settings,
    serf: &Path,
    rng: &mut Rng,
    clk_tck: f64,
) -> Result<SizeReport> {
    let tag = format!("Serf N={n}");
    let mut cluster = SerfCluster::new(serf, &format!("n{n}"), s.keep_logs, handler_spec)?;
    progress(&format!("[{tag}] starting {n} Serf agents"));
    let (spawn, converge) = cluster.start(n, rng, CONVERGE_DEADLINE).await?;
    log_startup(&tag, n, spawn, &converge);

    progress(&format!("[{tag}] idle window of {} s", s.idle.as_secs()));
    let idle = measure_idle(&cluster, s.idle, clk_tck).await;

    progress(&format!(
        "[{tag}] timing `serf members` x{}",
        s.members_runs
    ));
    let target = cluster.agents.first().context("no agent")?;
    let rpc = target.rpc.clone();
    let serf_path = serf.to_path_buf();
    let members = move || {
        let mut cmd = Command::new(&serf_path);
        cmd.arg("members").arg(format!("-rpc-addr={rpc}"));
        cmd
    };
    let (cli_ms, cli_errors) = time_cli(&members, s.members_runs).await;
    let api_ms = time_members_api(&target.lister(), s.members_runs).await;

    let mut pauses = Vec::new();
    for i in 0..s.pauses {
        let run = serf_pause(&mut cluster, rng, s).await?;
        log_pause(&tag, i, s.pauses, &run);
        pauses.push(run);
    }
    let mut kills = Vec::new();
    for i in 0..s.kills {
        let run = serf_depart(&mut cluster, Depart::Kill, rng, s.timeout).await?;
        log_depart(&tag, Depart::Kill, i, s.kills, &run);
        kills.push(run);
    }
    let mut leaves = Vec::new();
    for i in 0..s.leaves {
        let run = serf_depart(&mut cluster, Depart::Leave, rng, s.timeout).await?;
        log_depart(&tag, Depart::Leave, i, s.leaves, &run);
        leaves.push(run);
    }
    cluster.stop().await;
    let mut joins = vec![secs(&converge)];
    for run in 0..s.join_runs {
        let mut cluster = SerfCluster::new(serf, &format!("join-n{n}"), false, handler_spec)?;
        let (spawn, converge) = cluster.start(n, rng, s.timeout).await?;
        // Each start's line, so that a timeout says who lagged.
        log_startup(
            &format!("{tag} cold start {}/{}", run + 1, s.join_runs),
            n,
            spawn,
            &converge,
        );
        joins.push(secs(&converge));
        cluster.stop().await;
    }
    progress(&format!(
        "[{tag}] cold starts: all list {n} alive after {joins:.3?} s"
    ));
    Ok(SizeReport {
        peer: Peer::Serf,
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

/// The idle window: the same [`measure_procs`] as shoal's, then the convergence check.
async fn measure_idle(cluster: &SerfCluster, idle: Duration, clk_tck: f64) -> IdleReport {
    let probes: Vec<Probe> = cluster
        .agents
        .iter()
        .map(|a| Probe {
            pid: a.pid,
            port: a.port,
        })
        .collect();
    let mut report = measure_procs("serf", &probes, idle, clk_tck).await;
    report.stable = cluster.check_converged().await;
    report
}

/// Pauses a random agent other than the first, as shoal's pause run does.
async fn serf_pause(cluster: &mut SerfCluster, rng: &mut Rng, s: &Settings) -> Result<PauseRun> {
    if cluster.agents.len() < 2 {
        bail!("need at least two agents");
    }
    let victim = &cluster.agents[1 + rng.below(cluster.agents.len() - 1)];
    let observers = cluster
        .agents
        .iter()
        .filter(|a| a.name != victim.name)
        .map(|a| {
            let file = handler_file(&cluster.dir.handlers, &a.name, "member-failed");
            (a.name.clone(), a.lister(), file)
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

/// Kills (SIGKILL) or leaves (SIGINT) a random agent other than the first and times every
/// survivor, then starts a replacement, as shoal's `depart_run`.
async fn serf_depart(
    cluster: &mut SerfCluster,
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
            let file = handler_file(&cluster.dir.handlers, &a.name, how.event());
            (a.lister(), file)
        })
        .collect();
    let clocks = signal_clocks()?;
    match how {
        Depart::Kill => victim.child.start_kill().context("kill -9")?,
        Depart::Leave => {
            let pid = i32::try_from(victim.pid).context("pid out of range")?;
            kill(Pid::from_raw(pid), Signal::SIGINT).context("SIGINT")?;
        }
    }
    let observing = observe_all(watched, &victim_name, how, clocks, timeout);
    let (exit, (seen, handled)) = tokio::join!(reap(&mut victim, clocks.1), observing);

    let since = Instant::now();
    cluster.spawn(rng).await?;
    let (rejoin, rejoin_note) = match cluster.converge(since, timeout).await {
        Ok(d) => (d.as_secs_f64(), None),
        Err(why) => (f64::INFINITY, Some(why)),
    };
    tokio::time::sleep(SETTLE).await;
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

/// Waits (10 s at the most, then kills it) for the victim to exit; says how it did.
async fn reap(victim: &mut SerfAgent, start: Instant) -> String {
    match tokio::time::timeout(Duration::from_secs(10), victim.child.wait()).await {
        Ok(Ok(status)) => format!("{status} after {:.2} s", start.elapsed().as_secs_f64()),
        Ok(Err(e)) => format!("wait failed: {e}"),
        Err(_) => {
            let _ = victim.child.start_kill();
            let _ = victim.child.wait().await;
            progress(&format!(
                "{} still running 10 s after the signal; killed; log:\n{}",
                victim.name,
                log_tail(&victim.log, 5)
            ));
            "still running after 10 s; killed".to_string()
        }
    }
}
