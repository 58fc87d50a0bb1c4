//! The convergence section's report: the summary table and one part per scenario (1.
//! simultaneous start, 2. random join, 3. partition heal), and its lines of the targets.

use std::fmt::Write as _;

use crate::agents::{CONVERGE_POLL, SETTLE};
use crate::convergence::partition::PartitionRun;
use crate::convergence::simul::SimulRun;
use crate::convergence::watch::{Times, median_of, slowest_names, worst};
use crate::convergence::{
    ConvergenceReport, LATE_AGENTS, NetnsOutcome, NetnsReport, PARTITION_POLL, SIMUL_PORT,
    TARGET_CONV_N, TARGET_HEAL_S, TARGET_SIMUL_S,
};
use crate::netns::UID_BASE;
use crate::report::{Table, fmax, fmt_s, median, ok, short_list};
use crate::settings::ConvSettings;

impl ConvergenceReport {
    /// The whole section: parts 1 to 3, then the summary over runs.
    pub fn render(&self) -> String {
        let c = &self.c;
        let n = c.n;
        let mut out = format!(
            "\n=== convergence (lan profile, N = {n}, {} runs each; every agent's GET \
             /v1/members polled every {} ms; converged = lists all {n} alive) ===\n",
            c.runs,
            CONVERGE_POLL.as_millis()
        );
        let mut head = vec!["summary".to_string()];
        head.extend((1..=c.runs).map(|r| format!("run {r}")));
        head.extend(["worst".to_string(), format!("target (N={TARGET_CONV_N})")]);
        let head_refs: Vec<&str> = head.iter().map(String::as_str).collect();
        let mut summary = Table::new(&head_refs);

        let _ = writeln!(
            out,
            "\n1. simultaneous start: {n} agents spawned back to back with the identical argv \
             `shoal agent --join peers:{SIMUL_PORT} --profile lan --control 127.0.0.1:0 \
             --event-handler <member-join,member-failed>`,\n   env \
             SHOAL_BIND=127.0.0.K:{SIMUL_PORT} SHOAL_NODE=nK; private net+mount namespace, \
             /etc/hosts maps `peers` to 127.0.0.1..127.0.0.{n}; seconds since the first spawn:"
        );
        let heal_row = match &self.netns {
            NetnsOutcome::Skipped(why) => {
                let _ = writeln!(out, "  skipped: {why}");
                let simul_target = format!("<= {TARGET_SIMUL_S} s");
                summary.row(self.skipped_row(SIMUL, "see 1.", simul_target));
                self.skipped_row(HEAL, "see 3.", format!("<= {TARGET_HEAL_S} s"))
            }
            NetnsOutcome::Done(r) => {
                let (text, simul) = render_simul(n, r);
                out.push_str(&text);
                let w = fmax(&simul);
                let target = format!("<= {TARGET_SIMUL_S} s {}", ok(w <= TARGET_SIMUL_S));
                summary.row(runs_row(SIMUL, &simul, target));
                heal_row(r)
            }
        };

        let (text, first, last) = self.render_random();
        out.push_str(&text);
        let label = "random join: all converged since first start";
        summary.row(runs_row(label, &first, "-".into()));
        let label = "random join: all converged since last start";
        summary.row(runs_row(label, &last, "-".into()));

        match &self.netns {
            NetnsOutcome::Skipped(why) => {
                let _ = writeln!(out, "\n3. partition heal\n  skipped: {why}");
            }
            NetnsOutcome::Done(r) => out.push_str(&render_partition(c, r)),
        }
        summary.row(heal_row);

        out.push('\n');
        out.push_str(&summary.render("  "));
        out
    }

    /// A summary row for a scenario that did not run.
    fn skipped_row(&self, label: &str, why: &str, target: String) -> Vec<String> {
        let mut row = vec![label.to_string()];
        row.extend((1..=self.c.runs).map(|_| "-".to_string()));
        row.extend([format!("skipped ({why})"), target]);
        row
    }

    /// The random-join table; also the per-run times since the first and since the last start.
    pub fn render_random(&self) -> (String, Vec<f64>, Vec<f64>) {
        let n = self.c.n;
        let mut out = format!(
            "\n2. random join: {n} agents started one after another (each once the previous \
             printed its readiness line), each --join'ing one random running agent; the bench's \
             own namespace, 127.0.0.1 with port 0; seconds:\n"
        );
        let mut t = Table::new(&[
            "run",
            "spawned in",
            "median agent",
            "all converged since first start",
            "since last start",
            "slowest agents (since first start)",
        ]);
        for (i, r) in self.random.iter().enumerate() {
            t.row(vec![
                format!("{}", i + 1),
                fmt_s(r.spawn_s),
                fmt_s(median_of(&r.converged)),
                fmt_s(worst(&r.converged)),
                fmt_s(worst(&r.converged) - r.last_start_s),
                slowest_names(&r.names, &r.converged, LATE_AGENTS),
            ]);
        }
        let first: Vec<f64> = self.random.iter().map(|r| worst(&r.converged)).collect();
        let last: Vec<f64> = self
            .random
            .iter()
            .map(|r| worst(&r.converged) - r.last_start_s)
            .collect();
        t.row(vec![
            "worst".into(),
            String::new(),
            String::new(),
            fmt_s(fmax(&first)),
            fmt_s(fmax(&last)),
            String::new(),
        ]);
        out.push_str(&t.render("  "));
        for (i, r) in self.random.iter().enumerate() {
            for g in &r.groups {
                let _ = writeln!(out, "  run {}: split: {g}", i + 1);
            }
            render_run_notes(&mut out, i + 1, &r.names, &r.converged, &r.stable);
            render_late_logs(&mut out, i + 1, &r.late_logs);
        }
        (out, first, last)
    }
}

impl ConvergenceReport {
    /// The simultaneous-start and heal lines of the targets section.
    pub fn target_lines(&self) -> (String, String) {
        let n = self.c.n;
        let r = match &self.netns {
            NetnsOutcome::Skipped(why) => {
                return (format!("SKIPPED ({why})"), format!("SKIPPED ({why})"));
            }
            NetnsOutcome::Done(r) => r,
        };
        let simul = fmax(
            &r.runs
                .iter()
                .map(|run| worst(&run.converged))
                .collect::<Vec<_>>(),
        );
        let simul = format!(
            "N={n}: worst of {} runs {} {}",
            r.runs.len(),
            fmt_s(simul),
            ok(simul <= TARGET_SIMUL_S)
        );
        let heal: Vec<f64> = r
            .runs
            .iter()
            .filter_map(|run| run.partition.as_ref().ok().map(|p| worst(&p.healed)))
            .collect();
        let heal = if heal.is_empty() {
            match (
                &r.partition_skipped,
                r.runs.first().map(|run| &run.partition),
            ) {
                (Some(why), _) | (None, Some(Err(why))) => format!("SKIPPED ({why})"),
                _ => "SKIPPED".into(),
            }
        } else {
            let w = fmax(&heal);
            format!(
                "N={n}: worst of {} runs {} {}{}",
                heal.len(),
                fmt_s(w),
                ok(w <= TARGET_HEAL_S && heal.len() == r.runs.len()),
                if r.no_snat.is_some() {
                    " (leaky cut: no per-agent source NAT)"
                } else {
                    ""
                }
            )
        };
        (simul, heal)
    }
}

/// Summary row labels.
const SIMUL: &str = "simultaneous start: all converged";
const HEAL: &str = "partition heal: all converged after the cut";

/// A summary row: `label`, each run's time, the worst, `target`.
fn runs_row(label: &str, per_run: &[f64], target: String) -> Vec<String> {
    let mut row = vec![label.to_string()];
    row.extend(per_run.iter().map(|&v| fmt_s(v)));
    row.extend([fmt_s(fmax(per_run)), target]);
    row
}

/// The summary row of the partition heal: each run's time (or `skipped`), the worst.
fn heal_row(r: &NetnsReport) -> Vec<String> {
    let mut row = vec![HEAL.to_string()];
    let mut ran = Vec::new();
    for run in &r.runs {
        row.push(match &run.partition {
            Ok(p) => {
                ran.push(worst(&p.healed));
                fmt_s(worst(&p.healed))
            }
            Err(_) => "skipped".into(),
        });
    }
    if ran.is_empty() {
        row.extend(["skipped (see 3.)".into(), format!("<= {TARGET_HEAL_S} s")]);
    } else {
        let w = fmax(&ran);
        let leaky = if r.no_snat.is_some() {
            " (leaky cut)"
        } else {
            ""
        };
        row.extend([
            fmt_s(w),
            format!("<= {TARGET_HEAL_S} s {}{leaky}", ok(w <= TARGET_HEAL_S)),
        ]);
    }
    row
}

/// The simultaneous-start table; also the per-run times until all converged.
pub fn render_simul(n: usize, r: &NetnsReport) -> (String, Vec<f64>) {
    let mut out = String::new();
    if r.resolved != n {
        let _ = writeln!(
            out,
            "  NOTE: `peers:{SIMUL_PORT}` resolved to {} addresses, not {n}",
            r.resolved
        );
    }
    let mut t = Table::new(&[
        "run",
        "spawn spread",
        "all ready",
        "median agent",
        "all converged",
        "slowest agents",
    ]);
    for (i, run) in r.runs.iter().enumerate() {
        t.row(vec![
            format!("{}", i + 1),
            fmt_s(run.spawn_spread_s),
            fmt_s(worst(&run.ready)),
            fmt_s(median_of(&run.converged)),
            fmt_s(worst(&run.converged)),
            slowest_names(&run.names, &run.converged, LATE_AGENTS),
        ]);
    }
    let simul: Vec<f64> = r.runs.iter().map(|run| worst(&run.converged)).collect();
    let w = fmax(&simul);
    t.row(vec![
        "worst".into(),
        String::new(),
        String::new(),
        String::new(),
        fmt_s(w),
        format!("<= {TARGET_SIMUL_S} s {}", ok(w <= TARGET_SIMUL_S)),
    ]);
    out.push_str(&t.render("  "));
    for (i, run) in r.runs.iter().enumerate() {
        render_run_notes(&mut out, i + 1, &run.names, &run.converged, &run.stable);
        for a in &run.anomalies {
            let _ = writeln!(out, "  run {}: {a}", i + 1);
        }
        for (name, t) in run.names.iter().zip(&run.ready) {
            if let Err(why) = t {
                let _ = writeln!(out, "  run {}: {name} not ready: {why}", i + 1);
            }
        }
        render_late_logs(&mut out, i + 1, &run.late_logs);
    }
    (out, simul)
}

/// Part 3: how the cut was made, the tables during the cut and after the heal, and per-run
/// notes.
pub fn render_partition(c: &ConvSettings, r: &NetnsReport) -> String {
    let n = c.n;
    let a = c.side_a();
    let mut out = format!(
        "\n3. partition heal: each run's cluster of 1., once converged (+ {} s), cut n1..n{a} | \
         n{}..n{n} for {} s by `iptables -A INPUT -m iprange --src-range 127.0.0.1-127.0.0.{a} \
         --dst-range 127.0.0.{}-127.0.0.{n} -j DROP` and the reverse rule, then the rules \
         deleted (the heal).\n   Every agent's member-join,member-failed handler appends one \
         line per member to a file of its own.\n",
        SETTLE.as_secs(),
        a + 1,
        c.partition.as_secs(),
        a + 1,
    );
    match &r.no_snat {
        None => {
            let _ = writeln!(
                out,
                "   Agent K runs as uid {UID_BASE}+K and its connections leave from 127.0.0.K \
                 (iptables owner match + SNAT), as from a container's own address."
            );
        }
        Some(why) => {
            let _ = writeln!(
                out,
                "   NOTE: no per-agent source NAT ({why}): the agents' TCP push-pulls leave from \
                 127.0.0.1, so the cut drops them within n{}..n{n} and lets them through from \
                 n{}..n{n} to n1..n{a}: the partition LEAKS.",
                a + 1,
                a + 1
            );
        }
    }
    if let Some(why) = &r.partition_skipped {
        let _ = writeln!(out, "  skipped: {why}");
        return out;
    }

    out.push_str(&render_cut_table(c, r));
    out.push_str(&render_heal_table(c, r));
    for (i, run) in r.runs.iter().enumerate() {
        if let Ok(p) = &run.partition {
            render_partition_notes(&mut out, i + 1, run, p);
        }
    }
    out
}

/// The table of the cut: who listed the other side failed, and the handler lines.
fn render_cut_table(c: &ConvSettings, r: &NetnsReport) -> String {
    let (n, a) = (c.n, c.side_a());
    let mut out = String::new();
    let _ = writeln!(out, "\n  during the cut:");
    let mut t = Table::new(&[
        "run",
        "cut",
        "dropped pkts",
        "agents listing the other side failed",
        "median agent saw it",
        "all did after",
        "own side not alive",
        "member-failed ran for the other side",
        "member-failed for own side",
        "member-join (expect 0)",
    ]);
    for (i, run) in r.runs.iter().enumerate() {
        match &run.partition {
            Err(why) => t.row(vec![format!("{}", i + 1), format!("skipped: {why}")]),
            Ok(p) => {
                let full = p
                    .other_failed
                    .iter()
                    .enumerate()
                    .filter(|(j, f)| **f == Some(if *j < a { n - a } else { a }))
                    .count();
                let detect: Vec<f64> = p
                    .detected
                    .iter()
                    .map(|d| d.unwrap_or(f64::INFINITY))
                    .collect();
                t.row(vec![
                    format!("{}", i + 1),
                    format!("{:.1} s", p.cut_s),
                    p.dropped.map_or("n/a".into(), |d| d.to_string()),
                    format!("{full}/{n}"),
                    fmt_s(median(&detect)),
                    fmt_s(fmax(&detect)),
                    p.own_not_alive.iter().sum::<usize>().to_string(),
                    format!("{}/{n}", p.failed_handled),
                    p.failed_own_side.to_string(),
                    p.join_during_cut.to_string(),
                ]);
            }
        }
    }
    out.push_str(&t.render("  "));
    let _ = writeln!(
        out,
        "  (listing the other side failed: every member of it `failed` at the end of the cut; \
         all did after: seconds after the cut until the last agent's poll (every {} ms) showed \
         it, `timeout` if some agent never did; own side not alive: (agent, member) pairs of the \
         same side not `alive` at the end of the cut; handler columns: agents whose member-failed \
         handler named the whole other side, and handler lines for the wrong members)",
        PARTITION_POLL.as_millis()
    );

    out
}

/// The table after the heal: convergence times and the member-join lines.
fn render_heal_table(c: &ConvSettings, r: &NetnsReport) -> String {
    let (n, a) = (c.n, c.side_a());
    let mut out = String::new();
    let expected_lines = a * (n - a) * 2;
    let _ = writeln!(
        out,
        "\n  after the heal (seconds since the rules were deleted; member-join lines written \
         after it):"
    );
    let mut t = Table::new(&[
        "run",
        "median agent",
        "all converged",
        "slowest agents",
        &format!("member-join lines (expect {expected_lines})"),
        "agents exact",
        "missing",
        "duplicate",
        "own side",
    ]);
    let mut heal = Vec::new();
    for (i, run) in r.runs.iter().enumerate() {
        match &run.partition {
            Err(why) => t.row(vec![format!("{}", i + 1), format!("skipped: {why}")]),
            Ok(p) => {
                heal.push(worst(&p.healed));
                t.row(vec![
                    format!("{}", i + 1),
                    fmt_s(median_of(&p.healed)),
                    fmt_s(worst(&p.healed)),
                    slowest_names(&run.names, &p.healed, LATE_AGENTS),
                    p.join_lines.to_string(),
                    format!("{}/{n}", p.join_exact),
                    p.join_missing.to_string(),
                    p.join_duplicates.to_string(),
                    p.join_own_side.to_string(),
                ]);
            }
        }
    }
    if !heal.is_empty() {
        let w = fmax(&heal);
        t.row(vec![
            "worst".into(),
            String::new(),
            fmt_s(w),
            format!("<= {TARGET_HEAL_S} s {}", ok(w <= TARGET_HEAL_S)),
        ]);
    }
    out.push_str(&t.render("  "));
    let _ = writeln!(
        out,
        "  (agents exact: the agent's member-join handler named each member of the other side \
         once and nothing else; missing: (agent, member) pairs with no line; duplicate: extra \
         lines for the same pair; own side: lines for members of the agent's own side)"
    );
    out
}

/// The notes of one partition run: silent agents, the slowest pairs, flaps, late handler
/// lines, timeouts and the logs of late agents.
fn render_partition_notes(out: &mut String, run_no: usize, run: &SimulRun, p: &PartitionRun) {
    for (name, f) in run.names.iter().zip(&p.other_failed) {
        if f.is_none() {
            let _ = writeln!(
                out,
                "  run {}: {name} did not answer at the end of the cut",
                run_no
            );
        }
    }
    let _ = writeln!(
        out,
        "  run {}: (agent, other-side member) pairs, time after the cut until listed failed: \
         median {}, p90 {}, max {}; slowest: {}",
        run_no,
        fmt_s(p.pair_median.unwrap_or(f64::INFINITY)),
        fmt_s(p.pair_p90.unwrap_or(f64::INFINITY)),
        fmt_s(p.pair_max.unwrap_or(f64::INFINITY)),
        p.slow_pairs.join("; ")
    );
    if !p.cut_flaps.is_empty() {
        let _ = writeln!(
            out,
            "  run {}: {} times an agent listed a cut-off member failed and then not: {}",
            run_no,
            p.cut_flaps.len(),
            short_list(&p.cut_flaps)
        );
    }
    if !p.heal_flaps.is_empty() {
        let _ = writeln!(
            out,
            "  run {}: after the heal {} agents listed a member of their own side (never cut \
             off from them) as not alive (first sighting per member): {}",
            run_no,
            p.heal_flaps.len(),
            short_list(&p.heal_flaps)
        );
    }
    if p.failed_after_heal > 0 {
        let _ = writeln!(
            out,
            "  run {}: member-failed handler lines after the heal: {} ({} for own-side \
             members)",
            run_no, p.failed_after_heal, p.failed_after_heal_own
        );
    }
    if !p.cut_lag.is_empty() {
        let _ = writeln!(
            out,
            "  run {}: at the end of the cut {} agents listed a member of the other side not \
             failed or of their own side not alive: {}",
            run_no,
            p.cut_lag.len(),
            short_list(&p.cut_lag)
        );
    }
    render_run_notes(out, run_no, &run.names, &p.healed, &p.heal_stable);
    render_late_logs(out, run_no, &p.late_logs);
}

/// Timeouts and instability notes of one run.
pub fn render_run_notes(
    out: &mut String,
    run: usize,
    names: &[String],
    times: &Times,
    stable: &Option<String>,
) {
    const SHOWN: usize = 5;
    let late: Vec<(&String, &String)> = names
        .iter()
        .zip(times)
        .filter_map(|(name, t)| t.as_ref().err().map(|why| (name, why)))
        .collect();
    for (name, why) in late.iter().take(SHOWN) {
        let _ = writeln!(out, "  run {run}: {name} timeout: {why}");
    }
    if late.len() > SHOWN {
        let _ = writeln!(
            out,
            "  run {run}: {} more agents timed out",
            late.len() - SHOWN
        );
    }
    if let Some(why) = stable {
        let _ = writeln!(out, "  run {run}: final check: {why}");
    }
}

pub fn render_late_logs(out: &mut String, run: usize, logs: &[(String, String)]) {
    for (name, tail) in logs {
        let _ = writeln!(out, "  run {run}: log of {name} (last lines):");
        for line in tail.lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
}
