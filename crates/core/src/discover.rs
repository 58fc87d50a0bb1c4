//! `--discover CLUSTER`: zero-address discovery on the local network by a multicast beacon.
//!
//! Every agent with discovery on joins the group [`GROUP`] on [`PORT`] and sends a small
//! enveloped beacon there: its cluster name and gossip address. An agent that hears a beacon
//! of its own cluster from an address it does not know yet joins it (announce + push-pull).
//! Beacons of other cluster names (or sealed with other keys) are ignored, and so is a beacon
//! that names an address on another host than the one it came from ([`names_its_source`]).
//!
//! Why an own beacon and not mDNS: the only message needed is "cluster X has a member at A";
//! it must carry shoal's envelope (version, key id) like every other packet, and mDNS would add
//! a responder and DNS-SD record conventions for nothing else. The beacon is one datagram,
//! TTL 1 (it never leaves the LAN).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::envelope::{self, Kind};
use crate::identity::Identity;

/// The multicast group beacons go to (organisation-local scope).
pub const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 79, 48);
/// The UDP port of the beacon group.
pub const PORT: u16 = 7949;
/// Longest cluster name accepted.
pub const MAX_CLUSTER_LEN: usize = 64;

/// One beacon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beacon {
    /// The cluster name (`--discover CLUSTER`).
    pub cluster: String,
    /// Who sent it: where to join.
    pub from: Identity,
}

/// Discovery could not be set up. The node runs without it.
#[derive(Debug, Error)]
pub enum DiscoverError {
    /// The cluster name is empty or too long.
    #[error("invalid discovery cluster name {0:?}: 1 to {MAX_CLUSTER_LEN} bytes")]
    Name(String),
    /// The multicast socket could not be set up.
    #[error("cannot listen for discovery beacons on {GROUP}:{PORT}: {0}")]
    Socket(#[from] std::io::Error),
}

/// Checks a cluster name.
pub fn validate_cluster(name: &str) -> Result<(), DiscoverError> {
    if name.is_empty() || name.len() > MAX_CLUSTER_LEN {
        return Err(DiscoverError::Name(name.to_string()));
    }
    Ok(())
}

/// Encodes a beacon datagram.
pub fn encode(beacon: &Beacon) -> Result<Vec<u8>, postcard::Error> {
    Ok(envelope::seal(Kind::Beacon, &postcard::to_stdvec(beacon)?))
}

/// Decodes a beacon datagram; `None` for anything else (dropped silently: the group is shared).
pub fn decode(packet: &[u8]) -> Option<Beacon> {
    match envelope::open(packet) {
        Ok((Kind::Beacon, payload)) => postcard::from_bytes(payload).ok(),
        _ => None,
    }
}

/// True when `beacon`, received from `source`, names a gossip address on that same host
/// (beacons go out from the group port, so only the IPs can match). A beacon naming any other
/// host is forged or relayed: contacting it would aim this agent's announce and full state at
/// a third party.
pub fn names_its_source(beacon: &Beacon, source: SocketAddr) -> bool {
    beacon.from.addr.ip() == source.ip()
}

/// The group address.
pub fn group() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(GROUP, PORT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beacons_round_trip_and_garbage_is_ignored() {
        let b = Beacon {
            cluster: "prod".into(),
            from: Identity::new("10.0.0.1:7948".parse().expect("addr")),
        };
        assert_eq!(decode(&encode(&b).expect("encode")), Some(b));
        assert_eq!(decode(b"junk"), None);
        assert_eq!(decode(&envelope::seal(Kind::Digest, b"x")), None);
    }

    #[test]
    fn a_beacon_counts_only_when_it_names_its_own_host() {
        let b = Beacon {
            cluster: "prod".into(),
            from: Identity::new("10.0.0.1:7948".parse().expect("addr")),
        };
        assert!(names_its_source(&b, "10.0.0.1:7949".parse().expect("addr")));
        assert!(!names_its_source(
            &b,
            "10.0.0.9:7949".parse().expect("addr")
        ));
    }

    #[test]
    fn cluster_names_are_bounded() {
        assert!(validate_cluster("").is_err());
        assert!(validate_cluster(&"x".repeat(65)).is_err());
        assert!(validate_cluster("web").is_ok());
    }
}
