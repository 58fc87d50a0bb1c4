//! Independent suspicions (Lifeguard's "dynamic suspicion", memberlist's `suspicion.go` in
//! spirit): a suspicion starts long and shortens as other members confirm it.
//!
//! foca's suspect updates carry no accuser, and a suspicion gossiped on by every member that
//! heard it would look confirmed at once. So a member whose own probe of `target` failed says so
//! in an [`Accusation`] (a custom broadcast, gossiped like the others); the [`Accusations`] a
//! node heard count the distinct members that independently failed to reach `target` at that
//! incarnation, and [`suspicion_timeout`] turns the count into the time the node waits before
//! it declares `target` down. A killed or powered-off member is soon accused by several
//! members and goes down at the short end; a healthy member suspected by one observer behind
//! a lossy link gets the long end to refute.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::identity::Identity;

/// Confirmations after which a suspicion runs at its shortest (memberlist's `k`).
pub const EXPECTED_CONFIRMATIONS: usize = 3;

/// Accusers kept per member: more than [`EXPECTED_CONFIRMATIONS`] changes nothing, and a flood
/// of forged accusers cannot grow the table.
pub const MAX_ACCUSERS: usize = 8;

/// Members with accusations kept at once (the oldest entry goes first).
pub const MAX_TARGETS: usize = 1024;

/// `accuser`'s own probe of `target` (at `incarnation`) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accusation {
    /// The member suspected.
    pub target: Identity,
    /// Its incarnation when the probe failed; a refutation raises it, which voids the accusation.
    pub incarnation: u16,
    /// Who failed to reach it.
    pub accuser: Identity,
}

/// The accusers of one member at one incarnation.
#[derive(Debug)]
struct Entry {
    target: Identity,
    incarnation: u16,
    accusers: BTreeSet<SocketAddr>,
    /// Insertion order, for [`MAX_TARGETS`].
    seq: u64,
    /// [`Accusations::keep_only`] calls in a row that found the member not suspect.
    idle: u32,
}

/// The accusations a node heard (its own included), by the accused member's address.
#[derive(Debug, Default)]
pub struct Accusations {
    by_target: BTreeMap<SocketAddr, Entry>,
    seq: u64,
}

impl Accusations {
    /// Records `a`; true when it was news (a new accuser of that member at that incarnation,
    /// or a newer identity or incarnation, which replaces the older accusers). An accusation
    /// of oneself, or about an older identity or incarnation, is not.
    pub fn record(&mut self, a: Accusation) -> bool {
        if a.accuser.addr == a.target.addr {
            return false;
        }
        let key = (a.target.generation, a.incarnation);
        if let Some(entry) = self.by_target.get_mut(&a.target.addr) {
            let known = (entry.target.generation, entry.incarnation);
            if key < known {
                return false;
            }
            if key == known {
                if entry.accusers.len() >= MAX_ACCUSERS {
                    return false;
                }
                return entry.accusers.insert(a.accuser.addr);
            }
        }
        if !self.by_target.contains_key(&a.target.addr) && self.by_target.len() >= MAX_TARGETS {
            let oldest = self
                .by_target
                .iter()
                .min_by_key(|(_, e)| e.seq)
                .map(|(addr, _)| *addr);
            if let Some(addr) = oldest {
                self.by_target.remove(&addr);
            }
        }
        self.seq += 1;
        self.by_target.insert(
            a.target.addr,
            Entry {
                target: a.target,
                incarnation: a.incarnation,
                accusers: BTreeSet::from([a.accuser.addr]),
                seq: self.seq,
                idle: 0,
            },
        );
        true
    }

    /// How many members other than `me` accused `target` at `incarnation`.
    pub fn confirmations(&self, target: Identity, incarnation: u16, me: SocketAddr) -> usize {
        self.by_target
            .get(&target.addr)
            .filter(|e| e.target == target && e.incarnation == incarnation)
            .map_or(0, |e| e.accusers.iter().filter(|a| **a != me).count())
    }

    /// Forgets the members that were not suspect (per `is_suspect`) at this call and the
    /// `grace` calls before: their suspicion ended (refuted, or down). The grace keeps an
    /// accusation that arrived just before the suspicion it goes with, and outlasts the copies
    /// of an accusation still gossiped around after the suspicion ended: forgotten too soon,
    /// each copy would be news again and be gossiped on again, round after round.
    pub fn keep_only(&mut self, is_suspect: impl Fn(SocketAddr) -> bool, grace: u32) {
        self.by_target.retain(|addr, entry| {
            if is_suspect(*addr) {
                entry.idle = 0;
                true
            } else {
                entry.idle = entry.idle.saturating_add(1);
                entry.idle <= grace
            }
        });
    }

    /// Members with accusations kept.
    pub fn len(&self) -> usize {
        self.by_target.len()
    }

    /// True when no accusation is kept.
    pub fn is_empty(&self) -> bool {
        self.by_target.is_empty()
    }
}

/// How many independent accusers a suspicion can expect in a cluster of `cluster_size`
/// members (itself included): [`EXPECTED_CONFIRMATIONS`], but never more than the members
/// other than the accuser and the suspect (memberlist's `n - 2`). In a pair nobody can
/// confirm, so a suspicion there runs its shortest time, as memberlist's does.
pub fn expected_confirmations(cluster_size: usize) -> usize {
    EXPECTED_CONFIRMATIONS.min(cluster_size.saturating_sub(2))
}

/// How long a suspicion with `confirmations` independent accusers (besides the node's own)
/// runs before the member is declared down: `max` with none, shrinking with the logarithm of
/// the count to `min` at `expected` ([`expected_confirmations`]; memberlist's formula,
/// `max - (max - min) * log(c + 1) / log(k + 1)`); `min` when none can be expected.
pub fn suspicion_timeout(
    min: Duration,
    max: Duration,
    confirmations: usize,
    expected: usize,
) -> Duration {
    let max = max.max(min);
    if expected == 0 {
        return min;
    }
    let c = confirmations.min(expected) as f64;
    let k = expected as f64;
    let fraction = (c + 1.0).ln() / (k + 1.0).ln();
    let span = (max - min).as_secs_f64();
    min + Duration::from_secs_f64(span * (1.0 - fraction))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(port: u16, generation: u64) -> Identity {
        Identity {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            generation,
        }
    }

    fn accuse(target: Identity, incarnation: u16, by: u16) -> Accusation {
        Accusation {
            target,
            incarnation,
            accuser: id(by, 1),
        }
    }

    #[test]
    fn the_timeout_runs_from_max_with_no_confirmation_to_min_at_the_expected_count() {
        let (min, max) = (Duration::from_secs(3), Duration::from_secs(12));
        assert_eq!(suspicion_timeout(min, max, 0, EXPECTED_CONFIRMATIONS), max);
        let one = suspicion_timeout(min, max, 1, EXPECTED_CONFIRMATIONS);
        let two = suspicion_timeout(min, max, 2, EXPECTED_CONFIRMATIONS);
        assert!(max > one && one > two && two > min, "{one:?} {two:?}");
        assert_eq!(suspicion_timeout(min, max, 3, EXPECTED_CONFIRMATIONS), min);
        assert_eq!(suspicion_timeout(min, max, 30, EXPECTED_CONFIRMATIONS), min);
        // memberlist's example: one confirmation of k = 3 takes half the span off.
        assert_eq!(one.as_millis(), 7500);
        assert_eq!(suspicion_timeout(min, min, 0, EXPECTED_CONFIRMATIONS), min);
    }

    #[test]
    fn in_a_pair_nobody_can_confirm_so_the_suspicion_runs_its_shortest_time() {
        let (min, max) = (Duration::from_secs(3), Duration::from_secs(12));
        assert_eq!(expected_confirmations(2), 0);
        assert_eq!(
            suspicion_timeout(min, max, 0, expected_confirmations(2)),
            min
        );
        assert_eq!(expected_confirmations(3), 1, "one other member can confirm");
        assert_eq!(
            suspicion_timeout(min, max, 1, expected_confirmations(3)),
            min
        );
        assert_eq!(
            suspicion_timeout(min, max, 0, expected_confirmations(3)),
            max
        );
        assert_eq!(expected_confirmations(50), EXPECTED_CONFIRMATIONS);
    }

    #[test]
    fn distinct_accusers_count_once_each_and_never_the_node_itself() {
        let x = id(9, 1);
        let mut a = Accusations::default();
        assert!(a.record(accuse(x, 0, 1)));
        assert!(a.record(accuse(x, 0, 2)));
        assert!(
            !a.record(accuse(x, 0, 2)),
            "the same accuser again is no news"
        );
        assert!(!a.record(accuse(x, 0, 9)), "nobody accuses itself");
        assert_eq!(a.confirmations(x, 0, id(1, 1).addr), 1);
        assert_eq!(a.confirmations(x, 0, id(5, 1).addr), 2);
        assert_eq!(a.confirmations(x, 1, id(5, 1).addr), 0, "other incarnation");
        assert_eq!(
            a.confirmations(id(9, 2), 0, id(5, 1).addr),
            0,
            "other identity"
        );
    }

    #[test]
    fn a_refutation_or_a_new_identity_voids_the_older_accusations() {
        let x = id(9, 1);
        let mut a = Accusations::default();
        a.record(accuse(x, 0, 1));
        a.record(accuse(x, 0, 2));
        assert!(a.record(accuse(x, 1, 3)), "a newer incarnation is news");
        assert_eq!(a.confirmations(x, 1, id(5, 1).addr), 1);
        assert!(!a.record(accuse(x, 0, 4)), "an older one is not");
        assert!(a.record(accuse(id(9, 2), 0, 4)));
        assert_eq!(a.confirmations(id(9, 2), 0, id(5, 1).addr), 1);
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn the_table_is_bounded_in_accusers_and_members() {
        let mut a = Accusations::default();
        let x = id(9, 1);
        for by in 100..200 {
            a.record(accuse(x, 0, by));
        }
        assert_eq!(a.confirmations(x, 0, id(5, 1).addr), MAX_ACCUSERS);
        for port in 1000..(1000 + MAX_TARGETS as u16 + 10) {
            a.record(accuse(id(port, 1), 0, 1));
        }
        assert_eq!(a.len(), MAX_TARGETS);
        assert_eq!(
            a.confirmations(x, 0, id(5, 1).addr),
            0,
            "the oldest went first"
        );
    }

    #[test]
    fn accusations_of_a_member_no_longer_suspect_go_after_the_grace_and_are_no_news_till_then() {
        let (x, y) = (id(9, 1), id(8, 1));
        let mut a = Accusations::default();
        a.record(accuse(x, 0, 1));
        a.record(accuse(y, 0, 1));
        for _ in 0..3 {
            a.keep_only(|addr| addr == x.addr, 3);
        }
        assert_eq!(a.len(), 2, "y is kept for the grace");
        assert!(!a.record(accuse(y, 0, 1)), "a late copy is no news");
        a.keep_only(|addr| addr == x.addr, 3);
        assert_eq!(a.len(), 1);
        assert_eq!(a.confirmations(x, 0, id(5, 1).addr), 1);
        for _ in 0..4 {
            a.keep_only(|_| false, 3);
        }
        assert!(a.is_empty());
    }
}
