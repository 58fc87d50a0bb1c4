//! The partition heal: cut the converged cluster in two with iptables, watch each side list
//! the other failed, delete the rules and time until every agent lists all N alive again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use shoal_proto::Client;
use tokio::task::JoinSet;

use crate::agents::{CONVERGE_POLL, SETTLE, get_members, members_of_all};
use crate::convergence::watch::{
    Times, alive_lag, all_converged, late_logs, median_of, slowest_names, worst,
};
use crate::convergence::{
    HANDLER_QUIET, HANDLER_WAIT, LATE_AGENTS, NetnsReport, PARTITION_POLL, TARGET_HEAL_S,
    render_late_logs, render_run_notes,
};
use crate::handlers::{handler_file, handler_names};
use crate::netns::{Cut, UID_BASE, dropped_packets};
use crate::report::{Table, fmax, fmt_s, median, ok, percentile, progress, short_list};
use crate::settings::{ConvSettings, Settings};

#[derive(Debug, Serialize, Deserialize)]
pub struct PartitionRun {
    /// n1..n{side_a} on one side, the rest on the other.
    pub side_a: usize,
    pub cut_s: f64,
    /// Per agent: seconds after the cut until a poll showed the whole other side failed.
    pub detected: Vec<Option<f64>>,
    /// Per agent at the end of the cut: members of the other side listed failed (None: no
    /// answer).
    pub other_failed: Vec<Option<usize>>,
    /// Per agent at the end of the cut: members of its own side not listed alive.
    pub own_not_alive: Vec<usize>,
    /// At the end of the cut, agents that did not list the whole other side failed, or their
    /// own side alive: what they listed instead.
    pub cut_lag: Vec<String>,
    /// Over every (agent, other-side member) pair: median, 90th percentile and max of the
    /// time after the cut until the agent listed the member failed.
    /// (`None`: infinite, some pair was never listed failed; JSON has no infinity.)
    pub pair_median: Option<f64>,
    pub pair_p90: Option<f64>,
    pub pair_max: Option<f64>,
    /// The slowest pairs with the statuses the agent listed.
    pub slow_pairs: Vec<String>,
    /// Other-side members listed failed and later not, while still cut off.
    pub cut_flaps: Vec<String>,
    /// After the heal: own-side members an agent listed as anything but alive.
    pub heal_flaps: Vec<String>,
    /// member-failed handler lines written after the heal (for own-side members: the other
    /// side's verdict on them arriving with the heal).
    pub failed_after_heal: usize,
    pub failed_after_heal_own: usize,
    /// Agents whose member-failed handler named the whole other side by the end of the cut.
    pub failed_handled: usize,
    /// member-failed handler lines during the cut naming a member of the agent's own side.
    pub failed_own_side: usize,
    /// member-join handler lines during the cut (a member came back while cut off: the cut
    /// leaked, or a member flapped).
    pub join_during_cut: usize,
    /// Packets the two DROP rules dropped.
    pub dropped: Option<u64>,
    /// Lists all N alive, since the rules were deleted.
    pub healed: Times,
    pub heal_stable: Option<String>,
    /// member-join handler lines written after the heal.
    pub join_lines: usize,
    /// Agents whose new member-join lines name each member of the other side exactly once and
    /// nothing else.
    pub join_exact: usize,
    /// (agent, other-side member) pairs with no member-join line.
    pub join_missing: usize,
    /// Lines beyond the first for the same (agent, member).
    pub join_duplicates: usize,
    /// Lines naming a member of the agent's own side.
    pub join_own_side: usize,
    pub late_logs: Vec<(String, String)>,
}

/// What one agent listed for the other side during the cut.
pub struct CutWatch {
    /// Seconds after the cut until a poll showed the whole other side failed.
    pub all_failed: Option<f64>,
    /// Per member of the other side: its status changes, (seconds after the cut, status), the
    /// first being the status at the first poll.
    pub history: BTreeMap<String, Vec<(f64, String)>>,
}

impl CutWatch {
    /// When `member` was first listed failed.
    pub fn failed_at(&self, member: &str) -> Option<f64> {
        self.history
            .get(member)?
            .iter()
            .find(|(_, status)| status == "failed")
            .map(|(t, _)| *t)
    }

    /// `alive 0.0 s, suspect 2.1 s, failed 3.4 s`.
    pub fn history_of(&self, member: &str) -> String {
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
pub async fn watch_cut(
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
pub async fn watch_heal(
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
pub async fn partition_run(
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

pub fn render_partition(c: &ConvSettings, r: &NetnsReport) -> String {
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
