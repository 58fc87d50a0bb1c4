//! Health checks (`--check NAME=SPEC`): one tokio task per check, never in the gossip loop.
//! Each runs its probe every interval ([`run`]), counts results against Keepalived's rise/fall
//! ([`Counter`]) and announces a change of state through [`RoleCell::set_check`], which gossips
//! it as the member's health and fires `member-update` everywhere. [`Board`] keeps each
//! check's last run for `shoal info`. SIGHUP re-reads them ([`Checks::reload`]).

pub mod args;
pub mod run;
pub mod spec;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use shoal_core::Health;
use shoal_proto::CheckInfo;
use tokio::sync::oneshot;
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

/// The running checks: one task each, the board they report to, and what SIGHUP changes.
/// Cheap to clone.
#[derive(Clone)]
pub struct Checks {
    tasks: Arc<tokio::sync::Mutex<BTreeMap<String, Task>>>,
    board: Board,
    role: RoleCell,
}

/// One check's task and the way to stop it between runs.
struct Task {
    spec: CheckSpec,
    stop: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
}

impl Checks {
    /// Starts one task per check. The initial role already holds every check as `critical`
    /// (the configuration put it there).
    pub fn start(specs: &[CheckSpec], role: &RoleCell) -> Self {
        let checks = Self {
            tasks: Default::default(),
            board: Board::default(),
            role: role.clone(),
        };
        if let Ok(mut tasks) = checks.tasks.try_lock() {
            for spec in specs {
                tasks.insert(spec.name.clone(), checks.spawn(spec));
            }
        }
        checks
    }

    /// What `shoal info` shows.
    pub fn board(&self) -> Board {
        self.board.clone()
    }

    /// SIGHUP: applies `specs` in the background. A check whose definition did not change
    /// runs on with its state; a removed or changed one is stopped once its run in progress
    /// ends (so it never announces again); a new or changed one starts `critical`.
    pub fn reload(&self, specs: Vec<CheckSpec>) {
        let checks = self.clone();
        tokio::spawn(async move { checks.apply(specs).await });
    }

    async fn apply(&self, specs: Vec<CheckSpec>) {
        let mut tasks = self.tasks.lock().await;
        let kept = |name: &str| {
            specs
                .iter()
                .any(|s| Some(s) == tasks.get(name).map(|t| &t.spec))
        };
        let gone: Vec<String> = tasks.keys().filter(|n| !kept(n)).cloned().collect();
        let mut stopped = Vec::new();
        for name in &gone {
            if let Some(task) = tasks.remove(name) {
                let _ = task.stop.send(());
                stopped.push(task.handle);
            }
        }
        for handle in stopped {
            let _ = handle.await;
        }
        self.board.lock().retain(|name, _| tasks.contains_key(name));
        let now = self.role.get().checks;
        let states: BTreeMap<String, Health> = specs
            .iter()
            .map(|s| {
                let state = match tasks.contains_key(&s.name) {
                    true => now.get(&s.name).copied().unwrap_or(Health::Critical),
                    false => Health::Critical,
                };
                (s.name.clone(), state)
            })
            .collect();
        if let Err(error) = self.role.set_checks(states).await {
            warn!(%error, "SIGHUP: the reloaded checks' states were not announced");
        }
        let mut started = 0;
        for spec in &specs {
            if !tasks.contains_key(&spec.name) {
                tasks.insert(spec.name.clone(), self.spawn(spec));
                started += 1;
            }
        }
        info!(
            checks = specs.len(),
            stopped = gone.len(),
            started,
            "SIGHUP: health checks reloaded"
        );
    }

    fn spawn(&self, spec: &CheckSpec) -> Task {
        self.board.add(spec);
        let (stop, stopped) = oneshot::channel();
        let handle = tokio::spawn(run_check(
            spec.clone(),
            self.role.clone(),
            self.board.clone(),
            stopped,
        ));
        Task {
            spec: spec.clone(),
            stop,
            handle,
        }
    }
}

/// Runs `spec` every interval until told to stop (between runs). A run that takes longer
/// than the interval delays the next one rather than overlapping it.
async fn run_check(spec: CheckSpec, role: RoleCell, board: Board, mut stop: oneshot::Receiver<()>) {
    let mut counter = Counter::new(spec.timing.rise, spec.timing.fall);
    let mut failing: Option<String> = None;
    let mut ticks = tokio::time::interval(spec.timing.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => return,
            _ = ticks.tick() => {}
        }
        let at = SystemTime::now();
        let started = Instant::now();
        let probe = run::probe(&spec.name, &spec.kind, spec.timing.timeout).await;
        let ms = started.elapsed().as_millis() as u64;
        if !matches!(stop.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
            return;
        }
        let change = counter.observe(probe.health);
        board.record(&spec.name, &probe, counter.state(), at, ms);
        if let Some((from, to)) = change {
            let from = from.map_or("not run", Health::as_str);
            info!(check = %spec.name, kind = spec.kind.name(), output = %probe.first_line(),
                  "check {}: {from} -> {to}", spec.name);
        }
        // Compared with what the role holds, not with what this task last sent: a state the
        // node refused, or one a reload overwrote, is sent again at the next run. A failure
        // is logged once, not every run.
        let state = counter.state();
        if role.get().checks.get(&spec.name) != Some(&state) {
            match role.set_check(&spec.name, state).await {
                Ok(()) => failing = None,
                Err(error) => {
                    let text = error.to_string();
                    if failing.as_deref() != Some(text.as_str()) {
                        warn!(check = %spec.name, error = %text, "check state not announced; retrying");
                        failing = Some(text);
                    }
                }
            }
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
