//! The scale run (`--scale N`): N real agents on this machine's loopback, each on its own
//! port, started at once with identical arguments (the same three seeds to join). It measures
//! how long until every agent lists all N alive, the idle cost per agent (RSS, CPU, gossip
//! bytes, and bytes per member known), and the tail of kill -9 detection: per kill, when each
//! survivor's `member-failed` handler ran. Member-failed handler runs that name a live agent
//! are counted as false failures.
//!
//! Every agent holds a few descriptors in this process (its stdout pipe, its child handle,
//! a connection while it is polled): the run checks `ulimit -n` first. Agent gossip ports are
//! picked free (TCP and UDP both) outside the kernel's ephemeral range, and released just
//! before the agents start. Convergence is polled
//! through `GET /v1/info` (member counts, not the whole list), and only agents that have not
//! converged yet are polled, so the run does not run out of ephemeral ports to TIME_WAIT.

use std::fmt::Write as _;
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use shoal_proto::Client;
use shoal_testkit::{clean_command, ready_async};
use tokio::io::BufReader;
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinSet;

use crate::SHOAL;
use crate::agents::{READY_TIMEOUT, RunDir, read_ready};
use crate::depart::signal_clocks;
use crate::handlers::{handler_file, handler_spec, handler_time};
use crate::procfs::{cpu_ticks, memory};
use crate::report::{Rng, Table, fmax, fmt_num, fmt_s, median, percentile, progress};
use crate::settings::Settings;

/// How many of the agents every agent is told to join.
const SEEDS: usize = 3;

/// Poll period of the convergence wait and of the handler files after a kill.
const POLL: Duration = Duration::from_millis(250);

/// Quiet time after convergence before the idle window, and after each kill.
const SETTLE: Duration = Duration::from_secs(5);

/// Descriptors this process needs per agent, and besides.
const FDS_PER_AGENT: u64 = 4;
const FDS_BASE: u64 = 64;

/// One agent of the run.
struct ScaleAgent {
    name: String,
    pid: u32,
    client: Client,
    child: Child,
    _stdout: BufReader<ChildStdout>,
}

/// What the run measured.
pub struct ScaleReport {
    pub n: usize,
    pub fd_limit: u64,
    /// From the first spawn to the last.
    pub spawn_spread_s: f64,
    /// The last readiness line, since the first spawn.
    pub ready_max_s: f64,
    /// Per agent: when it first listed all N alive, since the first spawn (infinity: never).
    pub converged: Vec<f64>,
    pub idle: Option<ScaleIdle>,
    pub kills: Vec<KillTimes>,
    /// member-failed handler runs naming an agent that was running.
    pub false_failures: usize,
    pub notes: Vec<String>,
}

/// The idle window.
pub struct ScaleIdle {
    pub window_s: f64,
    pub rss_mib: Vec<f64>,
    pub anon_mib: Vec<f64>,
    pub cpu_per_min: Vec<f64>,
    pub bytes_per_s: Vec<f64>,
    pub pkts_per_s: Vec<f64>,
    /// Bytes sent per second per other member the agent lists alive.
    pub bytes_per_member: Vec<f64>,
}

/// One kill -9: per survivor, seconds from the signal to its member-failed handler's start.
pub struct KillTimes {
    pub victim: String,
    pub handled: Vec<f64>,
}

/// The soft limit of open files of this process (`/proc/self/limits`).
fn open_files_limit() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").context("read /proc/self/limits")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no 'Max open files' in /proc/self/limits")?;
    let soft = line
        .split_whitespace()
        .nth(3)
        .context("short 'Max open files' line")?;
    if soft == "unlimited" {
        return Ok(u64::MAX);
    }
    soft.parse()
        .with_context(|| format!("bad 'Max open files' line {line:?}"))
}

/// Sockets that hold ports until dropped.
type Held = Vec<(TcpListener, UdpSocket)>;

/// The kernel's ephemeral port range (`/proc/sys/net/ipv4/ip_local_port_range`; Linux's
/// default 32768-60999 if unreadable).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut it = text.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// `n` loopback ports free for both TCP and UDP, held until the caller drops the sockets.
/// They are taken outside the ephemeral range: the agents' control ports (port 0) and every
/// outgoing connection get ephemeral ports, and one of those could otherwise take a gossip
/// port between its release here and the agent's bind (seen: "Address already in use").
fn free_ports(n: usize) -> Result<(Vec<u16>, Held)> {
    let (low, high) = ephemeral_range();
    let mut held = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    // Start at a place that depends on the process, so two runs at once rarely collide.
    let mut port = 10_000 + (std::process::id() % 10_000) as u16;
    while ports.len() < n {
        port = port
            .checked_add(1)
            .context("no free ports left below 65536")?;
        if (low..=high).contains(&port) {
            continue;
        }
        let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) else {
            continue;
        };
        if let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)) {
            ports.push(port);
            held.push((tcp, udp));
        }
    }
    Ok((ports, held))
}

/// Runs the scale scenario with `n` agents.
pub async fn bench_scale(n: usize, s: &Settings, rng: &mut Rng) -> Result<ScaleReport> {
    if n < 2 {
        bail!("--scale needs at least 2 agents, got {n}");
    }
    let fd_limit = open_files_limit()?;
    let need = FDS_PER_AGENT * n as u64 + FDS_BASE;
    if fd_limit < need {
        bail!(
            "--scale {n} needs about {need} open files here, and `ulimit -n` is {fd_limit}: \
             raise it (ulimit -n {need}) or run fewer agents"
        );
    }
    let run = RunDir::new("scale", s.keep_logs)?;
    let names: Vec<String> = (1..=n).map(|k| format!("s{k}")).collect();
    let (ports, held) = free_ports(n)?;
    let seeds: Vec<String> = ports
        .iter()
        .take(SEEDS)
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let handler = handler_spec(&run.handlers)?;
    let mut cmds = Vec::with_capacity(n);
    for (name, port) in names.iter().zip(&ports) {
        let log = run.logs.join(format!("{name}.log"));
        let log =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let mut cmd = Command::from(clean_command(SHOAL));
        cmd.args(["agent", "--node", name])
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(["--control", "127.0.0.1:0", "--profile", "lan"])
            .arg("--event-handler")
            .arg(&handler);
        for seed in &seeds {
            cmd.args(["--join", seed]);
        }
        if let Some(level) = &s.agent_log_level {
            cmd.env("SHOAL_LOG_LEVEL", level);
        }
        cmd.stderr(Stdio::from(log)).kill_on_drop(true);
        cmds.push(cmd);
    }
    drop(held);
    progress(&format!("[scale] starting {n} agents at once"));
    let t0 = Instant::now();
    let mut spawned = Vec::with_capacity(n);
    for (cmd, name) in cmds.iter_mut().zip(&names) {
        let (child, stdout) = ready_async::spawn_piped(cmd)
            .map_err(|e| anyhow::anyhow!("cannot start agent {name}: {e:?}"))?;
        spawned.push((name.clone(), child, stdout));
    }
    let spawn_spread_s = t0.elapsed().as_secs_f64();
    let (mut agents, ready_max_s) = await_ready(spawned, &run, t0).await?;
    let mut notes = Vec::new();
    let converged = converge(&agents, n, t0, s.timeout.max(Duration::from_secs(120))).await;
    let late = converged.iter().filter(|t| t.is_infinite()).count();
    if late > 0 {
        notes.push(format!("{late} agents never listed all {n} alive"));
    }
    tokio::time::sleep(SETTLE).await;
    progress(&format!("[scale] idle window of {:?}", s.idle));
    let idle = idle_window(&agents, s.idle).await;
    let mut kills = Vec::new();
    let mut killed = Vec::new();
    for k in 0..s.kills {
        if agents.len() <= SEEDS + 1 {
            break;
        }
        // Seeds stay, so the survivors' joins never depend on the victims.
        let victim = SEEDS + rng.below(agents.len() - SEEDS);
        let mut agent = agents.remove(victim);
        progress(&format!(
            "[scale] kill {}/{}: {}",
            k + 1,
            s.kills,
            agent.name
        ));
        let clocks = signal_clocks()?;
        agent.child.start_kill().context("kill -9")?;
        let _ = agent.child.wait().await;
        let handled = await_failed(&agents, &run.handlers, &agent.name, clocks, s.timeout).await;
        killed.push(agent.name.clone());
        kills.push(KillTimes {
            victim: agent.name,
            handled,
        });
        tokio::time::sleep(SETTLE).await;
    }
    let false_failures = agents
        .iter()
        .map(|a| {
            let file = handler_file(&run.handlers, &a.name, "member-failed");
            handled_members(&file)
                .into_iter()
                .filter(|member| !killed.contains(member))
                .count()
        })
        .sum();
    let clients: Vec<Client> = agents.iter().map(|a| a.client.clone()).collect();
    let infos = shoal_testkit::info_of_all(&clients, crate::agents::REQUEST_TIMEOUT * 5).await;
    let lagging = infos
        .iter()
        .filter(|i| i.as_ref().is_none_or(|i| i.members.alive != agents.len()))
        .count();
    if lagging > 0 {
        notes.push(format!(
            "at the end, {lagging} of the {} survivors did not list exactly them alive",
            agents.len()
        ));
    } else {
        notes.push(format!(
            "at the end, every one of the {} survivors lists exactly them alive",
            agents.len()
        ));
    }
    for agent in &mut agents {
        let _ = agent.child.start_kill();
    }
    for agent in &mut agents {
        let _ = tokio::time::timeout(Duration::from_secs(5), agent.child.wait()).await;
    }
    Ok(ScaleReport {
        n,
        fd_limit,
        spawn_spread_s,
        ready_max_s,
        converged,
        idle,
        kills,
        false_failures,
        notes,
    })
}

/// The member names of a [`handler_spec`] file (`<ts>\t<name>\t...` lines), one per handler
/// run and member.
fn handled_members(file: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .map(|text| {
            text.lines()
                .filter_map(|l| l.split('\t').nth(1))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Reads every agent's readiness line at once; the agents and when the last was ready.
async fn await_ready(
    spawned: Vec<(String, Child, BufReader<ChildStdout>)>,
    run: &RunDir,
    t0: Instant,
) -> Result<(Vec<ScaleAgent>, f64)> {
    let mut set = JoinSet::new();
    let mut children = Vec::with_capacity(spawned.len());
    for (i, (name, child, mut stdout)) in spawned.into_iter().enumerate() {
        let log = run.logs.join(format!("{name}.log"));
        let task_name = name.clone();
        // Hundreds of agents start on two cores: give them several times a lone agent's wait.
        set.spawn(async move {
            let ready = read_ready(&task_name, &mut stdout, &log, READY_TIMEOUT * 6).await;
            (i, ready, stdout, t0.elapsed().as_secs_f64())
        });
        children.push(Some((name, child)));
    }
    let mut agents: Vec<Option<ScaleAgent>> = (0..children.len()).map(|_| None).collect();
    let mut last = 0.0f64;
    while let Some(joined) = set.join_next().await {
        let (i, ready, stdout, at) = joined.context("a readiness task panicked")?;
        let ready = ready?;
        last = last.max(at);
        let (name, child) = children[i].take().context("each agent is read once")?;
        let pid = child.id().context("the agent has no pid")?;
        agents[i] = Some(ScaleAgent {
            name,
            pid,
            client: Client::new(ready.control.to_string()),
            child,
            _stdout: stdout,
        });
    }
    let agents = agents
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .context("an agent gave no readiness line")?;
    Ok((agents, last))
}

/// Polls the agents that have not converged yet until each lists `n` alive; per agent, the
/// first poll that saw it, since `t0` (infinity: not within `limit`).
async fn converge(agents: &[ScaleAgent], n: usize, t0: Instant, limit: Duration) -> Vec<f64> {
    let mut times = vec![f64::INFINITY; agents.len()];
    progress(&format!(
        "[scale] waiting until every agent lists {n} alive"
    ));
    while t0.elapsed() < limit {
        let tick = Instant::now();
        let pending: Vec<usize> = (0..agents.len())
            .filter(|i| times[*i].is_infinite())
            .collect();
        if pending.is_empty() {
            break;
        }
        let clients: Vec<Client> = pending.iter().map(|i| agents[*i].client.clone()).collect();
        let infos = shoal_testkit::info_of_all(&clients, crate::agents::REQUEST_TIMEOUT).await;
        let at = t0.elapsed().as_secs_f64();
        for (i, info) in pending.iter().zip(infos) {
            if info.is_some_and(|info| info.members.alive == n) {
                times[*i] = at;
            }
        }
        tokio::time::sleep_until((tick + POLL).into()).await;
    }
    times
}

/// CPU and memory from `/proc`, traffic from each agent's counters, over `window`.
async fn idle_window(agents: &[ScaleAgent], window: Duration) -> Option<ScaleIdle> {
    let clients: Vec<Client> = agents.iter().map(|a| a.client.clone()).collect();
    let timeout = crate::agents::REQUEST_TIMEOUT * 5;
    let before = shoal_testkit::info_of_all(&clients, timeout).await;
    let cpu0: Vec<Option<u64>> = agents.iter().map(|a| cpu_ticks(a.pid).ok()).collect();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let cpu1: Vec<Option<u64>> = agents.iter().map(|a| cpu_ticks(a.pid).ok()).collect();
    let after = shoal_testkit::info_of_all(&clients, timeout).await;
    let secs = t0.elapsed().as_secs_f64();
    let clk_tck = crate::procfs::clock_ticks().await;
    let mut idle = ScaleIdle {
        window_s: secs,
        rss_mib: Vec::new(),
        anon_mib: Vec::new(),
        cpu_per_min: Vec::new(),
        bytes_per_s: Vec::new(),
        pkts_per_s: Vec::new(),
        bytes_per_member: Vec::new(),
    };
    for (i, agent) in agents.iter().enumerate() {
        if let Ok(m) = memory(agent.pid) {
            idle.rss_mib.push(m.rss as f64 / 1024.0);
            idle.anon_mib.push(m.anon as f64 / 1024.0);
        }
        if let (Some(a), Some(b)) = (cpu0[i], cpu1[i]) {
            idle.cpu_per_min
                .push(b.saturating_sub(a) as f64 / clk_tck / secs * 60.0);
        }
        if let (Some(a), Some(b)) = (&before[i], &after[i]) {
            let bytes = b.stats.bytes_out.saturating_sub(a.stats.bytes_out) as f64 / secs;
            let pkts = b.stats.packets_out.saturating_sub(a.stats.packets_out) as f64 / secs;
            idle.bytes_per_s.push(bytes);
            idle.pkts_per_s.push(pkts);
            let others = b.members.alive.saturating_sub(1).max(1) as f64;
            idle.bytes_per_member.push(bytes / others);
        }
    }
    (!idle.rss_mib.is_empty()).then_some(idle)
}

/// Watches the survivors' member-failed handler files until each names `victim`; per
/// survivor, seconds from the signal to the handler's start (infinity: not within `limit`).
async fn await_failed(
    survivors: &[ScaleAgent],
    handlers: &std::path::Path,
    victim: &str,
    (epoch, start): (f64, Instant),
    limit: Duration,
) -> Vec<f64> {
    let files: Vec<PathBuf> = survivors
        .iter()
        .map(|a| handler_file(handlers, &a.name, "member-failed"))
        .collect();
    let mut times = vec![f64::INFINITY; files.len()];
    while start.elapsed() < limit {
        let tick = Instant::now();
        for (i, file) in files.iter().enumerate() {
            if times[i].is_infinite()
                && let Some(ts) = handler_time(file, victim)
            {
                times[i] = ts - epoch;
            }
        }
        if times.iter().all(|t| t.is_finite()) {
            break;
        }
        tokio::time::sleep_until((tick + POLL).into()).await;
    }
    times
}

impl ScaleReport {
    pub fn render(&self) -> String {
        let n = self.n;
        let mut out = format!(
            "\n=== scale: {n} agents on loopback, started at once (lan profile; ulimit -n {}) ===\n",
            self.fd_limit
        );
        let _ = writeln!(
            out,
            "spawned in {}, last readiness line at {}",
            fmt_s(self.spawn_spread_s),
            fmt_s(self.ready_max_s)
        );
        let c = &self.converged;
        let _ = writeln!(
            out,
            "every agent lists all {n} alive, since the first spawn (polled every {} ms): \
             median {}, p90 {}, last {}",
            POLL.as_millis(),
            fmt_s(median(c)),
            fmt_s(percentile(c, 90.0)),
            fmt_s(fmax(c))
        );
        if let Some(idle) = &self.idle {
            let _ = writeln!(out, "\nidle, per agent ({:.1} s window):", idle.window_s);
            let mut t = Table::new(&["", "max", "mean", ""]);
            t.metric("RSS, VmRSS (MiB)", &idle.rss_mib, 2, String::new());
            t.metric(
                "  anonymous, RssAnon (MiB)",
                &idle.anon_mib,
                2,
                String::new(),
            );
            t.metric("CPU (s per min)", &idle.cpu_per_min, 3, String::new());
            t.metric("gossip out (bytes/s)", &idle.bytes_per_s, 0, String::new());
            t.metric("gossip out (packets/s)", &idle.pkts_per_s, 2, String::new());
            let per = "gossip out per member known (bytes/s)";
            t.metric(per, &idle.bytes_per_member, 2, String::new());
            out.push_str(&t.render("  "));
            let total: f64 = idle.cpu_per_min.iter().sum::<f64>() / 60.0;
            let _ = writeln!(
                out,
                "  all {} agents together: {} CPU cores busy",
                idle.cpu_per_min.len(),
                fmt_num(total, 3)
            );
        } else {
            out.push_str("\nidle: no agent could be measured\n");
        }
        if !self.kills.is_empty() {
            let _ = writeln!(
                out,
                "\nkill -9: seconds until each survivor's member-failed handler ran"
            );
            let mut t = Table::new(&["victim", "survivors", "median", "p90", "p99", "last"]);
            let mut all = Vec::new();
            for k in &self.kills {
                all.extend(k.handled.iter().copied());
                t.row(kill_row(&k.victim, &k.handled));
            }
            t.row(kill_row("all kills", &all));
            out.push_str(&t.render("  "));
        }
        let _ = writeln!(
            out,
            "\nfalse failures (member-failed handler runs naming a running agent): {}",
            self.false_failures
        );
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }
}

fn kill_row(label: &str, times: &[f64]) -> Vec<String> {
    let timed_out = times.iter().filter(|t| t.is_infinite()).count();
    let survivors = if timed_out > 0 {
        format!("{} ({timed_out} timed out)", times.len())
    } else {
        times.len().to_string()
    };
    vec![
        label.to_string(),
        survivors,
        fmt_s(median(times)),
        fmt_s(percentile(times, 90.0)),
        fmt_s(percentile(times, 99.0)),
        fmt_s(fmax(times)),
    ]
}
