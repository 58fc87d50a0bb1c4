//! The envelope around every datagram and stream frame.
//!
//! ```text
//! +-------+-------+---------+------+--------+-------------+
//! | 'S'   | 'H'   | version | kind | key id | payload ... |
//! +-------+-------+---------+------+--------+-------------+
//! ```
//! `key id` 0 means a plaintext payload. The driver's [`crate::seal::Guard`] uses the other
//! values on the wire (255: plaintext with a cluster label, 1 to 254: sealed with that key) and
//! hands the engine key id 0 again once a packet is opened. Unknown versions, kinds and keys
//! are rejected with an [`EnvelopeError`], never a panic.

use thiserror::Error;

/// The two magic bytes every shoal packet starts with.
pub const MAGIC: [u8; 2] = *b"SH";
/// The protocol version this build speaks.
pub const VERSION: u8 = 1;
/// Bytes the envelope adds in front of the payload.
pub const HEADER_LEN: usize = 5;

/// What a packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A foca (SWIM) message.
    Swim,
    /// A state digest: the receiver starts a push-pull when its own differs.
    Digest,
    /// A push-pull frame over TCP (either direction).
    PushPull,
    /// A discovery beacon on the multicast group.
    Beacon,
    /// "I have left": sent by a leaving node straight to every member.
    Leave,
    /// A TCP ping (the fallback probe) or its answer, over TCP on the gossip port.
    Ping,
    /// A foca (SWIM) message behind the sender's 4-byte state digest (big-endian): every
    /// message carries the anti-entropy check, so no datagram of its own is needed.
    SwimDigest,
    /// An ack or an answer to a query, sent to its origin (or through a relay).
    QueryResponse,
    /// A user event, query, tag change or leave intent sent straight to a member besides its
    /// gossip.
    Item,
    /// "I have your leave intent": a member's answer to a leaving node's direct intent, so the
    /// leaving node sends it again only to those that did not answer.
    LeaveAck,
}

impl Kind {
    fn to_byte(self) -> u8 {
        match self {
            Kind::Swim => 1,
            Kind::Digest => 2,
            Kind::PushPull => 3,
            Kind::Beacon => 4,
            Kind::Leave => 5,
            Kind::Ping => 6,
            Kind::SwimDigest => 7,
            Kind::QueryResponse => 8,
            Kind::Item => 9,
            Kind::LeaveAck => 10,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Kind::Swim),
            2 => Some(Kind::Digest),
            3 => Some(Kind::PushPull),
            4 => Some(Kind::Beacon),
            5 => Some(Kind::Leave),
            6 => Some(Kind::Ping),
            7 => Some(Kind::SwimDigest),
            8 => Some(Kind::QueryResponse),
            9 => Some(Kind::Item),
            10 => Some(Kind::LeaveAck),
            _ => None,
        }
    }
}

/// Why a packet was dropped. Nothing changed in the node's state.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Shorter than the envelope header.
    #[error("packet of {0} bytes is shorter than the {HEADER_LEN}-byte envelope")]
    Truncated(usize),
    /// Does not start with the shoal magic bytes.
    #[error("not a shoal packet (bad magic)")]
    BadMagic,
    /// A protocol version this build does not speak.
    #[error("unsupported protocol version {0} (this build speaks {VERSION})")]
    Version(u8),
    /// A message kind this build does not know.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// Sealed with a key this agent does not have.
    #[error("packet sealed with key id {0}, but encryption is not configured")]
    UnknownKey(u8),
}

/// Writes the envelope header for `kind` into `out` (cleared first), ready for the payload.
pub fn begin(kind: Kind, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind.to_byte());
    out.push(0);
}

/// Wraps `payload` in an envelope of `kind`.
pub fn seal(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    begin(kind, &mut out);
    out.extend_from_slice(payload);
    out
}

/// Checks the magic and version (not the kind: it may be sealed with the rest) and returns the
/// key id.
pub fn header_key_id(packet: &[u8]) -> Result<u8, EnvelopeError> {
    if packet.len() < HEADER_LEN {
        return Err(EnvelopeError::Truncated(packet.len()));
    }
    if packet[..2] != MAGIC {
        return Err(EnvelopeError::BadMagic);
    }
    if packet[2] != VERSION {
        return Err(EnvelopeError::Version(packet[2]));
    }
    Ok(packet[4])
}

/// Checks the envelope and returns the kind and the payload.
pub fn open(packet: &[u8]) -> Result<(Kind, &[u8]), EnvelopeError> {
    if packet.len() < HEADER_LEN {
        return Err(EnvelopeError::Truncated(packet.len()));
    }
    if packet[..2] != MAGIC {
        return Err(EnvelopeError::BadMagic);
    }
    if packet[2] != VERSION {
        return Err(EnvelopeError::Version(packet[2]));
    }
    let kind = Kind::from_byte(packet[3]).ok_or(EnvelopeError::UnknownKind(packet[3]))?;
    if packet[4] != 0 {
        return Err(EnvelopeError::UnknownKey(packet[4]));
    }
    Ok((kind, &packet[HEADER_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_packet_opens_to_the_same_kind_and_payload() {
        let packet = seal(Kind::Digest, b"hello");
        assert_eq!(open(&packet), Ok((Kind::Digest, &b"hello"[..])));
    }

    #[test]
    fn every_kind_keeps_its_number() {
        let kinds = [
            (Kind::Swim, 1),
            (Kind::Digest, 2),
            (Kind::PushPull, 3),
            (Kind::Beacon, 4),
            (Kind::Leave, 5),
            (Kind::Ping, 6),
            (Kind::SwimDigest, 7),
            (Kind::QueryResponse, 8),
            (Kind::Item, 9),
            (Kind::LeaveAck, 10),
        ];
        for (kind, byte) in kinds {
            let packet = seal(kind, b"");
            assert_eq!((packet[3], open(&packet).map(|(k, _)| k)), (byte, Ok(kind)));
        }
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        assert_eq!(open(b"SH"), Err(EnvelopeError::Truncated(2)));
        assert_eq!(open(b"XXXXXXX"), Err(EnvelopeError::BadMagic));
        assert_eq!(open(b"SH\x09\x01\x00"), Err(EnvelopeError::Version(9)));
        assert_eq!(
            open(b"SH\x01\x7f\x00"),
            Err(EnvelopeError::UnknownKind(0x7f))
        );
        assert_eq!(open(b"SH\x01\x01\x03"), Err(EnvelopeError::UnknownKey(3)));
    }
}
