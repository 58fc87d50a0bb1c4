//! The TCP side of a push-pull: one length-prefixed frame each way (the frame format is
//! [`crate::anti_entropy`]'s), every step under a deadline.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::anti_entropy::{self, FrameError, SyncState};

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
}

/// Writes one frame: a big-endian u32 length, then the enveloped state.
pub async fn write_state(stream: &mut TcpStream, state: &SyncState) -> Result<(), SyncError> {
    let frame = anti_entropy::encode_frame(state)?;
    stream
        .write_all(&(frame.len() as u32).to_be_bytes())
        .await?;
    stream.write_all(&frame).await?;
    stream.flush().await?;
    Ok(())
}

/// Reads one frame written by [`write_state`]; the length is checked before allocating.
pub async fn read_state(stream: &mut TcpStream) -> Result<SyncState, SyncError> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    anti_entropy::check_len(len)?;
    let mut frame = vec![0u8; len];
    stream.read_exact(&mut frame).await?;
    Ok(anti_entropy::decode_frame(&frame)?)
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
    addr: SocketAddr,
    source: Option<IpAddr>,
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
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let mut stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        write_state(&mut stream, ours).await?;
        read_state(&mut stream).await
    })
    .await
}
