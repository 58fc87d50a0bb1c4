//! When the full digest datagram goes out: every sync interval after a change, then less and
//! less often (doubling up to a ceiling) while nothing changes, back to every sync interval
//! as soon as something does. A quiet cluster spends almost no packets on it; a changing one
//! repairs in about a sync interval.

use std::time::{Duration, Instant};

use super::backoff::Backoff;

/// The digest datagram's cadence.
#[derive(Debug)]
pub(crate) struct SyncCadence {
    pub(crate) backoff: Backoff,
    /// Only a tick of this generation counts; a snap-back starts a new one.
    pub(crate) generation: u64,
    /// When the current generation's next tick is due.
    pub(crate) due: Instant,
}

impl SyncCadence {
    /// Every `max` until the first change, then every `interval` backing off to `max`; the
    /// first tick at `first`.
    pub(crate) fn new(interval: Duration, max: Duration, first: Instant) -> Self {
        let mut backoff = Backoff::new(interval, max);
        backoff.jump_to_ceiling();
        Self {
            backoff,
            generation: 0,
            due: first,
        }
    }

    /// Something changed at `now`: the cadence starts over. Returns the new generation and
    /// when its first tick is due, when that is sooner than the tick already scheduled.
    pub(crate) fn changed(&mut self, now: Instant, interval: Duration) -> Option<(u64, Instant)> {
        self.backoff.reset();
        let soon = now + interval;
        if self.due <= soon {
            return None;
        }
        self.generation += 1;
        self.due = soon;
        Some((self.generation, soon))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_brings_a_far_tick_back_to_one_interval_and_leaves_a_near_one() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = SyncCadence::new(s, s * 30, t0 + s);
        assert_eq!(c.changed(t0, s), None, "the first tick is near already");
        c.due = t0 + s * 16;
        assert_eq!(c.changed(t0, s), Some((1, t0 + s)));
        assert_eq!(c.backoff.current(), s);
    }
}
