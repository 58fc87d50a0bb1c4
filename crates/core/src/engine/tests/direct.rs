//! Direct copies of user events, queries and tag changes ([`crate::engine::direct`]): who gets
//! one, what a receiver does with it, and the query origin's second tries.

use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::*;
use crate::broadcast::Broadcast;
use crate::membership::Event;
use crate::query::{Query, QueryFilter, QueryParams, QueryResponse, QueryUpdate};
use crate::user_event::UserEvent;

/// Members `m<port>` at each of `ports`, known through a push-pull.
fn with_members(engine: &mut Engine, t0: Instant, ports: &[u16]) {
    for port in ports {
        apply_state(engine, t0, state_of(id(*port, 1), &format!("m{port}")));
    }
    engine.take_outbox();
}

/// `shoal event NAME PAYLOAD` (coalesced), and where its answer comes.
fn user_event(
    name: &str,
    payload: &[u8],
) -> (
    Command,
    oneshot::Receiver<Result<u64, crate::error::CommandError>>,
) {
    let (reply, sent) = oneshot::channel();
    let cmd = Command::UserEvent {
        name: name.into(),
        payload: payload.to_vec(),
        coalesce: true,
        reply,
    };
    (cmd, sent)
}

/// The items sent directly to `to`.
fn items_to(out: &Outbox, to: SocketAddr) -> Vec<Broadcast> {
    (out.datagrams.iter())
        .filter(|(a, _)| *a == to)
        .filter_map(|(_, p)| match envelope::open(p) {
            Ok((Kind::Item, payload)) => postcard::from_bytes(payload).ok(),
            _ => None,
        })
        .collect()
}

/// The acks and answers sent to `to`: `(ack, payload)`.
fn responses_to(out: &Outbox, to: SocketAddr) -> Vec<(bool, Vec<u8>)> {
    (out.datagrams.iter())
        .filter(|(a, _)| *a == to)
        .filter_map(|(_, p)| match envelope::open(p) {
            Ok((Kind::QueryResponse, payload)) => postcard::from_bytes(payload).ok(),
            _ => None,
        })
        .map(|r: QueryResponse| (r.ack, r.payload))
        .collect()
}

fn item(b: &Broadcast) -> Vec<u8> {
    envelope::seal(Kind::Item, &b.encode().expect("encode"))
}

fn dropped(engine: &Engine) -> u64 {
    engine.stats.packets_dropped.load(Ordering::Relaxed)
}

#[test]
fn a_user_event_goes_to_every_live_member_directly_twice_besides_its_gossip() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    with_members(&mut engine, t0, &[2, 3, 4]);
    let (cmd, mut sent) = user_event("deploy", b"v42");
    engine.handle_command(t0, cmd);
    let ltime = sent.try_recv().expect("answered").expect("sent");
    let out = engine.take_outbox();
    for port in [2, 3, 4] {
        let items = items_to(&out, addr(port));
        assert!(
            matches!(items.as_slice(), [Broadcast::User(e)] if e.ltime == ltime && e.payload == b"v42"),
            "to {port}: {items:?}"
        );
    }
    let gossiped = (out.datagrams.iter())
        .filter(|(_, p)| matches!(envelope::open(p), Ok((Kind::SwimDigest, _))))
        .count();
    assert!(gossiped > 0, "gossiped too");
    let gossip = Profile::Lan.timings().gossip_interval;
    let turns = run_until(&mut engine, t0 + gossip * 5);
    for port in [2, 3, 4] {
        let again: Vec<Instant> = (turns.iter())
            .filter(|(_, o)| !items_to(o, addr(port)).is_empty())
            .map(|(at, _)| *at)
            .collect();
        assert_eq!(again, [t0 + gossip], "a second copy to {port}, once");
    }
}

fn deploy_v7() -> Broadcast {
    Broadcast::User(UserEvent {
        ltime: 5,
        name: "deploy".into(),
        payload: b"v7-payload".to_vec(),
        coalesce: true,
    })
}

/// Whether the engine's gossip carried the `deploy_v7` payload within three gossip rounds.
fn gossips_v7(engine: &mut Engine, t0: Instant) -> bool {
    let gossip = Profile::Lan.timings().gossip_interval;
    let turns = run_until(engine, t0 + gossip * 3);
    (turns.iter().flat_map(|(_, o)| &o.datagrams))
        .filter(|(_, p)| matches!(envelope::open(p), Ok((Kind::SwimDigest, _))))
        .any(|(_, p)| p.windows(10).any(|w| w == b"v7-payload"))
}

#[test]
fn a_direct_user_event_from_a_member_runs_once_and_a_small_cluster_does_not_gossip_it_on() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    with_members(&mut engine, t0, &[2, 3]);
    let event = deploy_v7();
    engine.handle_datagram(t0, addr(9), &item(&event));
    assert!(
        engine.take_outbox().events.is_empty(),
        "not from a member: ignored (gossip brings it)"
    );
    engine.handle_datagram(t0, addr(2), &item(&event));
    let out = engine.take_outbox();
    assert!(
        matches!(out.events.as_slice(), [Event::User(e)] if e.ltime == 5),
        "{:?}",
        out.events
    );
    engine.handle_datagram(t0, addr(3), &item(&event));
    assert!(engine.take_outbox().events.is_empty(), "a duplicate");
    assert!(
        !gossips_v7(&mut engine, t0),
        "every member got its own direct copy"
    );
    assert_eq!(dropped(&engine), 0);
    engine.handle_datagram(t0, addr(3), &item(&Broadcast::Leave(id(2, 1))));
    assert_eq!(
        dropped(&engine),
        1,
        "a leave intent only from the member itself"
    );
    engine.handle_datagram(t0, addr(2), &item(&Broadcast::ForceLeave(id(3, 1))));
    assert_eq!(dropped(&engine), 2, "a force-leave only by gossip");
    engine.handle_datagram(t0, addr(2), b"SH\x01\x09\x00\xff");
    assert_eq!(dropped(&engine), 3, "garbage");
}

#[test]
fn a_direct_copy_is_gossiped_on_in_a_cluster_larger_than_the_direct_copies_cover() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    let ports: Vec<u16> = (2..).take(crate::engine::direct::DIRECT_MAX).collect();
    with_members(&mut engine, t0, &ports);
    engine.handle_datagram(t0, addr(2), &item(&deploy_v7()));
    assert_eq!(engine.take_outbox().events.len(), 1);
    assert!(
        gossips_v7(&mut engine, t0),
        "some members got no direct copy"
    );
}

/// Sends a query from `engine` to every `m*`; returns its key and its update stream.
fn ask(engine: &mut Engine, t0: Instant) -> ((u64, u64), mpsc::Receiver<QueryUpdate>) {
    let (updates, stream) = mpsc::channel(16);
    let (reply, mut started) = oneshot::channel();
    let params = QueryParams {
        name: "q".into(),
        filters: vec![QueryFilter::Nodes(vec!["m.*".into()])],
        timeout_ms: Some(3000),
        ack: true,
        ..QueryParams::default()
    };
    engine.handle_command(
        t0,
        Command::Query {
            params,
            updates,
            reply,
        },
    );
    let started = started.try_recv().expect("answered").expect("sent");
    assert_eq!(started.expected, ["m2", "m3"]);
    ((started.ltime, started.id), stream)
}

#[test]
fn a_query_goes_directly_to_the_expected_members_and_again_to_those_that_did_not_answer() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    with_members(&mut engine, t0, &[2, 3]);
    let (key, mut stream) = ask(&mut engine, t0);
    let out = engine.take_outbox();
    for port in [2, 3] {
        let items = items_to(&out, addr(port));
        assert!(
            matches!(items.as_slice(), [Broadcast::Query(q)] if (q.ltime, q.id) == key),
            "to {port}: {items:?}"
        );
    }
    // m2 answers; m3's copy (or its answer) was lost.
    engine.handle_datagram(t0, addr(2), &query_response("m2", key, None));
    let retry = |turns: &[(Instant, Outbox)], port| -> Vec<Instant> {
        (turns.iter())
            .filter(|(_, o)| !items_to(o, addr(port)).is_empty())
            .map(|(at, _)| *at)
            .collect()
    };
    let rtt = Profile::Lan.timings().probe_rtt;
    let turns = run_until(&mut engine, t0 + Duration::from_millis(2900));
    assert_eq!(retry(&turns, 2), Vec::<Instant>::new(), "m2 answered");
    assert_eq!(
        retry(&turns, 3),
        [t0 + rtt, t0 + rtt * 3, t0 + rtt * 7],
        "after the probe RTT, then at doubling waits, three times"
    );
    engine.handle_datagram(t0 + rtt * 7, addr(3), &query_response("m3", key, None));
    let mut got = Vec::new();
    while let Ok(update) = stream.try_recv() {
        got.push(update);
    }
    assert_eq!(got.last(), Some(&QueryUpdate::Done { timed_out: false }));
    let turns = run_until(&mut engine, t0 + Duration::from_secs(5));
    assert!(retry(&turns, 3).is_empty(), "done: no more copies");
}

#[test]
fn a_member_gives_its_answer_again_only_when_the_origin_asks_again() {
    let t0 = Instant::now();
    let mut engine = started(config("m2", 2), 1, Vec::new(), t0);
    with_members(&mut engine, t0, &[1, 3]);
    let query = Broadcast::Query(Query {
        ltime: 1,
        id: 9,
        name: "q".into(),
        payload: Vec::new(),
        filters: Vec::new(),
        origin: addr(1),
        timeout_ms: 5000,
        ack: true,
        relay_factor: 0,
    });
    engine.handle_datagram(t0, addr(1), &item(&query));
    let out = engine.take_outbox();
    assert!(matches!(out.events.as_slice(), [Event::Query(q)] if q.id == 9));
    assert_eq!(responses_to(&out, addr(1)), [(true, Vec::new())], "acked");
    engine.handle_datagram(t0, addr(1), &item(&query));
    let out = engine.take_outbox();
    assert!(out.events.is_empty(), "runs once");
    assert!(
        responses_to(&out, addr(1)).is_empty(),
        "no answer to give again yet (the handler runs)"
    );
    let (reply, mut answered) = oneshot::channel();
    let cmd = Command::RespondQuery {
        ltime: 1,
        id: 9,
        payload: b"up".to_vec(),
        reply,
    };
    engine.handle_command(t0, cmd);
    assert!(answered.try_recv().expect("answered").is_ok());
    let answer = (false, b"up".to_vec());
    let first = responses_to(&engine.take_outbox(), addr(1));
    assert_eq!(first, std::slice::from_ref(&answer));
    engine.handle_datagram(t0, addr(3), &item(&query));
    assert!(
        engine.take_outbox().datagrams.is_empty(),
        "a copy from another member is only a duplicate"
    );
    engine.handle_datagram(t0, addr(1), &item(&query));
    assert_eq!(
        responses_to(&engine.take_outbox(), addr(1)),
        [answer],
        "the origin asked again: the answer was lost"
    );
    let late = t0 + Duration::from_secs(6);
    engine.handle_datagram(late, addr(1), &item(&query));
    assert!(
        responses_to(&engine.take_outbox(), addr(1)).is_empty(),
        "not past the query's timeout"
    );
}

#[test]
fn a_tag_change_goes_to_every_member_directly_and_a_meta_is_taken_only_from_its_member() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    with_members(&mut engine, t0, &[2, 3]);
    let (reply, mut done) = oneshot::channel();
    let set = BTreeMap::from([("role".to_string(), "db".to_string())]);
    engine.handle_command(
        t0,
        Command::UpdateTags {
            set: set.clone(),
            delete: Vec::new(),
            reply,
        },
    );
    assert_eq!(done.try_recv().expect("answered").expect("set"), set);
    let out = engine.take_outbox();
    for port in [2, 3] {
        let items = items_to(&out, addr(port));
        assert!(
            matches!(items.as_slice(), [Broadcast::Meta(m)] if m.tags == set && m.version == 1),
            "to {port}: {items:?}"
        );
    }
    let meta = Broadcast::Meta(Meta {
        id: id(2, 1),
        version: 1,
        name: "m2".into(),
        tags: set.clone(),
        role: Default::default(),
    });
    let tags_of_m2 = |engine: &Engine| {
        let view = engine.view();
        let row = view.members.iter().find(|m| m.name == "m2").cloned();
        row.expect("listed").tags
    };
    engine.handle_datagram(t0, addr(3), &item(&meta));
    assert_eq!(dropped(&engine), 1, "m2's meta sent by m3");
    assert!(tags_of_m2(&engine).is_empty());
    engine.handle_datagram(t0, addr(2), &item(&meta));
    assert_eq!(tags_of_m2(&engine), set);
    let out = engine.take_outbox();
    assert!(
        out.events.iter().any(
            |e| matches!(e, Event::Member { kind: crate::membership::MemberEventKind::Update, member } if member.name == "m2")
        ),
        "member-update: {:?}",
        out.events
    );
}

/// foca's gossip timer (100 ms on lan) is held while there is nothing to gossip, so an idle
/// engine wakes only for its probes and housekeeping; a user event brings it back, and the
/// event is gossiped again at its ticks (foca's retransmissions), then it is held again.
#[test]
fn the_gossip_timer_sleeps_while_there_is_nothing_to_gossip_and_wakes_for_news() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    with_members(&mut engine, t0, &[2, 3, 4]);
    run_until(&mut engine, t0 + Duration::from_secs(5));
    let idle = run_until(&mut engine, t0 + Duration::from_secs(15)).len();
    // A probe, its RTT check and 2.5 housekeeping rounds a second; 100 gossip ticks alone
    // when the timer ran.
    assert!(idle < 60, "{idle} timer turns in 10 idle seconds");
    let at = t0 + Duration::from_secs(15);
    let (cmd, mut sent) = user_event("deploy", b"v1");
    engine.handle_command(at, cmd);
    sent.try_recv().expect("answered").expect("sent");
    engine.take_outbox();
    let gossip_turns = run_until(&mut engine, at + Duration::from_secs(2))
        .iter()
        .filter(|(_, out)| {
            out.datagrams
                .iter()
                .filter_map(|(_, p)| envelope::open(p).ok())
                .filter_map(|(kind, payload)| match kind {
                    Kind::SwimDigest => payload.get(4..),
                    _ => None,
                })
                .filter_map(crate::engine::probe::header)
                .any(|h| h.message == foca::Message::Gossip)
        })
        .count();
    assert!(
        gossip_turns >= 2,
        "the event's retransmissions: {gossip_turns} turns"
    );
    let later = run_until(&mut engine, at + Duration::from_secs(12)).len();
    assert!(later < 60, "{later} timer turns once the event was spread");
}
