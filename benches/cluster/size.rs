//! One cluster size: start N agents, measure an idle window, time `shoal members`, then
//! kill and stop agents one at a time and time how fast every survivor lists and handles it.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shoal_proto::Client;
use shoal_testkit::{clean_command, log_tail};
use tokio::process::Command;
use tokio::task::JoinSet;

use crate::SHOAL;
use crate::agents::{Agent, Cluster, SETTLE, get_members, start_cluster, stats_of_all};
use crate::handlers::{handler_file, handler_time};
use crate::procfs::{Memory, cpu_ticks, memory};
use crate::report::{
    Rng, TARGET_FAIL_S, TARGET_LEAVE_S, TARGET_MEMBERS_MS, TARGET_RSS_MIB, Table, fmax, fmt_num,
    fmt_s, median, ok, percentile, progress,
};
use crate::settings::Settings;

/// Poll period of every survivor after a kill or a leave.
pub const DEPART_POLL: Duration = Duration::from_millis(20);

/// Deadline for the initial convergence (no loss).
pub const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);

pub struct IdleReport {
    pub window: Duration,
    pub rss_mib: Vec<f64>,
    pub anon_mib: Vec<f64>,
    pub pss_mib: Vec<f64>,
    pub cpu_per_min: Vec<f64>,
    pub bytes_per_s: Vec<f64>,
    pub pkts_per_s: Vec<f64>,
    pub missing: usize,
    pub stable: std::result::Result<(), String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Depart {
    Kill,
    Leave,
}

impl Depart {
    pub fn status(self) -> &'static str {
        match self {
            Depart::Kill => "failed",
            Depart::Leave => "left",
        }
    }

    pub fn event(self) -> &'static str {
        match self {
            Depart::Kill => "member-failed",
            Depart::Leave => "member-leave",
        }
    }
}

/// One kill or leave. Times are seconds since the signal; infinity means "not within the
/// deadline".
pub struct DepartRun {
    pub victim: String,
    pub survivors: Vec<String>,
    pub seen: Vec<f64>,
    pub handled: Vec<f64>,
    pub exit: Option<String>,
    pub rejoin: f64,
    pub rejoin_note: Option<String>,
}

impl DepartRun {
    pub fn first_seen(&self) -> f64 {
        self.seen.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn all_seen(&self) -> f64 {
        fmax(&self.seen)
    }

    pub fn all_handled(&self) -> f64 {
        fmax(&self.handled)
    }

    /// Seen and handled everywhere.
    pub fn done(&self) -> f64 {
        self.all_seen().max(self.all_handled())
    }

    /// The survivor that was last to both list and handle the departure.
    pub fn slowest(&self) -> String {
        let mut worst = (f64::NEG_INFINITY, String::from("-"));
        for (i, name) in self.survivors.iter().enumerate() {
            let t = self.seen[i].max(self.handled[i]);
            if t > worst.0 {
                worst = (t, name.clone());
            }
        }
        worst.1
    }
}

pub struct SizeReport {
    pub n: usize,
    pub spawn: Duration,
    pub converge: std::result::Result<Duration, String>,
    pub idle: IdleReport,
    pub cli_ms: Vec<f64>,
    pub cli_errors: Vec<String>,
    pub api_ms: Vec<f64>,
    pub kills: Vec<DepartRun>,
    pub leaves: Vec<DepartRun>,
}

pub async fn bench_size(n: usize, s: &Settings, rng: &mut Rng, clk_tck: f64) -> Result<SizeReport> {
    let mut cluster = Cluster::new(&format!("n{n}"), s.keep_logs)?;
    progress(&format!("[N={n}] starting {n} agents"));
    let (spawn, converge) = start_cluster(&mut cluster, n, rng, CONVERGE_DEADLINE).await?;
    match &converge {
        Ok(d) => progress(&format!(
            "[N={n}] spawned in {:.2} s, all list {n} alive after {:.2} s",
            spawn.as_secs_f64(),
            d.as_secs_f64()
        )),
        Err(why) => progress(&format!("[N={n}] convergence timeout: {why}")),
    }

    progress(&format!("[N={n}] idle window of {} s", s.idle.as_secs()));
    let idle = measure_idle(&cluster, s.idle, clk_tck).await;

    progress(&format!(
        "[N={n}] timing `shoal members` x{}",
        s.members_runs
    ));
    let target = cluster.agents.first().context("no agent")?;
    let (cli_ms, cli_errors) = time_members_cli(&target.control, s.members_runs).await;
    let api_ms = time_members_api(&target.client, s.members_runs).await;

    let mut kills = Vec::new();
    for i in 0..s.kills {
        let run = depart_run(&mut cluster, Depart::Kill, rng, s.timeout).await?;
        progress(&format!(
            "[N={n}] kill {}/{}: {} listed failed everywhere {}, handled everywhere {}, \
             replacement converged {}",
            i + 1,
            s.kills,
            run.victim,
            fmt_s(run.all_seen()),
            fmt_s(run.all_handled()),
            fmt_s(run.rejoin)
        ));
        kills.push(run);
    }
    let mut leaves = Vec::new();
    for i in 0..s.leaves {
        let run = depart_run(&mut cluster, Depart::Leave, rng, s.timeout).await?;
        progress(&format!(
            "[N={n}] leave {}/{}: {} listed left everywhere {}, handled everywhere {}",
            i + 1,
            s.leaves,
            run.victim,
            fmt_s(run.all_seen()),
            fmt_s(run.all_handled())
        ));
        leaves.push(run);
    }
    cluster.stop().await;
    Ok(SizeReport {
        n,
        spawn,
        converge,
        idle,
        cli_ms,
        cli_errors,
        api_ms,
        kills,
        leaves,
    })
}

/// Idle window: CPU ticks and gossip byte counters at both ends, RSS at the end.
pub async fn measure_idle(cluster: &Cluster, idle: Duration, clk_tck: f64) -> IdleReport {
    let clients = cluster.clients();
    let stats0 = stats_of_all(&clients).await;
    let t0 = Instant::now();
    let cpu0: Vec<Option<u64>> = cluster
        .agents
        .iter()
        .map(|a| cpu_ticks(a.pid).ok())
        .collect();
    tokio::time::sleep(idle).await;
    let cpu1: Vec<Option<u64>> = cluster
        .agents
        .iter()
        .map(|a| cpu_ticks(a.pid).ok())
        .collect();
    let cpu_window = t0.elapsed().as_secs_f64();
    let stats1 = stats_of_all(&clients).await;
    let window = t0.elapsed();
    let mem: Vec<Option<Memory>> = cluster.agents.iter().map(|a| memory(a.pid).ok()).collect();

    let mut report = IdleReport {
        window,
        rss_mib: Vec::new(),
        anon_mib: Vec::new(),
        pss_mib: Vec::new(),
        cpu_per_min: Vec::new(),
        bytes_per_s: Vec::new(),
        pkts_per_s: Vec::new(),
        missing: 0,
        stable: Ok(()),
    };
    let secs = window.as_secs_f64();
    for i in 0..cluster.agents.len() {
        let mut complete = true;
        match &mem[i] {
            Some(m) => {
                report.rss_mib.push(m.rss as f64 / 1024.0);
                report.anon_mib.push(m.anon as f64 / 1024.0);
                report.pss_mib.push(m.pss as f64 / 1024.0);
            }
            None => complete = false,
        }
        match (cpu0[i], cpu1[i]) {
            (Some(a), Some(b)) => report
                .cpu_per_min
                .push(b.saturating_sub(a) as f64 / clk_tck / cpu_window * 60.0),
            _ => complete = false,
        }
        match (&stats0[i], &stats1[i]) {
            (Some(a), Some(b)) => {
                report
                    .bytes_per_s
                    .push(b.bytes_out.saturating_sub(a.bytes_out) as f64 / secs);
                report
                    .pkts_per_s
                    .push(b.packets_out.saturating_sub(a.packets_out) as f64 / secs);
            }
            _ => complete = false,
        }
        if !complete {
            report.missing += 1;
        }
    }
    report.stable = cluster.check_converged().await;
    report
}

/// Runs the real CLI (`shoal members --control ADDR`) `runs` times, after one untimed warm-up.
pub async fn time_members_cli(control: &str, runs: usize) -> (Vec<f64>, Vec<String>) {
    let mut times = Vec::new();
    let mut errors = Vec::new();
    for i in 0..=runs {
        let mut cmd = Command::from(clean_command(SHOAL));
        cmd.args(["members", "--control", control])
            .stdin(Stdio::null())
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
pub async fn time_members_api(client: &Client, runs: usize) -> Vec<f64> {
    let mut times = Vec::new();
    let _ = get_members(client).await;
    for _ in 0..runs {
        let start = Instant::now();
        if get_members(client).await.is_some() {
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

    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?
        .as_secs_f64();
    let start = Instant::now();
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

    let mut set = JoinSet::new();
    for (i, agent) in cluster.agents.iter().enumerate() {
        let client = agent.client.clone();
        let file = handler_file(&cluster.handlers, &agent.name, how.event());
        let victim = victim_name.clone();
        set.spawn(async move {
            let times = observe(client, file, victim, how.status(), start, epoch, timeout).await;
            (i, times)
        });
    }

    // Reap the victim while the survivors are observed.
    let exit = reap_victim(&mut victim, how, start).await;

    let mut seen = vec![f64::INFINITY; survivors.len()];
    let mut handled = vec![f64::INFINITY; survivors.len()];
    while let Some(joined) = set.join_next().await {
        if let Ok((i, (s, h))) = joined {
            seen[i] = s;
            handled[i] = h;
        }
    }

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

/// Polls one survivor every [`DEPART_POLL`] until it lists `victim` with status `want` and its
/// handler file names `victim`. Returns (seen, handled) in seconds since the signal.
pub async fn observe(
    client: Client,
    file: PathBuf,
    victim: String,
    want: &'static str,
    start: Instant,
    epoch: f64,
    timeout: Duration,
) -> (f64, f64) {
    let mut seen = f64::INFINITY;
    let mut handled = f64::INFINITY;
    loop {
        let tick = Instant::now();
        if seen.is_infinite()
            && let Some(view) = get_members(&client).await
            && view
                .members
                .iter()
                .any(|m| m.name == victim && m.status == want)
        {
            seen = start.elapsed().as_secs_f64();
        }
        if handled.is_infinite()
            && let Some(ts) = handler_time(&file, &victim)
        {
            handled = ts - epoch;
        }
        if (seen.is_finite() && handled.is_finite()) || start.elapsed() >= timeout {
            return (seen, handled);
        }
        tokio::time::sleep_until((tick + DEPART_POLL).into()).await;
    }
}

impl SizeReport {
    /// The report of this size: startup, idle, members latency, kills and leaves.
    pub fn render(&self) -> String {
        let n = self.n;
        let mut out = format!("\n=== N = {n} (lan profile) ===\n");
        let _ = writeln!(
            out,
            "startup: {n} agents spawned in {:.2} s; every agent lists {n} alive after {}",
            self.spawn.as_secs_f64(),
            match &self.converge {
                Ok(d) => format!("{:.2} s", d.as_secs_f64()),
                Err(why) => format!("TIMEOUT ({why})"),
            }
        );
        out.push_str(&self.render_idle());
        out.push_str(&self.render_latency());
        out.push_str(&render_departs(n, Depart::Kill, &self.kills));
        out.push_str(&render_departs(n, Depart::Leave, &self.leaves));
        out
    }

    /// The idle table: memory, CPU and gossip traffic per agent.
    fn render_idle(&self) -> String {
        let idle = &self.idle;
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
        t.metric("RSS, VmRSS (MiB)", &idle.rss_mib, 2, rss_target);
        let anon = "  of which anonymous, RssAnon (MiB)";
        t.metric(anon, &idle.anon_mib, 2, "-".into());
        let pss = "PSS, binary pages shared (MiB)";
        t.metric(pss, &idle.pss_mib, 2, "-".into());
        t.metric("CPU (s per min)", &idle.cpu_per_min, 3, "-".into());
        t.metric("gossip out (bytes/s)", &idle.bytes_per_s, 0, "-".into());
        t.metric("gossip out (packets/s)", &idle.pkts_per_s, 1, "-".into());
        out.push_str(&t.render("  "));
        let _ = writeln!(
            out,
            "  after the window: {}",
            match &idle.stable {
                Ok(()) => format!("every agent still lists {} alive", self.n),
                Err(why) => format!("NOT STABLE: {why}"),
            }
        );
        out
    }

    /// The members-latency table: the CLI, and the same request in-process.
    fn render_latency(&self) -> String {
        let mut out = format!("\nmembers latency ({} runs):\n", self.cli_ms.len());
        let mut t = Table::new(&["", "median", "p99", "target"]);
        let cli_med = median(&self.cli_ms);
        t.row(vec![
            "`shoal members` CLI (ms)".into(),
            fmt_num(cli_med, 2),
            fmt_num(percentile(&self.cli_ms, 99.0), 2),
            format!(
                "< {TARGET_MEMBERS_MS} (median) {}",
                ok(cli_med < TARGET_MEMBERS_MS && self.cli_errors.is_empty())
            ),
        ]);
        t.row(vec![
            "GET /v1/members in-process (ms)".into(),
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

/// The kill or leave section: one row per run, the summary over runs, and notes.
pub fn render_departs(n: usize, how: Depart, runs: &[DepartRun]) -> String {
    let mut out = String::new();
    let title = match how {
        Depart::Kill => "failure (kill -9)",
        Depart::Leave => "leave (SIGTERM)",
    };
    let _ = writeln!(
        out,
        "\n{title}, {} runs; seconds after the signal, over all {} survivors:",
        runs.len(),
        n - 1
    );
    if runs.is_empty() {
        out.push_str("  (no runs)\n");
        return out;
    }
    out.push_str(&depart_runs_table(how, runs));
    out.push('\n');
    out.push_str(&depart_summary(how, runs));
    out.push_str(&depart_notes(how, runs));
    out
}

/// One row per kill or leave.
fn depart_runs_table(how: Depart, runs: &[DepartRun]) -> String {
    let mut head = vec![
        "run",
        "victim",
        "first listed",
        "all listed",
        "all handled",
        "slowest survivor",
        "replacement",
    ];
    if how == Depart::Leave {
        head.push("victim exit");
    }
    let mut t = Table::new(&head);
    for (i, r) in runs.iter().enumerate() {
        let mut row = vec![
            format!("{}", i + 1),
            r.victim.clone(),
            fmt_s(r.first_seen()),
            fmt_s(r.all_seen()),
            fmt_s(r.all_handled()),
            r.slowest(),
            fmt_s(r.rejoin),
        ];
        if let Some(exit) = &r.exit {
            row.push(exit.clone());
        }
        t.row(row);
    }
    t.render("  ")
}

/// Median and worst over the runs, against the targets; for kills, the runs over target.
fn depart_summary(how: Depart, runs: &[DepartRun]) -> String {
    let seen: Vec<f64> = runs.iter().map(DepartRun::all_seen).collect();
    let handled: Vec<f64> = runs.iter().map(DepartRun::all_handled).collect();
    let done: Vec<f64> = runs.iter().map(DepartRun::done).collect();
    let rejoin: Vec<f64> = runs.iter().map(|r| r.rejoin).collect();
    let (seen_target, handled_target) = match how {
        Depart::Kill => (
            "-".into(),
            format!(
                "<= {TARGET_FAIL_S} s {}",
                ok(fmax(&handled) <= TARGET_FAIL_S)
            ),
        ),
        Depart::Leave => (
            format!(
                "<= {TARGET_LEAVE_S} s {}",
                ok(fmax(&done) <= TARGET_LEAVE_S)
            ),
            "(both)".into(),
        ),
    };
    let mut t = Table::new(&["summary over runs", "median", "worst", "target (N=20)"]);
    let listed = format!("every survivor lists it {}", how.status());
    t.timing(&listed, &seen, seen_target);
    let ran = format!("every survivor ran {}", how.event());
    t.timing(&ran, &handled, handled_target);
    t.timing("replacement: all list N alive", &rejoin, "-".into());
    let mut out = t.render("  ");
    if how == Depart::Kill {
        let over = done.iter().filter(|&&d| d > TARGET_FAIL_S).count();
        let _ = writeln!(
            out,
            "  runs where some survivor took > {TARGET_FAIL_S} s to list or handle: {over} of {}",
            runs.len()
        );
    }
    out
}

/// Survivors that missed the deadline, and replacements that did not converge.
fn depart_notes(how: Depart, runs: &[DepartRun]) -> String {
    let mut out = String::new();
    for (i, r) in runs.iter().enumerate() {
        let missing_seen = r.seen.iter().filter(|t| t.is_infinite()).count();
        let missing_handled = r.handled.iter().filter(|t| t.is_infinite()).count();
        if missing_seen + missing_handled > 0 {
            let _ = writeln!(
                out,
                "  run {}: {missing_seen} survivors never listed {} {}, {missing_handled} \
                 never ran {} for it (deadline)",
                i + 1,
                r.victim,
                how.status(),
                how.event()
            );
        }
        if let Some(note) = &r.rejoin_note {
            let _ = writeln!(out, "  run {}: replacement {note}", i + 1);
        }
    }
    out
}
