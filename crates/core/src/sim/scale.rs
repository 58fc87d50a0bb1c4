//! Simulation at scale: the table of convergence, traffic, kill detection and false failures
//! for clusters up to a thousand nodes (lan profile), and the CI-sized check.
//!
//! The table (docs/benchmarks.md, "Simulation at scale"):
//! `cargo test --release -p shoal-core sim_scale_table -- --ignored --nocapture`
//! (`SHOAL_SIM_SCALE=10,100,300,1000` picks the sizes, `SEED=N` the seed; one thread per size).

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

/// One row of the table.
#[derive(Debug)]
struct Row {
    n: usize,
    converged: Option<f64>,
    /// Bytes each node sent until convergence, on average.
    start_bytes: f64,
    /// Per node per second while idle.
    idle: (f64, f64),
    /// Kill detection times, sorted (infinite: not detected).
    kills: Vec<f64>,
    /// (false failures, renewals) under 10 % UDP loss, 20 % UDP+TCP loss, and 2 s pauses.
    udp10: (usize, u64),
    both20: (usize, u64),
    paused: (usize, u64),
    /// How many nodes were paused at once.
    pauses: usize,
    wall: Duration,
}

/// Virtual seconds of each fault window (then 10 s more without it).
const WINDOW: f64 = 20.0;
const KILLS: usize = 3;

fn row(seed: u64, n: usize) -> Row {
    let wall = Instant::now();
    let phase = |what: &str| {
        if std::env::var("SHOAL_SIM_PHASES").is_ok() {
            eprintln!("N={n}: {what} by {:.1} s", wall.elapsed().as_secs_f64());
        }
    };
    let mut sim = Sim::new(seed, n, Profile::Lan);
    let converged = converge(&mut sim, n, 60.0);
    phase("converged");
    let start_bytes = sim.sent_by_live().bytes() as f64 / n as f64;
    // Quiet for a while (the last joins' gossip dies down), then idle traffic over 10 s.
    let t = sim.elapsed().as_secs_f64() + 5.0;
    sim.run_until(Duration::from_secs_f64(t));
    let before = sim.sent_by_live();
    sim.run_until(Duration::from_secs_f64(t + 10.0));
    let after = sim.sent_by_live();
    let per = |f: fn(&Traffic) -> u64| (f(&after) - f(&before)) as f64 / n as f64 / 10.0;
    let idle = (per(Traffic::bytes), per(|t| t.datagrams + t.push_pulls));
    phase("idle measured");
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
    phase("kills detected");
    let udp10 = false_failures(
        &mut sim,
        WINDOW,
        10.0,
        |s| s.set_loss(0.1),
        |s| s.set_loss(0.0),
    );
    let both20 = false_failures(
        &mut sim,
        WINDOW,
        10.0,
        |s| {
            s.set_loss(0.2);
            s.set_tcp_loss(0.2);
        },
        |s| {
            s.set_loss(0.0);
            s.set_tcp_loss(0.0);
        },
    );
    phase("loss windows done");
    let pauses = (n / 100).max(1);
    let paused = false_failures(
        &mut sim,
        2.0,
        15.0,
        |s| {
            let live = s.live();
            for i in 0..pauses {
                s.pause(live[(i * 37 + 1) % live.len()], Duration::from_secs(2));
            }
        },
        |_| {},
    );
    Row {
        n,
        converged,
        start_bytes,
        idle,
        kills,
        udp10,
        both20,
        paused,
        pauses,
        wall: wall.elapsed(),
    }
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
    let mut rows: Vec<Row> = std::thread::scope(|scope| {
        let handles: Vec<_> = sizes()
            .into_iter()
            .map(|n| scope.spawn(move || row(seed, n)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a row panicked"))
            .collect()
    });
    rows.sort_by_key(|r| r.n);
    let probe = Profile::Lan.timings().probe_period.as_secs_f64();
    println!(
        "lan profile, seed {seed}; fault windows {WINDOW} s (+10 s); {KILLS} kills; one thread per row"
    );
    println!(
        "| N | converge s | probe periods | log2 N | start KB/node | idle B/node/s | idle pkts/node/s | kill detected: median / worst s | false failed (renewals): 10% UDP | 20% UDP+TCP | 2 s pause | wall s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let c = r.converged;
        println!(
            "| {} | {} | {} | {:.1} | {:.0} | {:.0} | {:.1} | {:.2} / {:.2} | {} ({}) | {} ({}) | {} ({}) of {} paused | {:.1} |",
            r.n,
            secs(c),
            c.map_or_else(|| "-".into(), |s| format!("{:.1}", s / probe)),
            (r.n as f64).log2(),
            r.start_bytes / 1024.0,
            r.idle.0,
            r.idle.1,
            r.kills[r.kills.len() / 2],
            r.kills[r.kills.len() - 1],
            r.udp10.0,
            r.udp10.1,
            r.both20.0,
            r.both20.1,
            r.paused.0,
            r.paused.1,
            r.pauses,
            r.wall.as_secs_f64(),
        );
    }
    println!("total wall {:.1} s", wall.elapsed().as_secs_f64());
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
