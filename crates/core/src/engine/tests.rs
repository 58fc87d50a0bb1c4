//! Scenario tests of a whole engine: build one, feed it commands, datagrams and timers, and
//! assert on what it asks for (its outbox) and on its view.

use std::collections::BTreeMap;

use tokio::sync::oneshot;

use super::*;
use crate::anti_entropy::Digest;
use crate::envelope::Kind;
use crate::membership::Status;
use crate::profile::Profile;

mod direct;
mod leaves;
mod screening;
mod suspicion;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn id(port: u16, generation: u64) -> Identity {
    Identity {
        addr: addr(port),
        generation,
    }
}

fn config(name: &str, port: u16) -> NodeConfig {
    let mut config = NodeConfig::new(name, addr(port));
    config.profile = Profile::Lan;
    config
}

/// An engine for `config` with `generation`, started at `t0`.
fn started(config: NodeConfig, generation: u64, seeds: Vec<SocketAddr>, t0: Instant) -> Engine {
    let me = Identity {
        addr: config.bind,
        generation,
    };
    let stats = Arc::new(Stats::default());
    let restored = Restored {
        seeds,
        ..Restored::default()
    };
    let mut engine = Engine::new(config, me, restored, false, Some(7), stats, t0).expect("valid");
    engine.start(t0);
    engine
}

/// Fires the engine's timers in order until `until`; returns each turn's outbox and time.
fn run_until(engine: &mut Engine, until: Instant) -> Vec<(Instant, Outbox)> {
    let mut turns = Vec::new();
    while let Some(at) = engine.next_deadline().filter(|d| *d <= until) {
        engine.fire_timers(at);
        turns.push((at, engine.take_outbox()));
    }
    turns
}

/// The state a member `who` named `name` would send in a push-pull.
fn state_of(who: Identity, name: &str) -> SyncState {
    SyncState {
        from: Some(who),
        members: vec![foca::Member::alive(who)],
        metas: vec![Meta {
            id: who,
            version: 0,
            name: name.into(),
            tags: BTreeMap::new(),
            role: Default::default(),
        }],
        intents: Vec::new(),
        event_clock: 0,
        events: Vec::new(),
        query_clock: 0,
    }
}

/// A push-pull answer (not of an operator join) arrives at `t`.
fn apply_state(engine: &mut Engine, t: Instant, state: SyncState) {
    let peer = state.from.map_or(engine.identity().addr, |f| f.addr);
    engine.handle_command(
        t,
        Command::ApplyState {
            state,
            join: None,
            peer,
        },
    );
}

/// An operator's `shoal join TARGETS` (no replay).
fn join_command(targets: Vec<String>, reply: join::JoinReply) -> Command {
    Command::Join {
        targets,
        replay: false,
        reply,
    }
}

fn kinds_to(outbox: &Outbox, to: SocketAddr) -> Vec<Kind> {
    outbox
        .datagrams
        .iter()
        .filter(|(a, _)| *a == to)
        .filter_map(|(_, p)| envelope::open(p).ok().map(|(k, _)| k))
        .collect()
}

fn status_of(engine: &Engine, port: u16) -> Option<Status> {
    let view = engine.view();
    view.members
        .iter()
        .find(|m| m.addr == addr(port))
        .map(|m| m.status)
}

#[test]
fn a_node_alone_retries_its_seeds_with_doubling_delay_up_to_the_profile_max() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, vec![addr(2)], t0);
    let timings = Profile::Lan.timings();
    let attempts: Vec<Instant> = run_until(&mut engine, t0 + Duration::from_secs(120))
        .into_iter()
        .filter(|(_, out)| out.push_pulls.iter().any(|pp| pp.addrs == [addr(2)]))
        .map(|(at, out)| {
            assert!(
                kinds_to(&out, addr(2)).contains(&Kind::SwimDigest),
                "announced too"
            );
            at
        })
        .collect();
    assert_eq!(attempts.first(), Some(&t0), "the first attempt is at once");
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    let mut expected = Backoff::new(timings.retry_interval, timings.retry_max_interval);
    for gap in &gaps {
        assert_eq!(*gap, expected.next());
    }
    assert!(gaps.len() > 4, "{gaps:?}");
    assert_eq!(gaps.last(), Some(&timings.retry_max_interval));
}

#[test]
fn retry_max_stops_join_attempts() {
    let t0 = Instant::now();
    let mut cfg = config("a", 1);
    cfg.retry_max = 3;
    let mut engine = started(cfg, 1, vec![addr(2)], t0);
    let attempts = run_until(&mut engine, t0 + Duration::from_secs(300))
        .iter()
        .filter(|(_, out)| !out.push_pulls.is_empty())
        .count();
    assert_eq!(attempts, 3);
}

/// Runs `engine` until `until`, answering every resolution of its join names with "no such
/// host"; returns when each resolution was asked for.
fn run_unresolved(engine: &mut Engine, until: Instant) -> Vec<Instant> {
    let mut asked = Vec::new();
    while let Some(at) = engine.next_deadline().filter(|d| *d <= until) {
        engine.fire_timers(at);
        if !engine.take_outbox().resolve.is_empty() {
            asked.push(at);
            let failed = vec![("nowhere:7948".to_string(), "no such host".to_string())];
            engine.handle_command(
                at,
                Command::Resolved {
                    addrs: Vec::new(),
                    failed,
                    purpose: Purpose::Seeds,
                },
            );
            engine.take_outbox();
        }
    }
    asked
}

/// Issue 11: an unresolvable `--join` name was re-resolved every retry interval forever.
#[test]
fn join_names_that_never_resolve_back_off_and_count_against_retry_max() {
    let t0 = Instant::now();
    let timings = Profile::Lan.timings();
    let mut cfg = config("a", 1);
    cfg.join = vec!["nowhere:7948".into()];
    cfg.retry_max = 4;
    let mut engine = started(cfg, 1, Vec::new(), t0);
    let asked = run_unresolved(&mut engine, t0 + Duration::from_secs(20));
    assert!(engine.view().gave_up_joining, "{asked:?}");
    let gaps: Vec<Duration> = asked.windows(2).map(|w| w[1] - w[0]).collect();
    let mut expected = Backoff::new(timings.retry_interval, timings.retry_max_interval);
    for gap in &gaps[..4] {
        assert_eq!(*gap, expected.next(), "{gaps:?}");
    }
    // Four attempts, the fifth resolution gives up, the sixth was already scheduled; then
    // only every 30 sync intervals (not within these 20 s).
    assert_eq!(asked.len(), 6, "{gaps:?}");

    let mut cfg = config("a", 1);
    cfg.join = vec!["nowhere:7948".into()];
    let mut engine = started(cfg, 1, Vec::new(), t0);
    let asked = run_unresolved(&mut engine, t0 + Duration::from_secs(60));
    assert!(!engine.view().gave_up_joining, "retry_max 0: forever");
    let last = asked.windows(2).map(|w| w[1] - w[0]).next_back();
    assert_eq!(last, Some(timings.retry_max_interval), "{asked:?}");
}

#[test]
fn configured_join_names_are_resolved_at_start_and_their_addresses_tried() {
    let t0 = Instant::now();
    let mut cfg = config("a", 1);
    cfg.join = vec!["cluster:7948".into()];
    let mut engine = started(cfg, 1, Vec::new(), t0);
    let turns = run_until(&mut engine, t0);
    let resolve: Vec<&Resolve> = turns.iter().flat_map(|(_, o)| &o.resolve).collect();
    assert_eq!(resolve.len(), 1);
    assert_eq!(resolve[0].targets, ["cluster:7948"]);
    assert_eq!(resolve[0].purpose, Purpose::Seeds);
    let resolved = Command::Resolved {
        addrs: vec![addr(1), addr(2)],
        failed: Vec::new(),
        purpose: Purpose::Seeds,
    };
    engine.handle_command(t0, resolved);
    let turns = run_until(&mut engine, t0);
    let pp: Vec<&PushPull> = turns.iter().flat_map(|(_, o)| &o.push_pulls).collect();
    assert_eq!(pp.len(), 1);
    assert_eq!(pp[0].addrs, [addr(2)], "its own address is no seed");
}

#[test]
fn at_most_one_push_pull_per_half_sync_interval() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    engine.take_outbox();
    let ours = lock(&engine.shared).table.digest();
    let digest = |d: u64| {
        let digest = Digest {
            from: id(2, 1),
            digest: d,
            events: None,
        };
        envelope::seal(Kind::Digest, &postcard::to_stdvec(&digest).expect("encode"))
    };
    let half = Profile::Lan.timings().sync_interval / 2;
    let mut push_pulls_at = |t: Instant, d: u64| {
        engine.handle_datagram(t, addr(2), &digest(d));
        engine.take_outbox().push_pulls.len()
    };
    assert_eq!(
        push_pulls_at(t0, ours),
        0,
        "equal digests: nothing to repair"
    );
    assert_eq!(push_pulls_at(t0, ours ^ 1), 1);
    assert_eq!(push_pulls_at(t0 + half / 2, ours ^ 1), 0);
    assert_eq!(push_pulls_at(t0 + half, ours ^ 1), 1);
}

#[test]
fn the_member_that_started_later_gives_up_a_shared_name() {
    let t0 = Instant::now();
    let mut later = started(config("web", 1), 200, Vec::new(), t0);
    apply_state(&mut later, t0, state_of(id(2, 100), "web"));
    run_until(&mut later, t0 + Profile::Lan.timings().probe_period);
    let conflict = later.view().conflict.expect("gave up the name");
    assert!(conflict.contains("started first"), "{conflict}");
    assert_eq!(later.view().local.status, Status::Leaving);

    let mut earlier = started(config("web", 1), 50, Vec::new(), t0);
    apply_state(&mut earlier, t0, state_of(id(2, 100), "web"));
    run_until(&mut earlier, t0 + Profile::Lan.timings().probe_period);
    assert_eq!(earlier.view().conflict, None);
    assert_eq!(earlier.view().local.status, Status::Alive);
}

#[test]
fn leave_gossips_the_intent_sends_it_directly_then_tells_every_member_at_the_deadline() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    apply_state(&mut engine, t0, state_of(id(2, 1), "b"));
    engine.take_outbox();
    let (reply, mut done) = oneshot::channel();
    engine.handle_command(t0, Command::Leave { reply });
    let first = engine.take_outbox();
    let mut kinds = kinds_to(&first, addr(2));
    kinds.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(
        kinds,
        [Kind::Item, Kind::SwimDigest],
        "the intent is sent directly and gossiped at once"
    );
    assert!(done.try_recv().is_err(), "not left yet");
    // b never acknowledges: the node leaves at the deadline.
    let leave_propagate = Profile::Lan.timings().leave_propagate;
    let turns = run_until(&mut engine, t0 + leave_propagate);
    let (at, last) = turns.last().expect("the leave fired");
    assert_eq!(*at, t0 + leave_propagate);
    assert!(
        kinds_to(last, addr(2)).contains(&Kind::Leave),
        "told directly"
    );
    assert!(done.try_recv().is_ok(), "the caller is answered");
    assert!(engine.view().left);
}

#[test]
fn a_direct_leave_notice_marks_the_member_left() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    apply_state(&mut engine, t0, state_of(id(2, 1), "b"));
    assert_eq!(status_of(&engine, 2), Some(Status::Alive));
    let notice = leave::notice(id(2, 1)).expect("encode");
    engine.handle_datagram(t0, addr(2), &notice);
    assert_eq!(status_of(&engine, 2), Some(Status::Left));
}

#[test]
fn a_leave_notice_not_from_the_member_itself_changes_nothing() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    apply_state(&mut engine, t0, state_of(id(2, 1), "b"));
    let from_elsewhere = leave::notice(id(2, 1)).expect("encode");
    engine.handle_datagram(t0, addr(3), &from_elsewhere);
    let huge_generation = leave::notice(id(2, u64::MAX)).expect("encode");
    engine.handle_datagram(t0, addr(2), &huge_generation);
    assert_eq!(status_of(&engine, 2), Some(Status::Alive));
    let dropped = engine
        .stats
        .packets_dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(dropped, 2);
}

#[test]
fn an_operator_join_resolves_push_pulls_and_answers_with_the_count() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    engine.take_outbox();
    let (reply, mut answer) = oneshot::channel();
    let targets = vec!["b:7948".to_string()];
    engine.handle_command(t0, join_command(targets, reply));
    let resolve = engine.take_outbox().resolve;
    let Purpose::Join(join) = resolve[0].purpose else {
        panic!("an operator join asks for its own resolution: {resolve:?}");
    };
    let resolved = Command::Resolved {
        addrs: vec![addr(2)],
        failed: Vec::new(),
        purpose: Purpose::Join(join),
    };
    engine.handle_command(t0, resolved);
    let out = engine.take_outbox();
    assert_eq!(out.push_pulls.len(), 1);
    assert_eq!(
        (&out.push_pulls[0].addrs[..], out.push_pulls[0].join),
        (&[addr(2)][..], Some(join))
    );
    assert!(
        kinds_to(&out, addr(2)).contains(&Kind::SwimDigest),
        "announced too"
    );
    assert!(
        answer.try_recv().is_err(),
        "answered only when the push-pulls are done"
    );
    engine.handle_command(t0, Command::JoinedVia { joined: 1, join });
    assert_eq!(answer.try_recv().expect("answered").expect("joined"), 1);
}

#[test]
fn an_operator_join_that_resolves_to_nothing_fails_with_the_reason() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    let (reply, mut answer) = oneshot::channel();
    let targets = vec!["nowhere".to_string()];
    engine.handle_command(t0, join_command(targets, reply));
    let Purpose::Join(join) = engine.take_outbox().resolve[0].purpose else {
        panic!("a join purpose");
    };
    let resolved = Command::Resolved {
        addrs: Vec::new(),
        failed: vec![("nowhere".into(), "no such host".into())],
        purpose: Purpose::Join(join),
    };
    engine.handle_command(t0, resolved);
    assert!(engine.take_outbox().push_pulls.is_empty());
    let err = answer.try_recv().expect("answered").expect_err("failed");
    assert_eq!(
        err.to_string(),
        "could not join any of nowhere (nowhere: no such host)"
    );
}

#[test]
fn a_bad_datagram_is_counted_and_changes_nothing() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    engine.take_outbox();
    for packet in [
        &b"junk"[..],
        &envelope::seal(Kind::Digest, b"")[..],
        &envelope::seal(Kind::Beacon, b"")[..],
    ] {
        engine.handle_datagram(t0, addr(2), packet);
    }
    let out = engine.take_outbox();
    assert!(out.datagrams.is_empty(), "{:?}", out.datagrams);
    assert!(out.push_pulls.is_empty());
    assert!(!out.view_changed);
    assert_eq!(
        engine
            .stats
            .packets_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    assert_eq!(engine.view().members.len(), 1);
}

#[test]
fn a_node_that_left_ignores_gossip_and_does_not_rejoin() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, vec![addr(2)], t0);
    let (reply, _done) = oneshot::channel();
    engine.handle_command(t0, Command::Leave { reply });
    run_until(&mut engine, t0 + Duration::from_secs(1));
    assert!(engine.view().left);
    apply_state(&mut engine, t0, state_of(id(2, 1), "b"));
    let later = run_until(&mut engine, t0 + Duration::from_secs(60));
    assert!(
        later.iter().all(|(_, o)| o.push_pulls.is_empty()),
        "no join attempt after leaving"
    );
    assert_eq!(status_of(&engine, 2), None);
}

#[test]
fn a_digest_makes_the_node_push_pull_with_its_udp_source_not_an_address_it_names() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    engine.take_outbox();
    let forged = Digest {
        from: id(9, 1),
        digest: 1,
        events: None,
    };
    let packet = envelope::seal(Kind::Digest, &postcard::to_stdvec(&forged).expect("encode"));
    engine.handle_datagram(t0, addr(2), &packet);
    let pp = engine.take_outbox().push_pulls;
    assert_eq!(pp.len(), 1);
    assert_eq!(pp[0].addrs, [addr(2)], "only the UDP source");
}

/// The encoded foca header of a message from `src` (at incarnation 0) to `dst`.
fn foca_header(src: Identity, dst: Identity, message: foca::Message<Identity>) -> Vec<u8> {
    let mut body = Vec::new();
    let header = foca::Header {
        src,
        src_incarnation: 0,
        dst,
        message,
    };
    foca::Codec::encode_header(&mut foca::PostcardCodec, &header, &mut body).expect("encode");
    body
}

/// A foca message from `src` to `dst`, in a SWIM envelope.
fn swim_from(src: Identity, dst: Identity, message: foca::Message<Identity>) -> Vec<u8> {
    envelope::seal(Kind::Swim, &foca_header(src, dst, message))
}

#[test]
fn a_request_to_ping_or_forward_to_a_non_member_is_dropped_and_one_to_a_member_is_served() {
    use foca::Message::{IndirectAck, PingReq};
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    apply_state(&mut engine, t0, state_of(id(2, 1), "b"));
    apply_state(&mut engine, t0, state_of(id(3, 1), "c"));
    engine.take_outbox();
    let (me, third) = (engine.identity(), id(99, 1));
    let before = engine
        .stats
        .packets_dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    for message in [
        PingReq {
            target: third,
            probe_number: 1,
        },
        IndirectAck {
            target: third,
            probe_number: 1,
        },
    ] {
        engine.handle_datagram(t0, addr(2), &swim_from(id(2, 1), me, message));
        assert!(kinds_to(&engine.take_outbox(), addr(99)).is_empty());
    }
    let dropped = engine
        .stats
        .packets_dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(dropped - before, 2);
    let ping_c = PingReq {
        target: id(3, 1),
        probe_number: 2,
    };
    engine.handle_datagram(t0, addr(2), &swim_from(id(2, 1), me, ping_c));
    assert_eq!(kinds_to(&engine.take_outbox(), addr(3)), [Kind::SwimDigest]);
}

#[test]
fn an_announced_meta_is_fetched_from_a_member_but_never_from_an_address_only_a_payload_names() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    apply_state(&mut engine, t0, state_of(id(2, 1), "b"));
    engine.take_outbox();
    lock(&engine.shared).fetch.extend([addr(9), addr(2)]);
    engine.handle_command(t0, Command::Shutdown);
    let out = engine.take_outbox();
    let contacted: Vec<SocketAddr> = out
        .push_pulls
        .iter()
        .flat_map(|p| p.addrs.clone())
        .collect();
    assert_eq!(contacted, vec![addr(2)]);
}

fn query_response(from: &str, key: (u64, u64), relay_to: Option<SocketAddr>) -> Vec<u8> {
    let response = crate::query::QueryResponse {
        ltime: key.0,
        id: key.1,
        from: from.into(),
        ack: false,
        payload: b"token".to_vec(),
        relay_to,
    };
    envelope::seal(
        Kind::QueryResponse,
        &postcard::to_stdvec(&response).expect("encode"),
    )
}

#[test]
fn a_query_takes_the_clusters_clock_answers_locally_and_relays_only_to_members() {
    use crate::membership::Event;
    use crate::query::{QueryParams, QueryUpdate};
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    let mut state = state_of(id(2, 1), "b");
    state.query_clock = 700;
    apply_state(&mut engine, t0, state);
    engine.take_outbox();
    let (updates, mut stream) = tokio::sync::mpsc::channel(16);
    let (reply, mut started) = oneshot::channel();
    let params = QueryParams {
        name: "q".into(),
        ack: true,
        ..QueryParams::default()
    };
    let cmd = Command::Query {
        params,
        updates,
        reply,
    };
    engine.handle_command(t0, cmd);
    let started = started.try_recv().expect("answered").expect("sent");
    assert_eq!(
        started.ltime, 700,
        "stamped with the clock a push-pull brought"
    );
    assert_eq!(started.expected, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(started.timeout_ms, 3200, "lan default for two members");
    assert_eq!(
        engine.view().query_ltime,
        Some(700),
        "kept for the snapshot"
    );
    let out = engine.take_outbox();
    assert!(
        kinds_to(&out, addr(2)).contains(&Kind::SwimDigest),
        "gossiped"
    );
    assert!(matches!(out.events.as_slice(), [Event::Query(q)] if q.name == "q"));
    assert_eq!(
        stream.try_recv(),
        Ok(QueryUpdate::Ack { from: "a".into() }),
        "own ack"
    );
    let key = (started.ltime, started.id);
    // A relayed copy naming a non-member is not forwarded; one for us is collected.
    engine.handle_datagram(t0, addr(2), &query_response("b", key, Some(addr(9))));
    assert!(engine.take_outbox().datagrams.is_empty());
    assert!(stream.try_recv().is_err());
    engine.handle_datagram(t0, addr(2), &query_response("b", key, None));
    let (reply, mut answered) = oneshot::channel();
    let cmd = Command::RespondQuery {
        ltime: key.0,
        id: key.1,
        payload: b"mine".to_vec(),
        reply,
    };
    engine.handle_command(t0, cmd);
    assert!(answered.try_recv().expect("answered").is_ok());
    let mut got = Vec::new();
    while let Ok(update) = stream.try_recv() {
        got.push(update);
    }
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[2], QueryUpdate::Done { timed_out: false });
}

/// Issue 10: a member announcing the README's HAProxy attack as its name is never listed.
#[test]
fn a_push_pull_naming_a_member_with_an_unsafe_name_or_tag_is_refused_and_counted() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    apply_state(
        &mut engine,
        t0,
        state_of(id(2, 1), "web-9\n    server evil 6.6.6.6:80 check\n#"),
    );
    let mut tagged = state_of(id(3, 1), "web-3");
    tagged.metas[0]
        .tags
        .insert("http_port".into(), "80\n    server evil 6.6.6.6:80".into());
    apply_state(&mut engine, t0, tagged);
    apply_state(&mut engine, t0, state_of(id(4, 1), "web-4"));
    let names: Vec<String> = engine
        .view()
        .members
        .iter()
        .map(|m| m.name.clone())
        .collect();
    assert_eq!(names, ["a", "web-4"]);
    let refused = engine
        .stats
        .metas_refused
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused, 2);
}

#[test]
fn a_peers_push_pull_ahead_of_the_answer_to_a_replay_join_does_not_skip_the_history() {
    use crate::membership::Event;
    use crate::user_event::UserEvent;
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    engine.take_outbox();
    let (reply, _joined) = oneshot::channel();
    let cmd = Command::Join {
        targets: vec![addr(2).to_string()],
        replay: true,
        reply,
    };
    engine.handle_command(t0, cmd);
    let resolve = engine.take_outbox().resolve;
    let [Resolve { purpose, .. }] = resolve.as_slice() else {
        panic!("one look-up: {}", resolve.len());
    };
    let resolved = Command::Resolved {
        addrs: vec![addr(2)],
        failed: Vec::new(),
        purpose: *purpose,
    };
    engine.handle_command(t0, resolved);
    let push_pulls = engine.take_outbox().push_pulls;
    let [PushPull { join, .. }] = push_pulls.as_slice() else {
        panic!("one push-pull: {}", push_pulls.len());
    };
    let join = *join;
    let history = |from: Identity, name: &str| {
        let mut state = state_of(from, name);
        state.event_clock = 2;
        state.events = vec![UserEvent {
            ltime: 1,
            name: "deploy".into(),
            payload: b"v1".to_vec(),
            coalesce: true,
        }];
        state
    };
    // Before the join's answer, a member that heard our announce push-pulls with us (not a
    // contact of ours yet: the forged-packet rules drop the events it carries).
    let state = history(id(3, 1), "c");
    let (reply, _ours) = oneshot::channel();
    engine.handle_command(
        t0,
        Command::Exchange {
            state,
            peer: addr(3),
            reply,
        },
    );
    engine.take_outbox();
    // The join's own answer still brings the history: the early contact did not use up the
    // first contact with the history skipped.
    let cmd = Command::ApplyState {
        state: history(id(2, 1), "b"),
        join,
        peer: addr(2),
    };
    engine.handle_command(t0, cmd);
    let events = engine.take_outbox().events;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::User(u) if u.name == "deploy")),
        "--replay: the history runs: {events:?}"
    );
}

#[test]
fn a_strangers_digest_gets_a_push_pull_but_does_not_make_it_a_contact() {
    // A contact may speak for others for a while; a forged digest from anywhere must not buy
    // that (found while reviewing the join fixes of issue 8).
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    engine.take_outbox();
    let ours = lock(&engine.shared).table.digest();
    let digest = Digest {
        from: id(2, 1),
        digest: ours ^ 1,
        events: None,
    };
    let packet = envelope::seal(Kind::Digest, &postcard::to_stdvec(&digest).expect("encode"));
    engine.handle_datagram(t0, addr(2), &packet);
    assert_eq!(engine.take_outbox().push_pulls.len(), 1, "it is answered");
    assert!(
        !engine.contacts.recent(addr(2), t0),
        "but it is no contact: its word about others still counts for nothing"
    );
}
