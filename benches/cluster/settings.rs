//! The command line ([`Args`]) and the settings resolved from it ([`Settings`], with
//! `--quick`'s defaults, and [`ConvSettings`] for the convergence section).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "cluster",
    about = "shoal cluster benchmark: idle cost, failure/leave propagation, members latency, loss"
)]
pub struct Args {
    /// Cluster sizes, comma-separated [default: 5,20,50; with --quick: 5].
    #[arg(long, value_delimiter = ',', value_name = "N,N,...")]
    pub nodes: Option<Vec<usize>>,
    /// Length of the idle window [default: 60; with --quick: 10].
    #[arg(long, value_name = "SECS")]
    pub idle_secs: Option<u64>,
    /// kill -9 runs per cluster size [default: 10; with --quick: 3].
    #[arg(long, value_name = "N")]
    pub kills: Option<usize>,
    /// SIGTERM (graceful leave) runs per cluster size [default: 3; with --quick: 1].
    #[arg(long, value_name = "N")]
    pub leaves: Option<usize>,
    /// `shoal members` invocations timed per cluster size.
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub members_runs: usize,
    /// Packet loss probability of the loss run.
    #[arg(long, value_name = "P", default_value_t = 0.1)]
    pub loss: f64,
    /// Cluster size of the loss run.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub loss_nodes: usize,
    /// Pause runs per cluster size: an agent stopped (SIGSTOP) for --pause-secs, then continued
    /// [default: 3; with --quick: 1].
    #[arg(long, value_name = "N")]
    pub pauses: Option<usize>,
    /// Extra cold starts of N agents per size (after the main one), timed until all list N
    /// alive and stopped again [default: 5; with --quick: 1].
    #[arg(long, value_name = "N")]
    pub join_runs: Option<usize>,
    /// How long a pause run stops its agent.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub pause_secs: f64,
    /// Run HashiCorp Serf (`serf` from PATH) through the same scenarios and print the
    /// shoal/Serf ratios; fail if `serf` is not found [default: on if `serf` is on PATH].
    #[arg(long, conflicts_with = "no_serf")]
    pub serf: bool,
    /// Skip Serf.
    #[arg(long)]
    pub no_serf: bool,
    /// Seal all gossip: every shoal agent gets `--encrypt KEY`, every Serf agent
    /// `-encrypt=KEY`, with one random key for the run (the idle, members, pause, kill and
    /// leave scenarios; the loss and convergence runs stay plaintext).
    #[arg(long)]
    pub encrypt: bool,
    /// Drop probability of the second loss case, applied once the cluster has converged
    /// (UDP and TCP alike); 0 skips it.
    #[arg(long, value_name = "P", default_value_t = 0.5)]
    pub heavy_loss: f64,
    /// Skip the loss run (implied by --quick).
    #[arg(long)]
    pub no_loss: bool,
    /// Skip the convergence section (simultaneous start, random join, partition heal).
    #[arg(long)]
    pub no_convergence: bool,
    /// Runs of each convergence scenario; each is reported, and the worst [default: 3; with
    /// --quick: 1].
    #[arg(long, value_name = "N")]
    pub convergence_runs: Option<usize>,
    /// Cluster size of the convergence section, at most 254 [default: 50; with --quick: 10].
    #[arg(long, value_name = "N")]
    pub convergence_nodes: Option<usize>,
    /// How long the partition of the convergence section lasts [default: 20; with --quick: 5].
    #[arg(long, value_name = "SECS")]
    pub partition_secs: Option<u64>,
    /// Repetitions of each scenario of the messaging section (user event, query, tag change)
    /// [default: 20; with --quick: 3].
    #[arg(long, value_name = "N")]
    pub messaging_runs: Option<usize>,
    /// Cluster size of the messaging section.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub messaging_nodes: usize,
    /// Skip the messaging section.
    #[arg(long)]
    pub no_messaging: bool,
    /// Run only the scale scenario instead of the sections above: N agents on loopback
    /// started at once, then the idle window (--idle-secs) and kill -9 runs (--kills), with
    /// per-agent cost and the detection tail. See docs/benchmarks.md, "200 real agents".
    #[arg(long, value_name = "N")]
    pub scale: Option<usize>,
    /// Run the simultaneous-start agents as root with no per-agent source NAT: their TCP
    /// push-pulls then leave from 127.0.0.1, which the partition's iprange rules misplace
    /// (the cut leaks; for comparison).
    #[arg(long)]
    pub no_snat: bool,
    /// Log level of the convergence and messaging sections' agents (SHOAL_LOG_LEVEL)
    /// [default: the agent's, info].
    #[arg(long, value_name = "LEVEL")]
    pub agent_log_level: Option<String>,
    /// Smoke test: N=5 only, 10 s idle, 3 kills, 1 leave, no loss run, convergence at N=10 once
    /// with a 5 s partition.
    #[arg(long)]
    pub quick: bool,
    /// Deadline of every wait for a kill or a leave to be seen and handled, and for a
    /// replacement to converge.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout_secs: u64,
    /// Seed of the random choices (join targets, victims) [default: from the clock].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Keep the temporary directories (agent logs, handler output) and print where they are.
    #[arg(long)]
    pub keep_logs: bool,
    /// Internal: run only the loss scenario; we are inside `unshare --net`. The value is the
    /// parent's network namespace, which this run refuses to touch.
    #[arg(long, hide = true, value_name = "NETNS")]
    pub in_netns: Option<String>,
    /// Internal: run only the simultaneous-start and partition scenarios; we are inside
    /// `unshare --net --mount`. The value is the parent's network namespace.
    #[arg(long, hide = true, value_name = "NETNS")]
    pub in_netns_convergence: Option<String>,
    /// Internal: the parent's mount namespace (with --in-netns-convergence).
    #[arg(long, hide = true, value_name = "MNTNS")]
    pub parent_mntns: Option<String>,
    /// Internal (with --in-netns): run Serf, this binary, instead of shoal.
    #[arg(long, hide = true, value_name = "PATH")]
    pub loss_serf: Option<PathBuf>,
    /// Internal (with --in-netns): install the drop rule only once the cluster converged.
    #[arg(long, hide = true)]
    pub loss_late: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    pub bench: bool,
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub nodes: Vec<usize>,
    pub idle: Duration,
    pub kills: usize,
    pub leaves: usize,
    pub members_runs: usize,
    pub loss: Option<f64>,
    pub loss_p: f64,
    pub loss_nodes: usize,
    /// The second loss case's drop probability (applied after convergence), if any.
    pub heavy_loss: Option<f64>,
    pub pauses: usize,
    pub join_runs: usize,
    pub pause: Duration,
    pub serf: SerfChoice,
    pub loss_serf: Option<PathBuf>,
    pub loss_late: bool,
    pub timeout: Duration,
    pub seed: u64,
    pub keep_logs: bool,
    /// `None` with --no-convergence.
    pub convergence: Option<ConvSettings>,
    pub agent_log_level: Option<String>,
    /// `None` with --no-messaging.
    pub messaging: Option<MsgSettings>,
    /// `--scale N`: only the scale scenario, with N agents.
    pub scale: Option<usize>,
}

/// Settings of the messaging section.
#[derive(Debug, Clone, Copy)]
pub struct MsgSettings {
    pub n: usize,
    pub runs: usize,
}

/// Whether the run includes Serf.
#[derive(Debug, Clone)]
pub enum SerfChoice {
    /// --no-serf.
    Off,
    /// Not on PATH: the Serf columns are skipped, and the report says so and how to get it.
    Missing(String),
    /// The `serf` binary found on PATH.
    Found(PathBuf),
}

/// How to get Serf, for the report when it is missing.
pub const SERF_HOWTO: &str = "Debian's package `serf` (HashiCorp Serf 0.9.4): \
    `apt-get update && apt-get install -y serf` as root, or put a `serf` binary on PATH";

/// The first executable `name` in a directory of PATH.
fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

impl SerfChoice {
    fn from_args(args: &Args) -> Result<Self> {
        if args.no_serf {
            return Ok(SerfChoice::Off);
        }
        match find_on_path("serf") {
            Some(path) => Ok(SerfChoice::Found(path)),
            None if args.serf => bail!("--serf: no `serf` on PATH; install {SERF_HOWTO}"),
            None => Ok(SerfChoice::Missing(format!(
                "no `serf` on PATH; install {SERF_HOWTO}"
            ))),
        }
    }

    /// The binary, when Serf runs.
    pub fn path(&self) -> Option<&PathBuf> {
        match self {
            SerfChoice::Found(p) => Some(p),
            _ => None,
        }
    }
}

/// Settings of the convergence section.
#[derive(Debug, Clone, Copy)]
pub struct ConvSettings {
    pub n: usize,
    pub runs: usize,
    pub partition: Duration,
    /// Agent K runs as uid UID_BASE+K and its connections are SNATed to 127.0.0.K.
    pub snat: bool,
}

impl ConvSettings {
    /// Agents n1..n{side_a} are one side of the partition, the rest the other.
    pub fn side_a(&self) -> usize {
        self.n / 2
    }
}

impl Settings {
    pub fn from_args(args: &Args) -> Result<Self> {
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
        if !(0.0..1.0).contains(&args.heavy_loss) {
            bail!("--heavy-loss must be in [0, 1)");
        }
        if !(args.pause_secs > 0.0 && args.pause_secs < 60.0) {
            bail!("--pause-secs must be in (0, 60)");
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
        let messaging = MsgSettings {
            n: args.messaging_nodes,
            runs: args.messaging_runs.unwrap_or(if q { 3 } else { 20 }),
        };
        if messaging.n < 2 || messaging.runs == 0 {
            bail!("--messaging-nodes must be at least 2 and --messaging-runs at least 1");
        }
        if let Some(n) = args.scale
            && !(2..=2000).contains(&n)
        {
            bail!("--scale must be in 2..=2000 agents, got {n}");
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
            heavy_loss: (!q && !args.no_loss && args.heavy_loss > 0.0).then_some(args.heavy_loss),
            pauses: args.pauses.unwrap_or(if q { 1 } else { 3 }),
            join_runs: args.join_runs.unwrap_or(if q { 1 } else { 5 }),
            pause: Duration::from_secs_f64(args.pause_secs),
            serf: if args.in_netns.is_some() || args.in_netns_convergence.is_some() {
                SerfChoice::Off
            } else {
                SerfChoice::from_args(args)?
            },
            loss_serf: args.loss_serf.clone(),
            loss_late: args.loss_late,
            timeout: Duration::from_secs(args.timeout_secs.max(1)),
            seed,
            keep_logs: args.keep_logs,
            convergence: (!args.no_convergence).then_some(conv),
            agent_log_level: args.agent_log_level.clone(),
            messaging: (!args.no_messaging).then_some(messaging),
            scale: args.scale,
        })
    }
}
