//! Anti-entropy: the digest datagram and the push-pull frame of the full state (the wire
//! types and their encoding; the TCP side is `node::push_pull`).
//!
//! Every `sync_interval` a node sends its membership digest to one random member. A receiver
//! whose own digest differs opens a push-pull: both sides send their whole state (foca members,
//! metas, leave intents) in one length-prefixed frame each and apply the other's. That repairs
//! whatever gossip missed, in seconds rather than at the next full sync.
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

/// Largest push-pull frame accepted, in bytes.
pub const MAX_FRAME: usize = 4 << 20;

/// The digest datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Who sent it (where to push-pull).
    pub from: Identity,
    /// The sender's [`crate::membership::Membership::digest`].
    pub digest: u64,
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
        (Kind::PushPull, payload) => Ok(Frame::State(postcard::from_bytes(payload)?)),
        (Kind::Ping, payload) => Ok(Frame::Ping(postcard::from_bytes(payload)?)),
        (kind, _) => Err(FrameError::WrongKind(kind)),
    }
}

/// A push-pull frame that is not acceptable. Nothing was applied.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The frame was larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
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
        };
        let back = decode_frame(&encode_frame(&state).expect("encode")).expect("decode");
        assert_eq!(
            (back.from, back.members.len(), back.intents),
            (Some(id), 1, vec![(id, false)])
        );
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
}
