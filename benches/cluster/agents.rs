//! Agents and clusters: one `shoal agent` process on loopback with port 0 ([`Agent`],
//! [`spawn_agent`]), a set of them sharing a temporary directory ([`Cluster`]), and the
//! control-API requests the scenarios make of all of them at once.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use anyhow::{Context, Result, bail};
use shoal_proto::{Client, MembersResponse, Ready, StatsInfo};
use shoal_testkit::{self as testkit, ReadyError, clean_command, log_tail, ready_async};
use tokio::io::BufReader;
use tokio::process::{Child, ChildStdout, Command};

use crate::SHOAL;
use crate::handlers::handler_spec;
use crate::report::{Rng, progress};

/// Longest wait for an agent's readiness line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for one control-API request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Member-list poll period while waiting for convergence.
pub const CONVERGE_POLL: Duration = Duration::from_millis(100);

/// Member-list poll period while waiting for a newly started cluster (shoal's or Serf's) to
/// converge: finer than [`CONVERGE_POLL`], as a small cluster converges within a few polls.
pub const STARTUP_POLL: Duration = Duration::from_millis(20);

/// Extra wait after a replacement converged, so it is fully settled before the next run.
pub const SETTLE: Duration = Duration::from_secs(1);

/// One running `shoal agent`. Killed (SIGKILL) when dropped.
pub struct Agent {
    pub name: String,
    pub advertise: String,
    pub control: String,
    pub pid: u32,
    pub client: Client,
    pub child: Child,
    pub log: PathBuf,
    /// The agent it was told to --join, if any.
    pub joined_to: Option<String>,
    /// Kept open so the agent never writes to a closed pipe.
    pub _stdout: BufReader<ChildStdout>,
}

/// The key every agent of this run seals with (`--encrypt` of the bench); unset: plaintext.
pub static ENCRYPT_KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Starts `shoal agent --node NAME` on 127.0.0.1 with port 0 (lan profile, the handler spec
/// `handler`, `--join JOIN` if given) and waits for its readiness line.
pub async fn spawn_agent(
    name: &str,
    join: Option<&str>,
    handler: &str,
    logs: &Path,
    log_level: Option<&str>,
) -> Result<Agent> {
    let log = logs.join(format!("{name}.log"));
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
    let mut cmd = Command::from(clean_command(SHOAL));
    cmd.args(["agent", "--node", name, "--bind", "127.0.0.1:0"])
        .args(["--control", "127.0.0.1:0", "--profile", "lan"])
        .arg("--event-handler")
        .arg(handler);
    if let Some(join) = join {
        cmd.args(["--join", join]);
    }
    if let Some(key) = ENCRYPT_KEY.get() {
        cmd.args(["--encrypt", key]);
    }
    if let Some(level) = log_level {
        cmd.env("SHOAL_LOG_LEVEL", level);
    }
    cmd.stderr(Stdio::from(log_file)).kill_on_drop(true);
    let (child, mut stdout) =
        ready_async::spawn_piped(&mut cmd).map_err(|e| ready_error(name, &log, e))?;
    let pid = child.id().context("the agent has no pid")?;
    let ready = read_ready(name, &mut stdout, &log, READY_TIMEOUT).await?;
    let control: std::net::SocketAddr = ready
        .control
        .parse()
        .with_context(|| format!("agent {name}: control address {:?}", ready.control))?;
    for addr in [ready.advertise, control] {
        if addr.ip() != Ipv4Addr::LOCALHOST {
            bail!("agent {name} is not on 127.0.0.1: {addr}");
        }
    }
    Ok(Agent {
        name: name.to_string(),
        client: Client::new(ready.control.clone()),
        advertise: ready.advertise.to_string(),
        control: ready.control.clone(),
        pid,
        child,
        log,
        joined_to: None,
        _stdout: stdout,
    })
}

/// Reads an agent's readiness line (waiting at most `limit`) and checks the name in it.
pub async fn read_ready(
    name: &str,
    stdout: &mut BufReader<ChildStdout>,
    log: &Path,
    limit: Duration,
) -> Result<Ready> {
    let ready = ready_async::read_ready(stdout, limit)
        .await
        .map_err(|e| ready_error(name, log, e))?;
    if ready.name != name {
        bail!("agent {name} reported the name {:?}", ready.name);
    }
    Ok(ready)
}

/// Why agent `name` did not get ready, with its log's tail where that helps.
fn ready_error(name: &str, log: &Path, e: ReadyError) -> anyhow::Error {
    match e {
        ReadyError::Spawn(e) => anyhow::Error::new(e).context(format!("cannot run {SHOAL}")),
        ReadyError::Timeout(limit) => anyhow!(
            "agent {name} printed no readiness line within {limit:?}; log:\n{}",
            log_tail(log, 10)
        ),
        ReadyError::Exited => anyhow!(
            "agent {name} exited before it was ready; log:\n{}",
            log_tail(log, 10)
        ),
        ReadyError::Read(e) => anyhow!("agent {name}: reading stdout: {e}"),
        ReadyError::Parse { line, error } => {
            anyhow!("agent {name}: unexpected readiness line {line:?}: {error}")
        }
    }
}

/// A run's temporary directory, `shoal-bench-TAG-*`, with `handlers/` (handler output) and
/// `logs/` (agent logs) in it. Removed on drop, unless kept.
pub struct RunDir {
    /// The directory itself.
    pub dir: tempfile::TempDir,
    /// Where the handlers write.
    pub handlers: PathBuf,
    /// Where the agents' logs go.
    pub logs: PathBuf,
}

impl RunDir {
    /// Creates it; with `keep` it stays after the bench and its path is shown on stderr.
    pub fn new(tag: &str, keep: bool) -> Result<Self> {
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
            dir,
            handlers,
            logs,
        })
    }
}

/// A set of agents sharing a temporary directory for logs and handler output.
pub struct Cluster {
    pub _dir: tempfile::TempDir,
    pub handlers: PathBuf,
    pub logs: PathBuf,
    pub agents: Vec<Agent>,
    pub spawned: usize,
    /// SHOAL_LOG_LEVEL of the agents (the agent's default if `None`).
    pub log_level: Option<String>,
    /// The handler spec of the agents, made from the handler directory.
    pub handler: fn(&Path) -> Result<String>,
}

impl Cluster {
    /// An empty cluster in a new [`RunDir`].
    pub fn new(tag: &str, keep: bool) -> Result<Self> {
        let RunDir {
            dir,
            handlers,
            logs,
        } = RunDir::new(tag, keep)?;
        Ok(Self {
            _dir: dir,
            handlers,
            logs,
            agents: Vec::new(),
            spawned: 0,
            log_level: None,
            handler: handler_spec,
        })
    }

    /// Starts one more agent, joined to a random running one.
    pub async fn spawn(&mut self, rng: &mut Rng) -> Result<&Agent> {
        self.spawned += 1;
        let name = format!("n{}", self.spawned);
        let target = if self.agents.is_empty() {
            None
        } else {
            Some(&self.agents[rng.below(self.agents.len())])
        };
        let join = target.map(|t| t.advertise.clone());
        let joined_to = target.map(|t| t.name.clone());
        let handler = (self.handler)(&self.handlers)?;
        let mut agent = spawn_agent(
            &name,
            join.as_deref(),
            &handler,
            &self.logs,
            self.log_level.as_deref(),
        )
        .await?;
        agent.joined_to = joined_to;
        self.agents.push(agent);
        self.agents.last().context("just pushed")
    }

    pub fn names(&self) -> BTreeSet<String> {
        self.agents.iter().map(|a| a.name.clone()).collect()
    }

    pub fn clients(&self) -> Vec<Client> {
        self.agents.iter().map(|a| a.client.clone()).collect()
    }

    /// Checks once that every agent lists exactly the running agents as alive (left and failed
    /// members of earlier runs may stay listed). `Err` says who lags.
    pub async fn check_converged(&self) -> std::result::Result<(), String> {
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
    pub async fn converge(
        &self,
        since: Instant,
        deadline: Duration,
    ) -> std::result::Result<Duration, String> {
        self.converge_every(since, deadline, CONVERGE_POLL).await
    }

    /// [`Cluster::converge`], polling every `poll`.
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

/// Polls `check` every `poll` until it passes (the time since `since`) or `deadline` has
/// passed since the first poll (its last complaint). Both agents' clusters converge with it.
pub async fn poll_converged<F, Fut>(
    check: F,
    since: Instant,
    deadline: Duration,
    poll: Duration,
) -> std::result::Result<Duration, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<(), String>>,
{
    let start = Instant::now();
    loop {
        let tick = Instant::now();
        match check().await {
            Ok(()) => return Ok(since.elapsed()),
            Err(why) if start.elapsed() >= deadline => {
                return Err(format!("not converged after {deadline:?}: {why}"));
            }
            Err(_) => {}
        }
        tokio::time::sleep_until((tick + poll).into()).await;
    }
}

/// Starts `n` agents one after the other, each joining a random running one. Returns how long
/// the spawning took and when all listed `n` alive (since the first spawn).
pub async fn start_cluster(
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
    let converge = cluster.converge_every(start, deadline, STARTUP_POLL).await;
    Ok((spawn, converge))
}

/// `GET /v1/members` on one agent; `None` if no answer came within [`REQUEST_TIMEOUT`].
pub async fn get_members(client: &Client) -> Option<MembersResponse> {
    testkit::members_of(client, REQUEST_TIMEOUT).await
}

/// `GET /v1/members` on every client at once; `None` where no answer came in time.
pub async fn members_of_all(clients: &[Client]) -> Vec<Option<MembersResponse>> {
    testkit::members_of_all(clients, REQUEST_TIMEOUT).await
}

/// The counters of `GET /v1/info` on every client at once; `None` where no answer came in
/// time.
pub async fn stats_of_all(clients: &[Client]) -> Vec<Option<StatsInfo>> {
    testkit::info_of_all(clients, REQUEST_TIMEOUT)
        .await
        .into_iter()
        .map(|info| info.map(|i| i.stats))
        .collect()
}
