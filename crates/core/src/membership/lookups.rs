//! Questions the engine's sender rules ask the table about one address.

use std::net::SocketAddr;

use super::{Membership, Status};
use crate::identity::Identity;

impl Membership {
    /// True when the member at `addr` is down after a leave of its own (not a force-leave):
    /// it stays out until it contacts the cluster itself (`--join`, `--rejoin`).
    pub fn left_gracefully(&self, addr: SocketAddr) -> bool {
        (self.entries.get(&addr)).is_some_and(|e| e.status() == Status::Left && !e.forced)
    }

    /// True when the table has a meta (a name, tags) for the member at `addr`: it spoke as a
    /// shoal agent, not merely as a foca sender.
    pub fn has_meta(&self, addr: SocketAddr) -> bool {
        (self.entries.get(&addr)).is_some_and(|e| e.meta.is_some())
    }

    /// True when the member at `addr` is up (alive, suspect or leaving) in the table.
    pub fn is_up(&self, addr: SocketAddr) -> bool {
        (self.entries.get(&addr)).is_some_and(|e| e.up)
    }

    /// True when `id` itself announced that it is leaving (an intent for its current
    /// generation that is not an operator's force-leave).
    pub fn announced_leave(&self, id: Identity) -> bool {
        (self.entries.get(&id.addr)).is_some_and(|e| e.id == id && e.intent() && !e.forced)
    }
}
