//! Why a node could not start ([`StartError`]), why a command failed ([`CommandError`]) and
//! why a datagram was dropped ([`DropReason`]). Each variant says what did not change.

use std::net::SocketAddr;

use thiserror::Error;

use crate::broadcast::MetaError;
use crate::discover::DiscoverError;
use crate::envelope::{EnvelopeError, Kind};
use crate::query::QueryError;
use crate::seal::{KeyError, LabelError};
use crate::user_event::UserEventError;

/// Why a node could not start. Nothing is running.
#[derive(Debug, Error)]
pub enum StartError {
    /// The gossip address could not be bound.
    #[error("cannot bind gossip address {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The discovery cluster name is invalid.
    #[error("{0}")]
    Discover(#[from] DiscoverError),
    /// The configured name or tags break the limits.
    #[error("invalid name or tags: {0}")]
    Meta(#[from] MetaError),
    /// The cluster label is invalid.
    #[error("{0}")]
    Label(#[from] LabelError),
    /// The keyring file could not be created.
    #[error("cannot create keyring file {path}: {source}")]
    KeyringFile {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Why a command to a running node failed.
#[derive(Debug, Error)]
pub enum CommandError {
    /// The new name or tags break the limits. Nothing changed.
    #[error("invalid name or tags: {0}")]
    Meta(#[from] MetaError),
    /// No member has that name. Nothing changed.
    #[error("no member named {0:?}")]
    UnknownMember(String),
    /// `force-leave` only applies to failed members. Nothing changed.
    #[error("member {name:?} is {status}, not failed")]
    NotFailed {
        /// The member.
        name: String,
        /// Its status.
        status: &'static str,
    },
    /// A user event breaks the limits. Nothing was sent.
    #[error("{0}")]
    UserEvent(#[from] UserEventError),
    /// A query or an answer breaks the limits, or there is nothing to answer. Nothing was
    /// sent.
    #[error("{0}")]
    Query(#[from] QueryError),
    /// The gossip layer refused the item (logged with the reason). Nothing was sent.
    #[error("the gossip layer refused the broadcast (see the agent's log)")]
    Gossip,
    /// None of the join targets answered. Nothing was learned from them.
    #[error("could not join any of {0}")]
    JoinFailed(String),
    /// The node has stopped. Nothing changed.
    #[error("the node is shut down")]
    Stopped,
    /// A key operation on a node whose gossip is plaintext. Nothing changed.
    #[error("encryption is not enabled on this agent (start it with --encrypt or --keyring-file)")]
    NotEncrypted,
    /// A key operation while plaintext is accepted (a stranger could have sent it). Nothing
    /// changed.
    #[error(
        "key changes are refused while --encrypt-accept-plaintext or --encrypt-send-plaintext is on"
    )]
    AcceptingPlaintext,
    /// The key is malformed, or the ring refuses the change. Nothing changed.
    #[error("{0}")]
    Key(#[from] KeyError),
    /// The ring changed in memory but the keyring file could not be written.
    #[error("the keyring changed, but {path} could not be written: {error}")]
    KeyringFile {
        /// The file.
        path: String,
        /// Why.
        error: String,
    },
}

/// Why the engine dropped a datagram. It is counted in `packets_dropped`; nothing changed.
#[derive(Debug, Error)]
pub enum DropReason {
    /// Not a shoal envelope, or one of an unknown version.
    #[error("{0}")]
    Envelope(#[from] EnvelopeError),
    /// A SWIM message foca refused.
    #[error("{0}")]
    Swim(foca::Error),
    /// The payload of a known kind did not decode.
    #[error("undecodable {what}: {error}")]
    Undecodable {
        /// Which kind of payload.
        what: &'static str,
        /// The decoder's message.
        error: postcard::Error,
    },
    /// A message about a member that did not come from that member (its address and its
    /// current identity).
    #[error("{0} not sent by the member it names")]
    NotFromMember(&'static str),
    /// A SWIM message other than an announce from an address that is no member and was not
    /// contacted to join.
    #[error(
        "SWIM message from an address that is not a member (only an announce may come from one)"
    )]
    Stranger,
    /// A SWIM ping request or indirect ack naming an identity that is no member (foca would
    /// send to it).
    #[error("SWIM request naming a non-member as its target")]
    UnknownTarget,
    /// Shorter than the kind's fixed fields.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// Longer than any shoal node sends (the configured packet size plus the SWIM digest).
    #[error("datagram of {len} bytes exceeds the {limit}-byte datagram limit")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A kind that never travels as a gossip datagram (push-pull frames, beacons).
    #[error("{0:?} is not a datagram kind")]
    NotADatagram(Kind),
    /// A broadcast item sent directly that breaks the limits.
    #[error("{0}")]
    Item(#[from] crate::broadcast::BroadcastError),
    /// A broadcast item of a kind that is only gossiped, never sent directly (a
    /// force-leave).
    #[error("a {0} is never sent directly")]
    NotDirect(&'static str),
}
