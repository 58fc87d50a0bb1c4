//! A doubling delay with a ceiling: join attempts while alone and discovery beacons.

use std::time::{Duration, Instant};

/// `first`, then twice that, and so on up to `max`; back to `first` on [`Backoff::reset`].
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `first`; never waits longer than `max` (nor less than `first`).
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max: max.max(first),
            current: first,
        }
    }

    /// The delay the next [`Backoff::next`] returns.
    pub(crate) fn current(&self) -> Duration {
        self.current
    }

    /// The delay to wait now; the one after it doubles, up to the ceiling.
    pub(crate) fn next(&mut self) -> Duration {
        let delay = self.current;
        self.current = (delay * 2).min(self.max);
        delay
    }

    /// Straight to the longest delay.
    pub(crate) fn jump_to_ceiling(&mut self) {
        self.current = self.max;
    }

    /// Back to the first delay (the node joined, or its situation changed).
    pub(crate) fn reset(&mut self) {
        self.current = self.first;
    }
}

/// True, and `last` set to `now`, when `last` is at least `every` before `now` (or unset):
/// a rate limit of one per `every`.
pub(crate) fn due(last: &mut Option<Instant>, now: Instant, every: Duration) -> bool {
    if last.is_some_and(|t| now.saturating_duration_since(t) < every) {
        return false;
    }
    *last = Some(now);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_the_ceiling_and_resets_to_the_first() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        let delays: Vec<_> = (0..5).map(|_| b.next()).collect();
        assert_eq!(delays, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        b.reset();
        assert_eq!(b.current(), ms(100));
    }

    #[test]
    fn a_ceiling_below_the_first_delay_is_the_first_delay() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(b.next(), Duration::from_secs(2));
        assert_eq!(b.next(), Duration::from_secs(2));
    }
}
