//! What the screening of a SWIM datagram hands foca ([`crate::engine::senders`]).

use std::borrow::Cow;

use super::*;

/// The payload of `packet` (a SWIM envelope without a digest).
fn payload(packet: &[u8]) -> &[u8] {
    envelope::open(packet).expect("a SWIM envelope").1
}

/// The length of a foca header from `src` to `dst` alone.
fn header_len(src: Identity, dst: Identity) -> usize {
    foca_header(src, dst, foca::Message::Gossip).len()
}

#[test]
fn an_update_that_repeats_what_foca_holds_is_not_handed_to_foca_and_one_with_news_is() {
    let t0 = Instant::now();
    let mut engine = started(config("a", 1), 1, Vec::new(), t0);
    apply_state(&mut engine, t0, state_of(id(2, 1), "b"));
    apply_state(&mut engine, t0, state_of(id(3, 1), "c"));
    engine.take_outbox();
    let (me, sender) = (engine.identity(), id(2, 1));
    // foca holds member 3 alive at incarnation 0: an update saying so is a no-op for foca.
    let repeat = super::leaves::updates(sender, me, &[foca::Member::alive(id(3, 1))]);
    let screened = engine
        .screen_swim(addr(2), payload(&repeat))
        .expect("a member's datagram");
    assert!(screened.trusted);
    assert!(matches!(screened.payload, Cow::Owned(_)));
    assert_eq!(
        screened.payload.len(),
        header_len(sender, me),
        "nothing left after the header"
    );
    // A suspicion of it is news: the datagram goes to foca whole.
    let suspect = foca::Member::new(id(3, 1), 0, foca::State::Suspect);
    let news = super::leaves::updates(sender, me, &[suspect]);
    let screened = engine
        .screen_swim(addr(2), payload(&news))
        .expect("a member's datagram");
    assert!(matches!(screened.payload, Cow::Borrowed(p) if p == payload(&news)));
    // And foca still takes it: member 3 is suspect now.
    engine.handle_datagram(t0, addr(2), &news);
    let suspect_now = engine
        .foca
        .iter_membership_state()
        .any(|m| m.id() == &id(3, 1) && m.state() == foca::State::Suspect);
    assert!(suspect_now);
}
