//! shoal and Serf side by side: per cluster size every figure both were measured on, with the
//! shoal/Serf ratio, then the targets stated as ratios (`ok` / `MISS`).

use std::fmt::Write as _;

use crate::depart::DepartRun;
use crate::loss::LossOutcome;
use crate::pause::false_failures;
use crate::report::{Table, fmax, fmt_num, mean, median, ok};
use crate::size::SizeReport;

/// One loss case: its drop probability, whether the rule went in after convergence, and the
/// outcome of each agent.
pub struct LossCase {
    pub p: f64,
    pub late: bool,
    pub shoal: LossOutcome,
    pub serf: Option<LossOutcome>,
}

/// A ratio target: shoal's figure at most `limit` times Serf's.
struct Ratio {
    label: &'static str,
    limit: f64,
    figure: fn(&SizeReport) -> f64,
}

fn wire_pkts(r: &SizeReport) -> f64 {
    r.idle.wire.as_ref().map_or(f64::NAN, |w| w.0)
}

fn wire_bytes(r: &SizeReport) -> f64 {
    r.idle.wire.as_ref().map_or(f64::NAN, |w| w.1)
}

fn cpu(r: &SizeReport) -> f64 {
    mean(&r.idle.cpu_per_min)
}

/// Median over the cold starts (the main one and the `--join-runs` more).
fn join(r: &SizeReport) -> f64 {
    median(&r.joins)
}

fn over<F: Fn(&DepartRun) -> f64>(runs: &[DepartRun], f: F, stat: fn(&[f64]) -> f64) -> f64 {
    if runs.is_empty() {
        return f64::NAN;
    }
    stat(&runs.iter().map(f).collect::<Vec<_>>())
}

fn fail_worst(r: &SizeReport) -> f64 {
    over(&r.kills, DepartRun::all_handled, fmax)
}

fn leave_worst(r: &SizeReport) -> f64 {
    over(&r.leaves, DepartRun::done, fmax)
}

const RATIOS: [Ratio; 6] = [
    Ratio {
        label: "wire packets per agent <= Serf's",
        limit: 1.0,
        figure: wire_pkts,
    },
    Ratio {
        label: "wire bytes per agent <= 0.75x Serf's",
        limit: 0.75,
        figure: wire_bytes,
    },
    Ratio {
        label: "idle CPU per agent (mean) <= 0.5x Serf's",
        limit: 0.5,
        figure: cpu,
    },
    Ratio {
        label: "join convergence (median of starts) <= 0.5x Serf's",
        limit: 0.5,
        figure: join,
    },
    Ratio {
        label: "failure handled everywhere (worst) <= 0.5x Serf's",
        limit: 0.5,
        figure: fail_worst,
    },
    Ratio {
        label: "leave listed+handled everywhere (worst) <= 0.3x Serf's",
        limit: 0.3,
        figure: leave_worst,
    },
];

/// `ok` / `MISS` for a ratio against its limit; `n/a` without a ratio (no runs, or a side
/// without the figure). A shoal timeout against a finite Serf figure is a `MISS`.
fn verdict(r: f64, limit: f64) -> &'static str {
    if r.is_nan() { "n/a" } else { ok(r <= limit) }
}

/// `0.42x`, or `n/a` when either side has no finite figure (or Serf's is 0).
fn ratio(a: f64, b: f64) -> (f64, String) {
    let r = a / b;
    if a.is_finite() && b.is_finite() && b > 0.0 {
        (r, format!("{r:.2}x"))
    } else if a.is_infinite() && b.is_finite() {
        (f64::INFINITY, "inf".into())
    } else {
        (f64::NAN, "n/a".into())
    }
}

fn fig(v: f64, decimals: usize, unit: &str) -> String {
    if v.is_infinite() {
        "timeout".into()
    } else if v.is_nan() {
        "n/a".into()
    } else {
        format!("{}{unit}", fmt_num(v, decimals))
    }
}

/// One row of the side-by-side table: label, figure, decimals, unit, and the ratio target
/// (shoal at most this many times Serf's) if the issue sets one.
type Figure = (
    &'static str,
    fn(&SizeReport) -> f64,
    usize,
    &'static str,
    Option<f64>,
);

const FIGURES: [Figure; 18] = [
    (
        "wire packets/s per agent (iptables)",
        wire_pkts,
        1,
        "",
        Some(1.0),
    ),
    (
        "wire bytes/s per agent (iptables)",
        wire_bytes,
        0,
        "",
        Some(0.75),
    ),
    (
        "idle CPU per agent, mean (s per min)",
        cpu,
        3,
        "",
        Some(0.5),
    ),
    (
        "idle RSS per agent, max VmRSS (MiB)",
        |r| fmax(&r.idle.rss_mib),
        2,
        "",
        None,
    ),
    (
        "idle RssAnon per agent, max (MiB)",
        |r| fmax(&r.idle.anon_mib),
        2,
        "",
        None,
    ),
    (
        "idle PSS per agent, max (MiB)",
        |r| fmax(&r.idle.pss_mib),
        2,
        "",
        None,
    ),
    (
        "join: all list N alive, median of starts",
        join,
        3,
        " s",
        Some(0.5),
    ),
    (
        "join: all list N alive, worst of starts",
        |r| fmax(&r.joins),
        3,
        " s",
        None,
    ),
    (
        "join: N agents spawned and ready in",
        |r| r.spawn.as_secs_f64(),
        3,
        " s",
        None,
    ),
    (
        "kill -9: all ran member-failed, worst",
        fail_worst,
        3,
        " s",
        Some(0.5),
    ),
    (
        "kill -9: all ran member-failed, median",
        fail_median,
        3,
        " s",
        None,
    ),
    (
        "kill -9: all listed failed, worst",
        |r| over(&r.kills, DepartRun::all_seen, fmax),
        3,
        " s",
        None,
    ),
    (
        "kill -9: all listed failed, median",
        |r| over(&r.kills, DepartRun::all_seen, median),
        3,
        " s",
        None,
    ),
    (
        "leave: all listed+handled, worst",
        leave_worst,
        3,
        " s",
        Some(0.3),
    ),
    (
        "leave: all listed+handled, median",
        |r| over(&r.leaves, DepartRun::done, median),
        3,
        " s",
        None,
    ),
    (
        "`members` CLI, median (ms)",
        |r| median(&r.cli_ms),
        2,
        "",
        None,
    ),
    (
        "members in-process, median (ms)",
        |r| median(&r.api_ms),
        2,
        "",
        None,
    ),
    (
        "pause: runs with a false failure",
        |r| false_failures(&r.pauses) as f64,
        0,
        "",
        None,
    ),
];

fn fail_median(r: &SizeReport) -> f64 {
    over(&r.kills, DepartRun::all_handled, median)
}

/// Every figure of one size, shoal beside Serf.
fn size_table(a: &SizeReport, b: &SizeReport) -> String {
    let mut t = Table::new(&["figure", "shoal", "Serf", "shoal/Serf", "target"]);
    for (label, f, d, unit, limit) in FIGURES {
        let (x, y) = (f(a), f(b));
        let (r, text) = ratio(x, y);
        let target = limit.map_or("-".into(), |l| format!("<= {l}x {}", verdict(r, l)));
        t.row(vec![
            label.into(),
            fig(x, d, unit),
            fig(y, d, unit),
            text,
            target,
        ]);
    }
    t.render("  ")
}

/// The side-by-side section: one table per size both ran, then the loss cases.
pub fn render_comparison(shoal: &[SizeReport], serf: &[SizeReport], loss: &[LossCase]) -> String {
    let mut out = String::from(
        "\n=== shoal and Serf side by side (same scenarios, same run; ratio = shoal/Serf) ===\n",
    );
    for a in shoal {
        let Some(b) = serf.iter().find(|b| b.n == a.n) else {
            continue;
        };
        let _ = writeln!(
            out,
            "N = {} ({} kills, {} leaves: shoal SIGTERM, Serf SIGINT; {} pauses):",
            a.n,
            a.kills.len().min(b.kills.len()),
            a.leaves.len().min(b.leaves.len()),
            a.pauses.len().min(b.pauses.len())
        );
        out.push_str(&size_table(a, b));
    }
    if !loss.is_empty() {
        out.push_str(&loss_table(loss));
    }
    out
}

/// (failed listings, member-failed lines) of a loss outcome.
fn false_deaths(o: &LossOutcome) -> Option<(usize, usize)> {
    match o {
        LossOutcome::Done(r) => Some((r.failed_transitions, r.handler_lines)),
        LossOutcome::Skipped(_) => None,
    }
}

fn loss_label(c: &LossCase) -> String {
    format!(
        "{:.0}% UDP+TCP loss{}",
        c.p * 100.0,
        if c.late { ", after convergence" } else { "" }
    )
}

/// The loss cases: false failures of each, listings and handler lines.
fn loss_table(loss: &[LossCase]) -> String {
    let mut t = Table::new(&[
        "false failures in the loss window",
        "shoal listed / handled",
        "Serf listed / handled",
    ]);
    for c in loss {
        let cell = |o: Option<&LossOutcome>| match o.and_then(false_deaths) {
            Some((l, h)) => format!("{l} / {h}"),
            None => "skipped".into(),
        };
        t.row(vec![
            loss_label(c),
            cell(Some(&c.shoal)),
            cell(c.serf.as_ref()),
        ]);
    }
    let mut out = String::from(
        "loss runs (listed: an agent newly listed a member failed; handled: member-failed \
         handler lines, one per observer and member):\n",
    );
    out.push_str(&t.render("  "));
    out
}

/// The targets as ratios, one column per size both ran, and the heavy-loss target.
pub fn render_ratio_targets(
    shoal: &[SizeReport],
    serf: &[SizeReport],
    loss: &[LossCase],
) -> String {
    let pairs: Vec<(&SizeReport, &SizeReport)> = shoal
        .iter()
        .filter_map(|a| serf.iter().find(|b| b.n == a.n).map(|b| (a, b)))
        .collect();
    let mut out = String::from("\n=== targets against Serf (shoal/Serf) ===\n");
    let mut head = vec!["target".to_string()];
    head.extend(pairs.iter().map(|(a, _)| format!("N={}", a.n)));
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    let mut t = Table::new(&head);
    for target in &RATIOS {
        let mut row = vec![target.label.to_string()];
        for (a, b) in &pairs {
            let (r, text) = ratio((target.figure)(a), (target.figure)(b));
            row.push(format!("{text} {}", verdict(r, target.limit)));
        }
        t.row(row);
    }
    out.push_str(&t.render("  "));
    for c in loss.iter().filter(|c| c.late || c.p >= 0.5) {
        let line = match (
            false_deaths(&c.shoal),
            c.serf.as_ref().and_then(false_deaths),
        ) {
            (Some((_, a)), Some((_, b))) => format!(
                "shoal {a}, Serf {b} member-failed lines {}",
                ok(a < b || a == 0)
            ),
            _ => "not measured (a side was skipped)".into(),
        };
        let _ = writeln!(
            out,
            "  false deaths at {}: fewer than Serf's: {line}",
            loss_label(c)
        );
    }
    out
}
