//! Where a scenario reads one agent's member list: shoal's control API or Serf's RPC. The
//! scenarios that both run (kills, leaves, pauses, the loss run) poll through this, so both
//! are polled the same way: a new TCP connection per poll, the same deadline.

use shoal_proto::Client;

use crate::agents::{REQUEST_TIMEOUT, get_members};
use crate::serf_rpc;

/// One agent's member list source.
#[derive(Clone)]
pub enum Lister {
    /// `GET /v1/members` of a shoal agent.
    Shoal(Client),
    /// The `members` RPC of a Serf agent at this address.
    Serf(String),
}

impl Lister {
    /// `(name, status)` of every member listed; `None` if no answer came in time.
    pub async fn statuses(&self) -> Option<Vec<(String, String)>> {
        match self {
            Lister::Shoal(client) => get_members(client).await.map(|view| {
                view.members
                    .into_iter()
                    .map(|m| (m.name, m.status))
                    .collect()
            }),
            Lister::Serf(rpc) => serf_rpc::members(rpc, REQUEST_TIMEOUT).await.ok(),
        }
    }

    /// The status of `member` in this agent's list (`None`: no answer or not listed).
    pub async fn status_of(&self, member: &str) -> Option<String> {
        self.statuses()
            .await?
            .into_iter()
            .find(|(name, _)| name == member)
            .map(|(_, status)| status)
    }
}
