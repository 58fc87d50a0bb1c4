//! The partition heal: cut the converged cluster in two with iptables, watch each side list
//! the other failed, delete the rules and time until every agent lists all N alive again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use shoal_proto::{Client, MembersResponse};
use tokio::task::JoinSet;

use crate::agents::{CONVERGE_POLL, SETTLE, get_members, members_of_all};
use crate::convergence::watch::{Times, alive_lag, all_converged, late_logs, slowest_names, worst};
use crate::convergence::{HANDLER_QUIET, HANDLER_WAIT, LATE_AGENTS, PARTITION_POLL, TARGET_HEAL_S};
use crate::handlers::{handler_file, handler_names};
use crate::netns::{Cut, dropped_packets};
use crate::report::{fmax, fmt_s, median, percentile, progress, short_list};
use crate::settings::{ConvSettings, Settings};

#[derive(Debug, Default, Serialize, Deserialize)]
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

/// The two sides of the partition: agents n1..n{a} and the rest.
struct Sides {
    a: usize,
    sets: [Arc<BTreeSet<String>>; 2],
}

impl Sides {
    fn new(names: &[String], a: usize) -> Self {
        Self {
            a,
            sets: [
                Arc::new(names[..a].iter().cloned().collect()),
                Arc::new(names[a..].iter().cloned().collect()),
            ],
        }
    }

    /// The side of agent `i`.
    fn own(&self, i: usize) -> &Arc<BTreeSet<String>> {
        &self.sets[usize::from(i >= self.a)]
    }

    /// The side agent `i` is cut off from.
    fn other(&self, i: usize) -> &Arc<BTreeSet<String>> {
        &self.sets[1 - usize::from(i >= self.a)]
    }
}

/// Every agent's member-join and member-failed handler files.
struct HandlerFiles {
    join: Vec<PathBuf>,
    failed: Vec<PathBuf>,
}

impl HandlerFiles {
    fn new(handlers: &Path, names: &[String]) -> Self {
        let of = |event: &str| -> Vec<PathBuf> {
            names
                .iter()
                .map(|a| handler_file(handlers, a, event))
                .collect()
        };
        Self {
            join: of("member-join"),
            failed: of("member-failed"),
        }
    }

    /// Lines per file so far.
    fn count(files: &[PathBuf]) -> Vec<usize> {
        files.iter().map(|f| handler_names(f).len()).collect()
    }

    /// Per file, the member names of the lines after the first `base[i]`.
    fn since(files: &[PathBuf], base: &[usize]) -> Vec<Vec<String>> {
        files
            .iter()
            .zip(base)
            .map(|(f, &b)| handler_names(f).into_iter().skip(b).collect())
            .collect()
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
    let sides = Sides::new(names, c.side_a());
    let files = HandlerFiles::new(handlers, names);
    tokio::time::sleep(SETTLE).await;
    let join_base = HandlerFiles::count(&files.join);
    let failed_base = HandlerFiles::count(&files.failed);
    let dropped0 = dropped_packets().await;

    progress(&format!(
        "[converge] partition {run}/{}: cutting n1..n{} from n{}..n{n} for {} s",
        c.runs,
        sides.a,
        sides.a + 1,
        c.partition.as_secs()
    ));
    let mut report = PartitionRun {
        side_a: sides.a,
        ..PartitionRun::default()
    };
    let mut cut = Cut::new(sides.a, n);
    cut.install().await?;
    let t_cut = Instant::now();
    let end = t_cut + c.partition;
    let watches = watch_cut_all(clients, &sides, t_cut, end).await?;
    record_cut_watches(&mut report, &watches, &sides, names);
    tokio::time::sleep_until(end.into()).await;
    // The state at the end of the cut, just before the heal.
    record_end_of_cut(&mut report, &members_of_all(clients).await, &sides, names);
    let join_heal_base = HandlerFiles::count(&files.join);
    let failed_heal_base = HandlerFiles::count(&files.failed);
    record_cut_handlers(&mut report, &files, &sides, &failed_base);
    report.join_during_cut = join_heal_base
        .iter()
        .zip(&join_base)
        .map(|(b, a)| b.saturating_sub(*a))
        .sum();
    report.dropped = match (dropped0, dropped_packets().await) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };

    cut.remove().await?;
    let t_heal = Instant::now();
    report.cut_s = t_heal.duration_since(t_cut).as_secs_f64();
    watch_heal_all(&mut report, s.timeout, names, clients, &sides, t_heal).await?;
    progress(&format!(
        "[converge] partition {run}/{}: {} of {n} agents listed the whole other side failed; \
         all list {n} alive {} after the heal (slowest {})",
        c.runs,
        report
            .other_failed
            .iter()
            .enumerate()
            .filter(|(i, f)| **f == Some(sides.other(*i).len()))
            .count(),
        fmt_s(worst(&report.healed)),
        slowest_names(names, &report.healed, LATE_AGENTS)
    ));
    wait_for_join_handlers(&files.join).await;
    if worst(&report.healed) > TARGET_HEAL_S {
        report.late_logs = late_logs(names, logs, &report.healed);
    }
    record_heal_handlers(
        &mut report,
        &files,
        &sides,
        &failed_heal_base,
        &join_heal_base,
    );
    Ok(report)
}

/// [`watch_cut`] on every agent at once, until `end`.
async fn watch_cut_all(
    clients: &[Client],
    sides: &Sides,
    t_cut: Instant,
    end: Instant,
) -> Result<Vec<CutWatch>> {
    let mut set = JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        let other = sides.other(i).clone();
        set.spawn(async move { (i, watch_cut(client, other, t_cut, end).await) });
    }
    let mut watches: Vec<Option<CutWatch>> = (0..clients.len()).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let (i, w) = joined.context("a watcher task failed")?;
        watches[i] = Some(w);
    }
    Ok(watches.into_iter().flatten().collect())
}

/// From the watches of the cut: when each agent saw the whole other side failed, the
/// (agent, member) pair times and the slowest pairs, and members that flapped back.
fn record_cut_watches(r: &mut PartitionRun, watches: &[CutWatch], sides: &Sides, names: &[String]) {
    r.detected = watches.iter().map(|w| w.all_failed).collect();
    // Every (agent, other-side member) pair: when the agent first listed it failed.
    let mut pairs: Vec<(f64, usize, String)> = Vec::new();
    for (i, w) in watches.iter().enumerate() {
        for m in sides.other(i).iter() {
            let t = w.failed_at(m).unwrap_or(f64::INFINITY);
            pairs.push((t, i, m.clone()));
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let pair_times: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    r.pair_median = Some(median(&pair_times)).filter(|v| v.is_finite());
    r.pair_p90 = Some(percentile(&pair_times, 90.0)).filter(|v| v.is_finite());
    r.pair_max = Some(fmax(&pair_times)).filter(|v| v.is_finite());
    r.slow_pairs = pairs
        .iter()
        .take(LATE_AGENTS)
        .map(|(_, i, m)| format!("{} listed {m}: {}", names[*i], watches[*i].history_of(m)))
        .collect();
    // Members of the other side listed failed and later not failed, while still cut off.
    for (i, w) in watches.iter().enumerate() {
        for (m, h) in &w.history {
            if let Some(first) = h.iter().position(|(_, s)| s == "failed")
                && h[first..].iter().any(|(_, s)| s != "failed")
            {
                r.cut_flaps
                    .push(format!("{} listed {m}: {}", names[i], w.history_of(m)));
            }
        }
    }
}

/// What every agent lists at the end of the cut: the other side failed, its own alive.
fn record_end_of_cut(
    r: &mut PartitionRun,
    views: &[Option<MembersResponse>],
    sides: &Sides,
    names: &[String],
) {
    for (i, view) in views.iter().enumerate() {
        let (own, other) = (sides.own(i), sides.other(i));
        let Some(view) = view else {
            r.other_failed.push(None);
            r.own_not_alive.push(0);
            continue;
        };
        let count = |set: &BTreeSet<String>, status: &str| {
            view.members
                .iter()
                .filter(|m| m.status == status && set.contains(&m.name))
                .count()
        };
        r.other_failed.push(Some(count(other, "failed")));
        r.own_not_alive.push(own.len() - count(own, "alive"));
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
            r.cut_lag
                .push(format!("{} lists {}", names[i], short_list(&odd)));
        }
    }
}

/// The member-failed handler lines written during the cut.
fn record_cut_handlers(
    r: &mut PartitionRun,
    files: &HandlerFiles,
    sides: &Sides,
    failed_base: &[usize],
) {
    for (i, seen) in HandlerFiles::since(&files.failed, failed_base)
        .iter()
        .enumerate()
    {
        if sides.other(i).iter().all(|m| seen.contains(m)) {
            r.failed_handled += 1;
        }
        r.failed_own_side += seen.iter().filter(|m| sides.own(i).contains(*m)).count();
    }
}

/// [`watch_heal`] on every agent at once: when it lists all N alive, and own-side flaps.
async fn watch_heal_all(
    r: &mut PartitionRun,
    timeout: Duration,
    names: &[String],
    clients: &[Client],
    sides: &Sides,
    t_heal: Instant,
) -> Result<()> {
    let all = Arc::new(names.iter().cloned().collect::<BTreeSet<String>>());
    let mut set = JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        let all = all.clone();
        let own = sides.own(i).clone();
        let deadline = t_heal + timeout;
        set.spawn(async move { (i, watch_heal(&client, &all, &own, t_heal, deadline).await) });
    }
    r.healed = vec![Err("watcher failed".into()); names.len()];
    while let Some(joined) = set.join_next().await {
        let (i, (t, flaps)) = joined.context("a watcher task failed")?;
        r.healed[i] = t;
        if !flaps.is_empty() {
            r.heal_flaps
                .push(format!("{} listed {}", names[i], short_list(&flaps)));
        }
    }
    r.heal_stable = all_converged(clients, names, &all).await;
    Ok(())
}

/// Waits for the member-join handlers to finish: no new line for [`HANDLER_QUIET`], or
/// [`HANDLER_WAIT`] at the most.
async fn wait_for_join_handlers(join_files: &[PathBuf]) {
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
}

/// The handler lines written after the heal: member-failed ones, and how exactly the
/// member-join ones name the returning side.
fn record_heal_handlers(
    r: &mut PartitionRun,
    files: &HandlerFiles,
    sides: &Sides,
    failed_heal_base: &[usize],
    join_heal_base: &[usize],
) {
    for (i, new) in HandlerFiles::since(&files.failed, failed_heal_base)
        .iter()
        .enumerate()
    {
        r.failed_after_heal += new.len();
        r.failed_after_heal_own += new.iter().filter(|m| sides.own(i).contains(*m)).count();
    }
    for (i, new) in HandlerFiles::since(&files.join, join_heal_base)
        .iter()
        .enumerate()
    {
        let other = sides.other(i);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for m in new {
            *counts.entry(m.as_str()).or_default() += 1;
        }
        let missing = other
            .iter()
            .filter(|m| !counts.contains_key(m.as_str()))
            .count();
        let duplicates: usize = counts.values().map(|c| c - 1).sum();
        let own = new.iter().filter(|m| !other.contains(*m)).count();
        r.join_lines += new.len();
        r.join_missing += missing;
        r.join_duplicates += duplicates;
        r.join_own_side += own;
        if missing == 0 && duplicates == 0 && own == 0 {
            r.join_exact += 1;
        }
    }
}
