//! Suspicions, two ways.
//!
//! [`HeldTimers`]: Lifeguard's dynamic suspicion. foca fixes its suspect-to-down time, but its
//! timer comes back through our queue, so the engine holds it: it fires at the long end of the
//! window with no confirmation and earlier as independent members confirm the suspicion
//! ([`crate::accusation`]).
//!
//! [`SuspectTracker`]: suspicions that outlive their timeout: foca drops a suspicion's timer
//! when it goes idle, and a member that never heard of the suspicion cannot refute it. The
//! tracker notices such a stuck suspicion so the engine can push its state to the member,
//! which then refutes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use foca::{Incarnation, Timer};

use crate::accusation::suspicion_timeout;
use crate::identity::Identity;

/// A suspicion runs at least foca's suspect-to-down time divided by this, once confirmed...
pub(crate) const SHORTEST_DIVISOR: u32 = 2;
/// ...and at most that time multiplied by this, unconfirmed.
pub(crate) const LONGEST_FACTOR: u32 = 2;

/// One of our own suspicions (our probe of the member failed) and foca's timer for it.
#[derive(Debug)]
struct Held {
    timer: Timer<Identity>,
    id: Identity,
    incarnation: Incarnation,
    since: Instant,
    min: Duration,
    max: Duration,
    /// How many accusers the cluster's size lets it expect when the suspicion began.
    expected: usize,
    deadline: Instant,
}

/// foca's suspect-to-down timers, held until their dynamic deadline.
#[derive(Debug, Default)]
pub(crate) struct HeldTimers {
    by_target: BTreeMap<SocketAddr, Held>,
}

impl HeldTimers {
    /// foca asked for `timer` (its suspect-to-down of `id` at `incarnation`) after `after`: the
    /// window runs from `after / 2` (fully confirmed) to `after * 2` (alone); `confirmations`
    /// is how many others accused the member so far. Returns the deadline to queue, or `None`
    /// when a timer for this very suspicion is held already (foca asks again each time its
    /// probe of the member fails; the first suspicion's start counts, the newest timer is
    /// kept for its token). `expected`: how many accusers the cluster's size lets it expect
    /// ([`crate::accusation::expected_confirmations`]; 0 in a pair: the short end at once).
    pub(crate) fn hold(
        &mut self,
        now: Instant,
        timer: Timer<Identity>,
        (id, incarnation): (Identity, Incarnation),
        after: Duration,
        (confirmations, expected): (usize, usize),
    ) -> Option<Instant> {
        if let Some(held) = self.by_target.get_mut(&id.addr)
            && held.id == id
            && held.incarnation == incarnation
        {
            held.timer = timer;
            return None;
        }
        let (min, max) = (after / SHORTEST_DIVISOR, after * LONGEST_FACTOR);
        let deadline = now + suspicion_timeout(min, max, confirmations, expected);
        self.by_target.insert(
            id.addr,
            Held {
                timer,
                id,
                incarnation,
                since: now,
                min,
                max,
                expected,
                deadline,
            },
        );
        Some(deadline)
    }

    /// `confirmations` others now accuse `id`: the new, earlier deadline of our suspicion of
    /// it, if we hold one at `incarnation` and it moved (never before `now`).
    pub(crate) fn confirmed(
        &mut self,
        now: Instant,
        id: Identity,
        incarnation: Incarnation,
        confirmations: usize,
    ) -> Option<Instant> {
        let held = self.by_target.get_mut(&id.addr)?;
        if held.id != id || held.incarnation != incarnation {
            return None;
        }
        let deadline = (held.since
            + suspicion_timeout(held.min, held.max, confirmations, held.expected))
        .max(now);
        if deadline >= held.deadline {
            return None;
        }
        held.deadline = deadline;
        Some(deadline)
    }

    /// The held suspicion of `addr` whose deadline was `at`: foca's timer, to hand back now.
    /// `None` when that deadline moved (an earlier one fired or will) or nothing is held.
    pub(crate) fn due(&mut self, addr: SocketAddr, at: Instant) -> Option<Timer<Identity>> {
        if self.by_target.get(&addr)?.deadline != at {
            return None;
        }
        self.by_target.remove(&addr).map(|h| h.timer)
    }

    /// The incarnation at which we hold a suspicion of `id`, if we do.
    pub(crate) fn incarnation_of(&self, id: Identity) -> Option<Incarnation> {
        self.by_target
            .get(&id.addr)
            .filter(|h| h.id == id)
            .map(|h| h.incarnation)
    }
}

/// Since when each member has been suspect.
#[derive(Debug, Default)]
pub(crate) struct SuspectTracker {
    since: BTreeMap<SocketAddr, Instant>,
}

impl SuspectTracker {
    /// True when `addr` was suspect at the last [`Self::observe`].
    pub(crate) fn was_suspect(&self, addr: SocketAddr) -> bool {
        self.since.contains_key(&addr)
    }

    /// Records that `suspected` (in foca's order) are suspect at `now` and forgets the others;
    /// returns the first one suspect for longer than `stuck_after`, with its clock restarted
    /// (so it is reported again only after another `stuck_after`).
    pub(crate) fn observe(
        &mut self,
        now: Instant,
        suspected: &[SocketAddr],
        stuck_after: Duration,
    ) -> Option<SocketAddr> {
        self.since.retain(|a, _| suspected.contains(a));
        let mut stuck = None;
        for addr in suspected {
            let since = *self.since.entry(*addr).or_insert(now);
            if stuck.is_none() && now.duration_since(since) > stuck_after {
                stuck = Some(*addr);
            }
        }
        if let Some(addr) = stuck {
            self.since.insert(addr, now);
        }
        stuck
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down_timer(id: Identity) -> Timer<Identity> {
        Timer::ChangeSuspectToDown {
            member_id: id,
            incarnation: 0,
            token: 0,
        }
    }

    #[test]
    fn a_held_suspicion_runs_long_alone_and_short_once_confirmed() {
        let x = Identity::new("127.0.0.1:9".parse().expect("addr"));
        let t0 = Instant::now();
        let after = Duration::from_secs(6);
        let mut held = HeldTimers::default();
        let alone = held.hold(t0, down_timer(x), (x, 0), after, (0, 3));
        assert_eq!(alone, Some(t0 + after * LONGEST_FACTOR));
        assert_eq!(
            held.hold(t0, down_timer(x), (x, 0), after, (0, 3)),
            None,
            "held already"
        );
        let t1 = t0 + Duration::from_secs(1);
        let once = held.confirmed(t1, x, 0, 1).expect("earlier");
        assert!(once < t0 + after * LONGEST_FACTOR && once > t0 + after / SHORTEST_DIVISOR);
        assert_eq!(
            held.confirmed(t1, x, 0, 1),
            None,
            "the same count moves nothing"
        );
        assert_eq!(held.confirmed(t1, x, 1, 3), None, "another incarnation");
        let t4 = t0 + Duration::from_secs(4);
        assert_eq!(
            held.confirmed(t4, x, 0, 3),
            Some(t4),
            "past the shortest: at once"
        );
        assert!(
            held.due(x.addr, once).is_none(),
            "a deadline that moved is stale"
        );
        assert!(held.due(x.addr, t4).is_some());
        assert!(held.due(x.addr, t4).is_none(), "handed back once");
    }

    #[test]
    fn a_suspicion_is_stuck_once_it_outlives_the_limit_and_then_starts_over() {
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let t0 = Instant::now();
        let limit = Duration::from_secs(2);
        let mut t = SuspectTracker::default();
        assert_eq!(t.observe(t0, &[a], limit), None);
        assert_eq!(t.observe(t0 + limit, &[a], limit), None);
        let later = t0 + limit + Duration::from_millis(1);
        assert_eq!(t.observe(later, &[a], limit), Some(a));
        assert_eq!(t.observe(later + Duration::from_secs(1), &[a], limit), None);
    }

    #[test]
    fn a_refuted_suspicion_is_forgotten() {
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let t0 = Instant::now();
        let limit = Duration::from_secs(1);
        let mut t = SuspectTracker::default();
        t.observe(t0, &[a], limit);
        t.observe(t0 + limit, &[], limit);
        // Suspect again: the clock starts from this suspicion, not the first one.
        assert_eq!(t.observe(t0 + limit * 2, &[a], limit), None);
    }
}
