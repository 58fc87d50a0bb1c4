//! Simulation at scale: the table of convergence, traffic, kill detection and false failures
//! for clusters up to a thousand nodes (lan profile), and the CI-sized check.
//!
//! The table (docs/benchmarks.md, "Simulation at scale"):
//! `cargo test --release -p shoal-core sim_scale_table -- --ignored --nocapture`
//! (`SHOAL_SIM_SCALE=10,100,300,1000` picks the sizes, `SEED=N` the seed, `SHOAL_SIM_PHASES=1`
//! prints each phase's wall and CPU time). Each row runs in two halves on two threads, both
//! from the same seed and so the same start: one measures convergence, idle traffic, kills,
//! then false failures under pauses; the other false failures under loss on the freshly
//! converged cluster. (The pauses ran in the second half until the 20% loss window, the
//! dearest phase, made it the slower half by a quarter.)

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Sim, Traffic};
use crate::membership::{Event, MemberEventKind, Status};
use crate::profile::Profile;

/// How often (virtual time) the measurements look at the cluster.
const STEP: f64 = 0.05;

/// A cluster of `n` started at once: virtual seconds until every node lists every node alive
/// (`None`: not within `limit` seconds).
fn converge(sim: &mut Sim, n: usize, limit: f64) -> Option<f64> {
    let mut t = sim.elapsed().as_secs_f64();
    let start = t;
    while t < start + limit {
        t += STEP;
        sim.run_until(Duration::from_secs_f64(t));
        if sim.live().iter().all(|a| sim.count(*a, Status::Alive) == n) {
            return Some(t - start);
        }
    }
    None
}

/// Kills `victim` (kill -9) and returns the virtual seconds until every survivor lists it
/// failed (`None`: not within `limit`).
fn detect(sim: &mut Sim, victim: SocketAddr, limit: f64) -> Option<f64> {
    sim.crash(victim);
    let mut t = sim.elapsed().as_secs_f64();
    let start = t;
    while t < start + limit {
        t += STEP;
        sim.run_until(Duration::from_secs_f64(t));
        let live = sim.live();
        if live
            .iter()
            .all(|a| sim.status(*a, victim) == Some(Status::Failed))
        {
            return Some(t - start);
        }
    }
    None
}

/// `member-failed` events naming a live node, and identity renewals of live nodes, while
/// `fault` is applied for `secs` seconds (then undone by `heal`, and `settle` seconds more).
fn false_failures(
    sim: &mut Sim,
    secs: f64,
    settle: f64,
    fault: impl FnOnce(&mut Sim),
    heal: impl FnOnce(&mut Sim),
) -> (usize, u64) {
    let live = sim.live();
    let marks: Vec<usize> = live.iter().map(|a| sim.events(*a).len()).collect();
    let generations: Vec<u64> = live.iter().map(|a| sim.generation(*a)).collect();
    let t = sim.elapsed().as_secs_f64();
    fault(sim);
    sim.run_until(Duration::from_secs_f64(t + secs));
    heal(sim);
    sim.run_until(Duration::from_secs_f64(t + secs + settle));
    let alive: BTreeSet<SocketAddr> = sim.live().into_iter().collect();
    let failed = live
        .iter()
        .zip(&marks)
        .map(|(at, mark)| {
            sim.events(*at)
                .get(*mark..)
                .unwrap_or_default()
                .iter()
                .filter(|e| match e {
                    Event::Member { kind, member } => {
                        *kind == MemberEventKind::Failed && alive.contains(&member.addr)
                    }
                    Event::User(_) | Event::Query(_) => false,
                })
                .count()
        })
        .sum();
    let renewals = live
        .iter()
        .zip(&generations)
        .map(|(a, g)| sim.generation(*a).saturating_sub(*g))
        .sum();
    (failed, renewals)
}

/// One row of the table: the two halves, each run on its own thread from the same seed (so
/// both start from the same converged cluster).
#[derive(Debug)]
struct Row {
    n: usize,
    start: Start,
    faults: Faults,
}

/// The first half: start, idle traffic, kills, then pauses.
#[derive(Debug)]
struct Start {
    converged: Option<f64>,
    /// Bytes each node sent until convergence, on average.
    start_bytes: f64,
    /// Per node per second while idle.
    idle: (f64, f64),
    /// Kill detection times, sorted (infinite: not detected).
    kills: Vec<f64>,
    /// False failures (and renewals) around 2 s pauses, after the kills.
    paused: (usize, u64),
    /// How many nodes were paused at once.
    pauses: usize,
    cost: Cost,
}

/// The second half: false failures (and renewals) under 10 % UDP loss, then 20 % UDP+TCP
/// loss, each on the converged cluster in turn.
#[derive(Debug)]
struct Faults {
    udp10: (usize, u64),
    both20: (usize, u64),
    cost: Cost,
}

/// What a half cost: wall time, and the CPU time of its thread (which the wall time exceeds
/// when the machine is shared).
#[derive(Debug, Clone, Copy)]
struct Cost {
    wall: Duration,
    cpu: f64,
}

/// CPU seconds of the calling thread so far (`/proc/thread-self/stat`, utime + stime in the
/// kernel's fixed 100 Hz USER_HZ ticks); 0 where that cannot be read.
fn thread_cpu() -> f64 {
    let Ok(text) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return 0.0;
    };
    let Some(rest) = text.rfind(')').map(|i| &text[i + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

/// Virtual seconds of each loss window, then of quiet after it.
const WINDOW: f64 = 10.0;
const AFTER: f64 = 5.0;
const KILLS: usize = 3;

/// Prints a phase's wall and CPU time when `SHOAL_SIM_PHASES` is set, with the datagrams
/// and bytes sent and delivered so far: a fingerprint of the run (a change that only makes
/// the simulator faster leaves it as it was).
fn phase(sim: &Sim, half: &str, what: &str, wall: Instant, cpu0: f64) {
    if std::env::var("SHOAL_SIM_PHASES").is_ok() {
        let pp = sim.sent_by_live();
        eprintln!(
            "N={} {half}: {what} by {:.1} s wall, {:.1} s CPU (sent {} datagrams, {} B, \
             delivered {}; live nodes' push-pulls {}, {} B)",
            sim.names.len(),
            wall.elapsed().as_secs_f64(),
            thread_cpu() - cpu0,
            sim.sent.0,
            sim.sent.1,
            sim.delivered,
            pp.push_pulls,
            pp.push_pull_bytes,
        );
    }
}

fn start_half(seed: u64, n: usize) -> Start {
    let (wall, cpu0) = (Instant::now(), thread_cpu());
    let mut sim = Sim::new(seed, n, Profile::Lan);
    let converged = converge(&mut sim, n, 60.0);
    phase(&sim, "start", "converged", wall, cpu0);
    let start_bytes = sim.sent_by_live().bytes() as f64 / n as f64;
    // Quiet for a while (the last joins' gossip dies down), then idle traffic over 10 s.
    let t = sim.elapsed().as_secs_f64() + 5.0;
    sim.run_until(Duration::from_secs_f64(t));
    let before = sim.sent_by_live();
    sim.run_until(Duration::from_secs_f64(t + 10.0));
    let after = sim.sent_by_live();
    let per = |f: fn(&Traffic) -> u64| (f(&after) - f(&before)) as f64 / n as f64 / 10.0;
    let idle = (per(Traffic::bytes), per(|t| t.datagrams + t.push_pulls));
    phase(&sim, "start", "idle measured", wall, cpu0);
    let live = sim.live();
    let mut kills: Vec<f64> = (0..KILLS)
        .map(|k| {
            let victim = live[(k * 7919 + 3) % n];
            let took = detect(&mut sim, victim, 60.0).unwrap_or(f64::INFINITY);
            let t = sim.elapsed().as_secs_f64() + 2.0;
            sim.run_until(Duration::from_secs_f64(t));
            took
        })
        .collect();
    kills.sort_by(f64::total_cmp);
    phase(&sim, "start", "kills detected", wall, cpu0);
    let (paused, pauses) = pauses(&mut sim, n);
    phase(&sim, "start", "pauses done", wall, cpu0);
    Start {
        converged,
        start_bytes,
        idle,
        kills,
        paused,
        pauses,
        cost: Cost {
            wall: wall.elapsed(),
            cpu: thread_cpu() - cpu0,
        },
    }
}

/// Pauses 1% of the nodes of a row of `n` (at least one) for 2 s at once, then waits long
/// enough for a confirmed suspicion of them to time out (foca's suspicion time grows with
/// log N, 9 s at N = 1,000; a suspicion confirmed by three others ends at half of it, 4.5 s):
/// the false failures (and renewals), and how many were paused.
fn pauses(sim: &mut Sim, n: usize) -> ((usize, u64), usize) {
    let pauses = (n / 100).max(1);
    let paused = false_failures(
        sim,
        2.0,
        10.0,
        |s| {
            let live = s.live();
            for i in 0..pauses {
                s.pause(live[(i * 37 + 1) % live.len()], Duration::from_secs(2));
            }
        },
        |_| {},
    );
    (paused, pauses)
}

fn faults_half(seed: u64, n: usize) -> Faults {
    let (wall, cpu0) = (Instant::now(), thread_cpu());
    let mut sim = Sim::new(seed, n, Profile::Lan);
    // The same start as the other half (same seed), and the same 5 s of quiet after it.
    let _ = converge(&mut sim, n, 60.0);
    let t = sim.elapsed().as_secs_f64() + 5.0;
    sim.run_until(Duration::from_secs_f64(t));
    phase(&sim, "faults", "converged", wall, cpu0);
    let udp10 = false_failures(
        &mut sim,
        WINDOW,
        AFTER,
        |s| s.set_loss(0.1),
        |s| s.set_loss(0.0),
    );
    phase(&sim, "faults", "10% UDP loss done", wall, cpu0);
    let both20 = false_failures(
        &mut sim,
        WINDOW,
        AFTER,
        |s| {
            s.set_loss(0.2);
            s.set_tcp_loss(0.2);
        },
        |s| {
            s.set_loss(0.0);
            s.set_tcp_loss(0.0);
        },
    );
    phase(&sim, "faults", "20% UDP+TCP loss done", wall, cpu0);
    Faults {
        udp10,
        both20,
        cost: Cost {
            wall: wall.elapsed(),
            cpu: thread_cpu() - cpu0,
        },
    }
}

/// Threads the halves run on: the table is measured on two cores, and more threads would only
/// share them (a row's wall time would count the other rows' work: the N = 1,000 row took 6 s
/// longer beside the smaller rows than alone).
const WORKERS: usize = 2;

/// Every row of `sizes`, its two halves taken in turn by [`WORKERS`] threads, the largest row
/// first (both its halves at once, then the next row's).
fn run_rows(seed: u64, sizes: Vec<usize>) -> Vec<Row> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(sizes[*i]));
    let jobs: std::collections::VecDeque<(usize, bool)> = order
        .iter()
        .flat_map(|i| [(*i, true), (*i, false)])
        .collect();
    let jobs = std::sync::Mutex::new(jobs);
    let starts = std::sync::Mutex::new((0..sizes.len()).map(|_| None).collect::<Vec<_>>());
    let faults = std::sync::Mutex::new((0..sizes.len()).map(|_| None).collect::<Vec<_>>());
    let next = || {
        jobs.lock()
            .expect("no worker panics holding it")
            .pop_front()
    };
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| {
                while let Some((i, first)) = next() {
                    if first {
                        let half = start_half(seed, sizes[i]);
                        starts.lock().expect("no worker panics holding it")[i] = Some(half);
                    } else {
                        let half = faults_half(seed, sizes[i]);
                        faults.lock().expect("no worker panics holding it")[i] = Some(half);
                    }
                }
            });
        }
    });
    let starts = starts.into_inner().expect("the workers are done");
    let faults = faults.into_inner().expect("the workers are done");
    (sizes.into_iter().zip(starts).zip(faults))
        .map(|((n, start), faults)| Row {
            n,
            start: start.expect("every start half ran"),
            faults: faults.expect("every faults half ran"),
        })
        .collect()
}

fn sizes() -> Vec<usize> {
    std::env::var("SHOAL_SIM_SCALE")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100, 300, 1000])
}

fn secs(x: Option<f64>) -> String {
    x.map_or_else(|| "never".to_string(), |s| format!("{s:.2}"))
}

#[test]
#[ignore]
fn sim_scale_table() {
    let seed: u64 = std::env::var("SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let wall = Instant::now();
    let mut rows = run_rows(seed, sizes());
    rows.sort_by_key(|r| r.n);
    let probe = Profile::Lan.timings().probe_period.as_secs_f64();
    println!(
        "lan profile, seed {seed}; loss windows {WINDOW} s (+{AFTER} s), 2 s pauses (+10 s); \
         {KILLS} kills; each row's two halves on two threads, largest row first"
    );
    println!(
        "| N | converge s | probe periods | log2 N | start KB/node | idle B/node/s | idle pkts/node/s | kill detected: median / worst s | false failed (renewals): 10% UDP | 20% UDP+TCP | 2 s pause | wall s | CPU s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut cpu = 0.0;
    for Row { n, start, faults } in &rows {
        let c = start.converged;
        let kills = &start.kills;
        let wall = start.cost.wall.max(faults.cost.wall).as_secs_f64();
        let row_cpu = start.cost.cpu + faults.cost.cpu;
        cpu += row_cpu;
        println!(
            "| {n} | {} | {} | {:.1} | {:.0} | {:.0} | {:.1} | {:.2} / {:.2} | {} ({}) | {} ({}) | {} ({}) of {} paused | {wall:.1} | {row_cpu:.1} |",
            secs(c),
            c.map_or_else(|| "-".into(), |s| format!("{:.1}", s / probe)),
            (*n as f64).log2(),
            start.start_bytes / 1024.0,
            start.idle.0,
            start.idle.1,
            kills[kills.len() / 2],
            kills[kills.len() - 1],
            faults.udp10.0,
            faults.udp10.1,
            faults.both20.0,
            faults.both20.1,
            start.paused.0,
            start.paused.1,
            start.pauses,
        );
    }
    println!(
        "total: {:.1} s wall, {cpu:.1} s CPU",
        wall.elapsed().as_secs_f64()
    );
}

/// A start of `n` nodes converges within `limit` s and a kill -9 is seen by every survivor
/// within `limit` s.
fn converges_and_sees_a_kill(n: usize, limit: f64) {
    let mut sim = Sim::new(5, n, Profile::Lan);
    let took = converge(&mut sim, n, limit);
    assert!(took.is_some(), "{n} nodes did not converge in {limit} s");
    let victim = Sim::addr(n / 3);
    let detected = detect(&mut sim, victim, limit);
    assert!(
        detected.is_some(),
        "the kill was not seen everywhere in {limit} s"
    );
}

/// CI-sized: 50 nodes (about a second in a debug build).
#[test]
fn fifty_nodes_converge_and_see_a_kill() {
    converges_and_sees_a_kill(50, 10.0);
}

/// 250 nodes: a few seconds in release, too slow for a debug build (which also recounts the
/// digest on every read), so it runs only in release (`cargo test --release -p shoal-core`).
#[test]
#[cfg_attr(debug_assertions, ignore)]
fn two_hundred_fifty_nodes_converge_and_see_a_kill() {
    converges_and_sees_a_kill(250, 10.0);
}
