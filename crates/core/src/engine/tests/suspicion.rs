//! Lifeguard's dynamic suspicion ([`crate::engine::confirm`]): a suspicion that other members
//! confirm ends sooner than one nobody confirms.

use super::*;
use crate::accusation::Accusation;
use crate::broadcast::Broadcast;

/// A foca gossip message from `src` carrying `items` as custom broadcasts.
fn gossip_with(src: Identity, dst: Identity, items: &[Broadcast]) -> Vec<u8> {
    let mut body = foca_header(src, dst, foca::Message::Gossip);
    body.extend_from_slice(&0u16.to_be_bytes());
    for item in items {
        let data = item.encode().expect("encode");
        body.extend_from_slice(&(data.len() as u16).to_be_bytes());
        body.extend_from_slice(&data);
    }
    envelope::seal(Kind::Swim, &body)
}

#[test]
fn a_suspicion_confirmed_by_three_members_ends_long_before_one_nobody_confirms() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    let (accusers, x, y) = ([id(2, 1), id(3, 1), id(4, 1)], id(6, 1), id(7, 1));
    for (i, who) in accusers.iter().chain([&x, &y]).enumerate() {
        apply_state(&mut engine, t0, state_of(*who, &format!("m{i}")));
    }
    engine.take_outbox();
    let me = engine.identity();
    // Nobody answers anything: every probe fails, and each member is suspected in turn. X's
    // suspicion is confirmed by the three others as soon as this node holds it; Y's never is.
    let (mut suspected, mut failed) = (BTreeMap::new(), BTreeMap::new());
    let mut confirmed = false;
    let end = t0 + Duration::from_secs(60);
    while let Some(at) = engine.next_deadline().filter(|d| *d <= end) {
        engine.fire_timers(at);
        engine.take_outbox();
        for who in [x, y] {
            if engine.suspicions.incarnation_of(who).is_some() {
                suspected.entry(who.addr).or_insert(at);
            }
            if engine.member_status(who.addr) == Some(Status::Failed) {
                failed.entry(who.addr).or_insert(at);
            }
        }
        if !confirmed && suspected.contains_key(&x.addr) {
            confirmed = true;
            for accuser in accusers {
                let item = Broadcast::Suspect(Accusation {
                    target: x,
                    incarnation: 0,
                    accuser,
                });
                engine.handle_datagram(at, accuser.addr, &gossip_with(accuser, me, &[item]));
                engine.take_outbox();
            }
        }
        if failed.len() == 2 {
            break;
        }
    }
    let took = |who: Identity| -> Duration {
        let (Some(from), Some(to)) = (suspected.get(&who.addr), failed.get(&who.addr)) else {
            panic!("{who:?}: suspected {suspected:?}, failed {failed:?}");
        };
        *to - *from
    };
    let suspicion = engine.foca_suspicion();
    let (confirmed_took, alone_took) = (took(x), took(y));
    assert!(
        confirmed_took <= suspicion / 2 + Duration::from_millis(50),
        "confirmed three times: {confirmed_took:?} (foca's time {suspicion:?})"
    );
    assert!(
        alone_took >= suspicion * 2 - Duration::from_millis(50),
        "confirmed by nobody: {alone_took:?} (foca's time {suspicion:?})"
    );
}

#[test]
fn our_failed_probe_is_announced_as_an_accusation() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    apply_state(&mut engine, t0, state_of(id(2, 1), "b"));
    engine.take_outbox();
    let me = engine.identity();
    let end = t0 + Duration::from_secs(10);
    while let Some(at) = engine.next_deadline().filter(|d| *d <= end) {
        engine.fire_timers(at);
        engine.take_outbox();
        if engine.suspicions.incarnation_of(id(2, 1)).is_some() {
            break;
        }
    }
    let shared = lock(&engine.shared);
    assert_eq!(
        shared.accusations.len(),
        1,
        "our own accusation is recorded"
    );
    assert_eq!(
        shared.accusations.confirmations(id(2, 1), 0, me.addr),
        0,
        "and confirms nothing for us"
    );
    drop(shared);
    assert!(
        engine.foca.custom_broadcast_backlog() > 0,
        "and queued for gossip"
    );
}

/// Whether `outbox` holds foca's probe (a ping) to `to`.
fn pings(outbox: &Outbox, to: SocketAddr) -> bool {
    outbox.datagrams.iter().any(|(a, packet)| {
        *a == to
            && envelope::open(packet).is_ok_and(|(kind, payload)| {
                let foca = match kind {
                    Kind::SwimDigest => payload.get(4..),
                    Kind::Swim => Some(payload),
                    _ => None,
                };
                foca.and_then(crate::engine::probe::header)
                    .is_some_and(|h| matches!(h.message, foca::Message::Ping(_)))
            })
    })
}

/// A probe's ping that comes back as ICMP port unreachable sends its TCP ping at once, not
/// at the probe RTT, and only once; the ICMP alone suspects nobody, and the refusal of that
/// TCP ping does.
#[test]
fn a_probe_answered_by_port_unreachable_pings_over_tcp_at_once_and_a_refusal_suspects() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    let b = id(2, 1);
    apply_state(&mut engine, t0, state_of(b, "b"));
    engine.take_outbox();
    let mut sent = None;
    while let Some(at) = engine
        .next_deadline()
        .filter(|d| *d <= t0 + Duration::from_secs(5))
    {
        engine.fire_timers(at);
        if pings(&engine.take_outbox(), b.addr) {
            sent = Some(at);
            break;
        }
    }
    let at = sent.expect("foca probes its only member");
    // The ICMP for another address, then for b's (as the kernel names it: IPv4-mapped on a
    // dual-stack socket).
    engine.handle_command(at, Command::PortUnreachable { addr: addr(3) });
    assert!(engine.take_outbox().tcp_pings.is_empty());
    let mapped = SocketAddr::new(
        std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(),
        b.addr.port(),
    );
    engine.handle_command(at, Command::PortUnreachable { addr: mapped });
    let asked = engine.take_outbox().tcp_pings;
    assert_eq!(asked.len(), 1, "a TCP ping before the probe RTT");
    assert_eq!(asked[0].target, b);
    engine.handle_command(at, Command::PortUnreachable { addr: b.addr });
    assert!(engine.take_outbox().tcp_pings.is_empty(), "only once");
    assert!(
        engine.suspicions.incarnation_of(b).is_none(),
        "the ICMP alone"
    );
    assert_eq!(engine.member_status(b.addr), Some(Status::Alive));
    let number = asked[0].number;
    engine.handle_command(at, Command::TcpRefused { target: b, number });
    engine.take_outbox();
    run_until(&mut engine, at + Profile::Lan.timings().refused_down);
    assert_eq!(
        engine.member_status(b.addr),
        Some(Status::Failed),
        "down at refused_down after the refusal"
    );
}
