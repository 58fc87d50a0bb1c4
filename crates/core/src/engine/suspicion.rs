//! Suspicions that outlive their timeout: foca drops a suspicion's timer when it goes idle, and
//! a member that never heard of the suspicion cannot refute it. The tracker notices such a
//! stuck suspicion so the engine can push its state to the member, which then refutes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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
