//! The identity foca puts in every packet: an address and a generation.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A member's identity on the wire.
///
/// Kept small on purpose: foca puts it in every packet twice. Names, tags and the rest travel as
/// custom broadcasts and in push-pull. A restarted agent starts from the wall-clock milliseconds,
/// so its new identity wins over the one the cluster may still remember as down.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identity {
    /// The address other members send gossip to (the advertised address).
    pub addr: SocketAddr,
    /// Bumped on every rejoin; higher wins an address conflict.
    pub generation: u64,
}

impl Identity {
    /// The first identity at `addr` (generation 1).
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            generation: 1,
        }
    }

    /// A fresh identity for `addr` for a node starting at `wall_clock`: the generation is its
    /// milliseconds since the Unix epoch, so it is higher than any earlier start's. The caller
    /// reads the clock (this module reads none).
    pub fn starting_at(addr: SocketAddr, wall_clock: SystemTime) -> Self {
        let generation = wall_clock
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        Self { addr, generation }
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.addr, self.generation)
    }
}

impl foca::Identity for Identity {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            addr: self.addr,
            generation: self.generation.wrapping_add(1),
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity as _;

    #[test]
    fn renewed_identity_wins_the_address_conflict() {
        let id = Identity::new("127.0.0.1:7948".parse().expect("addr"));
        let renewed = id.renew().expect("renew");
        assert!(renewed.win_addr_conflict(&id));
        assert!(!id.win_addr_conflict(&renewed));
        assert_eq!(id.addr(), renewed.addr());
    }
}
