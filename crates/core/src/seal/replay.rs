//! Replay protection for sealed packets: a sliding window of sequence numbers per sender
//! instance and channel, behind a coarse timestamp window.
//!
//! Every sealed packet's nonce is `instance (4 bytes) | unix seconds (4) | counter (4)`: the
//! sender picks a random instance id at start, counts packets per channel (datagrams and stream
//! frames apart, as TCP frames may arrive late next to datagrams) and stamps the time. A
//! receiver, after the packet authenticated:
//! - refuses it when its time is more than [`TIME_WINDOW_SECS`] away from the receiver's clock
//!   (a replay from an earlier boot, or clocks far apart);
//! - refuses it when the counter is [`WINDOW`] or more behind the highest one seen from that
//!   instance and channel, or was seen before (a replay within the window).
//!
//! State is kept for [`MAX_SENDERS`] instances; one silent for twice the time window is
//! forgotten (its packets would fail the time check by then anyway).

use std::collections::HashMap;

/// How far, in seconds, a packet's timestamp may be from the receiver's clock.
pub const TIME_WINDOW_SECS: u64 = 60;
/// How many counter values behind the highest seen are still accepted (once each).
pub const WINDOW: u32 = 128;
/// Sender instances remembered at most; past this the least recently heard one is forgotten.
pub const MAX_SENDERS: usize = 4096;

/// Why the window refused a packet. Nothing was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// The timestamp is outside the time window; the difference in seconds.
    Time(u64),
    /// The counter was seen before or is too far behind.
    Replayed,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    top: u32,
    /// Bit `i` set: counter `top - i` was seen.
    seen: u128,
    last_heard: u64,
}

/// The windows of every sender instance heard recently.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    windows: HashMap<(u32, u32), Window>,
}

impl ReplayGuard {
    /// Checks a packet's `(instance, time, counter)` against the windows at `now` (unix
    /// seconds) without recording it.
    pub fn check(&self, instance: u32, time: u32, counter: u32, now: u64) -> Result<(), Stale> {
        let skew = now.abs_diff(u64::from(time));
        if skew > TIME_WINDOW_SECS {
            return Err(Stale::Time(skew));
        }
        let Some(w) = self.windows.get(&(instance, channel_of(counter))) else {
            return Ok(());
        };
        if counter > w.top {
            return Ok(());
        }
        let behind = w.top - counter;
        if behind >= WINDOW || w.seen & (1u128 << behind) != 0 {
            return Err(Stale::Replayed);
        }
        Ok(())
    }

    /// Records a packet that passed [`Self::check`] and authenticated.
    pub fn record(&mut self, instance: u32, counter: u32, now: u64) {
        if self.windows.len() >= MAX_SENDERS {
            self.forget_old(now);
        }
        let w = self
            .windows
            .entry((instance, channel_of(counter)))
            .or_insert(Window {
                top: counter,
                seen: 0,
                last_heard: now,
            });
        w.last_heard = now;
        if counter > w.top {
            let shift = counter - w.top;
            w.seen = if shift >= WINDOW { 0 } else { w.seen << shift };
            w.top = counter;
            w.seen |= 1;
        } else {
            w.seen |= 1u128 << (w.top - counter);
        }
    }

    /// Drops windows silent for twice the time window; if none is, the least recently heard.
    fn forget_old(&mut self, now: u64) {
        self.windows
            .retain(|_, w| now.saturating_sub(w.last_heard) <= 2 * TIME_WINDOW_SECS);
        if self.windows.len() >= MAX_SENDERS
            && let Some(oldest) = self
                .windows
                .iter()
                .min_by_key(|(_, w)| w.last_heard)
                .map(|(k, _)| *k)
        {
            self.windows.remove(&oldest);
        }
    }

    /// How many sender windows are kept.
    pub fn senders(&self) -> usize {
        self.windows.len()
    }
}

/// The channel bit of a counter (the top bit: 0 datagrams, 1 stream frames).
fn channel_of(counter: u32) -> u32 {
    counter >> 31
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(g: &mut ReplayGuard, instance: u32, counter: u32, now: u64) -> Result<(), Stale> {
        g.check(instance, now as u32, counter, now)?;
        g.record(instance, counter, now);
        Ok(())
    }

    #[test]
    fn a_packet_is_accepted_once_and_out_of_order_ones_within_the_window() {
        let mut g = ReplayGuard::default();
        for c in [5, 7, 6, 100, 50] {
            assert_eq!(accept(&mut g, 1, c, 1000), Ok(()), "{c}");
        }
        for c in [5, 7, 6, 100, 50] {
            assert_eq!(accept(&mut g, 1, c, 1000), Err(Stale::Replayed), "{c}");
        }
        assert_eq!(accept(&mut g, 1, 400, 1000), Ok(()));
        assert_eq!(accept(&mut g, 1, 400 - WINDOW, 1000), Err(Stale::Replayed));
        assert_eq!(accept(&mut g, 1, 400 - WINDOW + 1, 1000), Ok(()));
    }

    #[test]
    fn instances_and_channels_have_windows_of_their_own() {
        let mut g = ReplayGuard::default();
        assert_eq!(accept(&mut g, 1, 9, 1000), Ok(()));
        assert_eq!(accept(&mut g, 2, 9, 1000), Ok(()));
        assert_eq!(accept(&mut g, 1, 9 | 1 << 31, 1000), Ok(()));
        assert_eq!(accept(&mut g, 1, 9, 1000), Err(Stale::Replayed));
    }

    #[test]
    fn packets_stamped_outside_the_time_window_are_refused() {
        let g = ReplayGuard::default();
        let now = 10_000;
        assert_eq!(g.check(1, (now - 61) as u32, 1, now), Err(Stale::Time(61)));
        assert_eq!(g.check(1, (now + 61) as u32, 1, now), Err(Stale::Time(61)));
        assert_eq!(g.check(1, (now - 60) as u32, 1, now), Ok(()));
    }

    #[test]
    fn the_number_of_senders_kept_is_bounded() {
        let mut g = ReplayGuard::default();
        for i in 0..(MAX_SENDERS as u32 + 10) {
            g.record(i, 1, 1000 + u64::from(i) / 100);
        }
        assert!(g.senders() <= MAX_SENDERS);
    }
}
