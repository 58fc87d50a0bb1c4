//! Joining while alone: the seeds (the join names' addresses at the last resolution plus the
//! snapshot's members), the attempt count against `retry_max`, the doubling delay between
//! attempts, whether an attempt is already scheduled, and how many seeds one contact reaches.

use std::net::SocketAddr;
use std::time::Duration;

use rand::RngExt;
use rand::rngs::StdRng;

use super::backoff::Backoff;

/// Beyond the seeds, at most this many members known as down are tried while alone.
const DOWN_TARGETS: usize = 8;

/// One join attempt (or contact of seeds that are not members) reaches at most this many
/// addresses, chosen at random. A join name that resolves to every node of a large cluster
/// (a headless service, identical config) would otherwise have every node push-pull its whole
/// state with every other at a simultaneous start: N² exchanges of O(N) state (in simulation,
/// 565 MB among 300 nodes). Gossip and push-pull answers bring the rest; the next attempt
/// draws again.
pub(crate) const JOIN_FANOUT: usize = 16;

/// The rejoin state of the local node.
#[derive(Debug)]
pub(crate) struct Rejoin {
    seeds: Vec<SocketAddr>,
    /// Members remembered in the snapshot: always seeds.
    snapshot_seeds: Vec<SocketAddr>,
    retries: u32,
    /// Set when `retry_max` attempts were made while alone; cleared once connected.
    gave_up: bool,
    backoff: Backoff,
    scheduled: bool,
    /// Draws the seeds an attempt contacts when there are more than [`JOIN_FANOUT`].
    rng: StdRng,
}

impl Rejoin {
    /// Seeds start as the snapshot's members; attempts wait `backoff` between them; `rng`
    /// picks the seeds of an attempt when there are too many.
    pub(crate) fn new(snapshot_seeds: Vec<SocketAddr>, backoff: Backoff, rng: StdRng) -> Self {
        Self {
            seeds: snapshot_seeds.clone(),
            snapshot_seeds,
            retries: 0,
            gave_up: false,
            backoff,
            scheduled: false,
            rng,
        }
    }

    /// At most [`JOIN_FANOUT`] of `addrs`, chosen at random (all of them, in order, when they
    /// are that few: no draw then).
    pub(crate) fn sample(&mut self, mut addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
        if addrs.len() <= JOIN_FANOUT {
            return addrs;
        }
        for i in 0..JOIN_FANOUT {
            let j = self.rng.random_range(i..addrs.len());
            addrs.swap(i, j);
        }
        addrs.truncate(JOIN_FANOUT);
        addrs
    }

    /// The current seeds.
    pub(crate) fn seeds(&self) -> &[SocketAddr] {
        &self.seeds
    }

    /// Attempts made since the node was last connected.
    pub(crate) fn retries(&self) -> u32 {
        self.retries
    }

    /// True once `retry_max` attempts failed while alone (until the node is connected).
    pub(crate) fn gave_up(&self) -> bool {
        self.gave_up
    }

    /// The delay before the next attempt.
    pub(crate) fn delay(&self) -> Duration {
        self.backoff.current()
    }

    /// True while an attempt is scheduled.
    #[cfg(test)]
    pub(crate) fn scheduled(&self) -> bool {
        self.scheduled
    }

    /// A new resolution of the join names: they (`me` excluded) and the snapshot's members
    /// become the seeds. Returns the addresses that are not `members`: new in DNS (a service
    /// scaled up) or a seed of a cluster that formed apart from ours.
    pub(crate) fn on_resolved(
        &mut self,
        addrs: Vec<SocketAddr>,
        me: SocketAddr,
        members: &[SocketAddr],
    ) -> Vec<SocketAddr> {
        let addrs: Vec<SocketAddr> = addrs.into_iter().filter(|a| *a != me).collect();
        // Sorted once: with a thousand addresses and members, `contains` would be 10⁶ steps.
        let mut members = members.to_vec();
        members.sort_unstable();
        let fresh = addrs
            .iter()
            .copied()
            .filter(|a| members.binary_search(a).is_err())
            .collect();
        self.seeds = addrs;
        for s in &self.snapshot_seeds {
            if !self.seeds.contains(s) {
                self.seeds.push(*s);
            }
        }
        fresh
    }

    /// Where to try while alone: the seeds and, after a partition or a restart of everyone
    /// else, up to [`DOWN_TARGETS`] members known as down (`me` excluded). foca's own announces
    /// to down members only run while it is connected, so a node left alone needs this.
    pub(crate) fn targets(
        &self,
        me: SocketAddr,
        down: impl IntoIterator<Item = SocketAddr>,
    ) -> Vec<SocketAddr> {
        let mut targets = self.seeds.clone();
        let limit = self.seeds.len() + DOWN_TARGETS;
        for a in down {
            if a != me && !targets.contains(&a) && targets.len() < limit {
                targets.push(a);
            }
        }
        targets
    }

    /// Marks an attempt as scheduled; false when one already is (schedule nothing then).
    pub(crate) fn schedule(&mut self) -> bool {
        !std::mem::replace(&mut self.scheduled, true)
    }

    /// The scheduled attempt is due.
    pub(crate) fn fired(&mut self) {
        self.scheduled = false;
    }

    /// Counts an attempt. `None` once `retry_max` attempts were made (0: no limit), and from
    /// then on [`Rejoin::gave_up`]; else the delay until the next one, which doubles up to the
    /// profile's maximum.
    pub(crate) fn attempt(&mut self, retry_max: u32) -> Option<Duration> {
        if retry_max > 0 && self.retries >= retry_max {
            self.gave_up = true;
            return None;
        }
        self.retries += 1;
        Some(self.backoff.next())
    }

    /// The node is connected: the attempt count and the delay start over.
    pub(crate) fn joined(&mut self) {
        self.retries = 0;
        self.gave_up = false;
        self.backoff.reset();
    }

    /// Start the delay over (a renewed identity is accepted where the old one was down).
    pub(crate) fn hurry(&mut self) {
        self.backoff.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn rejoin(snapshot: Vec<SocketAddr>) -> Rejoin {
        let ms = Duration::from_millis;
        Rejoin::new(
            snapshot,
            Backoff::new(ms(100), ms(400)),
            super::super::rng(Some(1)),
        )
    }

    #[test]
    fn a_contact_reaches_at_most_join_fanout_seeds_drawn_anew_each_time() {
        let mut r = rejoin(vec![]);
        let few: Vec<SocketAddr> = (1..=JOIN_FANOUT as u16).map(a).collect();
        assert_eq!(r.sample(few.clone()), few, "few enough: all, in order");
        let many: Vec<SocketAddr> = (1..=1000).map(a).collect();
        let first = r.sample(many.clone());
        let second = r.sample(many.clone());
        assert_eq!((first.len(), second.len()), (JOIN_FANOUT, JOIN_FANOUT));
        let mut distinct = first.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), JOIN_FANOUT, "no address twice");
        assert!(first.iter().all(|x| many.contains(x)));
        assert_ne!(first, second, "each attempt draws again");
    }

    #[test]
    fn resolved_addresses_and_snapshot_members_are_the_seeds_and_new_ones_are_returned() {
        let mut r = rejoin(vec![a(9)]);
        let fresh = r.on_resolved(vec![a(1), a(2), a(3)], a(1), &[a(2)]);
        assert_eq!(fresh, [a(3)]);
        assert_eq!(r.seeds(), [a(2), a(3), a(9)]);
    }

    #[test]
    fn targets_add_at_most_eight_down_members_and_never_this_node() {
        let r = rejoin(vec![a(1)]);
        let down = (2..20).map(a).chain([a(100)]);
        let targets = r.targets(a(100), down);
        assert_eq!(targets.len(), 9);
        assert!(!targets.contains(&a(100)));
    }

    #[test]
    fn attempts_stop_at_retry_max_and_start_over_once_joined() {
        let mut r = rejoin(vec![a(1)]);
        let ms = Duration::from_millis;
        assert_eq!(r.attempt(2), Some(ms(100)));
        assert_eq!(r.attempt(2), Some(ms(200)));
        assert!(!r.gave_up());
        assert_eq!(r.attempt(2), None);
        assert!(r.gave_up());
        r.joined();
        assert!(!r.gave_up());
        assert_eq!((r.retries(), r.delay()), (0, ms(100)));
        assert_eq!(r.attempt(0), Some(ms(100)));
    }

    #[test]
    fn only_one_attempt_is_scheduled_at_a_time() {
        let mut r = rejoin(vec![]);
        assert!(r.schedule());
        assert!(!r.schedule());
        r.fired();
        assert!(r.schedule());
    }
}
