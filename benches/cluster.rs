//! Cluster benchmark: starts real `shoal agent` processes on loopback (lan profile) and measures
//! idle cost (RSS, CPU, gossip bytes), failure and leave propagation (to the member lists and to
//! the event handlers), `shoal members` latency, and false failures under 10% packet loss (in a
//! private network namespace).
//!
//! Run: `cargo bench -p shoal --bench cluster -- [--quick] [--nodes 5,20,50] [--idle-secs 60]
//! [--kills 10] [--leaves 3] [--loss 0.1 | --no-loss]`. The report goes to stdout, progress to
//! stderr. See docs/benchmarks.md for what each number means.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use shoal_proto::{Client, InfoResponse, MembersResponse, StatsInfo};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;

/// The release `shoal` binary cargo built for this bench.
const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

/// Longest wait for an agent's readiness line.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one control-API request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Member-list poll period while waiting for convergence.
const CONVERGE_POLL: Duration = Duration::from_millis(100);
/// Poll period of every survivor after a kill or a leave.
const DEPART_POLL: Duration = Duration::from_millis(20);
/// Poll period of every agent during the loss run's idle window.
const LOSS_POLL: Duration = Duration::from_millis(200);
/// Extra wait after a replacement converged, so it is fully settled before the next run.
const SETTLE: Duration = Duration::from_secs(1);
/// Deadline for the initial convergence (no loss).
const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);
/// Deadline for the initial convergence under loss.
const LOSS_CONVERGE_DEADLINE: Duration = Duration::from_secs(120);

/// Targets (lan profile, N = 20).
const TARGET_RSS_MIB: f64 = 4.0;
const TARGET_MEMBERS_MS: f64 = 5.0;
const TARGET_LEAVE_S: f64 = 0.5;
const TARGET_FAIL_S: f64 = 4.0;
/// The cluster size the targets are stated for.
const TARGET_N: usize = 20;

#[derive(Debug, Parser)]
#[command(
    name = "cluster",
    about = "shoal cluster benchmark: idle cost, failure/leave propagation, members latency, loss"
)]
struct Args {
    /// Cluster sizes, comma-separated [default: 5,20,50; with --quick: 5].
    #[arg(long, value_delimiter = ',', value_name = "N,N,...")]
    nodes: Option<Vec<usize>>,
    /// Length of the idle window [default: 60; with --quick: 10].
    #[arg(long, value_name = "SECS")]
    idle_secs: Option<u64>,
    /// kill -9 runs per cluster size [default: 10; with --quick: 3].
    #[arg(long, value_name = "N")]
    kills: Option<usize>,
    /// SIGTERM (graceful leave) runs per cluster size [default: 3; with --quick: 1].
    #[arg(long, value_name = "N")]
    leaves: Option<usize>,
    /// `shoal members` invocations timed per cluster size.
    #[arg(long, value_name = "N", default_value_t = 30)]
    members_runs: usize,
    /// Packet loss probability of the loss run.
    #[arg(long, value_name = "P", default_value_t = 0.1)]
    loss: f64,
    /// Cluster size of the loss run.
    #[arg(long, value_name = "N", default_value_t = 20)]
    loss_nodes: usize,
    /// Skip the loss run (implied by --quick).
    #[arg(long)]
    no_loss: bool,
    /// Smoke test: N=5 only, 10 s idle, 3 kills, 1 leave, no loss run.
    #[arg(long)]
    quick: bool,
    /// Deadline of every wait for a kill or a leave to be seen and handled, and for a
    /// replacement to converge.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    timeout_secs: u64,
    /// Seed of the random choices (join targets, victims) [default: from the clock].
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Keep the temporary directories (agent logs, handler output) and print where they are.
    #[arg(long)]
    keep_logs: bool,
    /// Internal: run only the loss scenario; we are inside `unshare --net`. The value is the
    /// parent's network namespace, which this run refuses to touch.
    #[arg(long, hide = true, value_name = "NETNS")]
    in_netns: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Resolved settings.
#[derive(Debug, Clone)]
struct Settings {
    nodes: Vec<usize>,
    idle: Duration,
    kills: usize,
    leaves: usize,
    members_runs: usize,
    loss: Option<f64>,
    loss_p: f64,
    loss_nodes: usize,
    timeout: Duration,
    seed: u64,
    keep_logs: bool,
}

impl Settings {
    fn from_args(args: &Args) -> Result<Self> {
        let q = args.quick;
        let nodes = args
            .nodes
            .clone()
            .unwrap_or_else(|| if q { vec![5] } else { vec![5, 20, 50] });
        if nodes.is_empty() || nodes.iter().any(|&n| n < 2) {
            bail!("--nodes: every cluster size must be at least 2");
        }
        if !(0.0..1.0).contains(&args.loss) {
            bail!("--loss must be in [0, 1)");
        }
        if args.loss_nodes < 2 {
            bail!("--loss-nodes must be at least 2");
        }
        let seed = args.seed.unwrap_or_else(|| {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            nanos ^ u64::from(std::process::id()).rotate_left(32)
        });
        Ok(Self {
            nodes,
            idle: Duration::from_secs(args.idle_secs.unwrap_or(if q { 10 } else { 60 })),
            kills: args.kills.unwrap_or(if q { 3 } else { 10 }),
            leaves: args.leaves.unwrap_or(if q { 1 } else { 3 }),
            members_runs: args.members_runs.max(1),
            loss: (!q && !args.no_loss).then_some(args.loss),
            loss_p: args.loss,
            loss_nodes: args.loss_nodes,
            timeout: Duration::from_secs(args.timeout_secs.max(1)),
            seed,
            keep_logs: args.keep_logs,
        })
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cluster bench: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(guarded(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the bench until it ends or a SIGINT/SIGTERM arrives. Either way the bench future is
/// dropped before we return, and with it every agent (they are spawned with kill-on-drop).
async fn guarded(args: Args) -> Result<()> {
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    tokio::select! {
        result = run(args) => result,
        _ = term.recv() => bail!("SIGTERM: stopped, agents killed"),
        _ = int.recv() => bail!("SIGINT: stopped, agents killed"),
    }
}

async fn run(args: Args) -> Result<()> {
    let settings = Settings::from_args(&args)?;
    let mut rng = Rng::new(settings.seed);
    if let Some(parent_ns) = &args.in_netns {
        return inner_loss_run(&settings, parent_ns, &mut rng).await;
    }
    let clk_tck = clock_ticks().await;
    print_header(&settings, clk_tck).await;

    let mut reports = Vec::new();
    for &n in &settings.nodes {
        let report = bench_size(n, &settings, &mut rng, clk_tck).await?;
        print!("{}", report.render());
        reports.push(report);
    }
    let loss = match settings.loss {
        Some(p) => {
            let outcome = outer_loss_run(&settings, p).await;
            print!("{}", render_loss(&outcome));
            Some(outcome)
        }
        None => {
            println!("\n=== loss run ===\nskipped (--quick or --no-loss)");
            None
        }
    };
    print!("{}", render_targets(&reports, loss.as_ref()));
    progress("done");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Agents and clusters
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct ReadyLine {
    ready: Ready,
}

#[derive(Debug, Deserialize)]
struct Ready {
    name: String,
    #[allow(dead_code)]
    gossip: String,
    advertise: String,
    control: String,
}

/// One running `shoal agent`. Killed (SIGKILL) when dropped.
struct Agent {
    name: String,
    advertise: String,
    control: String,
    pid: u32,
    client: Client,
    child: Child,
    log: PathBuf,
    /// Kept open so the agent never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

/// The handler every agent runs for member-failed and member-leave: one line per member in
/// `DIR/<self>.<event>`: `<epoch secs at handler start>\t<name>\t<ip>\t<role>\t<tags>`.
fn handler_spec(dir: &Path) -> Result<String> {
    let dir = dir
        .to_str()
        .context("the temporary directory path is not UTF-8")?;
    if dir.contains('\'') {
        bail!("the temporary directory path {dir:?} contains a quote");
    }
    Ok(format!(
        "member-failed,member-leave=awk -v ts=\"$(date +%s.%N)\" '{{ print ts \"\\t\" $0 }}' \
         >> '{dir}'/\"$SERF_SELF_NAME.$SERF_EVENT\""
    ))
}

fn handler_file(dir: &Path, agent: &str, event: &str) -> PathBuf {
    dir.join(format!("{agent}.{event}"))
}

/// Removes every `SHOAL_*` variable so a user's environment cannot change the agents.
fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SHOAL_") {
            cmd.env_remove(key);
        }
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

async fn spawn_agent(
    name: &str,
    join: Option<&str>,
    handlers: &Path,
    logs: &Path,
) -> Result<Agent> {
    let log = logs.join(format!("{name}.log"));
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
    let mut cmd = Command::new(SHOAL);
    cmd.args(["agent", "--node", name, "--bind", "127.0.0.1:0"])
        .args(["--control", "127.0.0.1:0", "--profile", "lan"])
        .arg("--event-handler")
        .arg(handler_spec(handlers)?);
    if let Some(join) = join {
        cmd.args(["--join", join]);
    }
    clean_env(&mut cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("cannot run {SHOAL}"))?;
    let pid = child.id().context("the agent has no pid")?;
    let stdout = child
        .stdout
        .take()
        .context("the agent's stdout is not piped")?;
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    match tokio::time::timeout(READY_TIMEOUT, stdout.read_line(&mut line)).await {
        Err(_) => bail!(
            "agent {name} printed no readiness line within {READY_TIMEOUT:?}; log:\n{}",
            log_tail(&log, 10)
        ),
        Ok(Err(e)) => bail!("agent {name}: reading stdout: {e}"),
        Ok(Ok(0)) => bail!(
            "agent {name} exited before it was ready; log:\n{}",
            log_tail(&log, 10)
        ),
        Ok(Ok(_)) => {}
    }
    let ready: ReadyLine = serde_json::from_str(line.trim())
        .with_context(|| format!("agent {name}: unexpected readiness line {line:?}"))?;
    let ready = ready.ready;
    if ready.name != name {
        bail!("agent {name} reported the name {:?}", ready.name);
    }
    for addr in [&ready.advertise, &ready.control] {
        if !addr.starts_with("127.0.0.1:") {
            bail!("agent {name} is not on 127.0.0.1: {addr}");
        }
    }
    Ok(Agent {
        name: name.to_string(),
        client: Client::new(ready.control.clone()),
        advertise: ready.advertise,
        control: ready.control,
        pid,
        child,
        log,
        _stdout: stdout,
    })
}

/// A set of agents sharing a temporary directory for logs and handler output.
struct Cluster {
    _dir: tempfile::TempDir,
    handlers: PathBuf,
    logs: PathBuf,
    agents: Vec<Agent>,
    spawned: usize,
}

impl Cluster {
    fn new(tag: &str, keep: bool) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("shoal-bench-{tag}-"))
            .disable_cleanup(keep)
            .tempdir()
            .context("create a temporary directory")?;
        let handlers = dir.path().join("handlers");
        let logs = dir.path().join("logs");
        for d in [&handlers, &logs] {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        }
        if keep {
            progress(&format!(
                "keeping logs and handler output in {}",
                dir.path().display()
            ));
        }
        Ok(Self {
            _dir: dir,
            handlers,
            logs,
            agents: Vec::new(),
            spawned: 0,
        })
    }

    /// Starts one more agent, joined to a random running one.
    async fn spawn(&mut self, rng: &mut Rng) -> Result<&Agent> {
        self.spawned += 1;
        let name = format!("n{}", self.spawned);
        let join = if self.agents.is_empty() {
            None
        } else {
            Some(self.agents[rng.below(self.agents.len())].advertise.clone())
        };
        let agent = spawn_agent(&name, join.as_deref(), &self.handlers, &self.logs).await?;
        self.agents.push(agent);
        self.agents.last().context("just pushed")
    }

    fn names(&self) -> BTreeSet<String> {
        self.agents.iter().map(|a| a.name.clone()).collect()
    }

    fn clients(&self) -> Vec<Client> {
        self.agents.iter().map(|a| a.client.clone()).collect()
    }

    /// Checks once that every agent lists exactly the running agents as alive (left and failed
    /// members of earlier runs may stay listed). `Err` says who lags.
    async fn check_converged(&self) -> std::result::Result<(), String> {
        let expected = self.names();
        let views = members_of_all(&self.clients()).await;
        let mut lagging = Vec::new();
        for (agent, view) in self.agents.iter().zip(&views) {
            match view {
                None => lagging.push(format!("{}: no answer", agent.name)),
                Some(view) => {
                    let alive: BTreeSet<String> = view
                        .members
                        .iter()
                        .filter(|m| m.status == "alive")
                        .map(|m| m.name.clone())
                        .collect();
                    if alive != expected {
                        let missing: Vec<&String> = expected.difference(&alive).collect();
                        let extra: Vec<&String> = alive.difference(&expected).collect();
                        lagging.push(format!(
                            "{} sees {}/{} alive (missing {missing:?}, unexpected {extra:?})",
                            agent.name,
                            alive.len(),
                            expected.len()
                        ));
                    }
                }
            }
        }
        if lagging.is_empty() {
            Ok(())
        } else {
            Err(lagging.join("; "))
        }
    }

    /// Polls until every agent lists every running agent alive. Returns the time since `since`,
    /// or on timeout a description of who lagged.
    async fn converge(
        &self,
        since: Instant,
        deadline: Duration,
    ) -> std::result::Result<Duration, String> {
        let start = Instant::now();
        loop {
            let tick = Instant::now();
            match self.check_converged().await {
                Ok(()) => return Ok(since.elapsed()),
                Err(why) if start.elapsed() >= deadline => {
                    return Err(format!("not converged after {deadline:?}: {why}"));
                }
                Err(_) => {}
            }
            tokio::time::sleep_until((tick + CONVERGE_POLL).into()).await;
        }
    }

    /// Kills every agent and reaps it.
    async fn stop(mut self) {
        for agent in &mut self.agents {
            let _ = agent.child.start_kill();
        }
        for agent in &mut self.agents {
            let _ = tokio::time::timeout(Duration::from_secs(5), agent.child.wait()).await;
        }
    }
}

async fn get_members(client: &Client) -> Option<MembersResponse> {
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.get::<MembersResponse>("/v1/members"),
    )
    .await
    .ok()?
    .ok()
}

async fn get_stats(client: &Client) -> Option<StatsInfo> {
    tokio::time::timeout(REQUEST_TIMEOUT, client.get::<InfoResponse>("/v1/info"))
        .await
        .ok()?
        .ok()
        .map(|info| info.stats)
}

/// `GET /v1/members` on every client at once; `None` where no answer came in time.
async fn members_of_all(clients: &[Client]) -> Vec<Option<MembersResponse>> {
    let mut set = JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        set.spawn(async move { (i, get_members(&client).await) });
    }
    let mut out = vec![None; clients.len()];
    while let Some(joined) = set.join_next().await {
        if let Ok((i, view)) = joined {
            out[i] = view;
        }
    }
    out
}

async fn stats_of_all(clients: &[Client]) -> Vec<Option<StatsInfo>> {
    let mut set = JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        set.spawn(async move { (i, get_stats(&client).await) });
    }
    let mut out = vec![None; clients.len()];
    while let Some(joined) = set.join_next().await {
        if let Ok((i, stats)) = joined {
            out[i] = stats;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------------

/// The value in kB of the line `key:` of a /proc file (`VmRSS:  1234 kB`).
fn proc_kib(path: &str, key: &str) -> Result<u64> {
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
struct Memory {
    /// VmRSS: every resident page mapped, shared binary pages included.
    rss: u64,
    /// RssAnon: resident anonymous pages (heap, stacks): what this agent alone costs.
    anon: u64,
    /// Pss: proportional set size (shared pages divided among the processes mapping them).
    pss: u64,
}

fn memory(pid: u32) -> Result<Memory> {
    let status = format!("/proc/{pid}/status");
    Ok(Memory {
        rss: proc_kib(&status, "VmRSS")?,
        anon: proc_kib(&status, "RssAnon")?,
        pss: proc_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss")?,
    })
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
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
async fn clock_ticks() -> f64 {
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

// ---------------------------------------------------------------------------------------------
// One cluster size
// ---------------------------------------------------------------------------------------------

struct IdleReport {
    window: Duration,
    rss_mib: Vec<f64>,
    anon_mib: Vec<f64>,
    pss_mib: Vec<f64>,
    cpu_per_min: Vec<f64>,
    bytes_per_s: Vec<f64>,
    pkts_per_s: Vec<f64>,
    missing: usize,
    stable: std::result::Result<(), String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Depart {
    Kill,
    Leave,
}

impl Depart {
    fn status(self) -> &'static str {
        match self {
            Depart::Kill => "failed",
            Depart::Leave => "left",
        }
    }

    fn event(self) -> &'static str {
        match self {
            Depart::Kill => "member-failed",
            Depart::Leave => "member-leave",
        }
    }
}

/// One kill or leave. Times are seconds since the signal; infinity means "not within the
/// deadline".
struct DepartRun {
    victim: String,
    survivors: Vec<String>,
    seen: Vec<f64>,
    handled: Vec<f64>,
    exit: Option<String>,
    rejoin: f64,
    rejoin_note: Option<String>,
}

impl DepartRun {
    fn first_seen(&self) -> f64 {
        self.seen.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn all_seen(&self) -> f64 {
        fmax(&self.seen)
    }

    fn all_handled(&self) -> f64 {
        fmax(&self.handled)
    }

    /// Seen and handled everywhere.
    fn done(&self) -> f64 {
        self.all_seen().max(self.all_handled())
    }

    /// The survivor that was last to both list and handle the departure.
    fn slowest(&self) -> String {
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

struct SizeReport {
    n: usize,
    spawn: Duration,
    converge: std::result::Result<Duration, String>,
    idle: IdleReport,
    cli_ms: Vec<f64>,
    cli_errors: Vec<String>,
    api_ms: Vec<f64>,
    kills: Vec<DepartRun>,
    leaves: Vec<DepartRun>,
}

/// Starts `n` agents one after the other, each joining a random running one. Returns how long
/// the spawning took and when all listed `n` alive (since the first spawn).
async fn start_cluster(
    cluster: &mut Cluster,
    n: usize,
    rng: &mut Rng,
    deadline: Duration,
) -> Result<(Duration, std::result::Result<Duration, String>)> {
    let start = Instant::now();
    for _ in 0..n {
        cluster.spawn(rng).await?;
    }
    let spawn = start.elapsed();
    let converge = cluster.converge(start, deadline).await;
    Ok((spawn, converge))
}

async fn bench_size(n: usize, s: &Settings, rng: &mut Rng, clk_tck: f64) -> Result<SizeReport> {
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
async fn measure_idle(cluster: &Cluster, idle: Duration, clk_tck: f64) -> IdleReport {
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
async fn time_members_cli(control: &str, runs: usize) -> (Vec<f64>, Vec<String>) {
    let mut times = Vec::new();
    let mut errors = Vec::new();
    for i in 0..=runs {
        let mut cmd = Command::new(SHOAL);
        cmd.args(["members", "--control", control])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        clean_env(&mut cmd);
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
async fn time_members_api(client: &Client, runs: usize) -> Vec<f64> {
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
async fn depart_run(
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
            "{victim_name} did not exit cleanly on SIGTERM ({exit}); log:\n{}",
            log_tail(&victim.log, 5)
        ));
    }

    let mut seen = vec![f64::INFINITY; survivors.len()];
    let mut handled = vec![f64::INFINITY; survivors.len()];
    while let Some(joined) = set.join_next().await {
        if let Ok((i, (s, h))) = joined {
            seen[i] = s;
            handled[i] = h;
        }
    }

    // Replacement.
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

/// Polls one survivor every [`DEPART_POLL`] until it lists `victim` with status `want` and its
/// handler file names `victim`. Returns (seen, handled) in seconds since the signal.
async fn observe(
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

/// The handler start time (epoch seconds) of the first handler line naming `member`.
fn handler_time(file: &Path, member: &str) -> Option<f64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split('\t');
        let ts = fields.next()?;
        (fields.next()? == member).then(|| ts.parse().ok())?
    })
}

/// Distinct handler runs recorded in a handler file (one timestamp per run).
fn handler_runs(file: &Path) -> usize {
    let Ok(text) = std::fs::read_to_string(file) else {
        return 0;
    };
    text.lines()
        .filter_map(|l| l.split('\t').next())
        .collect::<BTreeSet<_>>()
        .len()
}

// ---------------------------------------------------------------------------------------------
// Loss run
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
enum LossOutcome {
    Skipped(String),
    Done(LossReport),
}

#[derive(Debug, Serialize, Deserialize)]
struct LossReport {
    n: usize,
    loss: f64,
    spawn_s: f64,
    converge_s: Option<f64>,
    converge_note: Option<String>,
    window_s: f64,
    /// Times an agent's poll showed a member `failed` that the previous poll did not.
    failed_transitions: usize,
    /// `observer -> member` pairs that were ever listed failed.
    failed_pairs: Vec<String>,
    suspect_transitions: usize,
    /// member-failed handler runs during the window.
    handler_runs: usize,
    /// member-failed handler runs before the window (while converging).
    handler_runs_before: usize,
    polls: usize,
    poll_errors: usize,
    /// Packets into lo and packets the rule dropped, during the whole run.
    lo_packets: Option<u64>,
    dropped: Option<u64>,
    stable: Option<String>,
}

/// Runs the loss scenario in a private network namespace (`unshare --net`, as root) by
/// re-executing this binary with `--in-netns`.
async fn outer_loss_run(s: &Settings, p: f64) -> LossOutcome {
    match outer_loss_run_inner(s, p).await {
        Ok(outcome) => outcome,
        Err(e) => LossOutcome::Skipped(format!("{e:#}")),
    }
}

/// Sends SIGTERM to the inner run if it is still running when dropped, so it kills its agents.
struct TermOnDrop(Option<i32>);

impl Drop for TermOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
}

async fn outer_loss_run_inner(s: &Settings, p: f64) -> Result<LossOutcome> {
    let exe = std::env::current_exe().context("cannot find the bench executable")?;
    let netns = std::fs::read_link("/proc/self/ns/net")
        .context("cannot read /proc/self/ns/net")?
        .to_string_lossy()
        .into_owned();
    progress(&format!(
        "[loss] re-running inside `unshare --net` ({} agents, loss {p})",
        s.loss_nodes
    ));
    let mut cmd = Command::new("unshare");
    cmd.args(["--net", "--"])
        .arg(&exe)
        .args(["--in-netns", &netns, "--loss", &p.to_string()])
        .args(["--loss-nodes", &s.loss_nodes.to_string()])
        .args(["--idle-secs", &s.idle.as_secs().to_string()])
        .args(["--timeout-secs", &s.timeout.as_secs().to_string()])
        .args(["--seed", &s.seed.to_string()]);
    if s.keep_logs {
        cmd.arg("--keep-logs");
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return Ok(LossOutcome::Skipped(format!("cannot run `unshare`: {e}"))),
    };
    let mut guard = TermOnDrop(child.id().and_then(|pid| i32::try_from(pid).ok()));
    let mut stdout = child.stdout.take().context("stdout not piped")?;
    let stderr = child.stderr.take().context("stderr not piped")?;
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
    let limit = s.idle + LOSS_CONVERGE_DEADLINE + Duration::from_secs(120);
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
            return Ok(LossOutcome::Skipped(format!(
                "the inner run did not finish within {} s",
                limit.as_secs()
            )));
        }
    };
    guard.0 = None;
    let tail = forward.await.unwrap_or_default();
    if let Some(outcome) = out
        .lines()
        .find_map(|l| serde_json::from_str::<LossOutcome>(l).ok())
    {
        return Ok(outcome);
    }
    let status = match status {
        Ok(st) => st.to_string(),
        Err(e) => format!("wait failed: {e}"),
    };
    Ok(LossOutcome::Skipped(format!(
        "`unshare --net` or the inner run failed ({status}): {}",
        tail.join(" | ")
    )))
}

/// A system tool, preferring /usr/sbin and /sbin (often not on a normal user's PATH).
fn tool(name: &str) -> PathBuf {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

async fn run_tool(name: &str, args: &[&str]) -> Result<String> {
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

/// Brings lo up and installs the random-drop rule, refusing to touch the parent's namespace.
async fn setup_netns(parent_ns: &str, p: f64) -> Result<()> {
    let own = std::fs::read_link("/proc/self/ns/net")
        .context("cannot read /proc/self/ns/net")?
        .to_string_lossy()
        .into_owned();
    if own == parent_ns {
        bail!("not in a private network namespace ({own}); refusing to add an iptables rule");
    }
    run_tool("ip", &["link", "set", "lo", "up"]).await?;
    // A rule without a target only counts: every packet into lo, for the drop ratio.
    run_tool("iptables", &["-A", "INPUT", "-i", "lo"]).await?;
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

/// Packets into lo so far (first INPUT rule) and packets dropped (the DROP rule).
async fn iptables_counters() -> Option<(u64, u64)> {
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

async fn inner_loss_run(s: &Settings, parent_ns: &str, rng: &mut Rng) -> Result<()> {
    let outcome = match setup_netns(parent_ns, s.loss_p).await {
        Err(e) => LossOutcome::Skipped(format!("{e:#}")),
        Ok(()) => LossOutcome::Done(loss_scenario(s, rng).await?),
    };
    println!(
        "{}",
        serde_json::to_string(&outcome).context("serialize the loss result")?
    );
    Ok(())
}

#[derive(Default)]
struct WatchStats {
    polls: usize,
    errors: usize,
    failed_transitions: usize,
    suspect_transitions: usize,
    failed_members: BTreeSet<String>,
}

/// Polls one agent every [`LOSS_POLL`] until `end`, counting members newly listed failed or
/// suspect.
async fn watch_agent(client: Client, end: Instant) -> WatchStats {
    let mut stats = WatchStats::default();
    let mut last: HashMap<String, String> = HashMap::new();
    while Instant::now() < end {
        let tick = Instant::now();
        stats.polls += 1;
        match get_members(&client).await {
            None => stats.errors += 1,
            Some(view) => {
                for m in view.members {
                    let before = last.get(&m.name).map(String::as_str);
                    if m.status == "failed" && before != Some("failed") {
                        stats.failed_transitions += 1;
                        stats.failed_members.insert(m.name.clone());
                    }
                    if m.status == "suspect" && before != Some("suspect") {
                        stats.suspect_transitions += 1;
                    }
                    last.insert(m.name, m.status);
                }
            }
        }
        tokio::time::sleep_until((tick + LOSS_POLL).into()).await;
    }
    stats
}

async fn loss_scenario(s: &Settings, rng: &mut Rng) -> Result<LossReport> {
    let n = s.loss_nodes;
    let counters0 = iptables_counters().await;
    let mut cluster = Cluster::new("loss", s.keep_logs)?;
    progress(&format!("[loss N={n}] starting {n} agents"));
    let (spawn, converge) = start_cluster(&mut cluster, n, rng, LOSS_CONVERGE_DEADLINE).await?;
    match &converge {
        Ok(d) => progress(&format!(
            "[loss N={n}] all list {n} alive after {:.2} s",
            d.as_secs_f64()
        )),
        Err(why) => progress(&format!("[loss N={n}] convergence timeout: {why}")),
    }
    let files: Vec<PathBuf> = cluster
        .agents
        .iter()
        .map(|a| handler_file(&cluster.handlers, &a.name, "member-failed"))
        .collect();
    let runs_before: usize = files.iter().map(|f| handler_runs(f)).sum();

    progress(&format!(
        "[loss N={n}] idle window of {} s, polling every agent every {} ms",
        s.idle.as_secs(),
        LOSS_POLL.as_millis()
    ));
    let start = Instant::now();
    let end = start + s.idle;
    let mut set = JoinSet::new();
    for agent in &cluster.agents {
        let client = agent.client.clone();
        let name = agent.name.clone();
        set.spawn(async move { (name, watch_agent(client, end).await) });
    }
    let mut report = LossReport {
        n,
        loss: s.loss_p,
        spawn_s: spawn.as_secs_f64(),
        converge_s: converge.as_ref().ok().map(Duration::as_secs_f64),
        converge_note: converge.err(),
        window_s: 0.0,
        failed_transitions: 0,
        failed_pairs: Vec::new(),
        suspect_transitions: 0,
        handler_runs: 0,
        handler_runs_before: runs_before,
        polls: 0,
        poll_errors: 0,
        dropped: None,
        lo_packets: None,
        stable: None,
    };
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
    report.stable = cluster.check_converged().await.err();
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
    cluster.stop().await;
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Statistics, formatting, report
// ---------------------------------------------------------------------------------------------

/// splitmix64: enough randomness for picking join targets and victims, reproducible by seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn fmax(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Median (mean of the two middle values for an even count); infinity sorts last.
fn median(v: &[f64]) -> f64 {
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
fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn fmt_s(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v.is_infinite() {
        "timeout".into()
    } else {
        format!("{v:.3} s")
    }
}

fn fmt_num(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "n/a".into()
    }
}

fn ok(pass: bool) -> &'static str {
    if pass { "ok" } else { "MISS" }
}

/// Plain-text table: first column left-aligned, the others right-aligned.
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(head: &[&str]) -> Self {
        Self {
            rows: vec![head.iter().map(|h| h.to_string()).collect()],
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self, indent: &str) -> String {
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

fn progress(msg: &str) {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    eprintln!("[{:7.1}s] {msg}", start.elapsed().as_secs_f64());
}

async fn print_header(s: &Settings, clk_tck: f64) {
    let version = Command::new(SHOAL)
        .arg("version")
        .output()
        .await
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("shoal cluster benchmark");
    println!("  binary    {SHOAL} ({version})");
    println!(
        "  machine   {cpus} CPUs, kernel {}, load average at start {}",
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
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
    println!("  profile   lan (probe 400 ms, suspicion >= 1.2 s), handlers coalesced 100 ms");
}

impl SizeReport {
    fn render(&self) -> String {
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

        let idle = &self.idle;
        let _ = writeln!(
            out,
            "\nidle, per agent ({:.1} s window{}):",
            idle.window.as_secs_f64(),
            if idle.missing > 0 {
                format!(", {} agents with missing samples", idle.missing)
            } else {
                String::new()
            }
        );
        let mut t = Table::new(&["", "max", "mean", "target (N=20)"]);
        let rss_max = fmax(&idle.rss_mib);
        t.row(vec![
            "RSS, VmRSS (MiB)".into(),
            fmt_num(rss_max, 2),
            fmt_num(mean(&idle.rss_mib), 2),
            format!("<= {TARGET_RSS_MIB} {}", ok(rss_max <= TARGET_RSS_MIB)),
        ]);
        t.row(vec![
            "  of which anonymous, RssAnon (MiB)".into(),
            fmt_num(fmax(&idle.anon_mib), 2),
            fmt_num(mean(&idle.anon_mib), 2),
            "-".into(),
        ]);
        t.row(vec![
            "PSS, binary pages shared (MiB)".into(),
            fmt_num(fmax(&idle.pss_mib), 2),
            fmt_num(mean(&idle.pss_mib), 2),
            "-".into(),
        ]);
        t.row(vec![
            "CPU (s per min)".into(),
            fmt_num(fmax(&idle.cpu_per_min), 3),
            fmt_num(mean(&idle.cpu_per_min), 3),
            "-".into(),
        ]);
        t.row(vec![
            "gossip out (bytes/s)".into(),
            fmt_num(fmax(&idle.bytes_per_s), 0),
            fmt_num(mean(&idle.bytes_per_s), 0),
            "-".into(),
        ]);
        t.row(vec![
            "gossip out (packets/s)".into(),
            fmt_num(fmax(&idle.pkts_per_s), 1),
            fmt_num(mean(&idle.pkts_per_s), 1),
            "-".into(),
        ]);
        out.push_str(&t.render("  "));
        let _ = writeln!(
            out,
            "  after the window: {}",
            match &idle.stable {
                Ok(()) => format!("every agent still lists {n} alive"),
                Err(why) => format!("NOT STABLE: {why}"),
            }
        );

        let _ = writeln!(out, "\nmembers latency ({} runs):", self.cli_ms.len());
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

        out.push_str(&render_departs(n, Depart::Kill, &self.kills));
        out.push_str(&render_departs(n, Depart::Leave, &self.leaves));
        out
    }
}

fn render_departs(n: usize, how: Depart, runs: &[DepartRun]) -> String {
    let mut out = String::new();
    let (title, status) = match how {
        Depart::Kill => ("failure (kill -9)", "failed"),
        Depart::Leave => ("leave (SIGTERM)", "left"),
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
    out.push_str(&t.render("  "));

    let seen: Vec<f64> = runs.iter().map(DepartRun::all_seen).collect();
    let handled: Vec<f64> = runs.iter().map(DepartRun::all_handled).collect();
    let done: Vec<f64> = runs.iter().map(DepartRun::done).collect();
    let mut t = Table::new(&["summary over runs", "median", "worst", "target (N=20)"]);
    t.row(vec![
        format!("every survivor lists it {status}"),
        fmt_s(median(&seen)),
        fmt_s(fmax(&seen)),
        match how {
            Depart::Kill => "-".into(),
            Depart::Leave => format!(
                "<= {TARGET_LEAVE_S} s {}",
                ok(fmax(&done) <= TARGET_LEAVE_S)
            ),
        },
    ]);
    t.row(vec![
        format!("every survivor ran {}", how.event()),
        fmt_s(median(&handled)),
        fmt_s(fmax(&handled)),
        match how {
            Depart::Kill => format!(
                "<= {TARGET_FAIL_S} s {}",
                ok(fmax(&handled) <= TARGET_FAIL_S)
            ),
            Depart::Leave => "(both)".into(),
        },
    ]);
    let rejoin: Vec<f64> = runs.iter().map(|r| r.rejoin).collect();
    t.row(vec![
        "replacement: all list N alive".into(),
        fmt_s(median(&rejoin)),
        fmt_s(fmax(&rejoin)),
        "-".into(),
    ]);
    out.push('\n');
    out.push_str(&t.render("  "));
    if how == Depart::Kill {
        let over = done.iter().filter(|&&d| d > TARGET_FAIL_S).count();
        let _ = writeln!(
            out,
            "  runs where some survivor took > {TARGET_FAIL_S} s to list or handle: {over} of {}",
            runs.len()
        );
    }
    for (i, r) in runs.iter().enumerate() {
        let missing_seen = r.seen.iter().filter(|t| t.is_infinite()).count();
        let missing_handled = r.handled.iter().filter(|t| t.is_infinite()).count();
        if missing_seen + missing_handled > 0 {
            let _ = writeln!(
                out,
                "  run {}: {missing_seen} survivors never listed {} {status}, {missing_handled} \
                 never ran {} for it (deadline)",
                i + 1,
                r.victim,
                how.event()
            );
        }
        if let Some(note) = &r.rejoin_note {
            let _ = writeln!(out, "  run {}: replacement {note}", i + 1);
        }
    }
    out
}

fn render_loss(outcome: &LossOutcome) -> String {
    let mut out = String::from("\n=== loss run ===\n");
    let r = match outcome {
        LossOutcome::Skipped(why) => {
            let _ = writeln!(out, "loss run SKIPPED: {why}");
            return out;
        }
        LossOutcome::Done(r) => r,
    };
    let _ = writeln!(
        out,
        "N = {}, {:.0}% random drop of every packet into lo (iptables statistic), private netns",
        r.n,
        r.loss * 100.0
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

fn render_targets(reports: &[SizeReport], loss: Option<&LossOutcome>) -> String {
    let mut out = format!("\n=== targets (lan profile; stated for N = {TARGET_N}) ===\n");
    let mut head: Vec<String> = vec!["target".into()];
    head.extend(reports.iter().map(|r| {
        if r.n == TARGET_N {
            format!("N={} *", r.n)
        } else {
            format!("N={}", r.n)
        }
    }));
    let head_refs: Vec<&str> = head.iter().map(String::as_str).collect();
    let mut t = Table::new(&head_refs);

    let mut row = vec![format!("idle RSS per agent <= {TARGET_RSS_MIB} MiB (max)")];
    row.extend(reports.iter().map(|r| {
        let v = fmax(&r.idle.rss_mib);
        format!("{} MiB {}", fmt_num(v, 2), ok(v <= TARGET_RSS_MIB))
    }));
    t.row(row);

    let mut row = vec![format!("`shoal members` < {TARGET_MEMBERS_MS} ms (median)")];
    row.extend(reports.iter().map(|r| {
        let v = median(&r.cli_ms);
        format!(
            "{} ms {}",
            fmt_num(v, 2),
            ok(v < TARGET_MEMBERS_MS && r.cli_errors.is_empty())
        )
    }));
    t.row(row);

    let mut row = vec![format!(
        "leave listed+handled everywhere <= {TARGET_LEAVE_S} s (worst)"
    )];
    row.extend(reports.iter().map(|r| {
        let v = fmax(&r.leaves.iter().map(DepartRun::done).collect::<Vec<_>>());
        if r.leaves.is_empty() {
            "-".into()
        } else {
            format!("{} {}", fmt_s(v), ok(v <= TARGET_LEAVE_S))
        }
    }));
    t.row(row);

    let mut row = vec![format!(
        "failure handled everywhere <= {TARGET_FAIL_S} s (worst)"
    )];
    row.extend(reports.iter().map(|r| {
        let v = fmax(
            &r.kills
                .iter()
                .map(DepartRun::all_handled)
                .collect::<Vec<_>>(),
        );
        if r.kills.is_empty() {
            "-".into()
        } else {
            format!("{} {}", fmt_s(v), ok(v <= TARGET_FAIL_S))
        }
    }));
    t.row(row);
    out.push_str(&t.render("  "));

    let loss_line = match loss {
        None => "not run".to_string(),
        Some(LossOutcome::Skipped(why)) => format!("SKIPPED ({why})"),
        Some(LossOutcome::Done(r)) => {
            let zero = r.failed_transitions == 0 && r.handler_runs == 0;
            format!(
                "N={}: {} failed listings, {} handler runs {}",
                r.n,
                r.failed_transitions,
                r.handler_runs,
                ok(zero)
            )
        }
    };
    let _ = writeln!(out, "  zero false failures at 10% loss: {loss_line}");
    if reports.iter().any(|r| r.n == TARGET_N) {
        let _ = writeln!(out, "  (* the size the targets are stated for)");
    }
    out
}
