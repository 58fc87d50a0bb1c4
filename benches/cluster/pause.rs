//! The pause scenario, for shoal and Serf alike: a random agent is stopped (SIGSTOP) for a
//! short while and continued (SIGCONT); every other agent is polled throughout and a few
//! seconds after. A paused process is not a failed one: any observer that lists it `failed`
//! or runs member-failed for it is a false failure.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::task::JoinSet;

use crate::depart::signal_clocks;
use crate::handlers::handler_time_after;
use crate::lister::Lister;
use crate::report::{Table, fmt_s};

/// How long the observers are still watched after the SIGCONT.
pub const AFTER_PAUSE: Duration = Duration::from_secs(5);

/// Poll period of every observer during a pause run.
pub const PAUSE_POLL: Duration = Duration::from_millis(100);

/// One pause run.
pub struct PauseRun {
    pub victim: String,
    pub paused: Duration,
    pub observers: usize,
    /// Observers whose list showed the victim `failed` (or `left`) at some poll.
    pub listed_failed: Vec<String>,
    /// Observers whose list showed it `suspect` (shoal only; Serf's list has no such status).
    pub listed_suspect: usize,
    /// Observers whose member-failed handler named it after the SIGSTOP.
    pub handled: Vec<String>,
    /// Seconds after the SIGCONT of the last poll that showed it not `alive` (suspect, failed,
    /// or missing from the list), over all observers; `None` if every poll showed it alive.
    pub last_not_alive: Option<f64>,
    /// After the watch: every agent lists every agent alive (`Err`: who did not, by the
    /// deadline). Filled in by the caller (it owns the cluster).
    pub back: std::result::Result<(), String>,
}

/// Sends SIGCONT when dropped, so a paused agent is never left stopped.
struct ContOnDrop(i32);

impl Drop for ContOnDrop {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGCONT);
    }
}

/// An observer of a pause: its name, member list and member-failed handler file.
pub type Observer = (String, Lister, PathBuf);

/// Stops `victim` (`pid`) for `pause` while `observers` are polled, then continues it and
/// watches [`AFTER_PAUSE`] more. `back` is filled in by the caller (it owns the cluster).
pub async fn pause_run(
    victim: &str,
    pid: u32,
    observers: Vec<Observer>,
    pause: Duration,
) -> Result<PauseRun> {
    let pid = i32::try_from(pid).context("pid out of range")?;
    let (epoch, start) = signal_clocks()?;
    let end = start + pause + AFTER_PAUSE;
    kill(Pid::from_raw(pid), Signal::SIGSTOP).context("SIGSTOP")?;
    let guard = ContOnDrop(pid);
    let count = observers.len();
    let mut set = JoinSet::new();
    for (name, lister, file) in observers {
        let victim = victim.to_string();
        set.spawn(async move {
            let (mut failed, mut suspect, mut last) = (false, false, None);
            while Instant::now() < end {
                let tick = Instant::now();
                if let Some(list) = lister.statuses().await {
                    let status = list.into_iter().find(|(n, _)| *n == victim).map(|(_, s)| s);
                    if status.as_deref() != Some("alive") {
                        failed |= matches!(status.as_deref(), Some("failed" | "left"));
                        suspect |= status.as_deref() == Some("suspect");
                        let since = tick.duration_since(start).as_secs_f64();
                        last = Some(since - pause.as_secs_f64());
                    }
                }
                tokio::time::sleep_until((tick + PAUSE_POLL).into()).await;
            }
            let handled = handler_time_after(&file, &victim, epoch).is_some();
            (name, failed, suspect, handled, last)
        });
    }
    tokio::time::sleep_until((start + pause).into()).await;
    let paused = start.elapsed();
    drop(guard);
    let mut run = PauseRun {
        victim: victim.to_string(),
        paused,
        observers: count,
        listed_failed: Vec::new(),
        listed_suspect: 0,
        handled: Vec::new(),
        last_not_alive: None,
        back: Ok(()),
    };
    while let Some(joined) = set.join_next().await {
        let (name, failed, suspect, handled, last) = joined.context("a pause watcher failed")?;
        run.last_not_alive = match (run.last_not_alive, last) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if failed {
            run.listed_failed.push(name.clone());
        }
        if handled {
            run.handled.push(name);
        }
        run.listed_suspect += usize::from(suspect);
    }
    run.listed_failed.sort();
    run.handled.sort();
    Ok(run)
}

/// The pause section: one row per run and how many runs had a false failure.
pub fn render_pauses(runs: &[PauseRun]) -> String {
    let Some(first) = runs.first() else {
        return String::new();
    };
    let mut out = format!(
        "\npause (SIGSTOP {:.1} s, then SIGCONT; observers polled every {} ms until {} s after), \
         {} runs:\n",
        first.paused.as_secs_f64(),
        PAUSE_POLL.as_millis(),
        AFTER_PAUSE.as_secs(),
        runs.len()
    );
    let mut t = Table::new(&[
        "run",
        "victim",
        "listed it failed",
        "ran member-failed for it",
        "listed it suspect",
        "last not alive, after SIGCONT",
        "then all list N alive",
    ]);
    for (i, r) in runs.iter().enumerate() {
        t.row(vec![
            format!("{}", i + 1),
            r.victim.clone(),
            format!("{} of {}", r.listed_failed.len(), r.observers),
            format!("{} of {}", r.handled.len(), r.observers),
            format!("{} of {}", r.listed_suspect, r.observers),
            r.last_not_alive.map_or("-".into(), fmt_s),
            match &r.back {
                Ok(()) => "yes".into(),
                Err(_) => "NO (deadline)".into(),
            },
        ]);
    }
    out.push_str(&t.render("  "));
    let _ = writeln!(
        out,
        "  runs where some agent listed the paused agent failed or ran member-failed: {} of {}",
        false_failures(runs),
        runs.len()
    );
    out
}

/// Runs with a false failure (some observer listed or handled the paused agent as failed).
pub fn false_failures(runs: &[PauseRun]) -> usize {
    runs.iter()
        .filter(|r| !r.listed_failed.is_empty() || !r.handled.is_empty())
        .count()
}
