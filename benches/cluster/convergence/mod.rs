//! The convergence section: N agents started at once with identical arguments and a
//! half/half partition healed ([`simul`], [`partition`], in private net+mount namespaces),
//! and N agents joined at random ([`random`], in the bench's own namespace).
//! [`watch`] holds the per-agent convergence polls they share.

mod partition;
mod random;
mod simul;
mod watch;

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::agents::CONVERGE_POLL;
use crate::convergence::partition::render_partition;
use crate::convergence::random::{RandomRun, random_join_run};
use crate::convergence::simul::{SimulRun, render_simul, simul_run};
use crate::convergence::watch::{Times, median_of, slowest_names, worst};
use crate::netns::{own_namespace, reexec_unshared, run_tool, source_nat};
use crate::report::{Rng, Table, fmax, fmt_s, ok, progress};
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

impl ConvergenceReport {
    pub fn render(&self) -> String {
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
    pub fn render_random(&self) -> (String, Vec<f64>, Vec<f64>) {
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

impl ConvergenceReport {
    /// The simultaneous-start and heal lines of the targets section.
    pub fn target_lines(&self) -> (String, String) {
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
pub fn render_run_notes(
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

pub fn render_late_logs(out: &mut String, run: usize, logs: &[(String, String)]) {
    for (name, tail) in logs {
        let _ = writeln!(out, "  run {run}: log of {name} (last lines):");
        for line in tail.lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
}
