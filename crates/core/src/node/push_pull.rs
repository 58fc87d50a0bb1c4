//! The TCP side of a push-pull: one length-prefixed frame each way (the frame format is
//! [`crate::anti_entropy`]'s), every step under a deadline.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::sealing::Sealer;
use crate::anti_entropy::{self, Frame, FrameError, PingFrame, SyncState};
use crate::seal::Channel;

/// A push-pull that did not complete. Nothing was applied.
#[derive(Debug, Error)]
pub enum SyncError {
    /// Connect, read or write failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer took too long.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The frame was refused.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The frame's seal or label was refused (counted and logged by the sealer).
    #[error("frame refused before decoding (see the refused counters)")]
    Refused,
}

/// Writes one frame: a big-endian u32 length, then the enveloped state.
pub(crate) async fn write_state(
    stream: &mut TcpStream,
    state: &SyncState,
    sealer: &Sealer,
) -> Result<(), SyncError> {
    let frame = anti_entropy::encode_frame(state)?;
    write_body(stream, &sealer.seal(Channel::Stream, &frame)).await
}

/// Writes a TCP ping (or its answer) as one frame.
pub(crate) async fn write_ping(
    stream: &mut TcpStream,
    ping: &PingFrame,
    sealer: &Sealer,
) -> Result<(), SyncError> {
    let frame = anti_entropy::encode_ping(ping)?;
    write_body(stream, &sealer.seal(Channel::Stream, &frame)).await
}

async fn write_body(stream: &mut TcpStream, frame: &[u8]) -> Result<(), SyncError> {
    stream
        .write_all(&(frame.len() as u32).to_be_bytes())
        .await?;
    stream.write_all(frame).await?;
    stream.flush().await?;
    Ok(())
}

/// Reads one frame written by [`write_state`]; the length is checked before allocating.
pub(crate) async fn read_state(
    stream: &mut TcpStream,
    sealer: &Sealer,
) -> Result<SyncState, SyncError> {
    match read_frame(stream, sealer).await? {
        Frame::State(state) => Ok(state),
        Frame::Ping(_) => Err(FrameError::WrongKind(crate::envelope::Kind::Ping).into()),
    }
}

/// The buffer a frame starts with; it grows only as the bytes arrive, so a peer that
/// declares a large frame and sends nothing holds this much, not the declared length.
const FIRST_READ: usize = 16 * 1024;

/// Reads one length-prefixed frame as it came off the wire (still sealed, when sealing is
/// on). The declared length is checked against [`anti_entropy::MAX_FRAME`] plus `overhead`
/// (the seal's) first, and memory is taken only for bytes that arrived. (Generic over the
/// stream so the fuzz target drives this very function.)
pub async fn read_raw_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    overhead: usize,
) -> Result<Vec<u8>, SyncError> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    anti_entropy::check_len(len.saturating_sub(overhead))?;
    let mut frame = Vec::with_capacity(len.min(FIRST_READ));
    (&mut *stream)
        .take(len as u64)
        .read_to_end(&mut frame)
        .await?;
    if frame.len() < len {
        return Err(FrameError::Short {
            declared: len,
            got: frame.len(),
        }
        .into());
    }
    Ok(frame)
}

/// Reads one frame of either kind (a push-pull state or a ping), opened by `sealer`.
pub(crate) async fn read_frame(
    stream: &mut TcpStream,
    sealer: &Sealer,
) -> Result<Frame, SyncError> {
    let frame = read_raw_frame(stream, sealer.overhead()).await?;
    let peer = stream
        .peer_addr()
        .map(|a| SocketAddr::new(a.ip(), 0))
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let opened = sealer
        .open(Channel::Stream, &frame, peer)
        .ok_or(SyncError::Refused)?;
    Ok(anti_entropy::decode_any(&opened)?)
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

/// The fallback probe's client side: connect, send the ping, read the answer; the identity
/// that answered.
pub(crate) async fn ping(
    ping: PingFrame,
    source: Option<IpAddr>,
    limit: Duration,
    sealer: &Sealer,
) -> Result<PingFrame, SyncError> {
    with_timeout(limit, async {
        let mut stream = connect(ping.to.addr, source).await?;
        write_ping(&mut stream, &ping, sealer).await?;
        match read_frame(&mut stream, sealer).await? {
            Frame::Ping(answer) => Ok(answer),
            Frame::State(_) => Err(FrameError::WrongKind(crate::envelope::Kind::PushPull).into()),
        }
    })
    .await
}

/// Connects to `addr`, from `source` when it is a specific IP of the same family.
async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(ip) = source.filter(|ip| !ip.is_unspecified() && ip.is_ipv4() == addr.is_ipv4()) {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The client side: connect (from `source`, the bound gossip IP, when it is a specific one, so
/// peers and firewalls see the node's own address), send ours, read theirs.
pub(crate) async fn push_pull(
    addr: SocketAddr,
    source: Option<IpAddr>,
    ours: &SyncState,
    limit: Duration,
    sealer: &Sealer,
) -> Result<SyncState, SyncError> {
    with_timeout(limit, async {
        let mut stream = connect(addr, source).await?;
        write_state(&mut stream, ours, sealer).await?;
        read_state(&mut stream, sealer).await
    })
    .await
}
