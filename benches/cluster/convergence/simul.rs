//! The simultaneous start: N agents spawned back to back with the identical argv, each
//! on 127.0.0.K:7948, all joining `peers`; then the partition of their cluster.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use shoal_proto::Client;
use shoal_testkit::clean_command;
use tempfile::TempDir;
use tokio::io::BufReader;
use tokio::process::ChildStdout;
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

use crate::SHOAL;
use crate::agents::{RunDir, read_ready};
use crate::convergence::partition::{PartitionRun, partition_run};
use crate::convergence::watch::{
    Times, all_converged, late_logs, slowest_names, watch_converge, worst,
};
use crate::convergence::{LATE_AGENTS, SIMUL_PORT, TARGET_SIMUL_S};
use crate::handlers::join_handler_spec;
use crate::netns::UID_BASE;
use crate::report::{fmt_s, progress};
use crate::settings::{ConvSettings, Settings};

#[derive(Debug, Serialize, Deserialize)]
pub struct SimulRun {
    pub names: Vec<String>,
    /// From the first spawn to the last.
    pub spawn_spread_s: f64,
    /// Readiness line, since the first spawn.
    pub ready: Times,
    /// Lists all N alive, since the first spawn.
    pub converged: Times,
    /// The final all-at-once check after everyone converged (None: all converged).
    pub stable: Option<String>,
    /// Agents whose readiness line or behaviour was unexpected.
    pub anomalies: Vec<String>,
    /// Logs of the slowest agents if the run missed the target.
    pub late_logs: Vec<(String, String)>,
    /// The partition of this run's cluster, or why it was not run.
    pub partition: std::result::Result<PartitionRun, String>,
}

/// One agent of the simultaneous start: nK on 127.0.0.K:7948.
pub struct SimulAgent {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

/// Starts all N agents at once with identical arguments (only SHOAL_BIND and SHOAL_NODE
/// differ), times until each lists all N alive, then partitions and heals the cluster.
pub async fn simul_run(
    s: &Settings,
    c: ConvSettings,
    run: usize,
    no_partition: Option<&str>,
    snat: bool,
) -> Result<SimulRun> {
    let n = c.n;
    let (dir, handlers, logs) = simul_dirs(s, run, snat)?;
    let names: Vec<String> = (1..=n).map(|k| format!("n{k}")).collect();
    let (mut cmds, log_paths) = simul_commands(s, &names, &handlers, &logs, snat)?;

    progress(&format!(
        "[converge] simultaneous start {run}/{}: starting {n} agents at once",
        c.runs
    ));
    let t0 = Instant::now();
    let (mut agents, stdouts) = spawn_all(&mut cmds, &names, &log_paths)?;
    let spawn_spread = t0.elapsed();
    let deadline = t0 + s.timeout;
    let expected = Arc::new(names.iter().cloned().collect::<BTreeSet<String>>());
    // `_stdouts` is kept open until the agents are killed, so none writes to a closed pipe.
    let (watched, _stdouts) = watch_all(&agents, stdouts, &expected, t0, deadline).await?;
    let clients = watched.clients;
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
    let all = worst(&watched.converged);
    progress(&format!(
        "[converge] simultaneous start {run}/{}: spawned within {:.3} s, all list {n} alive \
         after {} (slowest {})",
        c.runs,
        spawn_spread.as_secs_f64(),
        fmt_s(all),
        slowest_names(&names, &watched.converged, LATE_AGENTS)
    ));
    let late = if all > TARGET_SIMUL_S {
        late_logs(&names, &log_paths, &watched.converged)
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

    stop_all(&mut agents).await;
    drop(dir);
    Ok(SimulRun {
        names,
        spawn_spread_s: spawn_spread.as_secs_f64(),
        ready: watched.ready,
        converged: watched.converged,
        stable,
        anomalies: watched.anomalies,
        late_logs: late,
        partition,
    })
}

/// Spawns every agent, back to back.
fn spawn_all(
    cmds: &mut [Command],
    names: &[String],
    log_paths: &[PathBuf],
) -> Result<(Vec<SimulAgent>, Vec<ChildStdout>)> {
    let mut agents = Vec::new();
    let mut stdouts = Vec::new();
    for (cmd, (name, log)) in cmds.iter_mut().zip(names.iter().zip(log_paths)) {
        let mut child = cmd.spawn().with_context(|| format!("cannot run {SHOAL}"))?;
        stdouts.push(child.stdout.take().context("stdout not piped")?);
        agents.push(SimulAgent {
            name: name.clone(),
            child,
            log: log.clone(),
        });
    }
    Ok((agents, stdouts))
}

/// Kills every agent and reaps it (5 s each at the most).
async fn stop_all(agents: &mut [SimulAgent]) {
    for agent in agents.iter_mut() {
        let _ = agent.child.start_kill();
    }
    for agent in agents.iter_mut() {
        let _ = tokio::time::timeout(Duration::from_secs(5), agent.child.wait()).await;
    }
}

/// The run's [`RunDir`]; with `snat`, open to the agents' users.
fn simul_dirs(s: &Settings, run: usize, snat: bool) -> Result<(TempDir, PathBuf, PathBuf)> {
    let RunDir {
        dir,
        handlers,
        logs,
    } = RunDir::new(&format!("simul{run}"), s.keep_logs)?;
    if snat {
        // The agents (and their handlers) run as other users: they must reach the handler
        // directory and write to it.
        use std::os::unix::fs::PermissionsExt as _;
        for (d, mode) in [(dir.path(), 0o755), (handlers.as_path(), 0o777)] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("chmod {}", d.display()))?;
        }
    }
    Ok((dir, handlers, logs))
}

/// The agents' commands, identical but for SHOAL_BIND and SHOAL_NODE (and with `snat` the
/// uid), and their log paths.
fn simul_commands(
    s: &Settings,
    names: &[String],
    handlers: &Path,
    logs: &Path,
    snat: bool,
) -> Result<(Vec<Command>, Vec<PathBuf>)> {
    let spec = join_handler_spec(handlers)?;
    let mut cmds = Vec::new();
    let mut log_paths = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let log = logs.join(format!("{name}.log"));
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let mut cmd = Command::from(clean_command(SHOAL));
        cmd.args(["agent", "--join", &format!("peers:{SIMUL_PORT}")])
            .args(["--profile", "lan", "--control", "127.0.0.1:0"])
            .arg("--event-handler")
            .arg(&spec);
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
    Ok((cmds, log_paths))
}

/// What the watch of the simultaneous start found, per agent.
struct Watched {
    /// Readiness line, since the first spawn.
    ready: Times,
    /// Lists all N alive, since the first spawn.
    converged: Times,
    /// The control API of each agent that got ready.
    clients: Vec<Option<Client>>,
    anomalies: Vec<String>,
}

/// One agent's part of [`Watched`], from [`ready_then_converge`].
struct AgentWatch {
    ready: std::result::Result<f64, String>,
    converged: std::result::Result<f64, String>,
    client: Option<Client>,
    anomaly: Option<String>,
}

/// [`ready_then_converge`] for every agent at once. Also hands back the agents' stdouts.
async fn watch_all(
    agents: &[SimulAgent],
    stdouts: Vec<ChildStdout>,
    expected: &Arc<BTreeSet<String>>,
    t0: Instant,
    deadline: Instant,
) -> Result<(Watched, Vec<BufReader<ChildStdout>>)> {
    let mut set = JoinSet::new();
    for (i, stdout) in stdouts.into_iter().enumerate() {
        let name = agents[i].name.clone();
        let log = agents[i].log.clone();
        let expected = expected.clone();
        set.spawn(async move {
            let mut stdout = BufReader::new(stdout);
            let want = format!("127.0.0.{}:{SIMUL_PORT}", i + 1);
            let w =
                ready_then_converge(&name, &log, &mut stdout, &want, &expected, t0, deadline).await;
            (i, stdout, w)
        });
    }
    let n = agents.len();
    let mut watched = Watched {
        ready: vec![Err("task failed".into()); n],
        converged: vec![Err("task failed".into()); n],
        clients: vec![None; n],
        anomalies: Vec::new(),
    };
    let mut kept = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (i, stdout, w) = joined.context("a watcher task failed")?;
        kept.push(stdout);
        watched.ready[i] = w.ready;
        watched.converged[i] = w.converged;
        watched.clients[i] = w.client;
        watched.anomalies.extend(w.anomaly);
    }
    Ok((watched, kept))
}

/// Waits for one agent's readiness line, checks it advertises `want`, then polls it until it
/// lists `expected` alive (or `deadline`).
async fn ready_then_converge(
    name: &str,
    log: &Path,
    stdout: &mut BufReader<ChildStdout>,
    want: &str,
    expected: &BTreeSet<String>,
    t0: Instant,
    deadline: Instant,
) -> AgentWatch {
    let limit = deadline.saturating_duration_since(Instant::now());
    let ready = read_ready(name, stdout, log, limit).await;
    let ready_s = t0.elapsed().as_secs_f64();
    match ready {
        Err(e) => {
            let why = format!("{e:#}");
            let first = why.lines().next().unwrap_or_default().to_string();
            AgentWatch {
                ready: Err(first),
                converged: Err("never ready".to_string()),
                client: None,
                anomaly: None,
            }
        }
        Ok(r) => {
            let anomaly = (r.advertise.to_string() != want)
                .then(|| format!("{name} advertises {}, expected {want}", r.advertise));
            let client = Client::new(r.control.to_string());
            let converged = watch_converge(&client, expected, t0, deadline).await;
            AgentWatch {
                ready: Ok(ready_s),
                converged,
                client: Some(client),
                anomaly,
            }
        }
    }
}
