//! A Lamport clock, as Serf keeps one for user events and another for queries: every own
//! event or query is stamped with the clock, which then moves on; every time seen is
//! witnessed (the clock moves past it); a peer's clock from push-pull is caught up to.

/// A Lamport clock: the time the next own event gets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LamportClock(u64);

impl LamportClock {
    /// The clock's value: the time the next own event gets (what a push-pull carries).
    pub fn time(self) -> u64 {
        self.0
    }

    /// The time for a new own event; the clock moves past it.
    pub fn tick(&mut self) -> u64 {
        let t = self.0;
        self.0 = self.0.saturating_add(1);
        t
    }

    /// Lamport's rule: after seeing time `t`, the clock is past it.
    pub fn witness(&mut self, t: u64) {
        if t >= self.0 {
            self.0 = t.saturating_add(1);
        }
    }

    /// A peer's clock (from its push-pull state): ours moves up to it. Not [`Self::witness`]:
    /// a clock is the *next* time, and moving one tick past it on every push-pull would push
    /// clocks apart, until a joiner's minimum time (a peer's clock) is ahead of another
    /// member's clock and that member's next event is dropped as history.
    pub fn catch_up(&mut self, clock: u64) {
        self.0 = self.0.max(clock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_stamps_own_events_and_moves_past_every_time_it_sees() {
        let mut c = LamportClock::default();
        assert_eq!((c.tick(), c.tick()), (0, 1));
        c.witness(10);
        assert_eq!(c.time(), 11);
        c.witness(3);
        assert_eq!(c.tick(), 11);
        c.catch_up(20);
        assert_eq!(
            c.time(),
            20,
            "a peer's clock is the next time, not one seen"
        );
        c.catch_up(5);
        assert_eq!(c.time(), 20);
    }
}
