//! The messaging section's report: shoal beside Serf (median and worst of each figure, the
//! shoal/Serf ratios), then issue 9's targets with `ok` / `MISS`.

use std::fmt::Write as _;

use super::MsgReport;
use crate::report::{Table, fmax, fmt_s, median, ok, short_list};

/// Issue 9: a user event handled everywhere within this (worst), seconds.
pub const TARGET_EVENT_S: f64 = 0.5;

/// ... and at most this times Serf's (worst).
pub const TARGET_EVENT_RATIO: f64 = 0.5;

/// All N answers of a query within this (worst), seconds.
pub const TARGET_QUERY_S: f64 = 0.3;

/// A tag change listed everywhere within this (worst), seconds.
pub const TARGET_TAGS_S: f64 = 0.5;

type Figure = (&'static str, fn(&MsgReport) -> &[f64]);

const FIGURES: [Figure; 4] = [
    ("user event: every agent's handler ran", |r| &r.event),
    ("query: all N answers printed", |r| &r.query_last),
    ("query: the command returned", |r| &r.query_total),
    ("tags: every other agent lists it", |r| &r.tags),
];

/// `0.42x`, `inf` (shoal timed out, Serf did not) or `n/a`.
fn ratio(a: f64, b: f64) -> (f64, String) {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        (a / b, format!("{:.2}x", a / b))
    } else if a.is_infinite() && b.is_finite() {
        (f64::INFINITY, "inf".into())
    } else {
        (f64::NAN, "n/a".into())
    }
}

/// The section: the table, the answer counts, the targets, and any errors.
pub fn render_messaging(shoal: &MsgReport, serf: Option<&MsgReport>) -> String {
    let mut out = format!(
        "\n=== events, queries and tags (N = {}, {} runs each, lan profile; CLI of each) ===\n",
        shoal.n,
        shoal.event.len()
    );
    let mut t = Table::new(&[
        "figure (s)",
        "shoal median",
        "shoal worst",
        "Serf median",
        "Serf worst",
        "ratio median",
        "ratio worst",
    ]);
    for (label, f) in FIGURES {
        let a = f(shoal);
        let mut row = vec![label.to_string(), fmt_s(median(a)), fmt_s(fmax(a))];
        match serf {
            Some(b) => {
                let b = f(b);
                row.extend([fmt_s(median(b)), fmt_s(fmax(b))]);
                row.push(ratio(median(a), median(b)).1);
                row.push(ratio(fmax(a), fmax(b)).1);
            }
            None => row.extend(["-", "-", "-", "-"].map(String::from)),
        }
        t.row(row);
    }
    out.push_str(&t.render("  "));
    for r in std::iter::once(shoal).chain(serf) {
        let fewest = r.query_answers.iter().min().copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "  {} query answers per run: fewest {fewest} of {}",
            r.peer.name(),
            r.n
        );
    }
    out.push_str(&packets(shoal, serf));
    out.push_str(&targets(shoal, serf));
    for r in std::iter::once(shoal).chain(serf) {
        if !r.errors.is_empty() {
            let _ = writeln!(out, "  {} errors: {}", r.peer.name(), short_list(&r.errors));
        }
    }
    out
}

/// Wire packets per agent and run beyond idle traffic, both sides and the ratio.
fn packets(shoal: &MsgReport, serf: Option<&MsgReport>) -> String {
    let mut out = String::from(
        "  wire packets per agent and run, beyond idle traffic (iptables; see docs/benchmarks.md):\n",
    );
    let cell = |r: &MsgReport, i: usize| match &r.packets {
        Ok(p) => p[i].map_or("n/a".to_string(), |v| format!("{v:.1}")),
        Err(_) => "n/a".to_string(),
    };
    let value = |r: &MsgReport, i: usize| r.packets.as_ref().ok().and_then(|p| p[i]);
    let mut t = Table::new(&["scenario", "shoal", "Serf", "shoal/Serf"]);
    for (i, label) in ["user event", "query", "tag change"]
        .into_iter()
        .enumerate()
    {
        let theirs = serf.map_or("-".to_string(), |b| cell(b, i));
        let ratio = match (value(shoal, i), serf.and_then(|b| value(b, i))) {
            (Some(a), Some(b)) => ratio(a, b).1,
            _ => "n/a".to_string(),
        };
        t.row(vec![label.to_string(), cell(shoal, i), theirs, ratio]);
    }
    out.push_str(&t.render("    "));
    for r in std::iter::once(shoal).chain(serf) {
        if let Err(why) = &r.packets {
            let _ = writeln!(out, "    {}: not counted: {why}", r.peer.name());
        }
    }
    out
}

fn targets(shoal: &MsgReport, serf: Option<&MsgReport>) -> String {
    let mut out = String::from("  targets (issue 9):\n");
    let event = fmax(&shoal.event);
    let mut t = Table::new(&["target", "measured", ""]);
    t.row(vec![
        format!("event handled everywhere <= {TARGET_EVENT_S} s (worst)"),
        fmt_s(event),
        ok(event <= TARGET_EVENT_S).into(),
    ]);
    let (r, text) = serf.map_or((f64::NAN, "Serf not run".into()), |b| {
        ratio(event, fmax(&b.event))
    });
    let verdict = if r.is_nan() {
        "n/a"
    } else {
        ok(r <= TARGET_EVENT_RATIO)
    };
    t.row(vec![
        "event at least 2x faster than Serf (worst, shoal/Serf <= 0.5x)".into(),
        text,
        verdict.into(),
    ]);
    let query = fmax(&shoal.query_last);
    t.row(vec![
        format!("all N answers <= {TARGET_QUERY_S} s (worst)"),
        fmt_s(query),
        ok(query <= TARGET_QUERY_S).into(),
    ]);
    if let Some(b) = serf {
        t.row(vec![
            "  Serf's `serf query` waits its full timeout: returned after (median)".into(),
            fmt_s(median(&b.query_total)),
            "-".into(),
        ]);
    }
    let tags = fmax(&shoal.tags);
    t.row(vec![
        format!("tags listed everywhere <= {TARGET_TAGS_S} s (worst)"),
        fmt_s(tags),
        ok(tags <= TARGET_TAGS_S).into(),
    ]);
    out.push_str(&t.render("    "));
    out
}
