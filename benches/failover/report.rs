//! The report: per keeper and scenario the median and worst of the failover and of the return,
//! the failed requests, then shoal beside Keepalived with the ratio and the targets.

use std::fmt::Write as _;
use std::time::Duration;

use shoal_testkit::floating::Keeper;

use crate::scenario::{KeeperResult, Run, Scenario};

/// Median and worst of a list of durations.
fn stats(mut v: Vec<Duration>) -> Option<(Duration, Duration)> {
    v.sort();
    let worst = *v.last()?;
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    };
    Some((median, worst))
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn failover_stats(runs: &[Run]) -> Option<(Duration, Duration)> {
    stats(runs.iter().map(|r| r.failover.after).collect())
}

/// The whole report.
pub fn render(results: &[KeeperResult], scenarios: &[Scenario]) -> String {
    let mut out = String::new();
    for r in results {
        let _ = writeln!(out, "\n--- {} ---", r.keeper.label());
        let _ = writeln!(
            out,
            "{:<8} {:>11} {:>11} {:>14} | {:>11} {:>11} {:>14}",
            "scenario",
            "lb2 median",
            "lb2 worst",
            "failed reqs",
            "lb1 median",
            "lb1 worst",
            "failed reqs"
        );
        for (scenario, runs) in &r.runs {
            let (Some((m, w)), Some((bm, bw))) = (
                failover_stats(runs),
                stats(runs.iter().map(|r| r.back.after).collect()),
            ) else {
                continue;
            };
            let failed = |f: fn(&Run) -> usize| {
                let v: Vec<usize> = runs.iter().map(f).collect();
                format!(
                    "{}..{}",
                    v.iter().min().copied().unwrap_or(0),
                    v.iter().max().copied().unwrap_or(0)
                )
            };
            let _ = writeln!(
                out,
                "{:<8} {:>11} {:>11} {:>14} | {:>11} {:>11} {:>14}",
                scenario.name(),
                secs(m),
                secs(w),
                failed(|r| r.failover.failed),
                secs(bm),
                secs(bw),
                failed(|r| r.back.failed),
            );
        }
    }
    let _ = writeln!(
        out,
        "\n(lb2 = from the failure until lb2 answers; lb1 = from lb1's restart until it answers again;\n failed reqs = min..max per run of requests refused or unanswered within 200 ms)"
    );
    for s in scenarios {
        let _ = writeln!(out, "  {:<8} {}", s.name(), s.describe());
    }
    out.push_str(&render_comparison(results, scenarios));
    out
}

fn of(results: &[KeeperResult], keeper: Keeper, s: Scenario) -> Option<(Duration, Duration)> {
    let r = results.iter().find(|r| r.keeper == keeper)?;
    let (_, runs) = r.runs.iter().find(|(x, _)| *x == s)?;
    failover_stats(runs)
}

/// shoal beside Keepalived: the failover medians and worsts, the ratio and the targets.
fn render_comparison(results: &[KeeperResult], scenarios: &[Scenario]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n=== shoal vs Keepalived: failover until lb2 answers (median / worst) ==="
    );
    let _ = writeln!(
        out,
        "{:<8} {:>22} {:>22} {:>13}  target",
        "scenario", "shoal", "Keepalived", "ratio median"
    );
    for &s in scenarios {
        let shoal = of(results, Keeper::Shoal, s);
        let ka = of(results, Keeper::Keepalived, s);
        let cell = |x: Option<(Duration, Duration)>| {
            x.map_or("not measured".to_string(), |(m, w)| {
                format!("{} / {}", secs(m), secs(w))
            })
        };
        let ratio = match (shoal, ka) {
            (Some((a, _)), Some((b, _))) if !b.is_zero() => {
                format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64())
            }
            _ => "-".into(),
        };
        let target = match (s, shoal, ka) {
            (Scenario::Stop, Some((m, w)), _) => {
                let limit = Duration::from_millis(500);
                format!(
                    "<= 0.5 s: {} (median), {} (worst)",
                    verdict(m <= limit),
                    verdict(w <= limit)
                )
            }
            (Scenario::Kill, Some((m, w)), Some((km, kw))) => format!(
                "<= Keepalived's: {} (median), {} (worst)",
                verdict(m <= km),
                verdict(w <= kw)
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<8} {:>22} {:>22} {:>13}  {target}",
            s.name(),
            cell(shoal),
            cell(ka),
            ratio
        );
    }
    out
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// `/proc/loadavg`'s first three fields.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Today's date and time, UTC (`date -u`'s answer, or the seconds since the epoch).
pub fn utc_date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            format!("{secs} s after the epoch")
        })
}
