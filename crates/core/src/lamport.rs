//! A Lamport clock, as Serf keeps one for user events and another for queries: every own
//! event or query is stamped with the clock, which then moves on; every time seen is
//! witnessed (the clock moves past it); a peer's clock from push-pull is caught up to.
//!
//! [`Recent`] is the buffer both keep beside their clock: what arrived in the last `window`
//! ticks, so a copy is known as one, and the minimum time below which nothing is handled (past
//! what a restarted node handled before, or history a joining node skips).

use std::collections::BTreeMap;

/// At most this many distinct items are kept per Lamport time (concurrent senders); more are
/// dropped, so a flood cannot grow the buffer without bound.
const MAX_PER_LTIME: usize = 64;

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

/// Whether an item is news: see [`Recent::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// News: kept, and to be handled.
    New,
    /// A copy of one kept, before the minimum time, or one too many at its time.
    Known,
    /// Older than the window: the buffer can no longer tell whether it was handled.
    TooOld,
}

/// Items of the last `window` Lamport ticks, by time. See the module docs.
#[derive(Debug)]
pub struct Recent<T> {
    window: u64,
    /// Items before this are never handled.
    min_time: u64,
    /// The newest time of an item admitted.
    newest: Option<u64>,
    by_time: BTreeMap<u64, Vec<T>>,
}

impl<T> Recent<T> {
    /// The buffer of a node that restarted having handled everything up to `ltime` (from its
    /// snapshot; `clock` is moved past it); `None`: a new node.
    pub fn restored(window: u64, ltime: Option<u64>, clock: &mut LamportClock) -> Self {
        let mut recent = Self {
            window,
            min_time: 0,
            newest: None,
            by_time: BTreeMap::new(),
        };
        if let Some(ltime) = ltime {
            clock.witness(ltime);
            recent.min_time = ltime.saturating_add(1);
            recent.newest = Some(ltime);
        }
        recent
    }

    /// Items before `t` are never handled (history a joining node skips).
    pub fn ignore_before(&mut self, t: u64) {
        self.min_time = self.min_time.max(t);
    }

    /// The newest time that must never be handled again here: handled, or skipped as
    /// history. What the snapshot keeps; `None` while there is none.
    pub fn done_up_to(&self) -> Option<u64> {
        self.newest.max(self.min_time.checked_sub(1))
    }

    /// Keeps `item`, stamped `ltime`, unless it is before the minimum, older than the window
    /// behind `clock` (which has witnessed it), or `same` as one kept at that time.
    pub fn admit(
        &mut self,
        clock: LamportClock,
        ltime: u64,
        item: T,
        same: impl Fn(&T) -> bool,
    ) -> Admit {
        let clock = clock.time();
        if ltime < self.min_time {
            return Admit::Known;
        }
        if clock > self.window && ltime < clock - self.window {
            return Admit::TooOld;
        }
        let same_time = self.by_time.entry(ltime).or_default();
        if same_time.iter().any(same) || same_time.len() >= MAX_PER_LTIME {
            return Admit::Known;
        }
        same_time.push(item);
        self.newest = self.newest.max(Some(ltime));
        let oldest = clock.saturating_sub(self.window);
        self.by_time = self.by_time.split_off(&oldest);
        Admit::New
    }

    /// The items kept, oldest first.
    pub fn items(&self) -> impl Iterator<Item = &T> {
        self.by_time.values().flatten()
    }

    /// The items kept from Lamport time `floor` on, oldest first.
    pub fn items_from(&self, floor: u64) -> impl Iterator<Item = &T> {
        self.by_time.range(floor..).flat_map(|(_, items)| items)
    }

    /// Items before this time are never handled.
    pub fn min_time(&self) -> u64 {
        self.min_time
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_admits_news_once_within_its_window_and_after_its_minimum() {
        let mut clock = LamportClock::default();
        let mut recent = Recent::restored(10, Some(4), &mut clock);
        assert_eq!(clock.time(), 5);
        let mut admit = |t: u64, id: u32| {
            clock.witness(t);
            recent.admit(clock, t, id, |x| *x == id)
        };
        assert_eq!(admit(4, 1), Admit::Known, "handled before the restart");
        assert_eq!(admit(5, 1), Admit::New);
        assert_eq!(admit(5, 1), Admit::Known, "a copy");
        assert_eq!(admit(5, 2), Admit::New, "another at the same time");
        assert_eq!(admit(30, 3), Admit::New);
        assert_eq!(admit(6, 4), Admit::TooOld);
        assert_eq!(recent.items().copied().collect::<Vec<_>>(), vec![3]);
        assert_eq!(recent.done_up_to(), Some(30));
        recent.ignore_before(50);
        assert_eq!(
            recent.done_up_to(),
            Some(49),
            "skipped history counts as done"
        );
    }

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
