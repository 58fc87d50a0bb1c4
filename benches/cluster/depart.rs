//! Departures, kill -9 and graceful leave, as both shoal and Serf run them: what a run
//! records ([`DepartRun`]), how every survivor is watched ([`observe_all`]), and the report.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use tokio::task::JoinSet;

use crate::handlers::handler_time;
use crate::lister::Lister;
use crate::report::{Peer, TARGET_FAIL_S, TARGET_LEAVE_S, Table, fmax, fmt_s, ok};

/// Poll period of every survivor after a kill or a leave.
pub const DEPART_POLL: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Depart {
    Kill,
    Leave,
}

impl Depart {
    pub fn status(self) -> &'static str {
        match self {
            Depart::Kill => "failed",
            Depart::Leave => "left",
        }
    }

    pub fn event(self) -> &'static str {
        match self {
            Depart::Kill => "member-failed",
            Depart::Leave => "member-leave",
        }
    }
}

/// One kill or leave. Times are seconds since the signal; infinity means "not within the
/// deadline".
pub struct DepartRun {
    pub victim: String,
    pub survivors: Vec<String>,
    pub seen: Vec<f64>,
    pub handled: Vec<f64>,
    pub exit: Option<String>,
    pub rejoin: f64,
    pub rejoin_note: Option<String>,
}

impl DepartRun {
    pub fn first_seen(&self) -> f64 {
        self.seen.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn all_seen(&self) -> f64 {
        fmax(&self.seen)
    }

    pub fn all_handled(&self) -> f64 {
        fmax(&self.handled)
    }

    /// Seen and handled everywhere.
    pub fn done(&self) -> f64 {
        self.all_seen().max(self.all_handled())
    }

    /// The survivor that was last to both list and handle the departure.
    pub fn slowest(&self) -> String {
        let mut worst = (f64::NEG_INFINITY, String::from("-"));
        for (i, name) in self.survivors.iter().enumerate() {
            let t = self.seen[i].max(self.handled[i]);
            if t > worst.0 {
                worst = (t, name.clone());
            }
        }
        worst.1
    }
}

/// The wall clock (epoch seconds, as the handlers' `date +%s.%N`) and the monotonic clock at
/// a signal.
pub fn signal_clocks() -> Result<(f64, Instant)> {
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?
        .as_secs_f64();
    Ok((epoch, Instant::now()))
}

/// Watches every survivor (its member list and its handler file for `how`) at once until it
/// lists and handles `victim`; per survivor, (seen, handled) in seconds since `start`,
/// infinity where the `timeout` passed first.
pub async fn observe_all(
    survivors: Vec<(Lister, PathBuf)>,
    victim: &str,
    how: Depart,
    (epoch, start): (f64, Instant),
    timeout: Duration,
) -> (Vec<f64>, Vec<f64>) {
    let mut set = JoinSet::new();
    let count = survivors.len();
    for (i, (lister, file)) in survivors.into_iter().enumerate() {
        let victim = victim.to_string();
        set.spawn(async move {
            let times = observe(lister, file, victim, how.status(), start, epoch, timeout).await;
            (i, times)
        });
    }
    let mut seen = vec![f64::INFINITY; count];
    let mut handled = vec![f64::INFINITY; count];
    while let Some(joined) = set.join_next().await {
        if let Ok((i, (s, h))) = joined {
            seen[i] = s;
            handled[i] = h;
        }
    }
    (seen, handled)
}

/// Polls one survivor every [`DEPART_POLL`] until it lists `victim` with status `want` and its
/// handler file names `victim`. Returns (seen, handled) in seconds since the signal.
async fn observe(
    lister: Lister,
    file: PathBuf,
    victim: String,
    want: &'static str,
    start: Instant,
    epoch: f64,
    timeout: Duration,
) -> (f64, f64) {
    let mut seen = f64::INFINITY;
    let mut handled = f64::INFINITY;
    loop {
        let tick = Instant::now();
        if seen.is_infinite() && lister.status_of(&victim).await.as_deref() == Some(want) {
            seen = start.elapsed().as_secs_f64();
        }
        if handled.is_infinite()
            && let Some(ts) = handler_time(&file, &victim)
        {
            handled = ts - epoch;
        }
        if (seen.is_finite() && handled.is_finite()) || start.elapsed() >= timeout {
            return (seen, handled);
        }
        tokio::time::sleep_until((tick + DEPART_POLL).into()).await;
    }
}

/// The kill or leave section: one row per run, the summary over runs, and notes.
pub fn render_departs(n: usize, how: Depart, runs: &[DepartRun], peer: Peer) -> String {
    let mut out = String::new();
    let title = match how {
        Depart::Kill => "failure (kill -9)".to_string(),
        Depart::Leave => format!("leave ({})", peer.leave_signal()),
    };
    let _ = writeln!(
        out,
        "\n{title}, {} runs; seconds after the signal, over all {} survivors:",
        runs.len(),
        n - 1
    );
    if runs.is_empty() {
        out.push_str("  (no runs)\n");
        return out;
    }
    out.push_str(&depart_runs_table(how, runs));
    out.push('\n');
    out.push_str(&depart_summary(how, runs, peer));
    out.push_str(&depart_notes(how, runs));
    out
}

/// One row per kill or leave.
fn depart_runs_table(how: Depart, runs: &[DepartRun]) -> String {
    let mut head = vec![
        "run",
        "victim",
        "first listed",
        "all listed",
        "all handled",
        "slowest survivor",
        "replacement",
    ];
    if how == Depart::Leave {
        head.push("victim exit");
    }
    let mut t = Table::new(&head);
    for (i, r) in runs.iter().enumerate() {
        let mut row = vec![
            format!("{}", i + 1),
            r.victim.clone(),
            fmt_s(r.first_seen()),
            fmt_s(r.all_seen()),
            fmt_s(r.all_handled()),
            r.slowest(),
            fmt_s(r.rejoin),
        ];
        if let Some(exit) = &r.exit {
            row.push(exit.clone());
        }
        t.row(row);
    }
    t.render("  ")
}

/// Median and worst over the runs, against the targets; for kills, the runs over target.
fn depart_summary(how: Depart, runs: &[DepartRun], peer: Peer) -> String {
    let seen: Vec<f64> = runs.iter().map(DepartRun::all_seen).collect();
    let handled: Vec<f64> = runs.iter().map(DepartRun::all_handled).collect();
    let done: Vec<f64> = runs.iter().map(DepartRun::done).collect();
    let rejoin: Vec<f64> = runs.iter().map(|r| r.rejoin).collect();
    let (seen_target, handled_target) = match how {
        Depart::Kill => (
            "-".into(),
            format!(
                "<= {TARGET_FAIL_S} s {}",
                ok(fmax(&handled) <= TARGET_FAIL_S)
            ),
        ),
        Depart::Leave => (
            format!(
                "<= {TARGET_LEAVE_S} s {}",
                ok(fmax(&done) <= TARGET_LEAVE_S)
            ),
            "(both)".into(),
        ),
    };
    let (seen_target, handled_target) = (peer.target(seen_target), peer.target(handled_target));
    let mut t = Table::new(&["summary over runs", "median", "worst", "target (N=20)"]);
    let listed = format!("every survivor lists it {}", how.status());
    t.timing(&listed, &seen, seen_target);
    let ran = format!("every survivor ran {}", how.event());
    t.timing(&ran, &handled, handled_target);
    t.timing("replacement: all list N alive", &rejoin, "-".into());
    let mut out = t.render("  ");
    if how == Depart::Kill && peer == Peer::Shoal {
        let over = done.iter().filter(|&&d| d > TARGET_FAIL_S).count();
        let _ = writeln!(
            out,
            "  runs where some survivor took > {TARGET_FAIL_S} s to list or handle: {over} of {}",
            runs.len()
        );
    }
    out
}

/// Survivors that missed the deadline, and replacements that did not converge.
fn depart_notes(how: Depart, runs: &[DepartRun]) -> String {
    let mut out = String::new();
    for (i, r) in runs.iter().enumerate() {
        let missing_seen = r.seen.iter().filter(|t| t.is_infinite()).count();
        let missing_handled = r.handled.iter().filter(|t| t.is_infinite()).count();
        if missing_seen + missing_handled > 0 {
            let _ = writeln!(
                out,
                "  run {}: {missing_seen} survivors never listed {} {}, {missing_handled} \
                 never ran {} for it (deadline)",
                i + 1,
                r.victim,
                how.status(),
                how.event()
            );
        }
        if let Some(note) = &r.rejoin_note {
            let _ = writeln!(out, "  run {}: replacement {note}", i + 1);
        }
    }
    out
}
