//! The messaging section (issue 9): a user event, a query and a tag change, each repeated at
//! N = 20 in the lan profile, on a shoal cluster and then on a Serf cluster, timed the same
//! way: through each one's CLI (`shoal event|query|tags`, `serf event|query|tags`), the
//! handlers' own timestamps, and member lists polled over the control API or Serf's RPC.
//! The table and the targets are in `report.rs`; the packets each scenario costs (iptables,
//! as root) in `wire.rs`.

pub mod report;
mod wire;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use shoal_proto::Client;
use shoal_testkit::clean_command;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::SHOAL;
use crate::agents::{Cluster, REQUEST_TIMEOUT, members_of_all, start_cluster};
use crate::handlers::{handler_file, handler_time, quotable};
use crate::report::{Peer, Rng, progress};
use crate::serf::SerfCluster;
use crate::serf_rpc;
use crate::settings::{MsgSettings, Settings};
use wire::Wire;

/// The name of the user event and of the query.
pub const NAME: &str = "bench";

/// The tag the tags scenario changes.
const TAG: &str = "k";

/// Poll period of the handler files and the member lists.
const POLL: Duration = Duration::from_millis(10);

/// Every agent's handlers: `user:bench` appends `<epoch secs at start>\t<payload>` to
/// `DIR/<self>.user`; `query:bench` answers with the agent's name. One spec for shoal and
/// Serf (both split the filter off at the first `=`).
pub fn msg_handler_spec(dir: &Path) -> Result<String> {
    let dir = quotable(dir)?;
    Ok(format!(
        "user:{NAME},query:{NAME}=if [ \"$SERF_EVENT\" = query ]; then echo \"$SERF_SELF_NAME\"; \
         else ts=$(date +%s.%N); read -r p; printf '%s\\t%s\\n' \"$ts\" \"$p\" \
         >> '{dir}'/\"$SERF_SELF_NAME.user\"; fi"
    ))
}

/// The agents of one side: names and where their CLI and member lists are reached.
pub enum Agents {
    /// Name and control API of each shoal agent.
    Shoal(Vec<(String, Client)>),
    /// The `serf` binary, name and RPC address of each Serf agent.
    Serf(PathBuf, Vec<(String, String)>),
}

impl Agents {
    fn peer(&self) -> Peer {
        match self {
            Agents::Shoal(_) => Peer::Shoal,
            Agents::Serf(..) => Peer::Serf,
        }
    }

    fn names(&self) -> Vec<String> {
        match self {
            Agents::Shoal(a) => a.iter().map(|(n, _)| n.clone()).collect(),
            Agents::Serf(_, a) => a.iter().map(|(n, _)| n.clone()).collect(),
        }
    }

    /// `shoal SUB --control ADDR ARGS` or `serf SUB -rpc-addr=ADDR ARGS` on agent `i`.
    fn command(&self, i: usize, sub: &str, args: &[&str]) -> Command {
        let mut cmd = match self {
            Agents::Shoal(a) => {
                let mut cmd = Command::from(clean_command(SHOAL));
                cmd.args([sub, "--control", a[i].1.addr()]);
                cmd
            }
            Agents::Serf(serf, a) => {
                let mut cmd = Command::new(serf);
                cmd.arg(sub).arg(format!("-rpc-addr={}", a[i].1));
                cmd
            }
        };
        cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// The flag of `tags` that sets a tag.
    fn set_flag(&self) -> &'static str {
        match self {
            Agents::Shoal(_) => "--set",
            Agents::Serf(..) => "-set",
        }
    }

    /// Per agent (in order), the value of [`TAG`] of every member it lists (`None` inside:
    /// listed without the tag); `None`: no answer in time.
    async fn tag_views(&self) -> Vec<Option<BTreeMap<String, Option<String>>>> {
        match self {
            Agents::Shoal(a) => {
                let clients: Vec<Client> = a.iter().map(|(_, c)| c.clone()).collect();
                members_of_all(&clients)
                    .await
                    .into_iter()
                    .map(|view| {
                        let members = view?.members.into_iter();
                        Some(
                            members
                                .map(|m| (m.name, m.tags.get(TAG).cloned()))
                                .collect(),
                        )
                    })
                    .collect()
            }
            Agents::Serf(_, a) => {
                let mut set = tokio::task::JoinSet::new();
                for (i, (_, rpc)) in a.iter().enumerate() {
                    let rpc = rpc.clone();
                    set.spawn(
                        async move { (i, serf_rpc::member_tags(&rpc, REQUEST_TIMEOUT).await) },
                    );
                }
                let mut out = vec![None; a.len()];
                while let Some(Ok((i, list))) = set.join_next().await {
                    out[i] = list.ok().map(|list| {
                        let tag = |t: BTreeMap<String, String>| t.get(TAG).cloned();
                        list.into_iter().map(|(n, t)| (n, tag(t))).collect()
                    });
                }
                out
            }
        }
    }
}

/// What one side measured, in seconds per repetition (infinity: not done by the deadline).
pub struct MsgReport {
    pub peer: Peer,
    pub n: usize,
    /// Event sent until every agent's `user:bench` handler ran.
    pub event: Vec<f64>,
    /// Query sent until the N-th answer was printed.
    pub query_last: Vec<f64>,
    /// Query sent until the command returned.
    pub query_total: Vec<f64>,
    /// Answers printed per query.
    pub query_answers: Vec<usize>,
    /// Tag set until every other agent listed it.
    pub tags: Vec<f64>,
    /// Wire packets per agent and run beyond idle traffic: user event, query, tag change
    /// (`None` inside: the counter could not be read); `Err`: why nothing was counted.
    pub packets: Result<[Option<f64>; 3], String>,
    pub errors: Vec<String>,
}

fn epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Runs `cmd` to its end within `limit`; fails on a non-zero exit, with its stderr.
async fn run_cmd(mut cmd: Command, limit: Duration) -> Result<()> {
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .with_context(|| format!("not done within {limit:?}"))?
        .context("cannot run the command")?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// One user event from agent `rep % N`: seconds until every agent's handler had started.
async fn event_run(a: &Agents, dir: &Path, rep: usize, limit: Duration) -> Result<f64> {
    let names = a.names();
    let payload = format!("e{rep}");
    let (sent, start) = (epoch(), Instant::now());
    run_cmd(
        a.command(rep % names.len(), "event", &[NAME, &payload]),
        limit,
    )
    .await?;
    loop {
        let times: Vec<Option<f64>> = names
            .iter()
            .map(|n| handler_time(&handler_file(dir, n, "user"), &payload))
            .collect();
        if let Some(times) = times.iter().copied().collect::<Option<Vec<f64>>>() {
            return Ok(times.into_iter().fold(f64::NEG_INFINITY, f64::max) - sent);
        }
        if start.elapsed() >= limit {
            let missing = times.iter().filter(|t| t.is_none()).count();
            bail!("event {payload}: {missing} agents had not run the handler after {limit:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One query from agent `rep % N`: (seconds until the N-th `Response from` line, seconds
/// until the command returned, answers).
async fn query_run(a: &Agents, rep: usize, limit: Duration) -> Result<(f64, f64, usize)> {
    let n = a.names().len();
    let mut cmd = a.command(rep % n, "query", &[NAME]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let start = Instant::now();
    let mut child = cmd.spawn().context("cannot run the query command")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let (mut answers, mut last) = (0, f64::INFINITY);
    let read = async {
        while let Some(line) = lines.next_line().await? {
            if line.starts_with("Response from") {
                answers += 1;
                if answers == n {
                    last = start.elapsed().as_secs_f64();
                }
            }
        }
        child.wait().await
    };
    let status = tokio::time::timeout(limit, read)
        .await
        .with_context(|| format!("query not done within {limit:?}"))??;
    let total = start.elapsed().as_secs_f64();
    if !status.success() {
        bail!("query exited {status}");
    }
    Ok((last, total, answers))
}

/// One tag change on agent `rep % N`: seconds until every other agent listed it.
async fn tags_run(a: &Agents, rep: usize, limit: Duration) -> Result<f64> {
    let names = a.names();
    let i = rep % names.len();
    let value = format!("v{rep}");
    let set = format!("{TAG}={value}");
    let start = Instant::now();
    run_cmd(a.command(i, "tags", &[a.set_flag(), &set]), limit).await?;
    loop {
        let tick = Instant::now();
        let views = a.tag_views().await;
        let lagging = (views.iter().enumerate())
            .filter(|(j, view)| {
                *j != i
                    && view
                        .as_ref()
                        .and_then(|v| v.get(&names[i]))
                        .map(Option::as_deref)
                        != Some(Some(value.as_str()))
            })
            .count();
        if lagging == 0 {
            return Ok(start.elapsed().as_secs_f64());
        }
        if start.elapsed() >= limit {
            bail!(
                "tag {set} on {}: {lagging} agents lag after {limit:?}",
                names[i]
            );
        }
        tokio::time::sleep_until((tick + POLL).into()).await;
    }
}

/// Counts the wire packets between the agents at `ports` (see [`wire`]), or says why not.
async fn count_wire(tag: &str, ports: &[u16]) -> Result<Wire, String> {
    progress(&format!(
        "messaging: {tag}: measuring idle traffic for {:?}",
        wire::IDLE_WINDOW
    ));
    Wire::start(tag, ports).await.map_err(|e| format!("{e:#}"))
}

/// The three scenarios, `runs` times each, on a converged cluster; `wire` counts packets.
async fn run_scenarios(
    a: &Agents,
    dir: &Path,
    runs: usize,
    limit: Duration,
    wire: Result<Wire, String>,
) -> MsgReport {
    let peer = a.peer();
    let mut r = MsgReport {
        peer,
        n: a.names().len(),
        event: Vec::new(),
        query_last: Vec::new(),
        query_total: Vec::new(),
        query_answers: Vec::new(),
        tags: Vec::new(),
        packets: Err(String::new()),
        errors: Vec::new(),
    };
    let mut packets = [None; 3];
    let mark = match &wire {
        Ok(w) => w.mark().await,
        Err(_) => None,
    };
    progress(&format!("{}: {runs} user events", peer.name()));
    for rep in 0..runs {
        match event_run(a, dir, rep, limit).await {
            Ok(t) => r.event.push(t),
            Err(e) => {
                r.event.push(f64::INFINITY);
                r.errors.push(format!("{e:#}"));
            }
        }
    }
    progress(&format!(
        "{}: user events: {}",
        peer.name(),
        millis(&r.event)
    ));
    let mark = if let Ok(w) = &wire {
        packets[0] = w.per_run(mark, runs).await;
        w.mark().await
    } else {
        None
    };
    progress(&format!("{}: {runs} queries", peer.name()));
    for rep in 0..runs {
        match query_run(a, rep, limit).await {
            Ok((last, total, answers)) => {
                r.query_last.push(last);
                r.query_total.push(total);
                r.query_answers.push(answers);
            }
            Err(e) => {
                r.query_last.push(f64::INFINITY);
                r.query_total.push(f64::INFINITY);
                r.query_answers.push(0);
                r.errors.push(format!("{e:#}"));
            }
        }
    }
    progress(&format!(
        "{}: queries: {}",
        peer.name(),
        millis(&r.query_last)
    ));
    let mark = if let Ok(w) = &wire {
        packets[1] = w.per_run(mark, runs).await;
        w.mark().await
    } else {
        None
    };
    progress(&format!("{}: {runs} tag changes", peer.name()));
    for rep in 0..runs {
        match tags_run(a, rep, limit).await {
            Ok(t) => r.tags.push(t),
            Err(e) => {
                r.tags.push(f64::INFINITY);
                r.errors.push(format!("{e:#}"));
            }
        }
    }
    progress(&format!(
        "{}: tag changes: {}",
        peer.name(),
        millis(&r.tags)
    ));
    r.packets = match &wire {
        Ok(w) => {
            packets[2] = w.per_run(mark, runs).await;
            Ok(packets)
        }
        Err(why) => Err(why.clone()),
    };
    r
}

/// Per-run times in ms, for the progress log.
fn millis(v: &[f64]) -> String {
    let ms = v.iter().map(|t| format!("{:.0}", t * 1000.0));
    format!("{} ms", ms.collect::<Vec<_>>().join(" "))
}

/// The section on shoal: a fresh cluster of `m.n` agents, converged, then the scenarios.
pub async fn shoal_messaging(s: &Settings, m: MsgSettings, rng: &mut Rng) -> Result<MsgReport> {
    progress(&format!("messaging: starting {} shoal agents", m.n));
    let mut cluster = Cluster::new("msg", s.keep_logs)?;
    cluster.handler = msg_handler_spec;
    cluster.log_level = s.agent_log_level.clone();
    let (_, converged) = start_cluster(&mut cluster, m.n, rng, s.timeout).await?;
    converged.map_err(|why| anyhow::anyhow!("messaging: shoal cluster {why}"))?;
    let ports: Vec<u16> = (cluster.agents.iter())
        .filter_map(|a| a.advertise.parse::<std::net::SocketAddr>().ok())
        .map(|addr| addr.port())
        .collect();
    let wire = count_wire("msg-shoal", &ports).await;
    let agents = cluster.agents.iter();
    let agents = Agents::Shoal(agents.map(|a| (a.name.clone(), a.client.clone())).collect());
    let report = run_scenarios(&agents, &cluster.handlers, m.runs, s.timeout, wire).await;
    cluster.stop().await;
    Ok(report)
}

/// The section on Serf, as [`shoal_messaging`].
pub async fn serf_messaging(
    s: &Settings,
    m: MsgSettings,
    serf: &Path,
    rng: &mut Rng,
) -> Result<MsgReport> {
    progress(&format!("messaging: starting {} Serf agents", m.n));
    let mut cluster = SerfCluster::new(serf, "msg", s.keep_logs, msg_handler_spec)?;
    let (_, converged) = cluster.start(m.n, rng, s.timeout).await?;
    converged.map_err(|why| anyhow::anyhow!("messaging: Serf cluster {why}"))?;
    let ports: Vec<u16> = cluster.agents.iter().map(|a| a.port).collect();
    let wire = count_wire("msg-serf", &ports).await;
    let agents = cluster
        .agents
        .iter()
        .map(|a| (a.name.clone(), a.rpc.clone()));
    let agents = Agents::Serf(serf.to_path_buf(), agents.collect());
    let report = run_scenarios(&agents, &cluster.dir.handlers, m.runs, s.timeout, wire).await;
    cluster.stop().await;
    Ok(report)
}
