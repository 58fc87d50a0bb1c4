//! Wire packets of each messaging scenario, counted as the idle figures are (iptables,
//! [`PortCounter`]: every packet between two agents' gossip ports, once), less the cluster's
//! idle traffic over the same time: what one user event, query or tag change costs per agent.
//! Each scenario's count ends [`SETTLE`] after its last run, so its last retransmissions
//! count to it and not to the next scenario.
//!
//! The idle rate is measured over [`IDLE_WINDOW`] right before the scenarios. Periodic
//! traffic that is not steady (Serf's push-pull every 30 s, a few TCP packets per exchange)
//! makes the figures noisy by a packet or so per agent and run, more for the long Serf query
//! runs (each waits its 6.4 s timeout).

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::traffic::PortCounter;

/// How long the idle rate is measured before the scenarios.
pub const IDLE_WINDOW: Duration = Duration::from_secs(10);

/// How long after a scenario's last run its gossip is still counted: a run ends when the
/// change is seen everywhere, but the retransmissions go on for a few gossip rounds (a tag
/// change is listed everywhere in about 10 ms; 20 of them would otherwise be counted in 0.2 s).
pub const SETTLE: Duration = Duration::from_secs(2);

/// The counter over one cluster's gossip ports and its idle rate.
pub struct Wire {
    counter: PortCounter,
    /// Packets per second of the whole cluster while nothing happens.
    idle_per_s: f64,
    agents: usize,
}

/// Where a scenario started: the counter's packets and the time.
pub type Mark = Option<(u64, Instant)>;

impl Wire {
    /// Installs the counter over `ports` and measures the idle rate. `Err`: why not (counting
    /// needs root and iptables).
    pub async fn start(tag: &str, ports: &[u16]) -> Result<Self> {
        let counter = PortCounter::install(tag, ports).await?;
        let (p0, _) = counter.read().await?;
        let t0 = Instant::now();
        tokio::time::sleep(IDLE_WINDOW).await;
        let (p1, _) = counter.read().await?;
        let idle_per_s = p1.saturating_sub(p0) as f64 / t0.elapsed().as_secs_f64();
        Ok(Self {
            counter,
            idle_per_s,
            agents: ports.len(),
        })
    }

    /// Marks the start of a scenario (`None` if the counter cannot be read).
    pub async fn mark(&self) -> Mark {
        let (packets, _) = self.counter.read().await.ok()?;
        Some((packets, Instant::now()))
    }

    /// Packets per agent and run since `mark`, [`SETTLE`] after the last run, less the idle
    /// traffic of that time.
    pub async fn per_run(&self, mark: Mark, runs: usize) -> Option<f64> {
        let (p0, t0) = mark?;
        tokio::time::sleep(SETTLE).await;
        let secs = t0.elapsed().as_secs_f64();
        let (p1, _) = self.counter.read().await.ok()?;
        let extra = p1.saturating_sub(p0) as f64 - self.idle_per_s * secs;
        Some(extra / runs.max(1) as f64 / self.agents.max(1) as f64)
    }
}
