//! Forged packets from a process outside the cluster change nothing anywhere (issue 10):
//! a converged simulated cluster receives a stranger's forged leave notices, SWIM updates
//! (down, a takeover generation, a spoofed header) and push-pull states about a healthy
//! member, and every node still lists every member alive, with no member event.

use std::time::Duration;

use foca::{Member, Message, State};
use shoal_core::anti_entropy::SyncState;
use shoal_core::broadcast::Broadcast;
use shoal_core::profile::Profile;
use shoal_core::sim::Sim;
use shoal_core::{Identity, Status};
use shoal_fuzzing::seeds::{broadcast, direct_item, leave_notice, swim};
use shoal_fuzzing::stranger;

const N: usize = 3;

fn converged() -> Sim {
    let mut sim = Sim::new(11, N, Profile::Local);
    sim.run_until(Duration::from_secs(3));
    assert_whole(&sim, "before the forgeries");
    sim
}

fn assert_whole(sim: &Sim, when: &str) {
    for i in 0..N {
        let view = sim.view(Sim::addr(i)).expect("running");
        let alive = view
            .members
            .iter()
            .filter(|m| m.status == Status::Alive)
            .count();
        assert_eq!(
            (alive, view.members.len()),
            (N, N),
            "{when}: n{i} lists {:?}",
            view.members
                .iter()
                .map(|m| (&m.name, m.status))
                .collect::<Vec<_>>()
        );
    }
}

fn events_of_all(sim: &Sim) -> Vec<usize> {
    (0..N).map(|i| sim.events(Sim::addr(i)).len()).collect()
}

fn identity(sim: &Sim, i: usize) -> Identity {
    Identity {
        addr: Sim::addr(i),
        generation: sim.generation(Sim::addr(i)),
    }
}

#[test]
fn a_strangers_forged_leave_alive_and_failure_about_a_healthy_member_change_nothing() {
    let mut sim = converged();
    let before = events_of_all(&sim);
    let victim = identity(&sim, 1);
    let evil = Identity::new(stranger());
    let takeover = Identity {
        addr: victim.addr,
        generation: u64::MAX,
    };
    let downs: Vec<Member<Identity>> = [0, 1, 2, 100, u16::MAX]
        .map(|inc| Member::new(victim, inc, State::Down))
        .to_vec();
    for round in 0..20u64 {
        for i in [0, 2] {
            let to = Identity {
                addr: Sim::addr(i),
                generation: sim.generation(Sim::addr(i)),
            };
            let packets = [
                leave_notice(victim),
                leave_notice(takeover),
                swim(evil, to, Message::Ping(round as u8), &downs),
                swim(evil, to, Message::Gossip, &[Member::alive(takeover)]),
                // The header claims the victim itself: only its own address may.
                swim(victim, to, Message::Gossip, &downs),
                swim(identity(&sim, 2 - i), to, Message::Gossip, &downs),
            ];
            for packet in packets {
                sim.inject(stranger(), to.addr, packet);
            }
            let state = SyncState {
                from: Some(evil),
                members: downs.clone(),
                intents: vec![(victim, false)],
                ..SyncState::default()
            };
            sim.inject_state(stranger(), to.addr, state);
            let claims_victim = SyncState {
                from: Some(victim),
                members: vec![Member::new(victim, 0, State::Down)],
                intents: vec![(victim, false)],
                ..SyncState::default()
            };
            sim.inject_state(stranger(), to.addr, claims_victim);
        }
        let t = sim.elapsed() + Duration::from_millis(50);
        sim.run_until(t);
        assert_whole(&sim, &format!("round {round}"));
    }
    let t = sim.elapsed() + Duration::from_secs(3);
    sim.run_until(t);
    assert_whole(&sim, "3 s after the forgeries");
    assert_eq!(events_of_all(&sim), before, "member events ran");
    assert_eq!(
        sim.generation(victim.addr),
        victim.generation,
        "the victim renewed its identity"
    );
}

#[test]
fn a_member_that_relays_a_down_about_a_live_member_only_makes_it_refute() {
    // A down gossiped by a member (n0, say fooled or faulty) about n1, whom n2 sees alive:
    // n2 takes it as a suspicion, n1 refutes, and nobody lists it failed.
    let mut sim = converged();
    let before = events_of_all(&sim);
    let (relay, victim) = (identity(&sim, 0), identity(&sim, 1));
    let to = identity(&sim, 2);
    let down = [Member::new(victim, 0, State::Down)];
    sim.inject(relay.addr, to.addr, swim(relay, to, Message::Gossip, &down));
    let t = sim.elapsed() + Duration::from_secs(3);
    sim.run_until(t);
    assert_whole(&sim, "3 s after the relayed down");
    assert_eq!(events_of_all(&sim), before, "member events ran");
}

#[test]
fn a_member_that_relays_a_leave_intent_about_a_live_member_changes_nothing() {
    // In plaintext only the member itself may say that it leaves: n0 relaying an intent or
    // a force-leave about n1 (gossiped, sent directly, or in its push-pull) changes nothing.
    let mut sim = converged();
    let before = events_of_all(&sim);
    let (relay, victim) = (identity(&sim, 0), identity(&sim, 1));
    let to = identity(&sim, 2);
    let items = [Broadcast::Leave(victim), Broadcast::ForceLeave(victim)];
    sim.inject(relay.addr, to.addr, broadcast(relay, to, &items));
    sim.inject(relay.addr, to.addr, direct_item(&Broadcast::Leave(victim)));
    let state = SyncState {
        from: Some(relay),
        members: vec![Member::alive(relay)],
        intents: vec![(victim, false), (victim, true)],
        ..SyncState::default()
    };
    sim.inject_state(relay.addr, to.addr, state);
    let t = sim.elapsed() + Duration::from_secs(3);
    sim.run_until(t);
    assert_whole(&sim, "3 s after the relayed leave intents");
    assert_eq!(events_of_all(&sim), before, "member events ran");
}

#[test]
fn a_flood_of_mutated_packets_with_spoofed_member_sources_leaves_the_cluster_whole() {
    // The harder case of the flood: copies of the cluster's kinds of packets, mutated, sent
    // with the source address of a real member (a raw-socket forger on the same network).
    let mut sim = converged();
    let ids: Vec<Identity> = (0..N).map(|i| identity(&sim, i)).collect();
    let mut templates = Vec::new();
    for (i, src) in ids.iter().enumerate() {
        let dst = ids[(i + 1) % N];
        let all: Vec<Member<Identity>> = ids.iter().map(|id| Member::alive(*id)).collect();
        let downs: Vec<Member<Identity>> = ids
            .iter()
            .map(|id| Member::new(*id, 0, State::Down))
            .collect();
        templates.push((src.addr, dst.addr, swim(*src, dst, Message::Ping(3), &all)));
        templates.push((src.addr, dst.addr, swim(*src, dst, Message::Gossip, &downs)));
        templates.push((src.addr, dst.addr, swim(*src, dst, Message::Ack(3), &[])));
        templates.push((src.addr, dst.addr, leave_notice(*src)));
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..2000 {
        for _ in 0..N {
            let (from, to, template) = &templates[(next() as usize) % templates.len()];
            let mut p = template.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % p.len();
                p[at] = next() as u8;
            }
            sim.inject(*from, *to, p);
        }
        if round % 100 == 99 {
            let t = sim.elapsed() + Duration::from_millis(50);
            sim.run_until(t);
        }
    }
    let t = sim.elapsed() + Duration::from_secs(5);
    sim.run_until(t);
    assert_whole(&sim, "5 s after the flood");
}
