//! Anti-entropy: the digest datagram and the TCP push-pull of the full state.
//!
//! Every `sync_interval` a node sends its membership digest to one random member. A receiver
//! whose own digest differs opens a push-pull: both sides send their whole state (foca members,
//! metas, leave intents) in one length-prefixed frame each and apply the other's. That repairs
//! whatever gossip missed, in seconds rather than at the next full sync.

use std::time::Duration;

use foca::Member as FocaMember;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// A push-pull that did not complete. Nothing was applied.
#[derive(Debug, Error)]
pub enum SyncError {
    /// Connect, read or write failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer took too long.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The frame was larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// Bad envelope.
    #[error("{0}")]
    Envelope(#[from] EnvelopeError),
    /// The envelope was fine but carried another kind.
    #[error("expected a push-pull frame, got {0:?}")]
    WrongKind(Kind),
    /// The payload did not decode.
    #[error("undecodable push-pull state: {0}")]
    Decode(#[from] postcard::Error),
}

/// Writes one frame: a big-endian u32 length, then the enveloped state.
pub async fn write_state(stream: &mut TcpStream, state: &SyncState) -> Result<(), SyncError> {
    let payload = postcard::to_stdvec(state)?;
    let frame = envelope::seal(Kind::PushPull, &payload);
    if frame.len() > MAX_FRAME {
        return Err(SyncError::TooLarge(frame.len()));
    }
    stream
        .write_all(&(frame.len() as u32).to_be_bytes())
        .await?;
    stream.write_all(&frame).await?;
    stream.flush().await?;
    Ok(())
}

/// Reads one frame written by [`write_state`].
pub async fn read_state(stream: &mut TcpStream) -> Result<SyncState, SyncError> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(SyncError::TooLarge(len));
    }
    let mut frame = vec![0u8; len];
    stream.read_exact(&mut frame).await?;
    let (kind, payload) = envelope::open(&frame)?;
    if kind != Kind::PushPull {
        return Err(SyncError::WrongKind(kind));
    }
    Ok(postcard::from_bytes(payload)?)
}

/// Runs `fut` with a deadline, mapping the elapsed case to [`SyncError::Timeout`].
pub async fn with_timeout<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, SyncError>>,
) -> Result<T, SyncError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| SyncError::Timeout(limit))?
}

/// The client side: connect (from `source`, the bound gossip IP, when it is a specific one, so
/// peers and firewalls see the node's own address), send ours, read theirs.
pub async fn push_pull(
    addr: std::net::SocketAddr,
    source: Option<std::net::IpAddr>,
    ours: &SyncState,
    limit: Duration,
) -> Result<SyncState, SyncError> {
    with_timeout(limit, async {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if let Some(ip) = source.filter(|ip| !ip.is_unspecified() && ip.is_ipv4() == addr.is_ipv4())
        {
            socket.bind(std::net::SocketAddr::new(ip, 0))?;
        }
        let mut stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        write_state(&mut stream, ours).await?;
        read_state(&mut stream).await
    })
    .await
}
