use super::*;
use crate::envelope::Kind;

// The budget: sealing adds at most 30 bytes per packet.
const _: () = assert!(SEAL_OVERHEAD <= 30);

const K1: &str = "HvY8ubRZMgafUOWvrOadwOckVa1wN3QWAo46FVKbVN8=";
const K2: &str = "5K9OtfP7efFrNKe5WCQvXvnaXJ5cWP0SvXiwe0kkjM4=";
const NOW: u64 = 1_800_000_000;

fn ring(keys: &[&str]) -> Option<Keyring> {
    let keys = keys.iter().map(|k| Key::parse(k).expect("key")).collect();
    Keyring::from_keys(keys).expect("ring")
}

fn guard(keys: &[&str], label: &str) -> Guard {
    Guard::new(ring(keys), false, label, rand::random())
}

fn packet() -> Vec<u8> {
    envelope::seal(Kind::Swim, b"an alive about somebody")
}

#[test]
fn a_sealed_packet_opens_to_the_plaintext_envelope_and_costs_28_bytes() {
    let (mut a, mut b) = (guard(&[K1], ""), guard(&[K1], ""));
    let plain = packet();
    let sealed = a.seal(Channel::Datagram, &plain, NOW).into_owned();
    assert_eq!(sealed.len(), plain.len() + SEAL_OVERHEAD);
    assert_ne!(
        &sealed[HEADER_LEN + NONCE_LEN..][..8],
        &plain[HEADER_LEN..][..8]
    );
    let opened = b.open(Channel::Datagram, &sealed, NOW).expect("opens");
    assert_eq!(opened.as_ref(), plain.as_slice());
    assert_eq!(
        envelope::open(&opened),
        Ok((Kind::Swim, &plain[HEADER_LEN..]))
    );
}

#[test]
fn plaintext_without_key_or_label_passes_unchanged_both_ways() {
    let mut g = Guard::new(None, false, "", 1);
    let plain = packet();
    assert!(matches!(
        g.seal(Channel::Datagram, &plain, NOW),
        Cow::Borrowed(_)
    ));
    assert!(matches!(
        g.open(Channel::Datagram, &plain, NOW),
        Ok(Cow::Borrowed(_))
    ));
    // Garbage goes on to the engine, which counts it as it always did.
    assert!(g.open(Channel::Datagram, b"xx", NOW).is_ok());
}

#[test]
fn each_refused_packet_has_its_reason() {
    let mut sealed_node = guard(&[K1], "");
    let mut plain_node = Guard::new(None, false, "", 2);
    let mut other_key = guard(&[K2], "");
    let plain = packet();
    let sealed = guard(&[K1], "")
        .seal(Channel::Datagram, &plain, NOW)
        .into_owned();
    let reason = |r: Result<Cow<'_, [u8]>, Refusal>| r.err().map(|e| e.reason());
    assert_eq!(
        reason(sealed_node.open(Channel::Datagram, &plain, NOW)),
        Some("plaintext")
    );
    assert_eq!(
        reason(plain_node.open(Channel::Datagram, &sealed, NOW)),
        Some("no_key")
    );
    assert_eq!(
        reason(other_key.open(Channel::Datagram, &sealed, NOW)),
        Some("unknown_key")
    );
    assert_eq!(
        reason(sealed_node.open(Channel::Datagram, &sealed[..20], NOW)),
        Some("truncated")
    );
    assert_eq!(
        reason(sealed_node.open(Channel::Datagram, b"SH", NOW)),
        Some("truncated")
    );
    assert_eq!(
        reason(sealed_node.open(Channel::Datagram, b"XXXXXXXXX", NOW)),
        Some("malformed")
    );
    for at in [3, HEADER_LEN + 2, sealed.len() / 2, sealed.len() - 1] {
        let mut bad = sealed.clone();
        bad[at] ^= 0x40;
        assert_eq!(
            reason(sealed_node.open(Channel::Datagram, &bad, NOW)),
            Some("tampered"),
            "{at}"
        );
    }
    let msg = Refusal::UnknownKey(7).to_string();
    assert!(msg.contains("unknown key"), "{msg}");
}

#[test]
fn a_replayed_packet_is_refused_however_late_it_comes() {
    let (mut a, mut b) = (guard(&[K1], ""), guard(&[K1], ""));
    let first = a.seal(Channel::Datagram, &packet(), NOW).into_owned();
    let second = a.seal(Channel::Datagram, &packet(), NOW).into_owned();
    assert!(b.open(Channel::Datagram, &second, NOW).is_ok());
    assert!(
        b.open(Channel::Datagram, &first, NOW).is_ok(),
        "out of order is fine"
    );
    assert_eq!(
        b.open(Channel::Datagram, &first, NOW + 10),
        Err(Refusal::Replayed)
    );
    assert_eq!(
        b.open(Channel::Datagram, &second, NOW + 10),
        Err(Refusal::Replayed)
    );
    // A fresh receiver (it restarted) still refuses one from long ago.
    let mut fresh = guard(&[K1], "");
    assert_eq!(
        fresh.open(Channel::Datagram, &first, NOW + 61),
        Err(Refusal::Stale(61))
    );
}

#[test]
fn a_datagram_moved_into_a_stream_frame_is_refused() {
    let (mut a, mut b) = (guard(&[K1], ""), guard(&[K1], ""));
    let d = a.seal(Channel::Datagram, &packet(), NOW).into_owned();
    assert_eq!(b.open(Channel::Stream, &d, NOW), Err(Refusal::Tampered));
    let f = a.seal(Channel::Stream, &packet(), NOW).into_owned();
    assert_eq!(b.open(Channel::Datagram, &f, NOW), Err(Refusal::Tampered));
}

#[test]
fn stream_frames_and_datagrams_count_apart() {
    let (mut a, mut b) = (guard(&[K1], ""), guard(&[K1], ""));
    let frame = a.seal(Channel::Stream, &packet(), NOW).into_owned();
    for _ in 0..500 {
        let d = a.seal(Channel::Datagram, &packet(), NOW).into_owned();
        assert!(b.open(Channel::Datagram, &d, NOW).is_ok());
    }
    assert!(
        b.open(Channel::Stream, &frame, NOW).is_ok(),
        "a late frame still opens"
    );
}

#[test]
fn the_cluster_label_is_authenticated_when_sealed_and_checked_when_plain() {
    let mut a = guard(&[K1], "blue");
    let sealed = a.seal(Channel::Datagram, &packet(), NOW).into_owned();
    assert_eq!(
        sealed.len(),
        packet().len() + SEAL_OVERHEAD,
        "the label is not carried"
    );
    let mut red = guard(&[K1], "red");
    assert_eq!(
        red.open(Channel::Datagram, &sealed, NOW),
        Err(Refusal::Tampered)
    );
    let mut blue_too = guard(&[K1], "blue");
    assert!(blue_too.open(Channel::Datagram, &sealed, NOW).is_ok());

    let mut blue = Guard::new(None, false, "blue", 1);
    let labelled = blue.seal(Channel::Datagram, &packet(), NOW).into_owned();
    assert_eq!(labelled[4], LABELLED);
    let mut same = Guard::new(None, false, "blue", 2);
    let opened = same
        .open(Channel::Datagram, &labelled, NOW)
        .expect("same cluster");
    assert_eq!(opened.as_ref(), packet().as_slice());
    let refused = Guard::new(None, false, "red", 3).open(Channel::Datagram, &labelled, NOW);
    assert_eq!(
        refused.err().map(|e| e.to_string()),
        Some("belong to cluster \"blue\", not \"red\" (--cluster)".to_string())
    );
    let plain = packet();
    let unlabelled = Guard::new(None, false, "red", 4).open(Channel::Datagram, &plain, NOW);
    assert_eq!(unlabelled.err().map(|e| e.reason()), Some("wrong_cluster"));
    let no_label_here = Guard::new(None, false, "", 5).open(Channel::Datagram, &labelled, NOW);
    assert_eq!(
        no_label_here.err().map(|e| e.reason()),
        Some("wrong_cluster")
    );
}

#[test]
fn during_a_rolling_upgrade_plaintext_is_accepted_only_when_asked() {
    let mut upgrading = Guard::new(ring(&[K1]), true, "", 1);
    let plain = packet();
    assert!(upgrading.open(Channel::Datagram, &plain, NOW).is_ok());
    assert!(upgrading.accepts_plaintext());
    let sealed = upgrading
        .seal(Channel::Datagram, &packet(), NOW)
        .into_owned();
    assert_eq!(
        sealed[4],
        Key::parse(K1).expect("k").id(),
        "it sends sealed"
    );
}

#[test]
fn the_first_upgrade_step_sends_plaintext_and_accepts_both() {
    let mut step1 = Guard::new(ring(&[K1]), false, "", 1).sending_plaintext(true);
    let plain = packet();
    assert!(matches!(
        step1.seal(Channel::Datagram, &plain, NOW),
        Cow::Borrowed(_)
    ));
    assert!(step1.open(Channel::Datagram, &plain, NOW).is_ok());
    let sealed = guard(&[K1], "")
        .seal(Channel::Datagram, &plain, NOW)
        .into_owned();
    assert!(step1.open(Channel::Datagram, &sealed, NOW).is_ok());
    assert!(step1.accepts_plaintext() && step1.sends_plaintext());
}

#[test]
fn a_ring_opens_packets_of_any_of_its_keys_and_seals_with_the_primary() {
    let mut old = guard(&[K1], "");
    let mut both = guard(&[K2, K1], "");
    let from_old = old.seal(Channel::Datagram, &packet(), NOW).into_owned();
    assert!(both.open(Channel::Datagram, &from_old, NOW).is_ok());
    let from_both = both.seal(Channel::Datagram, &packet(), NOW).into_owned();
    assert_eq!(from_both[4], Key::parse(K2).expect("k").id());
    assert_eq!(
        old.open(Channel::Datagram, &from_both, NOW)
            .err()
            .map(|e| e.reason()),
        Some("unknown_key")
    );
}

#[test]
fn the_overhead_covers_what_a_packet_grows_by() {
    assert_eq!(overhead(false, ""), 0);
    assert_eq!(overhead(false, "blue"), 5);
    assert_eq!(overhead(true, "blue"), SEAL_OVERHEAD);
    let long = "x".repeat(MAX_LABEL_LEN);
    let mut step1 = Guard::new(ring(&[K1]), false, &long, 1).sending_plaintext(true);
    let grown = step1.seal(Channel::Datagram, &packet(), NOW).len() - packet().len();
    assert_eq!(grown, step1.overhead());
}

#[test]
fn labels_are_checked() {
    assert!(validate_label("prod-eu.1").is_ok());
    assert!(validate_label("").is_err());
    assert!(validate_label("a b").is_err());
    assert!(validate_label(&"x".repeat(65)).is_err());
}
