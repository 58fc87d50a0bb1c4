//! The random join: N agents started one after another, each joining a random running one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use crate::agents::{Cluster, members_of_all};
use crate::convergence::watch::{Times, all_converged, converge_each, late_logs, worst};
use crate::report::{Rng, progress, short_list};
use crate::settings::{ConvSettings, Settings};

/// One run of the random join (in the bench's own namespace).
pub struct RandomRun {
    pub names: Vec<String>,
    pub spawn_s: f64,
    /// When the last agent was started, since the first was.
    pub last_start_s: f64,
    /// Lists all N alive, since the first spawn.
    pub converged: Times,
    pub stable: Option<String>,
    pub late_logs: Vec<(String, String)>,
    /// If the agents did not converge: the groups of agents with the same view at the end, and
    /// the agents whose --join target is outside their group.
    pub groups: Vec<String>,
}

/// N agents started one after the other, each joining a random running one (the existing
/// startup); then every agent is polled until it lists all N alive.
pub async fn random_join_run(
    s: &Settings,
    c: ConvSettings,
    rng: &mut Rng,
    run: usize,
) -> Result<RandomRun> {
    let mut cluster = Cluster::new(&format!("random{run}"), s.keep_logs)?;
    cluster.log_level = s.agent_log_level.clone();
    progress(&format!(
        "[converge] random join {run}/{}: starting {} agents",
        c.runs, c.n
    ));
    let start = Instant::now();
    let mut last_start = start;
    for i in 0..c.n {
        if i + 1 == c.n {
            last_start = Instant::now();
        }
        cluster.spawn(rng).await?;
    }
    let spawn = start.elapsed();
    let names: Vec<String> = cluster.agents.iter().map(|a| a.name.clone()).collect();
    let expected = Arc::new(cluster.names());
    let clients = cluster.clients();
    let converged = converge_each(&clients, &expected, start, Instant::now() + s.timeout).await;
    let stable = all_converged(&clients, &names, &expected).await;
    let logs: Vec<PathBuf> = cluster.agents.iter().map(|a| a.log.clone()).collect();
    let (late_logs, groups) = if worst(&converged).is_finite() {
        (Vec::new(), Vec::new())
    } else {
        (
            late_logs(&names, &logs, &converged),
            view_groups(&cluster).await,
        )
    };
    cluster.stop().await;
    Ok(RandomRun {
        names,
        spawn_s: spawn.as_secs_f64(),
        last_start_s: last_start.duration_since(start).as_secs_f64(),
        converged,
        stable,
        late_logs,
        groups,
    })
}

/// Groups the agents by the set of members they list alive; names the agents whose --join
/// target is in another group.
pub async fn view_groups(cluster: &Cluster) -> Vec<String> {
    let views = members_of_all(&cluster.clients()).await;
    let mut groups: BTreeMap<Vec<String>, Vec<usize>> = BTreeMap::new();
    for (i, view) in views.iter().enumerate() {
        let alive: Vec<String> = view.as_ref().map_or(Vec::new(), |v| {
            let mut a: Vec<String> = v
                .members
                .iter()
                .filter(|m| m.status == "alive")
                .map(|m| m.name.clone())
                .collect();
            a.sort();
            a
        });
        groups.entry(alive).or_default().push(i);
    }
    let group_of = |name: &str| {
        groups
            .values()
            .position(|g| g.iter().any(|&i| cluster.agents[i].name == name))
    };
    groups
        .iter()
        .enumerate()
        .map(|(g, (alive, members))| {
            let names: Vec<&str> = members
                .iter()
                .map(|&i| cluster.agents[i].name.as_str())
                .collect();
            let outside: Vec<String> = members
                .iter()
                .map(|&i| &cluster.agents[i])
                .filter_map(|a| {
                    let target = a.joined_to.as_deref()?;
                    (group_of(target) != Some(g)).then(|| format!("{} (--join {target})", a.name))
                })
                .collect();
            format!(
                "{} agents list {} alive: {}{}",
                members.len(),
                alive.len(),
                short_list(&names),
                if outside.is_empty() {
                    String::new()
                } else {
                    format!("; joined outside the group: {}", outside.join(", "))
                }
            )
        })
        .collect()
}
