//! Per-agent convergence polls and the statistics over their [`Times`].

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use shoal_proto::{Client, MembersResponse};
use shoal_testkit::log_tail;
use tokio::task::JoinSet;

use crate::agents::{CONVERGE_POLL, get_members, members_of_all};
use crate::convergence::{LATE_AGENTS, LATE_LOG_LINES};
use crate::report::{median, short_list};

/// Per agent: seconds since the reference instant, or what it listed last when the deadline
/// passed.
pub type Times = Vec<std::result::Result<f64, String>>;

/// Worst of per-agent times (infinity if any missed the deadline, NaN if empty).
pub fn worst(times: &Times) -> f64 {
    if times.is_empty() {
        return f64::NAN;
    }
    times
        .iter()
        .map(|t| *t.as_ref().unwrap_or(&f64::INFINITY))
        .fold(f64::NEG_INFINITY, f64::max)
}

pub fn median_of(times: &Times) -> f64 {
    median(
        &times
            .iter()
            .map(|t| *t.as_ref().unwrap_or(&f64::INFINITY))
            .collect::<Vec<_>>(),
    )
}

/// Indices of the `k` slowest agents, slowest first (deadline misses first of all).
pub fn slowest_k(times: &Times, k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..times.len()).collect();
    let key = |i: usize| *times[i].as_ref().unwrap_or(&f64::INFINITY);
    idx.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
    idx.truncate(k);
    idx
}

/// `n17 1.874 s, n3 1.801 s` for the `k` slowest agents.
pub fn slowest_names(names: &[String], times: &Times, k: usize) -> String {
    slowest_k(times, k)
        .into_iter()
        .map(|i| match &times[i] {
            Ok(t) => format!("{} {t:.2}", names[i]),
            Err(_) => format!("{} timeout", names[i]),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `None` if `view` lists exactly `expected` as alive, else what is wrong.
pub fn alive_lag(view: &MembersResponse, expected: &BTreeSet<String>) -> Option<String> {
    let alive: BTreeSet<&String> = view
        .members
        .iter()
        .filter(|m| m.status == "alive")
        .map(|m| &m.name)
        .collect();
    let missing: Vec<&String> = expected.iter().filter(|n| !alive.contains(n)).collect();
    let extra: Vec<&&String> = alive.iter().filter(|n| !expected.contains(**n)).collect();
    if missing.is_empty() && extra.is_empty() {
        return None;
    }
    let mut out = format!(
        "lists {}/{} alive",
        alive.len() - extra.len(),
        expected.len()
    );
    if !missing.is_empty() {
        let statuses: Vec<String> = missing
            .iter()
            .map(|n| match view.members.iter().find(|m| &m.name == *n) {
                Some(m) => format!("{n} {}", m.status),
                None => format!("{n} unknown"),
            })
            .collect();
        let _ = write!(out, "; not alive: {}", short_list(&statuses));
    }
    if !extra.is_empty() {
        let _ = write!(out, "; unexpected: {}", short_list(&extra));
    }
    Some(out)
}

/// Polls one agent every [`CONVERGE_POLL`] until it lists exactly `expected` alive: seconds
/// since `since` of the answer that showed it, or at `deadline` what it listed last.
pub async fn watch_converge(
    client: &Client,
    expected: &BTreeSet<String>,
    since: Instant,
    deadline: Instant,
) -> std::result::Result<f64, String> {
    loop {
        let tick = Instant::now();
        let last = match get_members(client).await {
            Some(view) => match alive_lag(&view, expected) {
                None => return Ok(since.elapsed().as_secs_f64()),
                Some(why) => why,
            },
            None => "no answer".to_string(),
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep_until((tick + CONVERGE_POLL).into()).await;
    }
}

/// [`watch_converge`] on every client at once.
pub async fn converge_each(
    clients: &[Client],
    expected: &Arc<BTreeSet<String>>,
    since: Instant,
    deadline: Instant,
) -> Times {
    let mut set = JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        let expected = expected.clone();
        set.spawn(async move { (i, watch_converge(&client, &expected, since, deadline).await) });
    }
    let mut out: Times = vec![Err("watcher failed".into()); clients.len()];
    while let Some(joined) = set.join_next().await {
        if let Ok((i, t)) = joined {
            out[i] = t;
        }
    }
    out
}

/// One final look at every agent at once: `None` if all list exactly `expected` alive.
pub async fn all_converged(
    clients: &[Client],
    names: &[String],
    expected: &BTreeSet<String>,
) -> Option<String> {
    let views = members_of_all(clients).await;
    let lagging: Vec<String> = views
        .iter()
        .zip(names)
        .filter_map(|(view, name)| match view {
            None => Some(format!("{name}: no answer")),
            Some(view) => alive_lag(view, expected).map(|why| format!("{name} {why}")),
        })
        .collect();
    (!lagging.is_empty()).then(|| {
        format!(
            "{} agents not converged: {}",
            lagging.len(),
            short_list(&lagging)
        )
    })
}

/// The last lines of the slowest agents' logs, for runs that missed a target.
pub fn late_logs(names: &[String], logs: &[PathBuf], times: &Times) -> Vec<(String, String)> {
    slowest_k(times, LATE_AGENTS)
        .into_iter()
        .map(|i| (names[i].clone(), log_tail(&logs[i], LATE_LOG_LINES)))
        .collect()
}
