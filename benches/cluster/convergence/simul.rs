//! The simultaneous start: N agents spawned back to back with the identical argv, each
//! on 127.0.0.K:7948, all joining `peers`; then the partition of their cluster.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use shoal_proto::Client;
use shoal_testkit::clean_command;
use tokio::io::BufReader;
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

use crate::SHOAL;
use crate::agents::read_ready;
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
                    let anomaly = (r.advertise.to_string() != want)
                        .then(|| format!("{name} advertises {}, expected {want}", r.advertise));
                    let client = Client::new(r.control.to_string());
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
