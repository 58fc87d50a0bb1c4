//! What a node publishes: the member [`View`] (read through a `watch` by the agent, the
//! snapshot writer and the simulator) and the [`Stats`] counters.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::membership::{Member, Membership, Status};

/// The published view of the cluster.
#[derive(Debug, Clone)]
pub struct View {
    /// The local member.
    pub local: Member,
    /// Every known member, the local one included, sorted by name.
    pub members: Vec<Member>,
    /// True once this node has left the cluster.
    pub left: bool,
    /// Set when another live member claims this node's name and keeps it (it was there
    /// first): this node leaves, and its owner should exit with this message.
    pub conflict: Option<String>,
    /// Set when this node, alone, made `retry_max` join attempts and gave up (the agent
    /// exits 1 then, as Serf does); cleared if a member joins it after all.
    pub gave_up_joining: bool,
    /// The newest user-event Lamport time this node handled or skipped (kept in the snapshot).
    pub event_ltime: Option<u64>,
    /// The newest query Lamport time this node handled (kept in the snapshot).
    pub query_ltime: Option<u64>,
}

impl View {
    /// The view of `table`, with the node's own `left`, `conflict`, `gave_up_joining`, event
    /// and query state.
    pub fn of(
        table: &Membership,
        (left, conflict, gave_up_joining): (bool, Option<String>, bool),
        (event_ltime, query_ltime): (Option<u64>, Option<u64>),
    ) -> Self {
        let members = table.members();
        let local_addr = table.local_meta().id.addr;
        let local = members
            .iter()
            .find(|m| m.addr == local_addr)
            .cloned()
            .expect("the local member is always in the table");
        Self {
            local,
            members,
            left,
            conflict,
            gave_up_joining,
            event_ltime,
            query_ltime,
        }
    }

    /// Number of members with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.members.iter().filter(|m| m.status == status).count()
    }
}

/// Counters, readable at any time without asking the owner.
#[derive(Debug, Default)]
pub struct Stats {
    /// Datagrams received.
    pub packets_in: AtomicU64,
    /// Datagrams sent.
    pub packets_out: AtomicU64,
    /// Bytes received over UDP and TCP.
    pub bytes_in: AtomicU64,
    /// Bytes sent over UDP and TCP.
    pub bytes_out: AtomicU64,
    /// Datagrams dropped as malformed (bad envelope, undecodable, from a stranger).
    pub packets_dropped: AtomicU64,
    /// Push-pulls completed (both directions).
    pub push_pulls: AtomicU64,
    /// Member metas (name and tags) refused for breaking the safe-name rules or the limits,
    /// from gossip or push-pull: that member is not listed until it sends a valid one.
    pub metas_refused: AtomicU64,
    /// Events dropped because the consumer fell behind.
    pub events_dropped: AtomicU64,
    /// Probes that UDP lost and a TCP ping answered (memberlist's fallback).
    pub tcp_fallbacks: AtomicU64,
    /// The local health score (Lifeguard): 0 healthy, up to 8; probe timings stretch by
    /// `score + 1`.
    pub health_score: AtomicU64,
    /// Datagrams and stream frames refused before decoding, by reason (sealing, label,
    /// replay). Refused datagrams count in `packets_dropped` too.
    pub refused: Refused,
}

/// Packets refused before decoding, by [`crate::seal::Refusal::reason`].
#[derive(Debug, Default)]
pub struct Refused {
    /// Plaintext, and this node accepts only sealed packets.
    pub plaintext: AtomicU64,
    /// Sealed, and this node has no key.
    pub no_key: AtomicU64,
    /// Sealed with a key this node does not hold.
    pub unknown_key: AtomicU64,
    /// Too short for the header, label or nonce and tag.
    pub truncated: AtomicU64,
    /// Failed authentication (changed, forged or sealed for another cluster label).
    pub tampered: AtomicU64,
    /// Authentic but already received.
    pub replayed: AtomicU64,
    /// Authentic but stamped too far from this node's clock.
    pub stale: AtomicU64,
    /// Of another cluster label (plaintext).
    pub wrong_cluster: AtomicU64,
    /// Not a shoal envelope at all (when sealing or a label is on).
    pub malformed: AtomicU64,
}

impl Refused {
    /// The counter of `reason` ([`crate::seal::Refusal::reason`]'s names).
    pub fn counter(&self, reason: &str) -> Option<&AtomicU64> {
        Some(match reason {
            "plaintext" => &self.plaintext,
            "no_key" => &self.no_key,
            "unknown_key" => &self.unknown_key,
            "truncated" => &self.truncated,
            "tampered" => &self.tampered,
            "replayed" => &self.replayed,
            "stale" => &self.stale,
            "wrong_cluster" => &self.wrong_cluster,
            "malformed" => &self.malformed,
            _ => return None,
        })
    }

    /// Every reason and its count, in a stable order.
    pub fn all(&self) -> [(&'static str, u64); 9] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("plaintext", get(&self.plaintext)),
            ("no_key", get(&self.no_key)),
            ("unknown_key", get(&self.unknown_key)),
            ("truncated", get(&self.truncated)),
            ("tampered", get(&self.tampered)),
            ("replayed", get(&self.replayed)),
            ("stale", get(&self.stale)),
            ("wrong_cluster", get(&self.wrong_cluster)),
            ("malformed", get(&self.malformed)),
        ]
    }
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
