//! Accuracy as a property over many seeds: small clusters (4 to 9 nodes) under a random mix
//! of UDP loss up to 40 %, TCP loss up to 30 % and 2 s pauses (`kill -STOP`, then `-CONT`)
//! never run `member-failed` for a node that is running, and never make one renew its
//! identity. Each seed draws its own size, loss rates and pause times; 32 seeds by default
//! (`SHOAL_SIM_PROPERTY_SEEDS=N` for more), a few seconds in a debug build.

use std::time::Duration;

use rand::RngExt;

use super::Sim;
use crate::engine::rng;
use crate::membership::{Event, MemberEventKind};
use crate::profile::Profile;

fn property_seeds() -> u64 {
    std::env::var("SHOAL_SIM_PROPERTY_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

/// One seed's run; `Err` says what went wrong and how to replay it.
fn run(seed: u64) -> Result<(), String> {
    let mut dice = rng(Some(seed ^ 0x5eed_f00d));
    let n = dice.random_range(4..10);
    let udp = [0.1, 0.2, 0.3, 0.4][dice.random_range(0..4)];
    let tcp = [0.0, 0.1, 0.3][dice.random_range(0..3)];
    let mut sim = Sim::new(seed, n, Profile::Lan);
    sim.run_until(Duration::from_secs(5));
    let live = sim.live();
    let marks: Vec<usize> = live.iter().map(|a| sim.events(*a).len()).collect();
    let generations: Vec<u64> = live.iter().map(|a| sim.generation(*a)).collect();
    sim.set_loss(udp);
    sim.set_tcp_loss(tcp);
    // Two pauses of 2 s, of random members at random times in the 30 s window.
    let mut pauses: Vec<(u64, usize)> = (0..2)
        .map(|_| (dice.random_range(6..30), dice.random_range(0..n)))
        .collect();
    pauses.sort_unstable();
    for (at, who) in &pauses {
        sim.run_until(Duration::from_secs(*at));
        sim.pause(live[*who], Duration::from_secs(2));
    }
    sim.run_until(Duration::from_secs(35));
    sim.set_loss(0.0);
    sim.set_tcp_loss(0.0);
    sim.run_until(Duration::from_secs(45));
    let what = format!(
        "seed {seed}: {n} nodes, UDP loss {udp}, TCP loss {tcp}, pauses (s, node) {pauses:?}"
    );
    for ((at, mark), generation) in live.iter().zip(&marks).zip(&generations) {
        let falsely_failed: Vec<String> = sim
            .events(*at)
            .get(*mark..)
            .unwrap_or_default()
            .iter()
            .filter_map(|e| match e {
                Event::Member {
                    kind: MemberEventKind::Failed,
                    member,
                } => Some(member.name.clone()),
                _ => None,
            })
            .collect();
        if !falsely_failed.is_empty() {
            return Err(format!(
                "{what}: {at} ran member-failed for {falsely_failed:?}"
            ));
        }
        if sim.generation(*at) != *generation {
            return Err(format!("{what}: {at} renewed its identity"));
        }
    }
    let problems = sim.check_converged();
    if !problems.is_empty() {
        return Err(format!("{what}: not converged after: {problems:?}"));
    }
    Ok(())
}

#[test]
fn no_seed_fails_a_running_member_under_loss_and_pauses() {
    let failures: Vec<String> = (0..property_seeds()).filter_map(|s| run(s).err()).collect();
    assert!(
        failures.is_empty(),
        "{} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
