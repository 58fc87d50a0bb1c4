//! Sealed gossip: AES-GCM around every datagram and stream frame, the cluster label, and
//! replay protection. Pure: the driver passes the wall-clock time in, and holds the [`Guard`]
//! (one per node) behind a lock.
//!
//! ```text
//! plaintext (today's format, no label):  'S' 'H' version kind 0    payload
//! plaintext with a cluster label:        'S' 'H' version kind 255  len label payload
//! sealed:                                'S' 'H' version kind id   nonce(12) ciphertext tag(16)
//! ```
//! A sealed packet's key id (1 to 254) names the key ([`Key::id`]), so the receiver tries that
//! key, not the whole ring. The associated data is the 5-byte header and the cluster label: a
//! packet sealed for another cluster, or with its kind byte changed, fails authentication.
//! The nonce is `instance | unix seconds | counter` (see [`replay`]): unique per key as long
//! as no two senders pick the same random instance id in the same second at the same counter,
//! and the base of the replay check. Sealing adds [`SEAL_OVERHEAD`] bytes per packet.
//!
//! [`Guard::open`] hands the engine a plaintext envelope (key id 0), so nothing past the
//! driver knows whether a packet was sealed; every packet the guard refuses is counted by
//! [`Refusal::reason`] and never decoded.

pub mod keyring;
pub mod replay;

use std::borrow::Cow;

use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace, Tag};
use thiserror::Error;

use crate::envelope::{self, EnvelopeError, HEADER_LEN};
pub use keyring::{Key, KeyError, Keyring, generate};
use replay::{ReplayGuard, Stale};

/// Nonce bytes in a sealed packet.
pub const NONCE_LEN: usize = 12;
/// Authentication tag bytes in a sealed packet.
pub const TAG_LEN: usize = 16;
/// Bytes sealing adds to a packet: nonce and tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// The key-id value of a plaintext packet that carries a cluster label.
pub const LABELLED: u8 = 255;
/// Longest cluster label, in bytes.
pub const MAX_LABEL_LEN: usize = 64;

/// Which counter a packet takes: datagrams and stream frames are counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// UDP: gossip, digests, leaves, query answers, beacons.
    Datagram,
    /// A TCP frame: push-pull states and TCP pings.
    Stream,
}

/// Why the guard dropped a packet before decoding it. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    /// A plaintext packet, and this node accepts only sealed ones.
    #[error("are plaintext, but this agent only accepts sealed packets (--encrypt)")]
    Plaintext,
    /// A sealed packet, and this node has no key.
    #[error("are sealed, but this agent has no encryption key (--encrypt)")]
    NoKey,
    /// Sealed with a key id no key of the ring has.
    #[error("are sealed with an unknown key (key id {0})")]
    UnknownKey(u8),
    /// Too short for its header, label or nonce and tag.
    #[error("are truncated ({0} bytes)")]
    Truncated(usize),
    /// Failed authentication: changed on the way, forged, or sealed for another cluster label.
    #[error("failed authentication (tampered, forged, or sealed for another --cluster)")]
    Tampered,
    /// Authentic, but already received (or too far behind the newest one from its sender).
    #[error("are replays of packets already received")]
    Replayed,
    /// Authentic, but stamped too far from this node's clock.
    #[error(
        "are stamped {0} s away from this agent's clock (a replay from earlier, or clocks apart)"
    )]
    Stale(u64),
    /// A plaintext packet of another cluster label.
    #[error("belong to cluster {theirs:?}, not {ours:?} (--cluster)")]
    WrongCluster {
        /// Their label (empty: none).
        theirs: String,
        /// Ours.
        ours: String,
    },
    /// Not a shoal envelope at all.
    #[error("are malformed: {0}")]
    Malformed(EnvelopeError),
}

impl Refusal {
    /// The counter this refusal is counted under: `plaintext`, `no_key`, `unknown_key`,
    /// `truncated`, `tampered`, `replayed`, `stale`, `wrong_cluster`, `malformed`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Plaintext => "plaintext",
            Refusal::NoKey => "no_key",
            Refusal::UnknownKey(_) => "unknown_key",
            Refusal::Truncated(_) => "truncated",
            Refusal::Tampered => "tampered",
            Refusal::Replayed => "replayed",
            Refusal::Stale(_) => "stale",
            Refusal::WrongCluster { .. } => "wrong_cluster",
            Refusal::Malformed(_) => "malformed",
        }
    }
}

/// A cluster label that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("cluster label {0:?}: use 1 to {MAX_LABEL_LEN} letters, digits, '-', '_' or '.'")]
pub struct LabelError(pub String);

/// Checks a `--cluster` label.
pub fn validate_label(label: &str) -> Result<(), LabelError> {
    let ok = !label.is_empty()
        && label.len() <= MAX_LABEL_LEN
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    ok.then_some(())
        .ok_or_else(|| LabelError(label.to_string()))
}

/// One node's sealing state: the keyring, the label, its own nonce counters and the replay
/// windows of its peers.
#[derive(Debug)]
pub struct Guard {
    ring: Option<Keyring>,
    accept_plaintext: bool,
    send_plaintext: bool,
    label: String,
    instance: u32,
    counters: [u32; 2],
    replay: ReplayGuard,
}

impl Guard {
    /// A guard sealing with `ring`'s primary (`None`: plaintext), accepting plaintext too when
    /// `accept_plaintext`, for cluster `label` (empty: none). `instance` must be random.
    pub fn new(ring: Option<Keyring>, accept_plaintext: bool, label: &str, instance: u32) -> Self {
        Self {
            ring,
            accept_plaintext,
            send_plaintext: false,
            label: label.to_string(),
            instance,
            counters: [0, 0],
            replay: ReplayGuard::default(),
        }
    }

    /// With `on`, a guard with a keyring still sends plaintext (and accepts both): the first
    /// step of a rolling upgrade to encryption, while some members have no key yet.
    pub fn sending_plaintext(mut self, on: bool) -> Self {
        self.send_plaintext = on && self.ring.is_some();
        self
    }

    /// Whether packets go out plaintext although a keyring is configured.
    pub fn sends_plaintext(&self) -> bool {
        self.send_plaintext
    }

    /// The keyring; `None` when gossip is plaintext.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.ring.as_ref()
    }

    /// The keyring, to change it; `None` when gossip is plaintext.
    pub fn keyring_mut(&mut self) -> Option<&mut Keyring> {
        self.ring.as_mut()
    }

    /// Whether plaintext packets are accepted beside sealed ones.
    pub fn accepts_plaintext(&self) -> bool {
        self.accept_plaintext || self.send_plaintext
    }

    /// Bytes the guard adds to every packet (sealing, or the plaintext label).
    pub fn overhead(&self) -> usize {
        overhead(self.ring.is_some(), &self.label)
    }

    /// Seals the plaintext envelope `packet` (as [`envelope::seal`] builds it) for `channel`
    /// at `now` (unix seconds). Plaintext with no label: `packet` as it is.
    pub fn seal<'a>(&mut self, channel: Channel, packet: &'a [u8], now: u64) -> Cow<'a, [u8]> {
        if packet.len() < HEADER_LEN {
            return Cow::Borrowed(packet);
        }
        let Some(ring) = self.ring.as_ref().filter(|_| !self.send_plaintext) else {
            if self.label.is_empty() {
                return Cow::Borrowed(packet);
            }
            let mut out = Vec::with_capacity(packet.len() + 1 + self.label.len());
            out.extend_from_slice(&packet[..HEADER_LEN - 1]);
            out.push(LABELLED);
            out.push(self.label.len() as u8);
            out.extend_from_slice(self.label.as_bytes());
            out.extend_from_slice(&packet[HEADER_LEN..]);
            return Cow::Owned(out);
        };
        let key = ring.primary();
        let ch = match channel {
            Channel::Datagram => 0,
            Channel::Stream => 1,
        };
        if self.counters[ch] == (1 << 31) - 1 {
            // A new instance id rather than a reused nonce; an odd step visits every value.
            self.instance = self.instance.wrapping_add(0x9E37_79B9);
            self.counters = [0, 0];
        }
        self.counters[ch] += 1;
        let counter = (ch as u32) << 31 | self.counters[ch];
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&self.instance.to_be_bytes());
        nonce[4..8].copy_from_slice(&(now as u32).to_be_bytes());
        nonce[8..].copy_from_slice(&counter.to_be_bytes());
        let mut out = Vec::with_capacity(packet.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&packet[..HEADER_LEN - 1]);
        out.push(key.id());
        let aad = aad(&out[..HEADER_LEN], &self.label);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&packet[HEADER_LEN..]);
        let start = HEADER_LEN + NONCE_LEN;
        let tag = key.cipher.seal(&nonce, &aad, &mut out[start..]);
        out.extend_from_slice(&tag);
        Cow::Owned(out)
    }

    /// Opens `packet` received on `channel` at `now` (unix seconds): the plaintext envelope
    /// for the engine, or why it is refused. With no key and no label, anything but a sealed
    /// or labelled packet passes as it is (the engine judges it, as it always did).
    pub fn open<'a>(
        &mut self,
        channel: Channel,
        packet: &'a [u8],
        now: u64,
    ) -> Result<Cow<'a, [u8]>, Refusal> {
        let open_mode = self.ring.is_none() && self.label.is_empty();
        let key_id = match envelope::header_key_id(packet) {
            Ok(id) => id,
            Err(_) if open_mode => return Ok(Cow::Borrowed(packet)),
            Err(EnvelopeError::Truncated(n)) => return Err(Refusal::Truncated(n)),
            Err(e) => return Err(Refusal::Malformed(e)),
        };
        match key_id {
            0 => {
                self.plaintext_allowed()?;
                if !self.label.is_empty() {
                    return Err(self.wrong_cluster(""));
                }
                Ok(Cow::Borrowed(packet))
            }
            LABELLED => {
                let len = usize::from(
                    *packet
                        .get(HEADER_LEN)
                        .ok_or(Refusal::Truncated(packet.len()))?,
                );
                let body = HEADER_LEN + 1 + len;
                let label = packet
                    .get(HEADER_LEN + 1..body)
                    .ok_or(Refusal::Truncated(packet.len()))?;
                self.plaintext_allowed()?;
                if label != self.label.as_bytes() {
                    return Err(self.wrong_cluster(&String::from_utf8_lossy(label)));
                }
                let mut out = Vec::with_capacity(packet.len() - 1 - len);
                out.extend_from_slice(&packet[..HEADER_LEN - 1]);
                out.push(0);
                out.extend_from_slice(&packet[body..]);
                Ok(Cow::Owned(out))
            }
            id => self.open_sealed(id, channel, packet, now).map(Cow::Owned),
        }
    }

    fn plaintext_allowed(&self) -> Result<(), Refusal> {
        match self.ring.is_some() && !self.accepts_plaintext() {
            true => Err(Refusal::Plaintext),
            false => Ok(()),
        }
    }

    fn wrong_cluster(&self, theirs: &str) -> Refusal {
        Refusal::WrongCluster {
            theirs: theirs.to_string(),
            ours: self.label.clone(),
        }
    }

    fn open_sealed(
        &mut self,
        id: u8,
        channel: Channel,
        packet: &[u8],
        now: u64,
    ) -> Result<Vec<u8>, Refusal> {
        let ring = self.ring.as_ref().ok_or(Refusal::NoKey)?;
        let mut keys = ring.with_id(id).peekable();
        if keys.peek().is_none() {
            return Err(Refusal::UnknownKey(id));
        }
        if packet.len() < HEADER_LEN + SEAL_OVERHEAD {
            return Err(Refusal::Truncated(packet.len()));
        }
        let aad = aad(&packet[..HEADER_LEN], &self.label);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&packet[HEADER_LEN..HEADER_LEN + NONCE_LEN]);
        let body = &packet[HEADER_LEN + NONCE_LEN..packet.len() - TAG_LEN];
        let tag = &packet[packet.len() - TAG_LEN..];
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(&packet[..HEADER_LEN - 1]);
        out.push(0);
        let opened = keys.any(|key| {
            out.truncate(HEADER_LEN);
            out.extend_from_slice(body);
            key.cipher.open(&nonce, &aad, &mut out[HEADER_LEN..], tag)
        });
        if !opened {
            return Err(Refusal::Tampered);
        }
        let field = |at: usize| {
            u32::from_be_bytes([nonce[at], nonce[at + 1], nonce[at + 2], nonce[at + 3]])
        };
        let (instance, time, counter) = (field(0), field(4), field(8));
        // A datagram's seal moved into a TCP frame, or the other way round.
        if (counter >> 31 == 1) != (channel == Channel::Stream) {
            return Err(Refusal::Tampered);
        }
        self.replay
            .check(instance, time, counter, now)
            .map_err(|stale| match stale {
                Stale::Time(skew) => Refusal::Stale(skew),
                Stale::Replayed => Refusal::Replayed,
            })?;
        self.replay.record(instance, counter, now);
        Ok(out)
    }
}

/// Bytes added per packet, at most: [`SEAL_OVERHEAD`] when sealed, the label and its length
/// byte for labelled plaintext, else none. With a key and a label, the larger of the two (in
/// the first step of a rolling upgrade a node with a key sends labelled plaintext).
pub fn overhead(sealed: bool, label: &str) -> usize {
    let labelled = if label.is_empty() { 0 } else { 1 + label.len() };
    match sealed {
        true => SEAL_OVERHEAD.max(labelled),
        false => labelled,
    }
}

fn aad(header: &[u8], label: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + label.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(label.as_bytes());
    aad
}

impl keyring::Cipher {
    fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        fn run<A: AeadInPlace>(a: &A, n: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Tag<A> {
            a.encrypt_in_place_detached(GenericArray::from_slice(n), aad, buf)
                .expect("AES-GCM seals any packet under 64 GiB")
        }
        let tag: [u8; TAG_LEN] = match self {
            keyring::Cipher::A128(c) => run(c.as_ref(), nonce, aad, buf).into(),
            keyring::Cipher::A192(c) => run(c.as_ref(), nonce, aad, buf).into(),
            keyring::Cipher::A256(c) => run(c.as_ref(), nonce, aad, buf).into(),
        };
        tag
    }

    fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &[u8]) -> bool {
        fn run<A: AeadInPlace>(
            a: &A,
            n: &[u8; NONCE_LEN],
            aad: &[u8],
            buf: &mut [u8],
            t: &[u8],
        ) -> bool {
            a.decrypt_in_place_detached(
                GenericArray::from_slice(n),
                aad,
                buf,
                GenericArray::from_slice(t),
            )
            .is_ok()
        }
        match self {
            keyring::Cipher::A128(c) => run(c.as_ref(), nonce, aad, buf, tag),
            keyring::Cipher::A192(c) => run(c.as_ref(), nonce, aad, buf, tag),
            keyring::Cipher::A256(c) => run(c.as_ref(), nonce, aad, buf, tag),
        }
    }
}

/// A key's envelope id: from the tag of an empty message under an all-zero nonce (a key
/// check value; no packet uses that nonce, as its time field is never zero), mapped to 1..=254.
pub(crate) fn key_id(cipher: &keyring::Cipher) -> u8 {
    let tag = cipher.seal(&[0u8; NONCE_LEN], &[], &mut []);
    1 + tag[0] % 254
}

#[cfg(test)]
mod tests;
