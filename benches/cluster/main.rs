//! Cluster benchmark: starts real `shoal agent` processes on loopback (lan profile) and measures
//! idle cost (RSS, CPU, gossip bytes), failure and leave propagation (to the member lists and to
//! the event handlers), `shoal members` latency, false failures under 10% packet loss (in a
//! private network namespace), and convergence: N agents started at once with identical
//! arguments, N agents joined at random, and the heal of a half/half partition (in a private
//! network and mount namespace).
//!
//! Run: `cargo bench -p shoal --bench cluster -- [--quick] [--nodes 5,20,50] [--idle-secs 60]
//! [--kills 10] [--leaves 3] [--loss 0.1 | --no-loss] [--convergence-runs 3] [--partition-secs 20
//! | --no-convergence]`. The report goes to stdout, progress to stderr. See docs/benchmarks.md
//! for what each number means.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::de::DeserializeOwned;
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
    /// Skip the convergence section (simultaneous start, random join, partition heal).
    #[arg(long)]
    no_convergence: bool,
    /// Runs of each convergence scenario; each is reported, and the worst [default: 3; with
    /// --quick: 1].
    #[arg(long, value_name = "N")]
    convergence_runs: Option<usize>,
    /// Cluster size of the convergence section, at most 254 [default: 50; with --quick: 10].
    #[arg(long, value_name = "N")]
    convergence_nodes: Option<usize>,
    /// How long the partition of the convergence section lasts [default: 20; with --quick: 5].
    #[arg(long, value_name = "SECS")]
    partition_secs: Option<u64>,
    /// Run the simultaneous-start agents as root with no per-agent source NAT: their TCP
    /// push-pulls then leave from 127.0.0.1, which the partition's iprange rules misplace
    /// (the cut leaks; for comparison).
    #[arg(long)]
    no_snat: bool,
    /// Log level of the convergence section's agents (SHOAL_LOG_LEVEL) [default: the agent's,
    /// info].
    #[arg(long, value_name = "LEVEL")]
    agent_log_level: Option<String>,
    /// Smoke test: N=5 only, 10 s idle, 3 kills, 1 leave, no loss run, convergence at N=10 once
    /// with a 5 s partition.
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
    /// Internal: run only the simultaneous-start and partition scenarios; we are inside
    /// `unshare --net --mount`. The value is the parent's network namespace.
    #[arg(long, hide = true, value_name = "NETNS")]
    in_netns_convergence: Option<String>,
    /// Internal: the parent's mount namespace (with --in-netns-convergence).
    #[arg(long, hide = true, value_name = "MNTNS")]
    parent_mntns: Option<String>,
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
    /// `None` with --no-convergence.
    convergence: Option<ConvSettings>,
    agent_log_level: Option<String>,
}

/// Settings of the convergence section.
#[derive(Debug, Clone, Copy)]
struct ConvSettings {
    n: usize,
    runs: usize,
    partition: Duration,
    /// Agent K runs as uid UID_BASE+K and its connections are SNATed to 127.0.0.K.
    snat: bool,
}

impl ConvSettings {
    /// Agents n1..n{side_a} are one side of the partition, the rest the other.
    fn side_a(&self) -> usize {
        self.n / 2
    }
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
        let conv = ConvSettings {
            n: args.convergence_nodes.unwrap_or(if q { 10 } else { 50 }),
            runs: args.convergence_runs.unwrap_or(if q { 1 } else { 3 }),
            partition: Duration::from_secs(args.partition_secs.unwrap_or(if q { 5 } else { 20 })),
            snat: !args.no_snat,
        };
        if !(2..=254).contains(&conv.n) {
            bail!("--convergence-nodes must be in 2..=254 (agent K binds 127.0.0.K)");
        }
        if conv.runs == 0 {
            bail!("--convergence-runs must be at least 1");
        }
        if conv.partition.is_zero() {
            bail!("--partition-secs must be at least 1");
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
            convergence: (!args.no_convergence).then_some(conv),
            agent_log_level: args.agent_log_level.clone(),
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
    if let Some(parent_ns) = &args.in_netns_convergence {
        return inner_convergence_run(&settings, parent_ns, args.parent_mntns.as_deref()).await;
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
    let convergence = match settings.convergence {
        Some(c) => {
            let report = convergence_section(&settings, c, &mut rng).await?;
            print!("{}", report.render());
            Some(report)
        }
        None => {
            println!("\n=== convergence ===\nskipped (--no-convergence)");
            None
        }
    };
    print!(
        "{}",
        render_targets(&reports, loss.as_ref(), convergence.as_ref())
    );
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
    /// The agent it was told to --join, if any.
    joined_to: Option<String>,
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
    log_level: Option<&str>,
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
    if let Some(level) = log_level {
        cmd.env("SHOAL_LOG_LEVEL", level);
    }
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
    let ready = read_ready(name, &mut stdout, &log, READY_TIMEOUT).await?;
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
        joined_to: None,
        _stdout: stdout,
    })
}

/// Reads an agent's readiness line (waiting at most `limit`) and checks the name in it.
async fn read_ready(
    name: &str,
    stdout: &mut BufReader<ChildStdout>,
    log: &Path,
    limit: Duration,
) -> Result<Ready> {
    let mut line = String::new();
    match tokio::time::timeout(limit, stdout.read_line(&mut line)).await {
        Err(_) => bail!(
            "agent {name} printed no readiness line within {limit:?}; log:\n{}",
            log_tail(log, 10)
        ),
        Ok(Err(e)) => bail!("agent {name}: reading stdout: {e}"),
        Ok(Ok(0)) => bail!(
            "agent {name} exited before it was ready; log:\n{}",
            log_tail(log, 10)
        ),
        Ok(Ok(_)) => {}
    }
    let ready: ReadyLine = serde_json::from_str(line.trim())
        .with_context(|| format!("agent {name}: unexpected readiness line {line:?}"))?;
    let ready = ready.ready;
    if ready.name != name {
        bail!("agent {name} reported the name {:?}", ready.name);
    }
    Ok(ready)
}

/// A set of agents sharing a temporary directory for logs and handler output.
struct Cluster {
    _dir: tempfile::TempDir,
    handlers: PathBuf,
    logs: PathBuf,
    agents: Vec<Agent>,
    spawned: usize,
    /// SHOAL_LOG_LEVEL of the agents (the agent's default if `None`).
    log_level: Option<String>,
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
            log_level: None,
        })
    }

    /// Starts one more agent, joined to a random running one.
    async fn spawn(&mut self, rng: &mut Rng) -> Result<&Agent> {
        self.spawned += 1;
        let name = format!("n{}", self.spawned);
        let target = if self.agents.is_empty() {
            None
        } else {
            Some(&self.agents[rng.below(self.agents.len())])
        };
        let join = target.map(|t| t.advertise.clone());
        let joined_to = target.map(|t| t.name.clone());
        let mut agent = spawn_agent(
            &name,
            join.as_deref(),
            &self.handlers,
            &self.logs,
            self.log_level.as_deref(),
        )
        .await?;
        agent.joined_to = joined_to;
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
    let netns = own_namespace("net")?;
    progress(&format!(
        "[loss] re-running inside `unshare --net` ({} agents, loss {p})",
        s.loss_nodes
    ));
    let mut args: Vec<String> = vec!["--in-netns".into(), netns, "--loss".into(), p.to_string()];
    args.extend(["--loss-nodes".into(), s.loss_nodes.to_string()]);
    args.extend(["--idle-secs".into(), s.idle.as_secs().to_string()]);
    args.extend(["--timeout-secs".into(), s.timeout.as_secs().to_string()]);
    args.extend(["--seed".into(), s.seed.to_string()]);
    if s.keep_logs {
        args.push("--keep-logs".into());
    }
    let limit = s.idle + LOSS_CONVERGE_DEADLINE + Duration::from_secs(120);
    Ok(
        match reexec_unshared::<LossOutcome>(&["--net"], &args, limit).await {
            Ok(outcome) => outcome,
            Err(why) => LossOutcome::Skipped(why),
        },
    )
}

/// `/proc/self/ns/<kind>` (`net:[4026531840]`), to tell namespaces apart.
fn own_namespace(kind: &str) -> Result<String> {
    Ok(std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .with_context(|| format!("cannot read /proc/self/ns/{kind}"))?
        .to_string_lossy()
        .into_owned())
}

/// Re-executes this bench as `unshare FLAGS -- <exe> ARGS`, forwards its progress (stderr) and
/// returns the first stdout line that parses as `T`. `Err` says why there is no result: unshare
/// missing or refused, the inner run failed or did not finish within `limit`.
async fn reexec_unshared<T: DeserializeOwned>(
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
    let own = own_namespace("net")?;
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
// Convergence: simultaneous start, random join, partition heal
// ---------------------------------------------------------------------------------------------

/// Targets of the convergence section (lan profile, N = 50), worst run.
const TARGET_SIMUL_S: f64 = 3.0;
const TARGET_HEAL_S: f64 = 3.0;
/// The cluster size the convergence targets are stated for.
const TARGET_CONV_N: usize = 50;
/// Gossip port of every agent of the simultaneous start (agent K binds 127.0.0.K).
const SIMUL_PORT: u16 = 7948;
/// Agent K of the simultaneous start runs as uid (and gid) UID_BASE + K, so that an iptables
/// owner match can give its connections its own source address.
const UID_BASE: u32 = 40_000;
/// Poll period of every agent while the partition lasts (time until it sees the other side
/// failed).
const PARTITION_POLL: Duration = Duration::from_millis(500);
/// After the heal: handler output counts as complete once unchanged for this long...
const HANDLER_QUIET: Duration = Duration::from_secs(1);
/// ...or after this long at the most.
const HANDLER_WAIT: Duration = Duration::from_secs(10);
/// A run over target (or a timeout) shows this many of the slowest agents' logs.
const LATE_AGENTS: usize = 3;
/// Log lines shown per late agent.
const LATE_LOG_LINES: usize = 12;

/// Per agent: seconds since the reference instant, or what it listed last when the deadline
/// passed.
type Times = Vec<std::result::Result<f64, String>>;

/// Worst of per-agent times (infinity if any missed the deadline, NaN if empty).
fn worst(times: &Times) -> f64 {
    if times.is_empty() {
        return f64::NAN;
    }
    times
        .iter()
        .map(|t| *t.as_ref().unwrap_or(&f64::INFINITY))
        .fold(f64::NEG_INFINITY, f64::max)
}

fn median_of(times: &Times) -> f64 {
    median(
        &times
            .iter()
            .map(|t| *t.as_ref().unwrap_or(&f64::INFINITY))
            .collect::<Vec<_>>(),
    )
}

/// Indices of the `k` slowest agents, slowest first (deadline misses first of all).
fn slowest_k(times: &Times, k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..times.len()).collect();
    let key = |i: usize| *times[i].as_ref().unwrap_or(&f64::INFINITY);
    idx.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
    idx.truncate(k);
    idx
}

/// `n17 1.874 s, n3 1.801 s` for the `k` slowest agents.
fn slowest_names(names: &[String], times: &Times, k: usize) -> String {
    slowest_k(times, k)
        .into_iter()
        .map(|i| match &times[i] {
            Ok(t) => format!("{} {t:.2}", names[i]),
            Err(_) => format!("{} timeout", names[i]),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A list cut to its first few entries (`a, b, c +5 more`).
fn short_list<T: std::fmt::Display>(items: &[T]) -> String {
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

/// `None` if `view` lists exactly `expected` as alive, else what is wrong.
fn alive_lag(view: &MembersResponse, expected: &BTreeSet<String>) -> Option<String> {
    let alive: BTreeSet<&String> = view
        .members
        .iter()
        .filter(|m| m.status == "alive")
        .map(|m| &m.name)
        .collect();
    let missing: Vec<&String> = expected.iter().filter(|n| !alive.contains(n)).collect();
    let extra: Vec<&&String> = alive.iter().filter(|n| !expected.contains(**n)).collect();
    if missing.is_empty() && extra.is_empty() {
        return None;
    }
    let mut out = format!(
        "lists {}/{} alive",
        alive.len() - extra.len(),
        expected.len()
    );
    if !missing.is_empty() {
        let statuses: Vec<String> = missing
            .iter()
            .map(|n| match view.members.iter().find(|m| &m.name == *n) {
                Some(m) => format!("{n} {}", m.status),
                None => format!("{n} unknown"),
            })
            .collect();
        let _ = write!(out, "; not alive: {}", short_list(&statuses));
    }
    if !extra.is_empty() {
        let _ = write!(out, "; unexpected: {}", short_list(&extra));
    }
    Some(out)
}

/// Polls one agent every [`CONVERGE_POLL`] until it lists exactly `expected` alive: seconds
/// since `since` of the answer that showed it, or at `deadline` what it listed last.
async fn watch_converge(
    client: &Client,
    expected: &BTreeSet<String>,
    since: Instant,
    deadline: Instant,
) -> std::result::Result<f64, String> {
    loop {
        let tick = Instant::now();
        let last = match get_members(client).await {
            Some(view) => match alive_lag(&view, expected) {
                None => return Ok(since.elapsed().as_secs_f64()),
                Some(why) => why,
            },
            None => "no answer".to_string(),
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep_until((tick + CONVERGE_POLL).into()).await;
    }
}

/// [`watch_converge`] on every client at once.
async fn converge_each(
    clients: &[Client],
    expected: &Arc<BTreeSet<String>>,
    since: Instant,
    deadline: Instant,
) -> Times {
    let mut set = JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        let expected = expected.clone();
        set.spawn(async move { (i, watch_converge(&client, &expected, since, deadline).await) });
    }
    let mut out: Times = vec![Err("watcher failed".into()); clients.len()];
    while let Some(joined) = set.join_next().await {
        if let Ok((i, t)) = joined {
            out[i] = t;
        }
    }
    out
}

/// One final look at every agent at once: `None` if all list exactly `expected` alive.
async fn all_converged(
    clients: &[Client],
    names: &[String],
    expected: &BTreeSet<String>,
) -> Option<String> {
    let views = members_of_all(clients).await;
    let lagging: Vec<String> = views
        .iter()
        .zip(names)
        .filter_map(|(view, name)| match view {
            None => Some(format!("{name}: no answer")),
            Some(view) => alive_lag(view, expected).map(|why| format!("{name} {why}")),
        })
        .collect();
    (!lagging.is_empty()).then(|| {
        format!(
            "{} agents not converged: {}",
            lagging.len(),
            short_list(&lagging)
        )
    })
}

/// The last lines of the slowest agents' logs, for runs that missed a target.
fn late_logs(names: &[String], logs: &[PathBuf], times: &Times) -> Vec<(String, String)> {
    slowest_k(times, LATE_AGENTS)
        .into_iter()
        .map(|i| (names[i].clone(), log_tail(&logs[i], LATE_LOG_LINES)))
        .collect()
}

#[derive(Debug, Serialize, Deserialize)]
enum NetnsOutcome {
    Skipped(String),
    Done(NetnsReport),
}

/// Result of the inner run (simultaneous start and partition heal).
#[derive(Debug, Serialize, Deserialize)]
struct NetnsReport {
    n: usize,
    /// Addresses `peers:7948` resolves to inside the namespace (the bench's own lookup).
    resolved: usize,
    /// Why the partition runs are skipped, if they are.
    partition_skipped: Option<String>,
    /// Why the agents' connections are not source-NATed to their own address, if they are not
    /// (--no-snat, or the owner match or SNAT is unavailable): the cut then leaks.
    no_snat: Option<String>,
    runs: Vec<SimulRun>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SimulRun {
    names: Vec<String>,
    /// From the first spawn to the last.
    spawn_spread_s: f64,
    /// Readiness line, since the first spawn.
    ready: Times,
    /// Lists all N alive, since the first spawn.
    converged: Times,
    /// The final all-at-once check after everyone converged (None: all converged).
    stable: Option<String>,
    /// Agents whose readiness line or behaviour was unexpected.
    anomalies: Vec<String>,
    /// Logs of the slowest agents if the run missed the target.
    late_logs: Vec<(String, String)>,
    /// The partition of this run's cluster, or why it was not run.
    partition: std::result::Result<PartitionRun, String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PartitionRun {
    /// n1..n{side_a} on one side, the rest on the other.
    side_a: usize,
    cut_s: f64,
    /// Per agent: seconds after the cut until a poll showed the whole other side failed.
    detected: Vec<Option<f64>>,
    /// Per agent at the end of the cut: members of the other side listed failed (None: no
    /// answer).
    other_failed: Vec<Option<usize>>,
    /// Per agent at the end of the cut: members of its own side not listed alive.
    own_not_alive: Vec<usize>,
    /// At the end of the cut, agents that did not list the whole other side failed, or their
    /// own side alive: what they listed instead.
    cut_lag: Vec<String>,
    /// Over every (agent, other-side member) pair: median, 90th percentile and max of the
    /// time after the cut until the agent listed the member failed.
    /// (`None`: infinite, some pair was never listed failed; JSON has no infinity.)
    pair_median: Option<f64>,
    pair_p90: Option<f64>,
    pair_max: Option<f64>,
    /// The slowest pairs with the statuses the agent listed.
    slow_pairs: Vec<String>,
    /// Other-side members listed failed and later not, while still cut off.
    cut_flaps: Vec<String>,
    /// After the heal: own-side members an agent listed as anything but alive.
    heal_flaps: Vec<String>,
    /// member-failed handler lines written after the heal (for own-side members: the other
    /// side's verdict on them arriving with the heal).
    failed_after_heal: usize,
    failed_after_heal_own: usize,
    /// Agents whose member-failed handler named the whole other side by the end of the cut.
    failed_handled: usize,
    /// member-failed handler lines during the cut naming a member of the agent's own side.
    failed_own_side: usize,
    /// member-join handler lines during the cut (a member came back while cut off: the cut
    /// leaked, or a member flapped).
    join_during_cut: usize,
    /// Packets the two DROP rules dropped.
    dropped: Option<u64>,
    /// Lists all N alive, since the rules were deleted.
    healed: Times,
    heal_stable: Option<String>,
    /// member-join handler lines written after the heal.
    join_lines: usize,
    /// Agents whose new member-join lines name each member of the other side exactly once and
    /// nothing else.
    join_exact: usize,
    /// (agent, other-side member) pairs with no member-join line.
    join_missing: usize,
    /// Lines beyond the first for the same (agent, member).
    join_duplicates: usize,
    /// Lines naming a member of the agent's own side.
    join_own_side: usize,
    late_logs: Vec<(String, String)>,
}

/// One run of the random join (in the bench's own namespace).
struct RandomRun {
    names: Vec<String>,
    spawn_s: f64,
    /// When the last agent was started, since the first was.
    last_start_s: f64,
    /// Lists all N alive, since the first spawn.
    converged: Times,
    stable: Option<String>,
    late_logs: Vec<(String, String)>,
    /// If the agents did not converge: the groups of agents with the same view at the end, and
    /// the agents whose --join target is outside their group.
    groups: Vec<String>,
}

struct ConvergenceReport {
    c: ConvSettings,
    netns: NetnsOutcome,
    random: Vec<RandomRun>,
}

async fn convergence_section(
    s: &Settings,
    c: ConvSettings,
    rng: &mut Rng,
) -> Result<ConvergenceReport> {
    let netns = match outer_convergence_run(s, c).await {
        Ok(outcome) => outcome,
        Err(e) => NetnsOutcome::Skipped(format!("{e:#}")),
    };
    let mut random = Vec::new();
    for run in 1..=c.runs {
        let r = random_join_run(s, c, rng, run).await?;
        progress(&format!(
            "[converge] random join {run}/{}: all list {} alive {} after the first start, {} \
             after the last",
            c.runs,
            c.n,
            fmt_s(worst(&r.converged)),
            fmt_s(worst(&r.converged) - r.last_start_s)
        ));
        random.push(r);
    }
    Ok(ConvergenceReport { c, netns, random })
}

/// N agents started one after the other, each joining a random running one (the existing
/// startup); then every agent is polled until it lists all N alive.
async fn random_join_run(
    s: &Settings,
    c: ConvSettings,
    rng: &mut Rng,
    run: usize,
) -> Result<RandomRun> {
    let mut cluster = Cluster::new(&format!("random{run}"), s.keep_logs)?;
    cluster.log_level = s.agent_log_level.clone();
    progress(&format!(
        "[converge] random join {run}/{}: starting {} agents",
        c.runs, c.n
    ));
    let start = Instant::now();
    let mut last_start = start;
    for i in 0..c.n {
        if i + 1 == c.n {
            last_start = Instant::now();
        }
        cluster.spawn(rng).await?;
    }
    let spawn = start.elapsed();
    let names: Vec<String> = cluster.agents.iter().map(|a| a.name.clone()).collect();
    let expected = Arc::new(cluster.names());
    let clients = cluster.clients();
    let converged = converge_each(&clients, &expected, start, Instant::now() + s.timeout).await;
    let stable = all_converged(&clients, &names, &expected).await;
    let logs: Vec<PathBuf> = cluster.agents.iter().map(|a| a.log.clone()).collect();
    let (late_logs, groups) = if worst(&converged).is_finite() {
        (Vec::new(), Vec::new())
    } else {
        (
            late_logs(&names, &logs, &converged),
            view_groups(&cluster).await,
        )
    };
    cluster.stop().await;
    Ok(RandomRun {
        names,
        spawn_s: spawn.as_secs_f64(),
        last_start_s: last_start.duration_since(start).as_secs_f64(),
        converged,
        stable,
        late_logs,
        groups,
    })
}

/// Groups the agents by the set of members they list alive; names the agents whose --join
/// target is in another group.
async fn view_groups(cluster: &Cluster) -> Vec<String> {
    let views = members_of_all(&cluster.clients()).await;
    let mut groups: BTreeMap<Vec<String>, Vec<usize>> = BTreeMap::new();
    for (i, view) in views.iter().enumerate() {
        let alive: Vec<String> = view.as_ref().map_or(Vec::new(), |v| {
            let mut a: Vec<String> = v
                .members
                .iter()
                .filter(|m| m.status == "alive")
                .map(|m| m.name.clone())
                .collect();
            a.sort();
            a
        });
        groups.entry(alive).or_default().push(i);
    }
    let group_of = |name: &str| {
        groups
            .values()
            .position(|g| g.iter().any(|&i| cluster.agents[i].name == name))
    };
    groups
        .iter()
        .enumerate()
        .map(|(g, (alive, members))| {
            let names: Vec<&str> = members
                .iter()
                .map(|&i| cluster.agents[i].name.as_str())
                .collect();
            let outside: Vec<String> = members
                .iter()
                .map(|&i| &cluster.agents[i])
                .filter_map(|a| {
                    let target = a.joined_to.as_deref()?;
                    (group_of(target) != Some(g)).then(|| format!("{} (--join {target})", a.name))
                })
                .collect();
            format!(
                "{} agents list {} alive: {}{}",
                members.len(),
                alive.len(),
                short_list(&names),
                if outside.is_empty() {
                    String::new()
                } else {
                    format!("; joined outside the group: {}", outside.join(", "))
                }
            )
        })
        .collect()
}

async fn outer_convergence_run(s: &Settings, c: ConvSettings) -> Result<NetnsOutcome> {
    let netns = own_namespace("net")?;
    let mntns = own_namespace("mnt")?;
    progress(&format!(
        "[converge] re-running inside `unshare --net --mount` ({} agents, {} runs, {} s \
         partitions)",
        c.n,
        c.runs,
        c.partition.as_secs()
    ));
    let mut args: Vec<String> = vec!["--in-netns-convergence".into(), netns];
    args.extend(["--parent-mntns".into(), mntns]);
    args.extend(["--convergence-nodes".into(), c.n.to_string()]);
    args.extend(["--convergence-runs".into(), c.runs.to_string()]);
    args.extend(["--partition-secs".into(), c.partition.as_secs().to_string()]);
    args.extend(["--timeout-secs".into(), s.timeout.as_secs().to_string()]);
    args.extend(["--seed".into(), s.seed.to_string()]);
    if let Some(level) = &s.agent_log_level {
        args.extend(["--agent-log-level".into(), level.clone()]);
    }
    if !c.snat {
        args.push("--no-snat".into());
    }
    if s.keep_logs {
        args.push("--keep-logs".into());
    }
    // Per run: convergence and heal deadlines, the cut, settling and handler waits.
    let per_run = s.timeout * 2 + c.partition + HANDLER_WAIT + Duration::from_secs(30);
    let limit = per_run * u32::try_from(c.runs).unwrap_or(u32::MAX) + Duration::from_secs(60);
    Ok(
        match reexec_unshared::<NetnsOutcome>(&["--net", "--mount"], &args, limit).await {
            Ok(outcome) => outcome,
            Err(why) => NetnsOutcome::Skipped(why),
        },
    )
}

/// The private namespaces' state: the hosts file bind-mounted over /etc/hosts.
struct NetnsSetup {
    _dir: tempfile::TempDir,
    resolved: usize,
    /// Why the partition cannot run (no iprange match), if so.
    no_partition: Option<String>,
    /// Why there is no per-agent source NAT, if there is none.
    no_snat: Option<String>,
}

/// Inside `unshare --net --mount`: lo up, /etc/hosts mapping `peers` to 127.0.0.1..N, iprange
/// check. Refuses to touch anything if either namespace is the parent's.
async fn setup_convergence_ns(
    parent_net: &str,
    parent_mnt: Option<&str>,
    c: ConvSettings,
) -> Result<NetnsSetup> {
    let n = c.n;
    let net = own_namespace("net")?;
    if net == parent_net {
        bail!("not in a private network namespace ({net}); refusing to add iptables rules");
    }
    let mnt = own_namespace("mnt")?;
    match parent_mnt {
        Some(parent) if parent != mnt => {}
        _ => bail!("not in a private mount namespace ({mnt}); refusing to mount over /etc/hosts"),
    }
    run_tool("ip", &["link", "set", "lo", "up"]).await?;
    let dir = tempfile::Builder::new()
        .prefix("shoal-bench-hosts-")
        .tempdir()
        .context("create a temporary directory")?;
    let hosts = dir.path().join("hosts");
    let mut text = String::from("127.0.0.1 localhost\n");
    for k in 1..=n {
        let _ = writeln!(text, "127.0.0.{k} peers");
    }
    std::fs::write(&hosts, &text).with_context(|| format!("write {}", hosts.display()))?;
    let hosts_str = hosts.to_str().context("the hosts file path is not UTF-8")?;
    run_tool("mount", &["--bind", hosts_str, "/etc/hosts"])
        .await
        .context("mount --bind")?;
    if std::fs::read_to_string("/etc/hosts").ok().as_deref() != Some(text.as_str()) {
        bail!("/etc/hosts does not show the bind-mounted file");
    }
    let resolved = tokio::net::lookup_host(format!("peers:{SIMUL_PORT}"))
        .await
        .map(|addrs| addrs.count())
        .unwrap_or(0);
    // The iprange match: add and delete a rule that matches nothing we send.
    let probe = [
        "INPUT",
        "-m",
        "iprange",
        "--src-range",
        "127.0.0.255-127.0.0.255",
        "-j",
        "RETURN",
    ];
    let no_partition = match run_tool("iptables", &[&["-A"][..], &probe[..]].concat()).await {
        Ok(_) => {
            run_tool("iptables", &[&["-D"][..], &probe[..]].concat()).await?;
            None
        }
        Err(e) => Some(format!("iptables iprange match unavailable: {e:#}")),
    };
    let no_snat = if c.snat {
        source_nat(n).await.err().map(|e| format!("{e:#}"))
    } else {
        Some("--no-snat".into())
    };
    Ok(NetnsSetup {
        _dir: dir,
        resolved,
        no_partition,
        no_snat,
    })
}

/// Gives every agent's connections its own source address: a TCP connect from a socket that is
/// not bound (the agent's push-pull) leaves from 127.0.0.1, whoever makes it; agent K runs as
/// uid UID_BASE+K and this rewrites its 127.0.0.1 to 127.0.0.K, as if each agent had an
/// address of its own (a container). Without it the partition's iprange rules would drop every
/// push-pull into the second half and let every push-pull from it into the first half through.
async fn source_nat(n: usize) -> Result<()> {
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

async fn inner_convergence_run(
    s: &Settings,
    parent_net: &str,
    parent_mnt: Option<&str>,
) -> Result<()> {
    let c = s
        .convergence
        .context("--in-netns-convergence with --no-convergence")?;
    let outcome = match setup_convergence_ns(parent_net, parent_mnt, c).await {
        Err(e) => NetnsOutcome::Skipped(format!("{e:#}")),
        Ok(setup) => {
            if setup.resolved != c.n {
                progress(&format!(
                    "[converge] warning: peers:{SIMUL_PORT} resolves to {} addresses, not {}",
                    setup.resolved, c.n
                ));
            }
            if let Some(why) = &setup.no_snat {
                progress(&format!(
                    "[converge] no per-agent source NAT ({why}): the partition will leak"
                ));
            }
            let mut runs = Vec::new();
            for run in 1..=c.runs {
                runs.push(
                    simul_run(
                        s,
                        c,
                        run,
                        setup.no_partition.as_deref(),
                        setup.no_snat.is_none(),
                    )
                    .await?,
                );
            }
            let _ = run_tool("umount", &["/etc/hosts"]).await;
            NetnsOutcome::Done(NetnsReport {
                n: c.n,
                resolved: setup.resolved,
                partition_skipped: setup.no_partition,
                no_snat: setup.no_snat,
                runs,
            })
        }
    };
    println!(
        "{}",
        serde_json::to_string(&outcome).context("serialize the convergence result")?
    );
    Ok(())
}

/// The handler of the convergence agents: every member-join and member-failed member as a
/// line (`NAME<TAB>IP<TAB>ROLE<TAB>TAGS`) in `DIR/<self>.<event>`. Only `sh` and `cat`: cheap,
/// as 50 agents run it at once while they converge.
fn join_handler_spec(dir: &Path) -> Result<String> {
    let dir = dir
        .to_str()
        .context("the temporary directory path is not UTF-8")?;
    if dir.contains('\'') {
        bail!("the temporary directory path {dir:?} contains a quote");
    }
    Ok(format!(
        "member-join,member-failed=cat >> '{dir}'/\"$SERF_SELF_NAME.$SERF_EVENT\""
    ))
}

/// The member names of a handler file's lines.
fn handler_names(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .map(|text| {
            text.lines()
                .filter_map(|l| l.split('\t').next())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// One agent of the simultaneous start: nK on 127.0.0.K:7948.
struct SimulAgent {
    name: String,
    child: Child,
    log: PathBuf,
}

/// The two DROP rules of the partition; deleted on drop if still in place.
struct Cut {
    rules: Vec<Vec<String>>,
    active: bool,
}

impl Cut {
    fn new(side_a: usize, n: usize) -> Self {
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

    async fn apply(&mut self, op: &str) -> Result<()> {
        for rule in &self.rules {
            let mut args = vec![op];
            args.extend(rule.iter().map(String::as_str));
            run_tool("iptables", &args).await?;
        }
        Ok(())
    }

    async fn install(&mut self) -> Result<()> {
        self.active = true;
        self.apply("-A").await
    }

    async fn remove(&mut self) -> Result<()> {
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

/// Packets dropped so far by the DROP rules of INPUT.
async fn dropped_packets() -> Option<u64> {
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

/// Starts all N agents at once with identical arguments (only SHOAL_BIND and SHOAL_NODE
/// differ), times until each lists all N alive, then partitions and heals the cluster.
async fn simul_run(
    s: &Settings,
    c: ConvSettings,
    run: usize,
    no_partition: Option<&str>,
    snat: bool,
) -> Result<SimulRun> {
    let n = c.n;
    let dir = tempfile::Builder::new()
        .prefix(&format!("shoal-bench-simul{run}-"))
        .disable_cleanup(s.keep_logs)
        .tempdir()
        .context("create a temporary directory")?;
    let handlers = dir.path().join("handlers");
    let logs = dir.path().join("logs");
    for d in [&handlers, &logs] {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    if snat {
        // The agents (and their handlers) run as other users: they must reach the handler
        // directory and write to it.
        use std::os::unix::fs::PermissionsExt as _;
        for (d, mode) in [(dir.path(), 0o755), (handlers.as_path(), 0o777)] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("chmod {}", d.display()))?;
        }
    }
    if s.keep_logs {
        progress(&format!(
            "keeping logs and handler output in {}",
            dir.path().display()
        ));
    }
    let spec = join_handler_spec(&handlers)?;
    let names: Vec<String> = (1..=n).map(|k| format!("n{k}")).collect();
    let mut cmds = Vec::new();
    let mut log_paths = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let log = logs.join(format!("{name}.log"));
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let mut cmd = Command::new(SHOAL);
        cmd.args(["agent", "--join", &format!("peers:{SIMUL_PORT}")])
            .args(["--profile", "lan", "--control", "127.0.0.1:0"])
            .arg("--event-handler")
            .arg(&spec);
        clean_env(&mut cmd);
        cmd.env("SHOAL_BIND", format!("127.0.0.{}:{SIMUL_PORT}", i + 1))
            .env("SHOAL_NODE", name);
        if let Some(level) = &s.agent_log_level {
            cmd.env("SHOAL_LOG_LEVEL", level);
        }
        if snat {
            let id = UID_BASE + i as u32 + 1;
            cmd.uid(id).gid(id);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        cmds.push(cmd);
        log_paths.push(log);
    }

    progress(&format!(
        "[converge] simultaneous start {run}/{}: starting {n} agents at once",
        c.runs
    ));
    let mut agents = Vec::new();
    let mut stdouts = Vec::new();
    let t0 = Instant::now();
    for (cmd, (name, log)) in cmds.iter_mut().zip(names.iter().zip(&log_paths)) {
        let mut child = cmd.spawn().with_context(|| format!("cannot run {SHOAL}"))?;
        stdouts.push(child.stdout.take().context("stdout not piped")?);
        agents.push(SimulAgent {
            name: name.clone(),
            child,
            log: log.clone(),
        });
    }
    let spawn_spread = t0.elapsed();
    let deadline = t0 + s.timeout;
    let expected = Arc::new(names.iter().cloned().collect::<BTreeSet<String>>());

    let mut set = JoinSet::new();
    for (i, stdout) in stdouts.into_iter().enumerate() {
        let name = agents[i].name.clone();
        let log = agents[i].log.clone();
        let expected = expected.clone();
        set.spawn(async move {
            let mut stdout = BufReader::new(stdout);
            let limit = deadline.saturating_duration_since(Instant::now());
            let ready = read_ready(&name, &mut stdout, &log, limit).await;
            let ready_s = t0.elapsed().as_secs_f64();
            let want = format!("127.0.0.{}:{SIMUL_PORT}", i + 1);
            match ready {
                Err(e) => {
                    let why = format!("{e:#}");
                    let first = why.lines().next().unwrap_or_default().to_string();
                    (
                        i,
                        stdout,
                        Err(first),
                        None,
                        Err("never ready".to_string()),
                        None,
                    )
                }
                Ok(r) => {
                    let anomaly = (r.advertise != want)
                        .then(|| format!("{name} advertises {}, expected {want}", r.advertise));
                    let client = Client::new(r.control);
                    let conv = watch_converge(&client, &expected, t0, deadline).await;
                    (i, stdout, Ok(ready_s), Some(client), conv, anomaly)
                }
            }
        });
    }
    let mut ready: Times = vec![Err("task failed".into()); n];
    let mut converged: Times = vec![Err("task failed".into()); n];
    let mut clients: Vec<Option<Client>> = vec![None; n];
    let mut anomalies = Vec::new();
    // Kept open so no agent writes to a closed pipe.
    let mut _stdouts = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (i, stdout, r, client, conv, anomaly) = joined.context("a watcher task failed")?;
        _stdouts.push(stdout);
        ready[i] = r;
        converged[i] = conv;
        clients[i] = client;
        anomalies.extend(anomaly);
    }
    let all_ready = clients.iter().all(Option::is_some);
    let live: Vec<Client> = clients.iter().flatten().cloned().collect();
    let stable = if all_ready {
        all_converged(&live, &names, &expected).await
    } else {
        Some(format!(
            "{} agents never printed their readiness line",
            clients.iter().filter(|c| c.is_none()).count()
        ))
    };
    let all = worst(&converged);
    progress(&format!(
        "[converge] simultaneous start {run}/{}: spawned within {:.3} s, all list {n} alive \
         after {} (slowest {})",
        c.runs,
        spawn_spread.as_secs_f64(),
        fmt_s(all),
        slowest_names(&names, &converged, LATE_AGENTS)
    ));
    let late = if all > TARGET_SIMUL_S {
        late_logs(&names, &log_paths, &converged)
    } else {
        Vec::new()
    };

    let partition = match (no_partition, all.is_finite() && all_ready) {
        (Some(why), _) => Err(why.to_string()),
        (None, false) => Err("the cluster did not converge".to_string()),
        (None, true) => {
            let clients: Vec<Client> = clients.into_iter().flatten().collect();
            Ok(partition_run(s, c, run, &names, &clients, &handlers, &log_paths).await?)
        }
    };

    for agent in &mut agents {
        let _ = agent.child.start_kill();
    }
    for agent in &mut agents {
        let _ = tokio::time::timeout(Duration::from_secs(5), agent.child.wait()).await;
    }
    Ok(SimulRun {
        names,
        spawn_spread_s: spawn_spread.as_secs_f64(),
        ready,
        converged,
        stable,
        anomalies,
        late_logs: late,
        partition,
    })
}

/// What one agent listed for the other side during the cut.
struct CutWatch {
    /// Seconds after the cut until a poll showed the whole other side failed.
    all_failed: Option<f64>,
    /// Per member of the other side: its status changes, (seconds after the cut, status), the
    /// first being the status at the first poll.
    history: BTreeMap<String, Vec<(f64, String)>>,
}

impl CutWatch {
    /// When `member` was first listed failed.
    fn failed_at(&self, member: &str) -> Option<f64> {
        self.history
            .get(member)?
            .iter()
            .find(|(_, status)| status == "failed")
            .map(|(t, _)| *t)
    }

    /// `alive 0.0 s, suspect 2.1 s, failed 3.4 s`.
    fn history_of(&self, member: &str) -> String {
        self.history.get(member).map_or("never listed".into(), |h| {
            h.iter()
                .map(|(t, status)| format!("{status} {t:.1} s"))
                .collect::<Vec<_>>()
                .join(", ")
        })
    }
}

/// Polls one agent every [`PARTITION_POLL`] until `end`, recording the status changes of the
/// members of `other`.
async fn watch_cut(
    client: Client,
    other: Arc<BTreeSet<String>>,
    since: Instant,
    end: Instant,
) -> CutWatch {
    let mut watch = CutWatch {
        all_failed: None,
        history: BTreeMap::new(),
    };
    loop {
        let tick = Instant::now();
        if tick >= end {
            return watch;
        }
        if let Some(view) = get_members(&client).await {
            let t = since.elapsed().as_secs_f64();
            let mut failed = 0;
            for m in view.members.iter().filter(|m| other.contains(&m.name)) {
                failed += usize::from(m.status == "failed");
                let h = watch.history.entry(m.name.clone()).or_default();
                if h.last().is_none_or(|(_, last)| *last != m.status) {
                    h.push((t, m.status.clone()));
                }
            }
            if failed == other.len() && watch.all_failed.is_none() {
                watch.all_failed = Some(t);
            }
        }
        tokio::time::sleep_until((tick + PARTITION_POLL).min(end).into()).await;
    }
}

/// [`watch_converge`] after the heal, also noting members of the agent's own side (never cut
/// off from it) that it listed as anything but alive meanwhile.
async fn watch_heal(
    client: &Client,
    expected: &BTreeSet<String>,
    own: &BTreeSet<String>,
    since: Instant,
    deadline: Instant,
) -> (std::result::Result<f64, String>, Vec<String>) {
    let mut flaps: Vec<String> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    loop {
        let tick = Instant::now();
        let last = match get_members(client).await {
            Some(view) => {
                let t = since.elapsed().as_secs_f64();
                for m in view.members.iter().filter(|m| own.contains(&m.name)) {
                    if m.status != "alive" && seen.insert(m.name.clone()) {
                        flaps.push(format!("{} {} at {t:.2} s", m.name, m.status));
                    }
                }
                match alive_lag(&view, expected) {
                    None => return (Ok(t), flaps),
                    Some(why) => why,
                }
            }
            None => "no answer".to_string(),
        };
        if Instant::now() >= deadline {
            return (Err(last), flaps);
        }
        tokio::time::sleep_until((tick + CONVERGE_POLL).into()).await;
    }
}

/// After convergence: cut the cluster in two with iptables for `c.partition`, check each side
/// lists the other failed, delete the rules and time until every agent lists all N alive again;
/// count the member-join handler lines for the returning members.
async fn partition_run(
    s: &Settings,
    c: ConvSettings,
    run: usize,
    names: &[String],
    clients: &[Client],
    handlers: &Path,
    logs: &[PathBuf],
) -> Result<PartitionRun> {
    let n = c.n;
    let side_a = c.side_a();
    let sides: [Arc<BTreeSet<String>>; 2] = [
        Arc::new(names[..side_a].iter().cloned().collect()),
        Arc::new(names[side_a..].iter().cloned().collect()),
    ];
    // Side index of agent i, and the other side.
    let side = |i: usize| usize::from(i >= side_a);
    let join_files: Vec<PathBuf> = names
        .iter()
        .map(|a| handler_file(handlers, a, "member-join"))
        .collect();
    let failed_files: Vec<PathBuf> = names
        .iter()
        .map(|a| handler_file(handlers, a, "member-failed"))
        .collect();

    tokio::time::sleep(SETTLE).await;
    let count_lines = |files: &[PathBuf]| -> Vec<usize> {
        files.iter().map(|f| handler_names(f).len()).collect()
    };
    let join_base = count_lines(&join_files);
    let failed_base: Vec<usize> = failed_files
        .iter()
        .map(|f| handler_names(f).len())
        .collect();
    let dropped0 = dropped_packets().await;

    progress(&format!(
        "[converge] partition {run}/{}: cutting n1..n{side_a} from n{}..n{n} for {} s",
        c.runs,
        side_a + 1,
        c.partition.as_secs()
    ));
    let mut cut = Cut::new(side_a, n);
    cut.install().await?;
    let t_cut = Instant::now();
    let end = t_cut + c.partition;
    let mut set = JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        let other = sides[1 - side(i)].clone();
        set.spawn(async move { (i, watch_cut(client, other, t_cut, end).await) });
    }
    let mut watches: Vec<Option<CutWatch>> = (0..n).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let (i, w) = joined.context("a watcher task failed")?;
        watches[i] = Some(w);
    }
    let watches: Vec<CutWatch> = watches.into_iter().flatten().collect();
    let detected: Vec<Option<f64>> = watches.iter().map(|w| w.all_failed).collect();
    // Every (agent, other-side member) pair: when the agent first listed it failed.
    let mut pairs: Vec<(f64, usize, String)> = Vec::new();
    for (i, w) in watches.iter().enumerate() {
        for m in sides[1 - side(i)].iter() {
            let t = w.failed_at(m).unwrap_or(f64::INFINITY);
            pairs.push((t, i, m.clone()));
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let pair_times: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    let slow_pairs: Vec<String> = pairs
        .iter()
        .take(LATE_AGENTS)
        .map(|(_, i, m)| format!("{} listed {m}: {}", names[*i], watches[*i].history_of(m)))
        .collect();
    // Members of the other side listed failed and later not failed, while still cut off.
    let mut cut_flaps = Vec::new();
    for (i, w) in watches.iter().enumerate() {
        for (m, h) in &w.history {
            if let Some(first) = h.iter().position(|(_, s)| s == "failed")
                && h[first..].iter().any(|(_, s)| s != "failed")
            {
                cut_flaps.push(format!("{} listed {m}: {}", names[i], w.history_of(m)));
            }
        }
    }
    tokio::time::sleep_until(end.into()).await;
    // The state at the end of the cut, just before the heal.
    let views = members_of_all(clients).await;
    let mut other_failed = Vec::new();
    let mut own_not_alive = Vec::new();
    let mut cut_lag = Vec::new();
    for (i, view) in views.iter().enumerate() {
        let (own, other) = (&sides[side(i)], &sides[1 - side(i)]);
        match view {
            None => {
                other_failed.push(None);
                own_not_alive.push(0);
            }
            Some(view) => {
                let count = |set: &BTreeSet<String>, status: &str| {
                    view.members
                        .iter()
                        .filter(|m| m.status == status && set.contains(&m.name))
                        .count()
                };
                other_failed.push(Some(count(other, "failed")));
                own_not_alive.push(own.len() - count(own, "alive"));
                let odd: Vec<String> = view
                    .members
                    .iter()
                    .filter(|m| {
                        (other.contains(&m.name) && m.status != "failed")
                            || (own.contains(&m.name) && m.status != "alive")
                    })
                    .map(|m| format!("{} {}", m.name, m.status))
                    .collect();
                if !odd.is_empty() {
                    cut_lag.push(format!("{} lists {}", names[i], short_list(&odd)));
                }
            }
        }
    }
    let mut failed_handled = 0;
    let mut failed_own_side = 0;
    for (i, f) in failed_files.iter().enumerate() {
        let seen: Vec<String> = handler_names(f).into_iter().skip(failed_base[i]).collect();
        if sides[1 - side(i)].iter().all(|m| seen.contains(m)) {
            failed_handled += 1;
        }
        failed_own_side += seen.iter().filter(|m| sides[side(i)].contains(*m)).count();
    }
    let join_heal_base = count_lines(&join_files);
    let failed_heal_base = count_lines(&failed_files);
    let join_during_cut: usize = join_heal_base
        .iter()
        .zip(&join_base)
        .map(|(b, a)| b.saturating_sub(*a))
        .sum();
    let dropped = match (dropped0, dropped_packets().await) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };

    cut.remove().await?;
    let t_heal = Instant::now();
    let cut_s = t_heal.duration_since(t_cut).as_secs_f64();
    let all = Arc::new(names.iter().cloned().collect::<BTreeSet<String>>());
    let mut set = JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        let all = all.clone();
        let own = sides[side(i)].clone();
        let deadline = t_heal + s.timeout;
        set.spawn(async move { (i, watch_heal(&client, &all, &own, t_heal, deadline).await) });
    }
    let mut healed: Times = vec![Err("watcher failed".into()); n];
    let mut heal_flaps = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (i, (t, flaps)) = joined.context("a watcher task failed")?;
        healed[i] = t;
        if !flaps.is_empty() {
            heal_flaps.push(format!("{} listed {}", names[i], short_list(&flaps)));
        }
    }
    let heal_stable = all_converged(clients, names, &all).await;
    progress(&format!(
        "[converge] partition {run}/{}: {} of {n} agents listed the whole other side failed; \
         all list {n} alive {} after the heal (slowest {})",
        c.runs,
        other_failed
            .iter()
            .enumerate()
            .filter(|(i, f)| **f == Some(sides[1 - side(*i)].len()))
            .count(),
        fmt_s(worst(&healed)),
        slowest_names(names, &healed, LATE_AGENTS)
    ));

    // Wait for the member-join handlers to finish: no new line for HANDLER_QUIET.
    let waited = Instant::now();
    let total = || -> usize { join_files.iter().map(|f| handler_names(f).len()).sum() };
    let mut last = (total(), Instant::now());
    while waited.elapsed() < HANDLER_WAIT && last.1.elapsed() < HANDLER_QUIET {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = total();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let mut report = PartitionRun {
        side_a,
        cut_s,
        detected,
        other_failed,
        own_not_alive,
        cut_lag,
        pair_median: Some(median(&pair_times)).filter(|v| v.is_finite()),
        pair_p90: Some(percentile(&pair_times, 90.0)).filter(|v| v.is_finite()),
        pair_max: Some(fmax(&pair_times)).filter(|v| v.is_finite()),
        slow_pairs,
        cut_flaps,
        heal_flaps,
        failed_after_heal: 0,
        failed_after_heal_own: 0,
        failed_handled,
        failed_own_side,
        join_during_cut,
        dropped,
        late_logs: if worst(&healed) > TARGET_HEAL_S {
            late_logs(names, logs, &healed)
        } else {
            Vec::new()
        },
        healed,
        heal_stable,
        join_lines: 0,
        join_exact: 0,
        join_missing: 0,
        join_duplicates: 0,
        join_own_side: 0,
    };
    for (i, file) in failed_files.iter().enumerate() {
        let new: Vec<String> = handler_names(file)
            .into_iter()
            .skip(failed_heal_base[i])
            .collect();
        report.failed_after_heal += new.len();
        report.failed_after_heal_own += new.iter().filter(|m| sides[side(i)].contains(*m)).count();
    }
    for (i, file) in join_files.iter().enumerate() {
        let new: Vec<String> = handler_names(file)
            .into_iter()
            .skip(join_heal_base[i])
            .collect();
        let other = &sides[1 - side(i)];
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for m in &new {
            *counts.entry(m.as_str()).or_default() += 1;
        }
        let missing = other
            .iter()
            .filter(|m| !counts.contains_key(m.as_str()))
            .count();
        let duplicates: usize = counts.values().map(|c| c - 1).sum();
        let own = new.iter().filter(|m| !other.contains(*m)).count();
        report.join_lines += new.len();
        report.join_missing += missing;
        report.join_duplicates += duplicates;
        report.join_own_side += own;
        if missing == 0 && duplicates == 0 && own == 0 {
            report.join_exact += 1;
        }
    }
    Ok(report)
}

impl ConvergenceReport {
    fn render(&self) -> String {
        let c = &self.c;
        let n = c.n;
        let mut out = format!(
            "\n=== convergence (lan profile, N = {n}, {} runs each; every agent's GET \
             /v1/members polled every {} ms; converged = lists all {n} alive) ===\n",
            c.runs,
            CONVERGE_POLL.as_millis()
        );
        let mut head = vec!["summary".to_string()];
        head.extend((1..=c.runs).map(|r| format!("run {r}")));
        head.extend(["worst".to_string(), format!("target (N={TARGET_CONV_N})")]);
        let head_refs: Vec<&str> = head.iter().map(String::as_str).collect();
        let mut summary = Table::new(&head_refs);
        let skipped_row = |label: &str, why: &str, target: String| {
            let mut row = vec![label.to_string()];
            row.extend((1..=c.runs).map(|_| "-".to_string()));
            row.extend([format!("skipped ({why})"), target]);
            row
        };
        const SIMUL: &str = "simultaneous start: all converged";
        const HEAL: &str = "partition heal: all converged after the cut";

        let _ = writeln!(
            out,
            "\n1. simultaneous start: {n} agents spawned back to back with the identical argv \
             `shoal agent --join peers:{SIMUL_PORT} --profile lan --control 127.0.0.1:0 \
             --event-handler <member-join,member-failed>`,\n   env \
             SHOAL_BIND=127.0.0.K:{SIMUL_PORT} SHOAL_NODE=nK; private net+mount namespace, \
             /etc/hosts maps `peers` to 127.0.0.1..127.0.0.{n}; seconds since the first spawn:"
        );
        let heal_row = match &self.netns {
            NetnsOutcome::Skipped(why) => {
                let _ = writeln!(out, "  skipped: {why}");
                summary.row(skipped_row(
                    SIMUL,
                    "see 1.",
                    format!("<= {TARGET_SIMUL_S} s"),
                ));
                skipped_row(HEAL, "see 3.", format!("<= {TARGET_HEAL_S} s"))
            }
            NetnsOutcome::Done(r) => {
                let (text, simul) = render_simul(n, r);
                out.push_str(&text);
                let w = fmax(&simul);
                let mut row = vec![SIMUL.to_string()];
                row.extend(simul.iter().map(|&v| fmt_s(v)));
                row.extend([
                    fmt_s(w),
                    format!("<= {TARGET_SIMUL_S} s {}", ok(w <= TARGET_SIMUL_S)),
                ]);
                summary.row(row);

                let mut row = vec![HEAL.to_string()];
                let mut ran = Vec::new();
                for run in &r.runs {
                    row.push(match &run.partition {
                        Ok(p) => {
                            ran.push(worst(&p.healed));
                            fmt_s(worst(&p.healed))
                        }
                        Err(_) => "skipped".into(),
                    });
                }
                if ran.is_empty() {
                    row.extend(["skipped (see 3.)".into(), format!("<= {TARGET_HEAL_S} s")]);
                } else {
                    let w = fmax(&ran);
                    let leaky = if r.no_snat.is_some() {
                        " (leaky cut)"
                    } else {
                        ""
                    };
                    row.extend([
                        fmt_s(w),
                        format!("<= {TARGET_HEAL_S} s {}{leaky}", ok(w <= TARGET_HEAL_S)),
                    ]);
                }
                row
            }
        };

        let (text, first, last) = self.render_random();
        out.push_str(&text);
        let mut row = vec!["random join: all converged since first start".to_string()];
        row.extend(first.iter().map(|&v| fmt_s(v)));
        row.extend([fmt_s(fmax(&first)), "-".into()]);
        summary.row(row);
        let mut row = vec!["random join: all converged since last start".to_string()];
        row.extend(last.iter().map(|&v| fmt_s(v)));
        row.extend([fmt_s(fmax(&last)), "-".into()]);
        summary.row(row);

        match &self.netns {
            NetnsOutcome::Skipped(why) => {
                let _ = writeln!(out, "\n3. partition heal\n  skipped: {why}");
            }
            NetnsOutcome::Done(r) => out.push_str(&render_partition(c, r)),
        }
        summary.row(heal_row);

        out.push('\n');
        out.push_str(&summary.render("  "));
        out
    }

    /// The random-join table; also the per-run times since the first and since the last start.
    fn render_random(&self) -> (String, Vec<f64>, Vec<f64>) {
        let n = self.c.n;
        let mut out = format!(
            "\n2. random join: {n} agents started one after another (each once the previous \
             printed its readiness line), each --join'ing one random running agent; the bench's \
             own namespace, 127.0.0.1 with port 0; seconds:\n"
        );
        let mut t = Table::new(&[
            "run",
            "spawned in",
            "median agent",
            "all converged since first start",
            "since last start",
            "slowest agents (since first start)",
        ]);
        for (i, r) in self.random.iter().enumerate() {
            t.row(vec![
                format!("{}", i + 1),
                fmt_s(r.spawn_s),
                fmt_s(median_of(&r.converged)),
                fmt_s(worst(&r.converged)),
                fmt_s(worst(&r.converged) - r.last_start_s),
                slowest_names(&r.names, &r.converged, LATE_AGENTS),
            ]);
        }
        let first: Vec<f64> = self.random.iter().map(|r| worst(&r.converged)).collect();
        let last: Vec<f64> = self
            .random
            .iter()
            .map(|r| worst(&r.converged) - r.last_start_s)
            .collect();
        t.row(vec![
            "worst".into(),
            String::new(),
            String::new(),
            fmt_s(fmax(&first)),
            fmt_s(fmax(&last)),
            String::new(),
        ]);
        out.push_str(&t.render("  "));
        for (i, r) in self.random.iter().enumerate() {
            for g in &r.groups {
                let _ = writeln!(out, "  run {}: split: {g}", i + 1);
            }
            render_run_notes(&mut out, i + 1, &r.names, &r.converged, &r.stable);
            render_late_logs(&mut out, i + 1, &r.late_logs);
        }
        (out, first, last)
    }
}

/// The simultaneous-start table; also the per-run times until all converged.
fn render_simul(n: usize, r: &NetnsReport) -> (String, Vec<f64>) {
    let mut out = String::new();
    if r.resolved != n {
        let _ = writeln!(
            out,
            "  NOTE: `peers:{SIMUL_PORT}` resolved to {} addresses, not {n}",
            r.resolved
        );
    }
    let mut t = Table::new(&[
        "run",
        "spawn spread",
        "all ready",
        "median agent",
        "all converged",
        "slowest agents",
    ]);
    for (i, run) in r.runs.iter().enumerate() {
        t.row(vec![
            format!("{}", i + 1),
            fmt_s(run.spawn_spread_s),
            fmt_s(worst(&run.ready)),
            fmt_s(median_of(&run.converged)),
            fmt_s(worst(&run.converged)),
            slowest_names(&run.names, &run.converged, LATE_AGENTS),
        ]);
    }
    let simul: Vec<f64> = r.runs.iter().map(|run| worst(&run.converged)).collect();
    let w = fmax(&simul);
    t.row(vec![
        "worst".into(),
        String::new(),
        String::new(),
        String::new(),
        fmt_s(w),
        format!("<= {TARGET_SIMUL_S} s {}", ok(w <= TARGET_SIMUL_S)),
    ]);
    out.push_str(&t.render("  "));
    for (i, run) in r.runs.iter().enumerate() {
        render_run_notes(&mut out, i + 1, &run.names, &run.converged, &run.stable);
        for a in &run.anomalies {
            let _ = writeln!(out, "  run {}: {a}", i + 1);
        }
        for (name, t) in run.names.iter().zip(&run.ready) {
            if let Err(why) = t {
                let _ = writeln!(out, "  run {}: {name} not ready: {why}", i + 1);
            }
        }
        render_late_logs(&mut out, i + 1, &run.late_logs);
    }
    (out, simul)
}

impl ConvergenceReport {
    /// The simultaneous-start and heal lines of the targets section.
    fn target_lines(&self) -> (String, String) {
        let n = self.c.n;
        let r = match &self.netns {
            NetnsOutcome::Skipped(why) => {
                return (format!("SKIPPED ({why})"), format!("SKIPPED ({why})"));
            }
            NetnsOutcome::Done(r) => r,
        };
        let simul = fmax(
            &r.runs
                .iter()
                .map(|run| worst(&run.converged))
                .collect::<Vec<_>>(),
        );
        let simul = format!(
            "N={n}: worst of {} runs {} {}",
            r.runs.len(),
            fmt_s(simul),
            ok(simul <= TARGET_SIMUL_S)
        );
        let heal: Vec<f64> = r
            .runs
            .iter()
            .filter_map(|run| run.partition.as_ref().ok().map(|p| worst(&p.healed)))
            .collect();
        let heal = if heal.is_empty() {
            match (
                &r.partition_skipped,
                r.runs.first().map(|run| &run.partition),
            ) {
                (Some(why), _) | (None, Some(Err(why))) => format!("SKIPPED ({why})"),
                _ => "SKIPPED".into(),
            }
        } else {
            let w = fmax(&heal);
            format!(
                "N={n}: worst of {} runs {} {}{}",
                heal.len(),
                fmt_s(w),
                ok(w <= TARGET_HEAL_S && heal.len() == r.runs.len()),
                if r.no_snat.is_some() {
                    " (leaky cut: no per-agent source NAT)"
                } else {
                    ""
                }
            )
        };
        (simul, heal)
    }
}

/// Timeouts and instability notes of one run.
fn render_run_notes(
    out: &mut String,
    run: usize,
    names: &[String],
    times: &Times,
    stable: &Option<String>,
) {
    const SHOWN: usize = 5;
    let late: Vec<(&String, &String)> = names
        .iter()
        .zip(times)
        .filter_map(|(name, t)| t.as_ref().err().map(|why| (name, why)))
        .collect();
    for (name, why) in late.iter().take(SHOWN) {
        let _ = writeln!(out, "  run {run}: {name} timeout: {why}");
    }
    if late.len() > SHOWN {
        let _ = writeln!(
            out,
            "  run {run}: {} more agents timed out",
            late.len() - SHOWN
        );
    }
    if let Some(why) = stable {
        let _ = writeln!(out, "  run {run}: final check: {why}");
    }
}

fn render_late_logs(out: &mut String, run: usize, logs: &[(String, String)]) {
    for (name, tail) in logs {
        let _ = writeln!(out, "  run {run}: log of {name} (last lines):");
        for line in tail.lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
}

fn render_partition(c: &ConvSettings, r: &NetnsReport) -> String {
    let n = c.n;
    let a = c.side_a();
    let mut out = format!(
        "\n3. partition heal: each run's cluster of 1., once converged (+ {} s), cut n1..n{a} | \
         n{}..n{n} for {} s by `iptables -A INPUT -m iprange --src-range 127.0.0.1-127.0.0.{a} \
         --dst-range 127.0.0.{}-127.0.0.{n} -j DROP` and the reverse rule, then the rules \
         deleted (the heal).\n   Every agent's member-join,member-failed handler appends one \
         line per member to a file of its own.\n",
        SETTLE.as_secs(),
        a + 1,
        c.partition.as_secs(),
        a + 1,
    );
    match &r.no_snat {
        None => {
            let _ = writeln!(
                out,
                "   Agent K runs as uid {UID_BASE}+K and its connections leave from 127.0.0.K \
                 (iptables owner match + SNAT), as from a container's own address."
            );
        }
        Some(why) => {
            let _ = writeln!(
                out,
                "   NOTE: no per-agent source NAT ({why}): the agents' TCP push-pulls leave from \
                 127.0.0.1, so the cut drops them within n{}..n{n} and lets them through from \
                 n{}..n{n} to n1..n{a}: the partition LEAKS.",
                a + 1,
                a + 1
            );
        }
    }
    if let Some(why) = &r.partition_skipped {
        let _ = writeln!(out, "  skipped: {why}");
        return out;
    }

    let _ = writeln!(out, "\n  during the cut:");
    let mut t = Table::new(&[
        "run",
        "cut",
        "dropped pkts",
        "agents listing the other side failed",
        "median agent saw it",
        "all did after",
        "own side not alive",
        "member-failed ran for the other side",
        "member-failed for own side",
        "member-join (expect 0)",
    ]);
    for (i, run) in r.runs.iter().enumerate() {
        match &run.partition {
            Err(why) => t.row(vec![format!("{}", i + 1), format!("skipped: {why}")]),
            Ok(p) => {
                let full = p
                    .other_failed
                    .iter()
                    .enumerate()
                    .filter(|(j, f)| **f == Some(if *j < a { n - a } else { a }))
                    .count();
                let detect: Vec<f64> = p
                    .detected
                    .iter()
                    .map(|d| d.unwrap_or(f64::INFINITY))
                    .collect();
                t.row(vec![
                    format!("{}", i + 1),
                    format!("{:.1} s", p.cut_s),
                    p.dropped.map_or("n/a".into(), |d| d.to_string()),
                    format!("{full}/{n}"),
                    fmt_s(median(&detect)),
                    fmt_s(fmax(&detect)),
                    p.own_not_alive.iter().sum::<usize>().to_string(),
                    format!("{}/{n}", p.failed_handled),
                    p.failed_own_side.to_string(),
                    p.join_during_cut.to_string(),
                ]);
            }
        }
    }
    out.push_str(&t.render("  "));
    let _ = writeln!(
        out,
        "  (listing the other side failed: every member of it `failed` at the end of the cut; \
         all did after: seconds after the cut until the last agent's poll (every {} ms) showed \
         it, `timeout` if some agent never did; own side not alive: (agent, member) pairs of the \
         same side not `alive` at the end of the cut; handler columns: agents whose member-failed \
         handler named the whole other side, and handler lines for the wrong members)",
        PARTITION_POLL.as_millis()
    );

    let expected_lines = a * (n - a) * 2;
    let _ = writeln!(
        out,
        "\n  after the heal (seconds since the rules were deleted; member-join lines written \
         after it):"
    );
    let mut t = Table::new(&[
        "run",
        "median agent",
        "all converged",
        "slowest agents",
        &format!("member-join lines (expect {expected_lines})"),
        "agents exact",
        "missing",
        "duplicate",
        "own side",
    ]);
    let mut heal = Vec::new();
    for (i, run) in r.runs.iter().enumerate() {
        match &run.partition {
            Err(why) => t.row(vec![format!("{}", i + 1), format!("skipped: {why}")]),
            Ok(p) => {
                heal.push(worst(&p.healed));
                t.row(vec![
                    format!("{}", i + 1),
                    fmt_s(median_of(&p.healed)),
                    fmt_s(worst(&p.healed)),
                    slowest_names(&run.names, &p.healed, LATE_AGENTS),
                    p.join_lines.to_string(),
                    format!("{}/{n}", p.join_exact),
                    p.join_missing.to_string(),
                    p.join_duplicates.to_string(),
                    p.join_own_side.to_string(),
                ]);
            }
        }
    }
    if !heal.is_empty() {
        let w = fmax(&heal);
        t.row(vec![
            "worst".into(),
            String::new(),
            fmt_s(w),
            format!("<= {TARGET_HEAL_S} s {}", ok(w <= TARGET_HEAL_S)),
        ]);
    }
    out.push_str(&t.render("  "));
    let _ = writeln!(
        out,
        "  (agents exact: the agent's member-join handler named each member of the other side \
         once and nothing else; missing: (agent, member) pairs with no line; duplicate: extra \
         lines for the same pair; own side: lines for members of the agent's own side)"
    );
    for (i, run) in r.runs.iter().enumerate() {
        let Ok(p) = &run.partition else { continue };
        for (name, f) in run.names.iter().zip(&p.other_failed) {
            if f.is_none() {
                let _ = writeln!(
                    out,
                    "  run {}: {name} did not answer at the end of the cut",
                    i + 1
                );
            }
        }
        let _ = writeln!(
            out,
            "  run {}: (agent, other-side member) pairs, time after the cut until listed failed: \
             median {}, p90 {}, max {}; slowest: {}",
            i + 1,
            fmt_s(p.pair_median.unwrap_or(f64::INFINITY)),
            fmt_s(p.pair_p90.unwrap_or(f64::INFINITY)),
            fmt_s(p.pair_max.unwrap_or(f64::INFINITY)),
            p.slow_pairs.join("; ")
        );
        if !p.cut_flaps.is_empty() {
            let _ = writeln!(
                out,
                "  run {}: {} times an agent listed a cut-off member failed and then not: {}",
                i + 1,
                p.cut_flaps.len(),
                short_list(&p.cut_flaps)
            );
        }
        if !p.heal_flaps.is_empty() {
            let _ = writeln!(
                out,
                "  run {}: after the heal {} agents listed a member of their own side (never cut \
                 off from them) as not alive (first sighting per member): {}",
                i + 1,
                p.heal_flaps.len(),
                short_list(&p.heal_flaps)
            );
        }
        if p.failed_after_heal > 0 {
            let _ = writeln!(
                out,
                "  run {}: member-failed handler lines after the heal: {} ({} for own-side \
                 members)",
                i + 1,
                p.failed_after_heal,
                p.failed_after_heal_own
            );
        }
        if !p.cut_lag.is_empty() {
            let _ = writeln!(
                out,
                "  run {}: at the end of the cut {} agents listed a member of the other side not \
                 failed or of their own side not alive: {}",
                i + 1,
                p.cut_lag.len(),
                short_list(&p.cut_lag)
            );
        }
        render_run_notes(&mut out, i + 1, &run.names, &p.healed, &p.heal_stable);
        render_late_logs(&mut out, i + 1, &p.late_logs);
    }
    out
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

fn render_targets(
    reports: &[SizeReport],
    loss: Option<&LossOutcome>,
    convergence: Option<&ConvergenceReport>,
) -> String {
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
    if let Some(conv) = convergence {
        let (simul, heal) = conv.target_lines();
        let _ = writeln!(
            out,
            "  simultaneous start, all converged <= {TARGET_SIMUL_S} s in every run: {simul}"
        );
        let _ = writeln!(
            out,
            "  partition heal, all converged <= {TARGET_HEAL_S} s after the cut in every run: \
             {heal}"
        );
    }
    if reports.iter().any(|r| r.n == TARGET_N) {
        let _ = writeln!(out, "  (* the size the targets are stated for)");
    }
    out
}
