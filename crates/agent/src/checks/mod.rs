//! Health checks (`--check NAME=SPEC`): one tokio task per check, never in the gossip loop.
//! Each runs its probe every interval ([`run`]), counts results against Keepalived's rise/fall
//! ([`Counter`]) and announces a change of state through [`RoleCell::set_check`], which gossips
//! it as the member's health and fires `member-update` everywhere. [`Board`] keeps each
//! check's last run for `shoal info`.

pub mod args;
pub mod run;
pub mod spec;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use shoal_core::Health;
use shoal_proto::CheckInfo;
use tracing::{info, warn};

use crate::role::RoleCell;
pub use spec::{CheckSpec, Kind, Timing};

/// Rise/fall: the announced state changes only after `rise` consecutive better results, or
/// `fall` consecutive worse ones (better or worse than the state now, whatever their exact
/// values: the latest one becomes the state). The very first result sets the state at once:
/// until then the check is `critical`, as in Consul.
#[derive(Debug, Clone)]
pub struct Counter {
    rise: u32,
    fall: u32,
    state: Option<Health>,
    /// Consecutive results on one side of the state: (better?, how many).
    streak: Option<(bool, u32)>,
}

impl Counter {
    /// A check with no result yet.
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            state: None,
            streak: None,
        }
    }

    /// The state now (`critical` before the first result).
    pub fn state(&self) -> Health {
        self.state.unwrap_or(Health::Critical)
    }

    /// Counts one result; returns the state it changed from and to, if it changed (the first
    /// result always counts as a change, from `None`).
    pub fn observe(&mut self, result: Health) -> Option<(Option<Health>, Health)> {
        let Some(state) = self.state else {
            self.state = Some(result);
            return Some((None, result));
        };
        if result == state {
            self.streak = None;
            return None;
        }
        let better = result < state;
        let count = match self.streak {
            Some((side, n)) if side == better => n + 1,
            _ => 1,
        };
        let needed = if better { self.rise } else { self.fall };
        if count < needed {
            self.streak = Some((better, count));
            return None;
        }
        self.streak = None;
        self.state = Some(result);
        Some((Some(state), result))
    }
}

/// Every check's last run, for `shoal info`; cheap to clone.
#[derive(Clone, Default)]
pub struct Board(Arc<Mutex<BTreeMap<String, CheckInfo>>>);

impl Board {
    /// The checks, by name.
    pub fn list(&self) -> Vec<CheckInfo> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, CheckInfo>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, spec: &CheckSpec) {
        let t = spec.timing;
        self.lock().insert(
            spec.name.clone(),
            CheckInfo {
                name: spec.name.clone(),
                kind: spec.kind.name().to_string(),
                target: spec.kind.target(),
                state: Health::Critical.to_string(),
                last_result: None,
                output: String::new(),
                last_run: None,
                duration_ms: 0,
                runs: 0,
                interval_ms: t.interval.as_millis() as u64,
                timeout_ms: t.timeout.as_millis() as u64,
                rise: t.rise,
                fall: t.fall,
            },
        );
    }

    fn record(&self, name: &str, probe: &run::Probe, state: Health, at: SystemTime, ms: u64) {
        if let Some(info) = self.lock().get_mut(name) {
            info.state = state.to_string();
            info.last_result = Some(probe.health.to_string());
            info.output = probe.output.clone();
            info.last_run = Some(humantime::format_rfc3339_millis(at).to_string());
            info.duration_ms = ms;
            info.runs += 1;
        }
    }
}

/// Starts one task per check; returns the board they report to. The initial role already
/// holds every check as `critical` (the configuration put it there).
pub fn spawn(specs: &[CheckSpec], role: &RoleCell) -> Board {
    let board = Board::default();
    for spec in specs {
        board.add(spec);
        tokio::spawn(run_check(spec.clone(), role.clone(), board.clone()));
    }
    board
}

/// Runs `spec` every interval until the agent exits. A run that takes longer than the
/// interval delays the next one rather than overlapping it.
async fn run_check(spec: CheckSpec, role: RoleCell, board: Board) {
    let mut counter = Counter::new(spec.timing.rise, spec.timing.fall);
    let mut ticks = tokio::time::interval(spec.timing.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let at = SystemTime::now();
        let started = Instant::now();
        let probe = run::probe(&spec.name, &spec.kind, spec.timing.timeout).await;
        let ms = started.elapsed().as_millis() as u64;
        let change = counter.observe(probe.health);
        board.record(&spec.name, &probe, counter.state(), at, ms);
        let Some((from, to)) = change else {
            continue;
        };
        let from = from.map_or("not run", Health::as_str);
        info!(check = %spec.name, kind = spec.kind.name(), output = %probe.first_line(),
              "check {}: {from} -> {to}", spec.name);
        if let Err(error) = role.set_check(&spec.name, to).await {
            warn!(check = %spec.name, %error, "check state not announced");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Health::{Critical, Passing, Warning};

    fn feed(counter: &mut Counter, results: &[Health]) -> Vec<Health> {
        results
            .iter()
            .map(|r| {
                counter.observe(*r);
                counter.state()
            })
            .collect()
    }

    #[test]
    fn the_first_result_sets_the_state_and_later_ones_need_rise_or_fall_in_a_row() {
        let mut c = Counter::new(2, 3);
        assert_eq!(c.state(), Critical);
        assert_eq!(c.observe(Passing), Some((None, Passing)));
        assert_eq!(
            feed(
                &mut c,
                &[Critical, Critical, Passing, Critical, Critical, Critical]
            ),
            [Passing, Passing, Passing, Passing, Passing, Critical]
        );
        assert_eq!(
            feed(&mut c, &[Passing, Critical, Passing, Passing]),
            [Critical, Critical, Critical, Passing]
        );
    }

    #[test]
    fn a_check_flapping_every_run_with_fall_3_never_turns_critical() {
        let mut c = Counter::new(1, 3);
        c.observe(Passing);
        for _ in 0..50 {
            assert_eq!(c.observe(Critical), None);
            assert_eq!(c.observe(Passing), None);
        }
        assert_eq!(c.state(), Passing);
    }

    #[test]
    fn worse_results_of_either_kind_count_together_and_the_latest_wins() {
        let mut c = Counter::new(1, 2);
        c.observe(Passing);
        assert_eq!(c.observe(Warning), None);
        assert_eq!(c.observe(Critical), Some((Some(Passing), Critical)));
        // From critical, warning and passing are both better: rise 1 takes the first.
        assert_eq!(c.observe(Warning), Some((Some(Critical), Warning)));
        assert_eq!(c.observe(Warning), None);
    }

    #[test]
    fn with_rise_and_fall_1_every_change_is_announced() {
        let mut c = Counter::new(1, 1);
        assert_eq!(
            feed(&mut c, &[Critical, Passing, Warning, Critical, Passing]),
            [Critical, Passing, Warning, Critical, Passing]
        );
    }
}
