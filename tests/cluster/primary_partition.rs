//! The numbers behind docs/primary.md's honest part: a partition of a group (2 vs 1, 1 vs 1;
//! with and without `--group-quorum`, with `--primary-delay`), in network namespaces with the
//! lan profile, measured from the scripts' own time stamps: how long two primaries coexisted,
//! and how long there was none. A measurement, not a test of a target: it asserts nothing
//! about the timings and is ignored by default. Run it with
//! `cargo test -p shoal --test cluster primary_partition -- --ignored --nocapture`
//! (needs root; `SHOAL_PARTITION_SECS` sets the cut's length, default 10).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_testkit::poll;

use crate::netns::lab::{Host, Lab, NsAgent};
use crate::netns::{all_alive, check_views, wait_ready_all};
use crate::primary_netns::{group_agent_args, wait_primaries};

/// One case: the members on each side of the cut (name, priority), and the flags they share.
struct Case {
    name: &'static str,
    side_a: &'static [(&'static str, u32)],
    side_b: &'static [(&'static str, u32)],
    flags: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "2v1, primary on the 1 side, quorum 1",
        side_a: &[("a0", 100), ("a1", 50)],
        side_b: &[("b0", 150)],
        flags: &[],
    },
    Case {
        name: "2v1, primary on the 1 side, quorum 2",
        side_a: &[("a0", 100), ("a1", 50)],
        side_b: &[("b0", 150)],
        flags: &["--group-quorum", "2"],
    },
    Case {
        name: "2v1, primary on the 1 side, quorum 2, delay 3s",
        side_a: &[("a0", 100), ("a1", 50)],
        side_b: &[("b0", 150)],
        flags: &["--group-quorum", "2", "--primary-delay", "3s"],
    },
    Case {
        name: "2v1, primary on the 2 side, quorum 1",
        side_a: &[("a0", 150), ("a1", 100)],
        side_b: &[("b0", 50)],
        flags: &[],
    },
    Case {
        name: "2v1, primary on the 2 side, quorum 2",
        side_a: &[("a0", 150), ("a1", 100)],
        side_b: &[("b0", 50)],
        flags: &["--group-quorum", "2"],
    },
    Case {
        name: "1v1, quorum 1",
        side_a: &[("a0", 150)],
        side_b: &[("b0", 100)],
        flags: &[],
    },
    Case {
        name: "1v1, quorum 1, delay 3s",
        side_a: &[("a0", 150)],
        side_b: &[("b0", 100)],
        flags: &["--primary-delay", "3s"],
    },
    Case {
        name: "1v1, quorum 2",
        side_a: &[("a0", 150)],
        side_b: &[("b0", 100)],
        flags: &["--group-quorum", "2"],
    },
];

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Each node's primary intervals within `[from, to]`, from its scripts' lines.
fn primary_intervals(dir: &Path, names: &[&str], from: f64, to: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for name in names {
        let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let mut since: Option<f64> = None;
        for line in text.lines() {
            let mut words = line.split(' ');
            let (Some(state), Some(t)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(t) = t.parse::<f64>() else { continue };
            match (state, since) {
                ("primary", None) => since = Some(t),
                ("primary", Some(_)) => {}
                (_, Some(s)) => {
                    out.push((s, t));
                    since = None;
                }
                (_, None) => {}
            }
        }
        if let Some(s) = since {
            out.push((s, to));
        }
    }
    out.into_iter()
        .map(|(s, e)| (s.max(from), e.min(to)))
        .filter(|(s, e)| e > s)
        .collect()
}

/// Seconds within `[from, to]` with at least two primaries, and with none.
fn overlap_and_gap(intervals: &[(f64, f64)], from: f64, to: f64) -> (f64, f64) {
    let mut edges: Vec<(f64, i32)> = intervals
        .iter()
        .flat_map(|(s, e)| [(*s, 1), (*e, -1)])
        .collect();
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut count, mut at, mut two, mut none) = (0, from, 0.0, 0.0);
    for (t, delta) in edges {
        if count >= 2 {
            two += t - at;
        }
        if count == 0 {
            none += t - at;
        }
        count += delta;
        at = t;
    }
    if count == 0 {
        none += to - at;
    }
    (two, none)
}

fn run_case(case: &Case, subnet: u8, cut: Duration) -> Option<String> {
    let mut lab = Lab::new(case.name, subnet)?;
    lab.bridge("br-a");
    lab.bridge("br-b");
    lab.link_bridges("br-a", "xa", "br-b", "xb");
    let a: Vec<Host> = case
        .side_a
        .iter()
        .map(|(n, _)| lab.host("br-a", n))
        .collect();
    let b: Vec<Host> = case
        .side_b
        .iter()
        .map(|(n, _)| lab.host("br-b", n))
        .collect();
    let hosts: Vec<Host> = a.iter().chain(&b).cloned().collect();
    let dir = lab.dir().to_path_buf();
    let seeds = [&a[0], &b[0]];
    let priorities: Vec<u32> = case
        .side_a
        .iter()
        .chain(case.side_b)
        .map(|(_, p)| *p)
        .collect();
    let mut agents: Vec<NsAgent> = hosts
        .iter()
        .zip(&priorities)
        .map(|(h, p)| {
            let args = group_agent_args(&dir, &seeds, *p, case.flags);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            lab.spawn_agent(h, &args)
        })
        .collect();
    wait_ready_all(&mut agents);
    if let Err((why, _)) = poll(Duration::from_secs(15), Duration::from_millis(100), || {
        check_views(&agents, &hosts, all_alive(&hosts))
    }) {
        panic!("{}: no convergence: {why}", case.name);
    }
    let best = case
        .side_a
        .iter()
        .chain(case.side_b)
        .max_by_key(|(n, p)| (*p, std::cmp::Reverse(*n)))
        .map(|(n, _)| n.to_string())
        .unwrap_or_default();
    wait_primaries(
        &agents,
        Duration::from_secs(15),
        "agreed before the cut",
        |_, p| p.primary.as_deref() == Some(best.as_str()),
    );
    let cut_at = now();
    lab.set_link("xa", false);
    std::thread::sleep(cut);
    let healed_at = now();
    lab.set_link("xa", true);
    if let Err((why, _)) = poll(Duration::from_secs(20), Duration::from_millis(100), || {
        check_views(&agents, &hosts, all_alive(&hosts))
    }) {
        panic!("{}: no heal: {why}", case.name);
    }
    wait_primaries(
        &agents,
        Duration::from_secs(20),
        "agreed after the heal",
        |_, p| p.primary.as_deref() == Some(best.as_str()),
    );
    let end = now();
    let names: Vec<&str> = case
        .side_a
        .iter()
        .chain(case.side_b)
        .map(|(n, _)| *n)
        .collect();
    let during = primary_intervals(&dir, &names, cut_at, healed_at);
    let (two_cut, none_cut) = overlap_and_gap(&during, cut_at, healed_at);
    let after = primary_intervals(&dir, &names, healed_at, end);
    let (two_heal, none_heal) = overlap_and_gap(&after, healed_at, end);
    Some(format!(
        "{:<48} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        case.name, two_cut, none_cut, two_heal, none_heal
    ))
}

#[test]
#[ignore = "a measurement for docs/primary.md (about 3 minutes, needs root)"]
fn measure_how_long_two_primaries_coexist_in_a_partition() {
    let secs = std::env::var("SHOAL_PARTITION_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(10);
    let cut = Duration::from_secs(secs);
    let mut rows = Vec::new();
    for (k, case) in CASES.iter().enumerate() {
        eprintln!("partition: {} ...", case.name);
        match run_case(case, 20 + k as u8, cut) {
            Some(row) => rows.push(row),
            None => return,
        }
    }
    println!("\nprimary selection in a {secs} s partition (lan profile; seconds):");
    println!(
        "{:<48} {:>9} {:>9} {:>9} {:>9}",
        "case", "2+ (cut)", "0 (cut)", "2+ (heal)", "0 (heal)"
    );
    for row in rows {
        println!("{row}");
    }
}
