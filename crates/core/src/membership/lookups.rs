//! Questions the engine's sender rules ask the table about one address.

use std::net::SocketAddr;

use super::{Membership, Status};

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
}
