//! Who may say that a member leaves ([`crate::engine::leave`], issue 10), and how a leaving
//! node makes sure every member heard it from the node itself.

use std::sync::atomic::Ordering;

use super::*;
use crate::broadcast::Broadcast;
use crate::engine::leave;
use crate::seal::{Key, Keyring};

/// Members `m<port>` at each of `ports`, known through a push-pull (so trusted senders).
fn with_members(engine: &mut Engine, t0: Instant, ports: &[u16]) {
    for port in ports {
        apply_state(engine, t0, state_of(id(*port, 1), &format!("m{port}")));
    }
    engine.take_outbox();
}

/// A foca broadcast-only message from `src` to `dst` carrying `items`, as gossip relays them.
fn gossip(src: Identity, dst: Identity, items: &[Broadcast]) -> Vec<u8> {
    let mut body = Vec::new();
    let header = foca::Header {
        src,
        src_incarnation: 0,
        dst,
        message: foca::Message::Broadcast,
    };
    foca::Codec::encode_header(&mut foca::PostcardCodec, &header, &mut body).expect("encode");
    for item in items {
        let data = item.encode().expect("encode");
        body.extend_from_slice(&(data.len() as u16).to_be_bytes());
        body.extend_from_slice(&data);
    }
    envelope::seal(Kind::Swim, &body)
}

/// A foca gossip message from `src` to `dst` carrying member `updates`.
pub(super) fn updates(src: Identity, dst: Identity, updates: &[foca::Member<Identity>]) -> Vec<u8> {
    let mut body = Vec::new();
    let header = foca::Header {
        src,
        src_incarnation: 0,
        dst,
        message: foca::Message::Gossip,
    };
    let mut codec = foca::PostcardCodec;
    foca::Codec::encode_header(&mut codec, &header, &mut body).expect("encode");
    body.extend_from_slice(&(updates.len() as u16).to_be_bytes());
    for member in updates {
        foca::Codec::encode_member(&mut codec, member, &mut body).expect("encode");
    }
    envelope::seal(Kind::Swim, &body)
}

fn direct(item: &Broadcast) -> Vec<u8> {
    envelope::seal(Kind::Item, &item.encode().expect("encode"))
}

fn dropped(engine: &Engine) -> u64 {
    engine.stats.packets_dropped.load(Ordering::Relaxed)
}

fn sealed(name: &str, port: u16) -> NodeConfig {
    let mut config = config(name, port);
    let key = Key::from_bytes(vec![7; 32]).expect("key");
    config.keyring = Some(Keyring::new(key));
    config
}

/// The intents the table holds.
fn intents(engine: &Engine) -> Vec<(Identity, bool)> {
    lock(&engine.shared).table.intents()
}

#[test]
fn in_plaintext_a_leave_intent_about_a_member_counts_only_from_the_member_itself() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    with_members(&mut engine, t0, &[2, 3]);
    let (me, victim, relay) = (engine.identity(), id(2, 1), id(3, 1));
    // A member (trusted: it joined, it has a meta) relays an intent about a healthy one:
    // gossiped, in a push-pull, and sent directly.
    let relayed = gossip(
        relay,
        me,
        &[Broadcast::Leave(victim), Broadcast::ForceLeave(victim)],
    );
    engine.handle_datagram(t0, relay.addr, &relayed);
    let mut state = state_of(relay, "m3");
    state.intents = vec![(victim, false), (victim, true)];
    apply_state(&mut engine, t0, state);
    let before = dropped(&engine);
    engine.handle_datagram(t0, relay.addr, &direct(&Broadcast::Leave(victim)));
    assert_eq!(dropped(&engine), before + 1, "a relayed direct intent");
    assert_eq!(status_of(&engine, 2), Some(Status::Alive));
    assert_eq!(intents(&engine), [], "nothing about the victim is kept");
    assert!(
        !kinds_to(&engine.take_outbox(), relay.addr).contains(&Kind::LeaveAck),
        "a relay is not acknowledged"
    );
    // The member's own intent, gossiped by itself, counts.
    engine.handle_datagram(
        t0,
        victim.addr,
        &gossip(victim, me, &[Broadcast::Leave(victim)]),
    );
    assert_eq!(status_of(&engine, 2), Some(Status::Leaving));
    assert_eq!(intents(&engine), [(victim, false)]);
}

#[test]
fn in_plaintext_a_push_pull_relays_no_intent_but_a_force_leave_of_a_member_down_here() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    with_members(&mut engine, t0, &[2, 3]);
    // Neither answers a probe: both are declared failed.
    run_until(&mut engine, t0 + Duration::from_secs(30));
    assert_eq!(status_of(&engine, 2), Some(Status::Failed));
    let (gone, relay) = (id(2, 1), id(3, 1));
    let t = t0 + Duration::from_secs(30);
    let mut state = state_of(relay, "m3");
    state.intents = vec![(gone, false)];
    apply_state(&mut engine, t, state.clone());
    assert_eq!(
        status_of(&engine, 2),
        Some(Status::Failed),
        "not its own intent"
    );
    state.intents = vec![(gone, true)];
    apply_state(&mut engine, t, state);
    assert_eq!(
        status_of(&engine, 2),
        Some(Status::Left),
        "an operator's force-leave of a failed member"
    );
}

#[test]
fn in_a_sealed_cluster_a_key_holder_may_relay_a_leave_intent() {
    let t0 = Instant::now();
    let mut engine = started(sealed("a", 1), 1, Vec::new(), t0);
    with_members(&mut engine, t0, &[2, 3]);
    let (me, leaver, relay) = (engine.identity(), id(2, 1), id(3, 1));
    engine.handle_datagram(
        t0,
        relay.addr,
        &gossip(relay, me, &[Broadcast::Leave(leaver)]),
    );
    assert_eq!(status_of(&engine, 2), Some(Status::Leaving));
}

#[test]
fn while_a_rolling_upgrade_takes_plaintext_a_relayed_leave_intent_is_skipped() {
    let t0 = Instant::now();
    let mut config = sealed("a", 1);
    config.accept_plaintext = true;
    let mut engine = started(config, 1, Vec::new(), t0);
    with_members(&mut engine, t0, &[2, 3]);
    let (me, leaver, relay) = (engine.identity(), id(2, 1), id(3, 1));
    engine.handle_datagram(
        t0,
        relay.addr,
        &gossip(relay, me, &[Broadcast::Leave(leaver)]),
    );
    assert_eq!(status_of(&engine, 2), Some(Status::Alive));
}

#[test]
fn a_direct_intent_from_the_member_is_taken_and_acknowledged_every_time() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    with_members(&mut engine, t0, &[2]);
    let leaver = id(2, 1);
    for _ in 0..2 {
        engine.handle_datagram(t0, leaver.addr, &direct(&Broadcast::Leave(leaver)));
        let out = engine.take_outbox();
        assert_eq!(status_of(&engine, 2), Some(Status::Leaving));
        let acks: Vec<Identity> = (out.datagrams.iter())
            .filter(|(to, _)| *to == leaver.addr)
            .filter_map(|(_, p)| match envelope::open(p) {
                Ok((Kind::LeaveAck, payload)) => postcard::from_bytes(payload).ok(),
                _ => None,
            })
            .collect();
        assert_eq!(
            acks,
            [leaver],
            "acknowledged (again: the first ack may be lost)"
        );
    }
    // Another generation at the member's address is not the member foca knows.
    let before = dropped(&engine);
    engine.handle_datagram(t0, leaver.addr, &direct(&Broadcast::Leave(id(2, 9))));
    assert_eq!(dropped(&engine), before + 1);
}

#[test]
fn a_relayed_down_about_a_member_that_announced_its_leave_is_its_leave() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    with_members(&mut engine, t0, &[2, 3, 4]);
    let (me, leaver, relay, other) = (engine.identity(), id(2, 1), id(3, 1), id(4, 1));
    // Without an intent a relayed down is a suspicion (the member would refute it) ...
    let down = |who| foca::Member::new(who, 0, foca::State::Down);
    engine.handle_datagram(t0, relay.addr, &updates(relay, me, &[down(other)]));
    assert_eq!(
        status_of(&engine, 4),
        Some(Status::Alive),
        "suspected at most"
    );
    // ... with the member's own intent here, it is the leave going through (its notice to
    // us was lost).
    engine.handle_datagram(t0, leaver.addr, &direct(&Broadcast::Leave(leaver)));
    engine.handle_datagram(t0, relay.addr, &updates(relay, me, &[down(leaver)]));
    assert_eq!(status_of(&engine, 2), Some(Status::Left));
}

/// The leave intents sent directly in `out`, by receiver.
fn intents_sent(out: &Outbox) -> Vec<SocketAddr> {
    let mut to: Vec<SocketAddr> = (out.datagrams.iter())
        .filter(|(_, p)| {
            matches!(envelope::open(p), Ok((Kind::Item, payload))
                if matches!(postcard::from_bytes(payload), Ok(Broadcast::Leave(_))))
        })
        .map(|(a, _)| *a)
        .collect();
    to.sort();
    to
}

#[test]
fn a_leaving_node_sends_its_intent_again_only_to_members_that_did_not_acknowledge_and_leaves_once_all_did()
 {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    with_members(&mut engine, t0, &[2, 3, 4]);
    let me = engine.identity();
    let (reply, mut done) = oneshot::channel();
    engine.handle_command(t0, Command::Leave { reply });
    let out = engine.take_outbox();
    assert_eq!(intents_sent(&out), [addr(2), addr(3), addr(4)]);
    let ack = leave::ack(me).expect("encode");
    engine.handle_datagram(t0, addr(2), &ack);
    engine.handle_datagram(t0, addr(9), &ack);
    engine.handle_datagram(t0, addr(3), &leave::ack(id(1, 99)).expect("encode"));
    let again = t0 + leave::resend_interval(&Profile::Lan.timings());
    let turns = run_until(&mut engine, again);
    let resent: Vec<SocketAddr> = turns.iter().flat_map(|(_, o)| intents_sent(o)).collect();
    assert_eq!(
        resent,
        [addr(3), addr(4)],
        "a stranger's or another identity's ack counts not"
    );
    assert!(done.try_recv().is_err() && !engine.view().left);
    engine.handle_datagram(again, addr(3), &ack);
    engine.handle_datagram(again, addr(4), &ack);
    let out = engine.take_outbox();
    assert!(engine.view().left, "the last ack: left at once");
    assert!(done.try_recv().is_ok(), "the caller is answered");
    for port in [2, 3, 4] {
        assert!(
            kinds_to(&out, addr(port)).contains(&Kind::Leave),
            "notice to {port}"
        );
    }
    let later = run_until(&mut engine, t0 + Duration::from_secs(2));
    assert!(
        later.iter().all(|(_, o)| intents_sent(o).is_empty()),
        "nothing more once left"
    );
}

#[test]
fn in_plaintext_a_node_that_never_knew_a_member_takes_its_leave_from_a_push_pull_as_hearsay() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    with_members(&mut engine, t0, &[3]);
    let (gone, relay, healthy) = (id(5, 1), id(3, 1), id(6, 1));
    // A member that left before this node joined, as an older member's state lists it.
    let mut state = state_of(relay, "m3");
    state
        .members
        .push(foca::Member::new(gone, 0, foca::State::Down));
    state.metas.push(state_of(gone, "gone").metas.remove(0));
    state.intents = vec![(gone, false), (healthy, false)];
    apply_state(&mut engine, t0, state);
    assert_eq!(
        status_of(&engine, 5),
        Some(Status::Left),
        "as the older nodes list it"
    );
    // A false one about a member not heard of yet is dropped once the member comes up.
    apply_state(&mut engine, t0, state_of(healthy, "m6"));
    assert_eq!(status_of(&engine, 6), Some(Status::Alive));
    assert!(intents(&engine).iter().all(|(id, _)| *id != healthy));
}
