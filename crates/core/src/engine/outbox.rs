//! What the engine wants done, drained by its caller (the tokio driver or the simulator)
//! after every input.

use std::net::SocketAddr;
use std::time::Duration;

use crate::anti_entropy::SyncState;
use crate::identity::Identity;
use crate::membership::Event;

/// Names an operator join inside the engine, so its answer finds the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct JoinId(pub(crate) u64);

/// Why names are to be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The configured join names: the addresses become the seeds.
    Seeds,
    /// An operator join: push-pull with every address, then answer.
    Join(JoinId),
}

/// Names to resolve; the addresses come back as `Command::Resolved` with the same purpose.
#[derive(Debug)]
pub(crate) struct Resolve {
    /// `ip:port` or `name:port` (a missing port gets the default one).
    pub(crate) targets: Vec<String>,
    /// What the addresses are for.
    pub(crate) purpose: Purpose,
}

/// A push-pull with each of `addrs`: every answer comes back as `Command::ApplyState`; for an
/// operator join, one `Command::JoinedVia` with the count follows.
pub(crate) struct PushPull {
    /// Who to push-pull with.
    pub(crate) addrs: Vec<SocketAddr>,
    /// Our state, as of when the push-pull was asked for.
    pub(crate) state: SyncState,
    /// The operator join it serves, if any.
    pub(crate) join: Option<JoinId>,
}

/// A TCP ping of `target` for foca's probe `number` (the fallback probe): the answer comes
/// back as `Command::TcpAnswered` when it arrives within `limit`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpPing {
    /// This node, as the ping names its sender.
    pub(crate) from: Identity,
    /// The member probed.
    pub(crate) target: Identity,
    /// foca's probe number.
    pub(crate) number: foca::ProbeNumber,
    /// How long the answer may take to be of use (the rest of the probe period).
    pub(crate) limit: Duration,
}

/// Everything the engine asked for since the last drain.
#[derive(Default)]
pub(crate) struct Outbox {
    /// Enveloped datagrams and where to send them.
    pub(crate) datagrams: Vec<(SocketAddr, Vec<u8>)>,
    /// Push-pulls to start.
    pub(crate) push_pulls: Vec<PushPull>,
    /// Names to resolve.
    pub(crate) resolve: Vec<Resolve>,
    /// Fallback probes over TCP.
    pub(crate) tcp_pings: Vec<TcpPing>,
    /// Beacon datagrams for the discovery group.
    pub(crate) beacons: Vec<Vec<u8>>,
    /// Events for the handlers, oldest first.
    pub(crate) events: Vec<Event>,
    /// The view changed: the caller fetches it with `Engine::view` when it wants it (the
    /// simulator, with a thousand engines, rarely does).
    pub(crate) view_changed: bool,
}

/// A duration in whole milliseconds, for log fields.
pub(crate) fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}
