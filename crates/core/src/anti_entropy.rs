//! Anti-entropy: the digest datagram and the push-pull frame of the full state (the wire
//! types and their encoding; the TCP side is `node::push_pull`).
//!
//! Every `sync_interval` a node sends its membership digest to one random member. A receiver
//! whose own digest differs opens a push-pull: both sides send their whole state (foca members,
//! metas, leave intents) in one length-prefixed frame each and apply the other's. That repairs
//! whatever gossip missed, in seconds rather than at the next full sync.
//!
//! The state also carries the sender's event clock and its recent user events, then its
//! query clock (each after the fields of the format before, so a node that predates them
//! reads a new frame, ignoring the rest; and a frame from such a node still decodes here,
//! with no events or a query clock of 0).
//!
//! A frame is a big-endian `u32` length, then the enveloped ([`Kind::PushPull`]) postcard
//! [`SyncState`]. The length is checked against [`MAX_FRAME`] before anything is allocated.
//!
//! The same port carries the fallback probe ([`Kind::Ping`]): when a member does not answer a
//! UDP probe in time, the prober also asks it over TCP (memberlist's fallback), so UDP loss
//! alone never makes a healthy member suspect. The answer names the responder's identity.

use foca::Member as FocaMember;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::envelope::{self, EnvelopeError, Kind};
use crate::identity::Identity;
use crate::membership::Meta;
use crate::user_event::{EventDigest, UserEvent};

/// Largest push-pull frame accepted, in bytes.
pub const MAX_FRAME: usize = 4 << 20;

/// Most members (and, each, metas and leave intents) one push-pull state may carry: a state
/// with more is refused whole. Far above any cluster shoal is built for (a member's entry is
/// about 30 bytes, so a full [`MAX_FRAME`] could otherwise hold some 140,000 of them, each
/// handed to foca).
pub const MAX_SYNC_MEMBERS: usize = 16_384;

/// Most user events one push-pull state may carry (a node sends its recent ones, a few
/// hundred at most).
pub const MAX_SYNC_EVENTS: usize = 4096;

/// The digest datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Who sent it (where to push-pull).
    pub from: Identity,
    /// The sender's [`crate::membership::Membership::digest`].
    pub digest: u64,
    /// The sender's recent user events; `None` from a node that predates them (its digest
    /// then ends after `digest`).
    pub events: Option<EventDigest>,
}

/// Decodes a digest, also one of the first format (no `events`).
pub fn decode_digest(payload: &[u8]) -> Result<Digest, postcard::Error> {
    match postcard::from_bytes::<Digest>(payload) {
        Err(postcard::Error::DeserializeUnexpectedEnd) => {
            let (from, digest) = postcard::from_bytes::<(Identity, u64)>(payload)?;
            Ok(Digest {
                from,
                digest,
                events: None,
            })
        }
        decoded => decoded,
    }
}

/// The 4-byte form of a digest that every SWIM datagram carries ([`Kind::SwimDigest`]).
pub fn short_digest(digest: u64) -> u32 {
    (digest ^ (digest >> 32)) as u32
}

/// Everything one node knows, as sent in a push-pull.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncState {
    /// The sender's identity (`None` only in an empty state).
    pub from: Option<Identity>,
    /// foca's full membership state, the sender itself included.
    pub members: Vec<FocaMember<Identity>>,
    /// Every meta the sender knows.
    pub metas: Vec<Meta>,
    /// Leave intents: identity and whether it was an operator's force-leave.
    pub intents: Vec<(Identity, bool)>,
    /// The sender's user-event Lamport clock.
    pub event_clock: u64,
    /// The sender's recent user events, oldest first.
    pub events: Vec<UserEvent>,
    /// The sender's query Lamport clock.
    pub query_clock: u64,
}

/// The state as nodes without queries send it: [`SyncState`]'s first six fields.
#[derive(Deserialize)]
struct SecondFormat {
    from: Option<Identity>,
    members: Vec<FocaMember<Identity>>,
    metas: Vec<Meta>,
    intents: Vec<(Identity, bool)>,
    event_clock: u64,
    events: Vec<UserEvent>,
}

impl From<SecondFormat> for SyncState {
    fn from(old: SecondFormat) -> Self {
        Self {
            from: old.from,
            members: old.members,
            metas: old.metas,
            intents: old.intents,
            event_clock: old.event_clock,
            events: old.events,
            query_clock: 0,
        }
    }
}

/// The state as nodes without user events send it: [`SyncState`]'s first four fields.
#[derive(Deserialize)]
struct FirstFormat {
    from: Option<Identity>,
    members: Vec<FocaMember<Identity>>,
    metas: Vec<Meta>,
    intents: Vec<(Identity, bool)>,
}

impl From<FirstFormat> for SyncState {
    fn from(old: FirstFormat) -> Self {
        Self {
            from: old.from,
            members: old.members,
            metas: old.metas,
            intents: old.intents,
            ..Self::default()
        }
    }
}

/// A TCP ping, or its answer: who sends it and who it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingFrame {
    /// The sender (the prober, or the member answering).
    pub from: Identity,
    /// The identity the sender means to reach.
    pub to: Identity,
}

/// A decoded frame of the gossip port's TCP side.
#[derive(Debug)]
pub enum Frame {
    /// A push-pull state.
    State(SyncState),
    /// A TCP ping or its answer.
    Ping(PingFrame),
}

/// The frame body of a TCP ping or its answer.
pub fn encode_ping(ping: &PingFrame) -> Result<Vec<u8>, FrameError> {
    Ok(envelope::seal(Kind::Ping, &postcard::to_stdvec(ping)?))
}

/// Decodes any frame of the TCP side: a push-pull state or a ping.
pub fn decode_any(body: &[u8]) -> Result<Frame, FrameError> {
    match envelope::open(body)? {
        (Kind::PushPull, payload) => Ok(Frame::State(decode_state(payload)?)),
        (Kind::Ping, payload) => Ok(Frame::Ping(postcard::from_bytes(payload)?)),
        (kind, _) => Err(FrameError::WrongKind(kind)),
    }
}

/// A push-pull state, also one of the earlier formats (no event fields; no query clock),
/// within the entry limits.
fn decode_state(payload: &[u8]) -> Result<SyncState, FrameError> {
    let end = postcard::Error::DeserializeUnexpectedEnd;
    let state = match postcard::from_bytes::<SyncState>(payload) {
        Err(e) if e == end => match postcard::from_bytes::<SecondFormat>(payload) {
            Err(e) if e == end => postcard::from_bytes::<FirstFormat>(payload)?.into(),
            decoded => decoded?.into(),
        },
        decoded => decoded?,
    };
    check_entries(&state)?;
    Ok(state)
}

/// Refuses a state with more entries than [`MAX_SYNC_MEMBERS`] or [`MAX_SYNC_EVENTS`].
pub fn check_entries(state: &SyncState) -> Result<(), FrameError> {
    let counts = [
        ("members", state.members.len(), MAX_SYNC_MEMBERS),
        ("metas", state.metas.len(), MAX_SYNC_MEMBERS),
        ("leave intents", state.intents.len(), MAX_SYNC_MEMBERS),
        ("user events", state.events.len(), MAX_SYNC_EVENTS),
    ];
    for (what, count, limit) in counts {
        if count > limit {
            return Err(FrameError::TooManyEntries { what, count, limit });
        }
    }
    Ok(())
}

/// A push-pull frame that is not acceptable. Nothing was applied.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The frame was larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The stream ended before the declared length arrived.
    #[error("frame declared {declared} bytes but the stream ended after {got}")]
    Short {
        /// The declared length.
        declared: usize,
        /// The bytes that arrived.
        got: usize,
    },
    /// The state carried more entries of one kind than the limit.
    #[error("push-pull state with {count} {what} exceeds the limit of {limit}")]
    TooManyEntries {
        /// Which entries.
        what: &'static str,
        /// How many came.
        count: usize,
        /// The limit ([`MAX_SYNC_MEMBERS`] or [`MAX_SYNC_EVENTS`]).
        limit: usize,
    },
    /// Bad envelope.
    #[error("{0}")]
    Envelope(#[from] EnvelopeError),
    /// The envelope was fine but carried another kind.
    #[error("expected a push-pull frame, got {0:?}")]
    WrongKind(Kind),
    /// The payload did not decode (or, sending, did not encode).
    #[error("undecodable push-pull state: {0}")]
    Codec(#[from] postcard::Error),
}

/// The frame body for `state` (the length prefix is the caller's: `body.len()` as `u32`).
pub fn encode_frame(state: &SyncState) -> Result<Vec<u8>, FrameError> {
    check_entries(state)?;
    let body = envelope::seal(Kind::PushPull, &postcard::to_stdvec(state)?);
    check_len(body.len())?;
    Ok(body)
}

/// Checks a declared frame length before anything is allocated for it.
pub fn check_len(len: usize) -> Result<(), FrameError> {
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(())
}

/// Decodes a frame body written by [`encode_frame`].
pub fn decode_frame(body: &[u8]) -> Result<SyncState, FrameError> {
    match decode_any(body)? {
        Frame::State(state) => Ok(state),
        Frame::Ping(_) => Err(FrameError::WrongKind(Kind::Ping)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_round_trips_through_a_frame_and_other_kinds_are_refused() {
        let id = Identity::new("127.0.0.1:7948".parse().expect("addr"));
        let state = SyncState {
            from: Some(id),
            members: vec![FocaMember::alive(id)],
            metas: Vec::new(),
            intents: vec![(id, false)],
            event_clock: 9,
            events: vec![UserEvent {
                ltime: 8,
                name: "deploy".into(),
                payload: b"v42".to_vec(),
                coalesce: true,
            }],
            query_clock: 4,
        };
        let back = decode_frame(&encode_frame(&state).expect("encode")).expect("decode");
        assert_eq!(
            (back.from, back.members.len(), back.intents),
            (Some(id), 1, vec![(id, false)])
        );
        assert_eq!((back.event_clock, back.events), (9, state.events.clone()));
        assert_eq!(back.query_clock, 4);
        let digest = envelope::seal(Kind::Digest, b"x");
        assert!(matches!(
            decode_frame(&digest),
            Err(FrameError::WrongKind(Kind::Digest))
        ));
        assert!(matches!(
            check_len(MAX_FRAME + 1),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn a_state_over_an_entry_limit_is_refused_naming_the_limit() {
        let id = Identity::new("127.0.0.1:7948".parse().expect("addr"));
        let state = SyncState {
            intents: vec![(id, false); MAX_SYNC_MEMBERS + 1],
            ..SyncState::default()
        };
        let err = encode_frame(&state).expect_err("refused").to_string();
        assert!(
            err.contains("leave intents") && err.contains("16384"),
            "{err}"
        );
        let body = envelope::seal(
            Kind::PushPull,
            &postcard::to_stdvec(&state).expect("encode"),
        );
        assert!(matches!(
            decode_frame(&body),
            Err(FrameError::TooManyEntries {
                what: "leave intents",
                ..
            })
        ));
    }

    #[test]
    fn digests_of_both_formats_decode() {
        let from = Identity::new("127.0.0.1:7948".parse().expect("addr"));
        let events = Some(EventDigest {
            clock: 3,
            floor: 1,
            hash: 9,
        });
        let new = Digest {
            from,
            digest: 7,
            events,
        };
        let bytes = postcard::to_stdvec(&new).expect("encode");
        assert_eq!(decode_digest(&bytes).expect("new"), new);
        let old = postcard::to_stdvec(&(from, 7u64)).expect("encode");
        assert_eq!(decode_digest(&old).expect("old").events, None);
        assert!(decode_digest(b"\x01").is_err());
    }

    #[test]
    fn a_frame_of_the_first_format_decodes_with_no_events_and_garbage_is_an_error() {
        let id = Identity::new("127.0.0.1:7948".parse().expect("addr"));
        let first = (
            Some(id),
            vec![FocaMember::alive(id)],
            Vec::<Meta>::new(),
            vec![(id, true)],
        );
        let body = envelope::seal(
            Kind::PushPull,
            &postcard::to_stdvec(&first).expect("encode"),
        );
        let back = decode_frame(&body).expect("decodes");
        assert_eq!((back.from, back.intents), (Some(id), vec![(id, true)]));
        assert_eq!((back.event_clock, back.events.len()), (0, 0));
        let second = (
            Some(id),
            Vec::<FocaMember<Identity>>::new(),
            Vec::<Meta>::new(),
            Vec::<(Identity, bool)>::new(),
            7u64,
            Vec::<UserEvent>::new(),
        );
        let body = envelope::seal(
            Kind::PushPull,
            &postcard::to_stdvec(&second).expect("encode"),
        );
        let back = decode_frame(&body).expect("a frame without the query clock decodes");
        assert_eq!((back.event_clock, back.query_clock), (7, 0));
        let garbage = envelope::seal(Kind::PushPull, b"\x01\xff\xff");
        assert!(decode_frame(&garbage).is_err());
    }
}
