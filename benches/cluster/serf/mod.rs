//! HashiCorp Serf (`serf` from PATH) run through the bench's scenarios, for comparison: one
//! `serf agent` on 127.0.0.1 ([`SerfAgent`], [`spawn_serf`]), a set of them ([`SerfCluster`]).
//! The scenarios are in `size.rs` (one cluster size) and `loss.rs` (the loss run).
//!
//! Serf cannot report a port it picked, so the bench picks free loopback ports itself (a port
//! free for both TCP and UDP for `-bind`, a TCP one for `-rpc-addr`) just before the spawn.
//! An agent is ready when its RPC answers `members` listing itself. Serf gets the same event
//! handler as shoal (Serf's handlers get the event on stdin and `SERF_EVENT`,
//! `SERF_SELF_NAME` in the environment, which shoal mimics).

pub mod loss;
pub mod size;

use std::collections::BTreeSet;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use shoal_testkit::log_tail;
use tokio::process::{Child, Command};

use crate::agents::{
    CONVERGE_POLL, READY_TIMEOUT, REQUEST_TIMEOUT, RunDir, STARTUP_POLL, poll_converged,
};
use crate::lister::Lister;
use crate::report::Rng;
use crate::serf_rpc;

/// Poll period while waiting for an agent's RPC to answer.
const READY_POLL: Duration = Duration::from_millis(20);

/// One running `serf agent`. Killed (SIGKILL) when dropped.
pub struct SerfAgent {
    pub name: String,
    /// `-bind` address, `127.0.0.1:PORT` (UDP and TCP gossip).
    pub bind: String,
    pub port: u16,
    /// `-rpc-addr`.
    pub rpc: String,
    pub pid: u32,
    pub child: Child,
    pub log: PathBuf,
}

impl SerfAgent {
    pub fn lister(&self) -> Lister {
        Lister::Serf(self.rpc.clone())
    }
}

/// A loopback port free for TCP and, with `udp`, UDP too (the OS picks it; it is free when
/// this returns, and the agent binds it a moment later).
pub fn free_port(udp: bool) -> Result<u16> {
    for _ in 0..50 {
        let tcp = TcpListener::bind("127.0.0.1:0").context("bind a TCP port")?;
        let port = tcp.local_addr().context("local address")?.port();
        if !udp || UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no loopback port free for both TCP and UDP")
}

/// How many times [`spawn_serf`] tries fresh ports when `serf agent` exits because one of the
/// ports it was given was taken before it could bind it.
const PORT_ATTEMPTS: usize = 5;

/// Starts `serf agent -node=NAME` on 127.0.0.1 (lan profile, the bench's handler,
/// `-join=JOIN` if given; `retry` uses `-retry-join` with a 1 s interval instead, which does
/// not exit when the join fails, as under heavy loss) and waits for its RPC.
///
/// The ports are free when picked but released before Serf binds them, so another process
/// (an agent of this bench, or anything else on the machine) can take one in between: a
/// 2026-12-01 run at N = 20 lost its whole report to `Error starting RPC listener: ...
/// address already in use`. An agent that exits for that reason is started again on new
/// ports, up to [`PORT_ATTEMPTS`] times.
pub async fn spawn_serf(
    serf: &Path,
    name: &str,
    join: Option<&str>,
    retry: bool,
    handler: &str,
    logs: &Path,
) -> Result<SerfAgent> {
    let mut attempt = 1;
    loop {
        match spawn_serf_once(serf, name, join, retry, handler, logs).await {
            Err(SpawnError::PortTaken(why)) if attempt < PORT_ATTEMPTS => {
                crate::report::progress(&format!(
                    "serf agent {name}: a port was taken before it bound it, new ports \
                     (attempt {}/{PORT_ATTEMPTS}): {why}",
                    attempt + 1
                ));
                attempt += 1;
            }
            Err(SpawnError::PortTaken(why) | SpawnError::Other(why)) => return Err(why),
            Ok(agent) => return Ok(agent),
        }
    }
}

/// Why one start of `serf agent` failed.
enum SpawnError {
    /// It exited because a port it was given was already in use.
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for SpawnError {
    fn from(e: anyhow::Error) -> Self {
        SpawnError::Other(e)
    }
}

async fn spawn_serf_once(
    serf: &Path,
    name: &str,
    join: Option<&str>,
    retry: bool,
    handler: &str,
    logs: &Path,
) -> std::result::Result<SerfAgent, SpawnError> {
    let log = logs.join(format!("{name}.log"));
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
    let port = free_port(true)?;
    let bind = format!("127.0.0.1:{port}");
    let mut rpc_port = free_port(false)?;
    while rpc_port == port {
        rpc_port = free_port(false)?;
    }
    let rpc = format!("127.0.0.1:{rpc_port}");
    let mut cmd = Command::new(serf);
    cmd.arg("agent")
        .arg(format!("-node={name}"))
        .arg(format!("-bind={bind}"))
        .arg(format!("-rpc-addr={rpc}"))
        .args(["-profile=lan", "-log-level=info"])
        .arg(format!("-event-handler={handler}"));
    match (join, retry) {
        (Some(j), false) => drop(cmd.arg(format!("-join={j}"))),
        (Some(j), true) => drop(
            cmd.arg(format!("-retry-join={j}"))
                .arg("-retry-interval=1s"),
        ),
        (None, _) => {}
    }
    if let Some(key) = crate::agents::ENCRYPT_KEY.get() {
        cmd.arg(format!("-encrypt={key}"));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log_file.try_clone().context("log file")?))
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", serf.display()))?;
    let pid = child.id().context("the agent has no pid")?;
    let start = Instant::now();
    loop {
        if let Ok(list) = serf_rpc::members(&rpc, REQUEST_TIMEOUT).await
            && list.iter().any(|(n, _)| n == name)
        {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = log_tail(&log, 10);
            let why =
                anyhow!("serf agent {name} exited ({status}) before it was ready; log:\n{tail}");
            return Err(if tail.contains("address already in use") {
                SpawnError::PortTaken(why)
            } else {
                SpawnError::Other(why)
            });
        }
        if start.elapsed() > READY_TIMEOUT {
            return Err(SpawnError::Other(anyhow!(
                "serf agent {name}: no RPC answer within {READY_TIMEOUT:?}; log:\n{}",
                log_tail(&log, 10)
            )));
        }
        tokio::time::sleep(READY_POLL).await;
    }
    Ok(SerfAgent {
        name: name.to_string(),
        bind,
        port,
        rpc,
        pid,
        child,
        log,
    })
}

/// A set of Serf agents sharing a temporary directory for logs and handler output.
pub struct SerfCluster {
    pub serf: PathBuf,
    pub dir: RunDir,
    pub handler: String,
    pub agents: Vec<SerfAgent>,
    pub spawned: usize,
    /// Join with `-retry-join` (see [`spawn_serf`]).
    pub retry_join: bool,
}

impl SerfCluster {
    /// An empty cluster in a new [`RunDir`], its agents to run `handler` (a handler spec).
    pub fn new(
        serf: &Path,
        tag: &str,
        keep: bool,
        handler: fn(&Path) -> Result<String>,
    ) -> Result<Self> {
        let dir = RunDir::new(&format!("serf-{tag}"), keep)?;
        let handler = handler(&dir.handlers)?;
        Ok(Self {
            serf: serf.to_path_buf(),
            dir,
            handler,
            agents: Vec::new(),
            spawned: 0,
            retry_join: false,
        })
    }

    /// Starts one more agent, joined to a random running one.
    pub async fn spawn(&mut self, rng: &mut Rng) -> Result<&SerfAgent> {
        self.spawned += 1;
        let name = format!("n{}", self.spawned);
        let join = if self.agents.is_empty() {
            None
        } else {
            Some(self.agents[rng.below(self.agents.len())].bind.clone())
        };
        let agent = spawn_serf(
            &self.serf,
            &name,
            join.as_deref(),
            self.retry_join,
            &self.handler,
            &self.dir.logs,
        )
        .await?;
        self.agents.push(agent);
        self.agents.last().context("just pushed")
    }

    /// Starts `n` agents one after the other; how long the spawning took and when all listed
    /// `n` alive (since the first spawn).
    pub async fn start(
        &mut self,
        n: usize,
        rng: &mut Rng,
        deadline: Duration,
    ) -> Result<(Duration, std::result::Result<Duration, String>)> {
        let start = Instant::now();
        for _ in 0..n {
            self.spawn(rng).await?;
        }
        let spawn = start.elapsed();
        Ok((
            spawn,
            self.converge_every(start, deadline, STARTUP_POLL).await,
        ))
    }

    pub fn listers(&self) -> Vec<Lister> {
        self.agents.iter().map(SerfAgent::lister).collect()
    }

    /// Checks once that every agent lists exactly the running agents as alive. `Err` says
    /// who lags.
    pub async fn check_converged(&self) -> std::result::Result<(), String> {
        let expected: BTreeSet<String> = self.agents.iter().map(|a| a.name.clone()).collect();
        let views = futures_join(self.listers()).await;
        let mut lagging = Vec::new();
        for (agent, view) in self.agents.iter().zip(views) {
            let Some(view) = view else {
                lagging.push(format!("{}: no answer", agent.name));
                continue;
            };
            let alive: BTreeSet<String> = view
                .into_iter()
                .filter(|(_, s)| s == "alive")
                .map(|(n, _)| n)
                .collect();
            if alive != expected {
                let missing: Vec<&String> = expected.difference(&alive).collect();
                lagging.push(format!(
                    "{} sees {}/{} alive (missing {missing:?})",
                    agent.name,
                    alive.len(),
                    expected.len()
                ));
            }
        }
        if lagging.is_empty() {
            Ok(())
        } else {
            Err(lagging.join("; "))
        }
    }

    /// Polls until every agent lists every running agent alive; the time since `since`.
    pub async fn converge(
        &self,
        since: Instant,
        deadline: Duration,
    ) -> std::result::Result<Duration, String> {
        self.converge_every(since, deadline, CONVERGE_POLL).await
    }

    /// [`SerfCluster::converge`], polling every `poll`.
    pub async fn converge_every(
        &self,
        since: Instant,
        deadline: Duration,
        poll: Duration,
    ) -> std::result::Result<Duration, String> {
        poll_converged(|| self.check_converged(), since, deadline, poll).await
    }

    /// Kills every agent and reaps it.
    pub async fn stop(mut self) {
        for agent in &mut self.agents {
            let _ = agent.child.start_kill();
        }
        for agent in &mut self.agents {
            let _ = tokio::time::timeout(Duration::from_secs(5), agent.child.wait()).await;
        }
    }
}

/// Every lister's member list at once, in order.
async fn futures_join(listers: Vec<Lister>) -> Vec<Option<Vec<(String, String)>>> {
    let mut set = tokio::task::JoinSet::new();
    let count = listers.len();
    for (i, lister) in listers.into_iter().enumerate() {
        set.spawn(async move { (i, lister.statuses().await) });
    }
    let mut out = vec![None; count];
    while let Some(Ok((i, view))) = set.join_next().await {
        out[i] = view;
    }
    out
}
