//! The loss run with Serf: the same private namespace, drop rule, polls and counts as
//! shoal's (`crate::loss`), Serf's member list read over its RPC. Agents join with
//! `-retry-join` (1 s interval): a plain `-join` that fails under loss makes `serf agent`
//! exit.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::handlers::{handler_file, handler_spec};
use crate::lister::Lister;
use crate::loss::{LOSS_CONVERGE_DEADLINE, LossReport, loss_window};
use crate::netns::iptables_counters;
use crate::report::{Peer, Rng, progress};
use crate::serf::SerfCluster;
use crate::settings::Settings;

/// Serf's loss scenario, run inside the private namespace.
pub async fn serf_loss_scenario(s: &Settings, serf: &Path, rng: &mut Rng) -> Result<LossReport> {
    let n = s.loss_nodes;
    let counters0 = iptables_counters().await;
    let mut cluster = SerfCluster::new(serf, "loss", s.keep_logs, handler_spec)?;
    cluster.retry_join = true;
    progress(&format!("[loss N={n}] starting {n} Serf agents"));
    let (spawn, converge) = cluster.start(n, rng, LOSS_CONVERGE_DEADLINE).await?;
    let agents: Vec<(String, Lister)> = cluster
        .agents
        .iter()
        .map(|a| (a.name.clone(), a.lister()))
        .collect();
    let files: Vec<PathBuf> = cluster
        .agents
        .iter()
        .map(|a| handler_file(&cluster.dir.handlers, &a.name, "member-failed"))
        .collect();
    let mut report = LossReport::new(Peer::Serf, s, spawn, converge);
    loss_window(s, &mut report, agents, &files, counters0).await?;
    report.stable = cluster.check_converged().await.err();
    cluster.stop().await;
    Ok(report)
}
