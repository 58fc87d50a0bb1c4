//! What goes into the engine: [`Command`]s (from the node's handle, its tasks or the
//! simulator) and datagrams, decoded here into a [`Datagram`] or a [`DropReason`].

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::sync::{mpsc, oneshot};

use super::join::JoinReply;
use super::outbox::{JoinId, Purpose};
use crate::anti_entropy::{self, Digest, SyncState};
use crate::envelope::{self, Kind};
use crate::error::{CommandError, DropReason};
use crate::identity::Identity;
use crate::query::{QueryParams, QueryResponse, QueryStarted, QueryUpdate};
use crate::role::Role;

/// A request to the engine. Those with a `reply` are answered once, when done.
pub(crate) enum Command {
    /// Operator join: resolve the targets, push-pull with every address; `replay`: run the
    /// user events the answers bring.
    Join {
        targets: Vec<String>,
        replay: bool,
        reply: JoinReply,
    },
    /// Leave gracefully; answered once the node has left.
    Leave { reply: oneshot::Sender<()> },
    /// Mark a failed member as left everywhere.
    ForceLeave {
        name: String,
        reply: oneshot::Sender<Result<(), CommandError>>,
    },
    /// Set some local tags, then delete others; answered with the tags now in effect.
    UpdateTags {
        set: BTreeMap<String, String>,
        delete: Vec<String>,
        reply: oneshot::Sender<Result<BTreeMap<String, String>, CommandError>>,
    },
    /// Announce new health check states or a new primary group (the whole [`Role`]).
    UpdateRole {
        role: Role,
        reply: oneshot::Sender<Result<(), CommandError>>,
    },
    /// An inbound push-pull: apply the peer's state, then answer with ours, which then
    /// carries what applying theirs changed (a suspected member's refutation above all).
    Exchange {
        state: SyncState,
        /// The connection's source.
        peer: SocketAddr,
        reply: oneshot::Sender<SyncState>,
    },
    /// A peer's state from a push-pull we opened; `join`: the operator join whose push-pull
    /// it answered.
    ApplyState {
        state: SyncState,
        join: Option<JoinId>,
        /// The address dialled.
        peer: SocketAddr,
    },
    /// Send a user event; answered with its Lamport time.
    UserEvent {
        name: String,
        payload: Vec<u8>,
        coalesce: bool,
        reply: oneshot::Sender<Result<u64, CommandError>>,
    },
    /// Send a query; answered with what the origin expects, then acks and answers go to
    /// `updates` (bounded by the caller: a full stream drops updates).
    Query {
        params: QueryParams,
        updates: mpsc::Sender<QueryUpdate>,
        reply: oneshot::Sender<Result<QueryStarted, CommandError>>,
    },
    /// This node's answer to a query it received (a handler's output).
    RespondQuery {
        ltime: u64,
        id: u64,
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<(), CommandError>>,
    },
    /// The push-pulls of an operator join are done: `joined` answered.
    JoinedVia { joined: usize, join: JoinId },
    /// Names resolved (`failed`: the targets that did not, with the error).
    Resolved {
        addrs: Vec<SocketAddr>,
        failed: Vec<(String, String)>,
        purpose: Purpose,
    },
    /// `target` answered the TCP ping of foca's probe `number`.
    TcpAnswered {
        target: Identity,
        number: foca::ProbeNumber,
    },
    /// `target`'s gossip port refused the TCP ping of foca's probe `number`.
    TcpRefused {
        target: Identity,
        number: foca::ProbeNumber,
    },
    /// A datagram sent to `addr` came back as ICMP "port unreachable": nothing listens on
    /// that UDP port, so the member there is gone (its process was killed or crashed).
    PortUnreachable { addr: SocketAddr },
    /// This node's identity, for the answer to a TCP ping.
    Identity { reply: oneshot::Sender<Identity> },
    /// A discovery beacon of our cluster from `addr`.
    Discovered { addr: SocketAddr },
    /// Stop the node (the driver's loop ends; the engine only sees it in the simulator).
    Shutdown,
}

/// A gossip datagram that opened and decoded.
pub(crate) enum Datagram<'a> {
    /// A foca message, still encoded (foca decodes it), and the sender's short digest when
    /// it carried one.
    Swim(&'a [u8], Option<u32>),
    /// "I have left", from the member itself.
    Leave(Identity),
    /// A member has our leave intent (of this identity of ours).
    LeaveAck(Identity),
    /// A digest: push-pull with the sender if ours differs.
    Digest(Digest),
    /// An ack or answer to a query, ours or to relay.
    QueryResponse(QueryResponse),
    /// A broadcast item sent to us directly, still encoded ([`super::direct`]).
    Item(&'a [u8]),
}

/// Opens the envelope of a gossip datagram and decodes what foca does not.
pub(crate) fn decode(packet: &[u8]) -> Result<Datagram<'_>, DropReason> {
    let undecodable = |what| move |error| DropReason::Undecodable { what, error };
    match envelope::open(packet)? {
        (Kind::Swim, payload) => Ok(Datagram::Swim(payload, None)),
        (Kind::SwimDigest, payload) => match payload.split_first_chunk::<4>() {
            Some((digest, rest)) => Ok(Datagram::Swim(rest, Some(u32::from_be_bytes(*digest)))),
            None => Err(DropReason::Truncated("digest of a SWIM datagram")),
        },
        (Kind::Leave, payload) => postcard::from_bytes(payload)
            .map(Datagram::Leave)
            .map_err(undecodable("leave notice")),
        (Kind::LeaveAck, payload) => postcard::from_bytes(payload)
            .map(Datagram::LeaveAck)
            .map_err(undecodable("leave acknowledgement")),
        (Kind::Digest, payload) => anti_entropy::decode_digest(payload)
            .map(Datagram::Digest)
            .map_err(undecodable("digest")),
        (Kind::QueryResponse, payload) => postcard::from_bytes(payload)
            .map(Datagram::QueryResponse)
            .map_err(undecodable("query response")),
        (Kind::Item, payload) => Ok(Datagram::Item(payload)),
        (kind, _) => Err(DropReason::NotADatagram(kind)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_decode_by_kind_and_the_rest_is_a_reason_to_drop() {
        let id = Identity::new("127.0.0.1:1".parse().expect("addr"));
        let leave = envelope::seal(Kind::Leave, &postcard::to_stdvec(&id).expect("encode"));
        assert!(matches!(decode(&leave), Ok(Datagram::Leave(x)) if x == id));
        let ack = envelope::seal(Kind::LeaveAck, &postcard::to_stdvec(&id).expect("encode"));
        assert!(matches!(decode(&ack), Ok(Datagram::LeaveAck(x)) if x == id));
        let err = decode(&envelope::seal(Kind::LeaveAck, b""))
            .err()
            .expect("dropped")
            .to_string();
        assert!(
            err.starts_with("undecodable leave acknowledgement"),
            "{err}"
        );
        let swim = envelope::seal(Kind::Swim, b"foca");
        assert!(matches!(decode(&swim), Ok(Datagram::Swim(b"foca", None))));
        let with_digest = envelope::seal(Kind::SwimDigest, b"\0\0\0\x07foca");
        assert!(matches!(
            decode(&with_digest),
            Ok(Datagram::Swim(b"foca", Some(7)))
        ));
        let short = envelope::seal(Kind::SwimDigest, b"\0\0");
        assert!(matches!(decode(&short), Err(DropReason::Truncated(_))));
        let answer = crate::query::QueryResponse {
            ltime: 3,
            id: 4,
            from: "m1".into(),
            ack: false,
            payload: b"token".to_vec(),
            relay_to: None,
        };
        let packet = envelope::seal(
            Kind::QueryResponse,
            &postcard::to_stdvec(&answer).expect("encode"),
        );
        assert!(matches!(decode(&packet), Ok(Datagram::QueryResponse(x)) if x == answer));
        let err = decode(&envelope::seal(Kind::QueryResponse, b"\x01"))
            .err()
            .expect("dropped")
            .to_string();
        assert!(err.starts_with("undecodable query response"), "{err}");
        let bad_digest = envelope::seal(Kind::Digest, b"");
        let err = decode(&bad_digest).err().expect("dropped").to_string();
        assert!(err.starts_with("undecodable digest"), "{err}");
        let beacon = envelope::seal(Kind::Beacon, b"");
        assert!(matches!(
            decode(&beacon),
            Err(DropReason::NotADatagram(Kind::Beacon))
        ));
        assert!(matches!(decode(b"junk"), Err(DropReason::Envelope(_))));
    }
}
