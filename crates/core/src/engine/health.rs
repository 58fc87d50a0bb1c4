//! Local health (Lifeguard's local health multiplier, memberlist's "awareness"). A node that
//! is itself slow (starved of CPU, stopped, behind a bad link) sees its probes time out and
//! accuses healthy members. Its score rises when it has evidence of its own trouble: it had to
//! refute a suspicion of itself, its timers ran late, or a probe's TCP ping timed out; every
//! probe that succeeds lowers it again. The probe period and RTT stretch by `score + 1`, so
//! an unhealthy node probes less often and waits longer before it suspects anyone.

/// The score never goes above this (timeouts stretch at most ninefold).
pub(crate) const MAX_SCORE: u8 = 8;

/// The local health score.
#[derive(Debug, Default)]
pub(crate) struct LocalHealth {
    score: u8,
}

impl LocalHealth {
    /// 0 is healthy; at most [`MAX_SCORE`].
    pub(crate) fn score(&self) -> u8 {
        self.score
    }

    /// How much the probe timings stretch: `score + 1`.
    pub(crate) fn multiplier(&self) -> u32 {
        u32::from(self.score) + 1
    }

    /// Adds `delta` (negative: better), within 0 and [`MAX_SCORE`]; true when it changed.
    pub(crate) fn apply(&mut self, delta: i8) -> bool {
        let before = self.score;
        self.score = self.score.saturating_add_signed(delta).min(MAX_SCORE);
        self.score != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_score_rises_with_trouble_falls_with_success_and_stays_in_bounds() {
        let mut h = LocalHealth::default();
        assert!(!h.apply(-1), "never below 0");
        assert!(h.apply(2));
        assert_eq!((h.score(), h.multiplier()), (2, 3));
        for _ in 0..20 {
            h.apply(1);
        }
        assert_eq!(h.score(), MAX_SCORE);
        h.apply(-1);
        assert_eq!(h.score(), MAX_SCORE - 1);
    }
}
