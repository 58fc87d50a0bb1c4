//! Well-formed inputs of each target, and the malformed ones worth keeping: the starting
//! corpus (`fuzz/corpus/<target>/`, written from here by `tests/corpus.rs` when
//! `SHOAL_WRITE_SEEDS=1`) and the packets the forged-packet tests send.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use foca::{Codec, Header, Member, Message, PostcardCodec, State};
use shoal_core::Identity;
use shoal_core::anti_entropy::{self, Digest, SyncState};
use shoal_core::broadcast::Broadcast;
use shoal_core::discover::{self, Beacon};
use shoal_core::envelope::{self, Kind};
use shoal_core::query::QueryResponse;
use shoal_core::sim::Sim;

use crate::stranger;

/// A foca message from `src` to `dst` carrying `updates`, in a SWIM envelope: what a forger
/// sends to make a member look alive, suspect or down.
pub fn swim(
    src: Identity,
    dst: Identity,
    message: Message<Identity>,
    updates: &[Member<Identity>],
) -> Vec<u8> {
    let mut body = Vec::new();
    let header = Header {
        src,
        src_incarnation: 0,
        dst,
        message,
    };
    let mut codec = PostcardCodec;
    if let Err(error) = codec.encode_header(&header, &mut body) {
        panic!("header encodes: {error}");
    }
    if !updates.is_empty() {
        body.extend_from_slice(&(updates.len() as u16).to_be_bytes());
        for member in updates {
            if let Err(error) = codec.encode_member(member, &mut body) {
                panic!("member encodes: {error}");
            }
        }
    }
    envelope::seal(Kind::Swim, &body)
}

/// A foca broadcast-only message from `src` to `dst` carrying the custom broadcast `items`
/// (metas, leave intents, force-leaves...), in a SWIM envelope: what a member that relays
/// gossip sends, or a forger who joined a plaintext cluster.
pub fn broadcast(src: Identity, dst: Identity, items: &[Broadcast]) -> Vec<u8> {
    let mut body = Vec::new();
    let header = Header {
        src,
        src_incarnation: 0,
        dst,
        message: Message::Broadcast,
    };
    if let Err(error) = PostcardCodec.encode_header(&header, &mut body) {
        panic!("header encodes: {error}");
    }
    for item in items {
        let data = match item.encode() {
            Ok(data) => data,
            Err(error) => panic!("item encodes: {error}"),
        };
        body.extend_from_slice(&(data.len() as u16).to_be_bytes());
        body.extend_from_slice(&data);
    }
    envelope::seal(Kind::Swim, &body)
}

/// A broadcast item sent straight to a member (envelope kind 9), as a leaving member sends
/// its intent or a member its new tags.
pub fn direct_item(item: &Broadcast) -> Vec<u8> {
    match item.encode() {
        Ok(data) => envelope::seal(Kind::Item, &data),
        Err(error) => panic!("item encodes: {error}"),
    }
}

/// A member's acknowledgement of `id`'s leave intent (envelope kind 10).
pub fn leave_ack(id: Identity) -> Vec<u8> {
    match postcard::to_stdvec(&id) {
        Ok(payload) => envelope::seal(Kind::LeaveAck, &payload),
        Err(error) => panic!("identity encodes: {error}"),
    }
}

/// A direct leave notice naming `id`.
pub fn leave_notice(id: Identity) -> Vec<u8> {
    match postcard::to_stdvec(&id) {
        Ok(payload) => envelope::seal(Kind::Leave, &payload),
        Err(error) => panic!("identity encodes: {error}"),
    }
}

/// A digest datagram that names `from` (the address a forger wants contacted).
pub fn digest(from: Identity) -> Vec<u8> {
    let digest = Digest {
        from,
        digest: 0x5eed,
        events: None,
    };
    match postcard::to_stdvec(&digest) {
        Ok(payload) => envelope::seal(Kind::Digest, &payload),
        Err(error) => panic!("digest encodes: {error}"),
    }
}

/// A push-pull stream: length prefix and frame of `state`.
pub fn stream_of(state: &SyncState) -> Vec<u8> {
    let body = match anti_entropy::encode_frame(state) {
        Ok(body) => body,
        Err(error) => panic!("state encodes: {error}"),
    };
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn with_endpoint(endpoint: u8, json: &str) -> Vec<u8> {
    let mut out = vec![endpoint];
    out.extend_from_slice(json.as_bytes());
    out
}

/// Every target's seeds: `(target, file name, input)`.
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let (a, b) = (Identity::new(Sim::addr(0)), Identity::new(Sim::addr(1)));
    let evil = Identity::new(stranger());
    let third = Identity::new(SocketAddr::from(([10, 0, 0, 200], 7948)));
    let forged_down = [Member::new(b, 1, State::Down)];
    let huge = Identity {
        addr: b.addr,
        generation: u64::MAX,
    };
    let query = QueryResponse {
        ltime: 1,
        id: 2,
        from: "n1".into(),
        ack: false,
        payload: b"ok".to_vec(),
        relay_to: Some(third.addr),
    };
    let answer = postcard::to_stdvec(&query).unwrap_or_default();
    let state = SyncState {
        from: Some(evil),
        members: vec![Member::new(b, 9, State::Down), Member::alive(huge)],
        intents: vec![(b, false)],
        ..SyncState::default()
    };
    let beacon = discover::encode(&Beacon {
        cluster: "prod".into(),
        from: third,
    })
    .unwrap_or_default();
    let mut seeds = vec![
        ("datagram", "ping", swim(evil, a, Message::Ping(1), &[])),
        (
            "datagram",
            "forged-down",
            swim(evil, a, Message::Ping(2), &forged_down),
        ),
        (
            "datagram",
            "spoofed-src",
            swim(b, a, Message::Ping(3), &forged_down),
        ),
        (
            "datagram",
            "huge-generation",
            swim(evil, a, Message::Gossip, &[Member::alive(huge)]),
        ),
        ("datagram", "leave-notice", leave_notice(b)),
        ("datagram", "leave-huge-generation", leave_notice(huge)),
        (
            "datagram",
            "relayed-leave-intent",
            broadcast(evil, a, &[Broadcast::Leave(b), Broadcast::ForceLeave(b)]),
        ),
        (
            "datagram",
            "direct-leave-intent",
            direct_item(&Broadcast::Leave(b)),
        ),
        ("datagram", "leave-ack", leave_ack(a)),
        ("datagram", "digest-third-party", digest(third)),
        (
            "datagram",
            "query-relay",
            envelope::seal(Kind::QueryResponse, &answer),
        ),
        (
            "datagram",
            "short-swim-digest",
            envelope::seal(Kind::SwimDigest, b"\0\0"),
        ),
        ("datagram", "bad-version", b"SH\x09\x01\x00".to_vec()),
        ("datagram", "empty", Vec::new()),
        ("push_pull_frame", "forged-state", stream_of(&state)),
        (
            "push_pull_frame",
            "empty-state",
            stream_of(&SyncState::default()),
        ),
        (
            "push_pull_frame",
            "declares-4mib-sends-nothing",
            (4u32 << 20).to_be_bytes().to_vec(),
        ),
        (
            "push_pull_frame",
            "over-limit",
            ((4u32 << 20) + 1).to_be_bytes().to_vec(),
        ),
        (
            "push_pull_frame",
            "short",
            b"\0\0\0\x10SH\x01\x03\x00".to_vec(),
        ),
        ("beacon", "third-party", beacon),
        ("beacon", "junk", b"SH\x01\x04\x00\xff\xff\xff".to_vec()),
        (
            "control_body",
            "join",
            with_endpoint(0, r#"{"addrs":["cluster:7948"],"replay":true}"#),
        ),
        (
            "control_body",
            "event",
            with_endpoint(1, r#"{"name":"deploy","payload":"v1"}"#),
        ),
        (
            "control_body",
            "query",
            with_endpoint(
                2,
                r#"{"name":"up","nodes":["n.*"],"tags":{"r":"("},"relay_factor":9}"#,
            ),
        ),
        (
            "control_body",
            "tags-newline",
            with_endpoint(3, r#"{"set":{"k":"a\nserver evil"},"delete":["x"]}"#),
        ),
        (
            "control_body",
            "force-leave",
            with_endpoint(4, r#"{"node":"n1"}"#),
        ),
        (
            "control_body",
            "deep-nesting",
            with_endpoint(3, &"[".repeat(4096)),
        ),
    ];
    let mut tags = BTreeMap::new();
    tags.insert("k".repeat(300), "v".repeat(5000));
    let big = serde_json::json!({ "set": tags }).to_string();
    seeds.push(("control_body", "tags-over-limit", with_endpoint(3, &big)));
    seeds
}
