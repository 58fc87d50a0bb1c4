//! The targets section at the end of a run: every target of the issues next to what was
//! measured, per cluster size, then the loss run and the convergence section. Apart from the
//! shared helpers in [`crate::report`] because it reads every scenario's report, and the
//! scenarios use those helpers.

use std::fmt::Write as _;

use crate::convergence::{ConvergenceReport, TARGET_HEAL_S, TARGET_SIMUL_S};
use crate::depart::DepartRun;
use crate::loss::LossOutcome;
use crate::report::{
    TARGET_FAIL_S, TARGET_LEAVE_S, TARGET_MEMBERS_MS, TARGET_N, TARGET_RSS_MIB, Table, fmax,
    fmt_num, fmt_s, median, ok,
};
use crate::size::SizeReport;

/// The targets section: per cluster size, then the loss run and the convergence section.
pub fn render_targets(
    reports: &[SizeReport],
    loss: Option<&LossOutcome>,
    convergence: Option<&ConvergenceReport>,
) -> String {
    let mut out = format!("\n=== targets (lan profile; stated for N = {TARGET_N}) ===\n");
    out.push_str(&size_targets(reports));
    let loss_line = match loss {
        None => "not run".to_string(),
        Some(LossOutcome::Skipped(why)) => format!("SKIPPED ({why})"),
        Some(LossOutcome::Done(r)) => {
            let zero = r.failed_transitions == 0 && r.handler_runs == 0;
            format!(
                "N={}: {} failed listings, {} handler runs {}",
                r.n,
                r.failed_transitions,
                r.handler_runs,
                ok(zero)
            )
        }
    };
    let _ = writeln!(out, "  zero false failures at 10% loss: {loss_line}");
    if let Some(conv) = convergence {
        let (simul, heal) = conv.target_lines();
        let _ = writeln!(
            out,
            "  simultaneous start, all converged <= {TARGET_SIMUL_S} s in every run: {simul}"
        );
        let _ = writeln!(
            out,
            "  partition heal, all converged <= {TARGET_HEAL_S} s after the cut in every run: \
             {heal}"
        );
    }
    if reports.iter().any(|r| r.n == TARGET_N) {
        let _ = writeln!(out, "  (* the size the targets are stated for)");
    }
    out
}

/// The targets table: one column per cluster size.
fn size_targets(reports: &[SizeReport]) -> String {
    let mut head: Vec<String> = vec!["target".into()];
    head.extend(reports.iter().map(|r| {
        if r.n == TARGET_N {
            format!("N={} *", r.n)
        } else {
            format!("N={}", r.n)
        }
    }));
    let head_refs: Vec<&str> = head.iter().map(String::as_str).collect();
    let mut t = Table::new(&head_refs);
    let row = |label: String, cell: &dyn Fn(&SizeReport) -> String| -> Vec<String> {
        let mut row = vec![label];
        row.extend(reports.iter().map(cell));
        row
    };
    t.row(row(
        format!("idle RSS per agent <= {TARGET_RSS_MIB} MiB (max)"),
        &|r| {
            let v = fmax(&r.idle.rss_mib);
            format!("{} MiB {}", fmt_num(v, 2), ok(v <= TARGET_RSS_MIB))
        },
    ));
    t.row(row(
        format!("`shoal members` < {TARGET_MEMBERS_MS} ms (median)"),
        &|r| {
            let v = median(&r.cli_ms);
            let pass = v < TARGET_MEMBERS_MS && r.cli_errors.is_empty();
            format!("{} ms {}", fmt_num(v, 2), ok(pass))
        },
    ));
    t.row(row(
        format!("leave listed+handled everywhere <= {TARGET_LEAVE_S} s (worst)"),
        &|r| worst_cell(&r.leaves, DepartRun::done, TARGET_LEAVE_S),
    ));
    t.row(row(
        format!("failure handled everywhere <= {TARGET_FAIL_S} s (worst)"),
        &|r| worst_cell(&r.kills, DepartRun::all_handled, TARGET_FAIL_S),
    ));
    t.render("  ")
}

/// `-` without runs, else the worst of `time` over the runs against `target` seconds.
fn worst_cell(runs: &[DepartRun], time: fn(&DepartRun) -> f64, target: f64) -> String {
    if runs.is_empty() {
        return "-".into();
    }
    let v = fmax(&runs.iter().map(time).collect::<Vec<_>>());
    format!("{} {}", fmt_s(v), ok(v <= target))
}
