//! The convergence section: N agents started at once with identical arguments and a
//! half/half partition healed ([`simul`], [`partition`], in private net+mount namespaces),
//! and N agents joined at random ([`random`], in the bench's own namespace).
//! [`watch`] holds the per-agent convergence polls they share.

mod partition;
mod random;
mod report;
mod simul;
mod watch;

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::convergence::random::{RandomRun, random_join_run};
use crate::convergence::simul::{SimulRun, simul_run};
use crate::convergence::watch::worst;
use crate::netns::{own_namespace, reexec_unshared, run_tool, source_nat};
use crate::report::{Rng, fmt_s, progress};
use crate::settings::{ConvSettings, Settings};

/// Targets of the convergence section (lan profile, N = 50), worst run.
pub const TARGET_SIMUL_S: f64 = 3.0;

pub const TARGET_HEAL_S: f64 = 3.0;

/// The cluster size the convergence targets are stated for.
pub const TARGET_CONV_N: usize = 50;

/// Gossip port of every agent of the simultaneous start (agent K binds 127.0.0.K).
pub const SIMUL_PORT: u16 = 7948;

/// Poll period of every agent while the partition lasts (time until it sees the other side
/// failed).
pub const PARTITION_POLL: Duration = Duration::from_millis(500);

/// After the heal: handler output counts as complete once unchanged for this long...
pub const HANDLER_QUIET: Duration = Duration::from_secs(1);

/// ...or after this long at the most.
pub const HANDLER_WAIT: Duration = Duration::from_secs(10);

/// A run over target (or a timeout) shows this many of the slowest agents' logs.
pub const LATE_AGENTS: usize = 3;

/// Log lines shown per late agent.
pub const LATE_LOG_LINES: usize = 12;

#[derive(Debug, Serialize, Deserialize)]
pub enum NetnsOutcome {
    Skipped(String),
    Done(NetnsReport),
}

/// Result of the inner run (simultaneous start and partition heal).
#[derive(Debug, Serialize, Deserialize)]
pub struct NetnsReport {
    pub n: usize,
    /// Addresses `peers:7948` resolves to inside the namespace (the bench's own lookup).
    pub resolved: usize,
    /// Why the partition runs are skipped, if they are.
    pub partition_skipped: Option<String>,
    /// Why the agents' connections are not source-NATed to their own address, if they are not
    /// (--no-snat, or the owner match or SNAT is unavailable): the cut then leaks.
    pub no_snat: Option<String>,
    pub runs: Vec<SimulRun>,
}

pub struct ConvergenceReport {
    pub c: ConvSettings,
    pub netns: NetnsOutcome,
    pub random: Vec<RandomRun>,
}

pub async fn convergence_section(
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

pub async fn outer_convergence_run(s: &Settings, c: ConvSettings) -> Result<NetnsOutcome> {
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
pub struct NetnsSetup {
    pub _dir: tempfile::TempDir,
    pub resolved: usize,
    /// Why the partition cannot run (no iprange match), if so.
    pub no_partition: Option<String>,
    /// Why there is no per-agent source NAT, if there is none.
    pub no_snat: Option<String>,
}

/// Inside `unshare --net --mount`: lo up, /etc/hosts mapping `peers` to 127.0.0.1..N, iprange
/// check. Refuses to touch anything if either namespace is the parent's.
pub async fn setup_convergence_ns(
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

pub async fn inner_convergence_run(
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
