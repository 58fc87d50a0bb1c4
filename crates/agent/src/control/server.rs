//! The control API's listener and connections: TCP or a Unix socket (mode 0600), a bound on
//! the connections open at once, and a header-read timeout, so no client can hold the API
//! (or the agent's file descriptors) with connections that never send a request.

use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use shoal_proto::ErrorBody;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use super::{ControlState, route};

/// Kernel send buffer of a control connection (Linux doubles it for bookkeeping).
const SEND_BUFFER: usize = 64 * 1024;

/// How often, at most, a refused connection is logged at warn level.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// Where the control API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlAddr {
    /// HTTP over TCP.
    Tcp(SocketAddr),
    /// HTTP over a Unix socket at this path (`unix:/path`), created mode 0600.
    Unix(PathBuf),
}

impl std::fmt::Display for ControlAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "{}{}", shoal_proto::client::UNIX_PREFIX, path.display()),
        }
    }
}

/// The control token and the file it was read from. Its `Debug` never shows the token.
#[derive(Clone)]
pub struct ControlToken {
    /// The token (trimmed).
    pub token: String,
    /// The file.
    pub file: PathBuf,
}

impl std::fmt::Debug for ControlToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlToken")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// Default of `--control-max-connections`: room for [`super::MAX_STREAMS`] open
/// streams and many short requests, far below a default file-descriptor limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 128;

/// Lets a kind of warning through at most every [`WARN_EVERY`]; the rest go to debug.
#[derive(Debug, Default)]
pub struct Throttle {
    last: std::sync::Mutex<Option<Instant>>,
}

impl Throttle {
    /// Whether a warning may be logged now (and notes that it is).
    pub fn allow(&self) -> bool {
        let now = Instant::now();
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_none_or(|t| now.duration_since(t) >= WARN_EVERY) {
            *last = Some(now);
            return true;
        }
        false
    }
}

/// The warnings of the control API's door, each throttled on its own.
#[derive(Debug, Default)]
pub struct Warnings {
    /// Connections refused at `--control-max-connections`.
    pub refused: Throttle,
    /// Connections closed at `--control-header-timeout`.
    pub timed_out: Throttle,
    /// Requests without the right token.
    pub unauthorized: Throttle,
}

/// A bound control listener.
pub enum Listener {
    /// `ip:port`.
    Tcp(TcpListener),
    /// `unix:/path`: the socket file, removed when the agent stops.
    Unix(UnixListener, PathBuf),
}

/// Limits on the connections (`--control-header-timeout`, `--control-max-connections`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A connection that has not sent a whole request header within this long is closed;
    /// it applies to every request of a keep-alive connection, so idle ones close too.
    pub header_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

impl Listener {
    /// Binds `addr`. A Unix socket is created mode 0600 (only this user may connect); a
    /// stale socket file left by a crash is replaced, a live one (another agent answers)
    /// or a file that is not a socket is refused.
    pub async fn bind(addr: &ControlAddr) -> std::io::Result<Listener> {
        match addr {
            ControlAddr::Tcp(addr) => Ok(Listener::Tcp(TcpListener::bind(addr).await?)),
            ControlAddr::Unix(path) => Ok(Listener::Unix(bind_unix(path)?, path.clone())),
        }
    }

    /// The address as clients pass it to `--control` (the real port for port 0).
    pub fn address(&self) -> std::io::Result<String> {
        match self {
            Listener::Tcp(l) => Ok(l.local_addr()?.to_string()),
            Listener::Unix(_, path) => Ok(ControlAddr::Unix(path.clone()).to_string()),
        }
    }

    /// The socket file of a Unix listener.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match self {
            Listener::Tcp(_) => None,
            Listener::Unix(_, path) => Some(path.clone()),
        }
    }
}

fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(std::io::Error::new(
                        ErrorKind::AddrInUse,
                        "another process answers on this socket",
                    ));
                }
                // Nothing listens: left by an agent that crashed.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => std::fs::remove_file(path)?,
                // Say, another user's socket we may not connect to: not ours to replace.
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("a socket exists there and cannot be checked: {e}"),
                    ));
                }
            }
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                ErrorKind::AlreadyExists,
                "the path exists and is not a socket; not replacing it",
            ));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // The umask makes the socket 0600 from its first instant (no window in which another
    // user could connect); the chmod makes sure of it whatever the umask was.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves a TCP connection that speaks Serf's RPC protocol (the agent gives the RPC
/// layer's); it returns when the connection is done.
pub type RpcHandoff = Arc<
    dyn Fn(TcpStream, String) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync,
>;

/// Serves the API until the task is dropped. A TCP connection whose first byte opens a
/// msgpack map is Serf's RPC protocol and goes to `rpc`.
pub async fn serve(listener: Listener, state: Arc<ControlState>, limits: Limits, rpc: RpcHandoff) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = match &listener {
            Listener::Tcp(l) => l.accept().await.map(|(s, peer)| {
                bound_send_buffer(&s);
                Conn::Tcp(s, peer.to_string())
            }),
            Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
        };
        let conn = match accepted {
            Ok(conn) => conn,
            Err(error) => {
                // Out of file descriptors, most likely: wait, rather than spin.
                warn!(%error, "control accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            if state.warnings.refused.allow() {
                warn!(peer = %conn.peer(), limit = limits.max_connections,
                    "control connection refused: the limit of open connections \
                     (--control-max-connections) is reached (further ones for 5 s at debug level)");
            } else {
                debug!(peer = %conn.peer(), "control connection refused: too many open");
            }
            conn.refuse(limits.max_connections);
            continue;
        };
        match conn {
            Conn::Tcp(s, peer) => sniff(s, peer, permit, state.clone(), limits, rpc.clone()),
            Conn::Unix(s) => spawn(s, "unix".into(), permit, state.clone(), limits),
        }
    }
}

/// The kernel's send buffer would otherwise grow to megabytes behind a stream reader that
/// stopped reading (32 of them: over 100 MiB), and hide it from the fan-out's own bound;
/// 64 KiB is plenty for every JSON answer.
fn bound_send_buffer(stream: &TcpStream) {
    if let Err(error) = socket2::SockRef::from(stream).set_send_buffer_size(SEND_BUFFER) {
        debug!(%error, "could not bound the control connection's send buffer");
    }
}

/// An accepted connection.
enum Conn {
    Tcp(TcpStream, String),
    Unix(tokio::net::UnixStream),
}

impl Conn {
    fn peer(&self) -> &str {
        match self {
            Conn::Tcp(_, peer) => peer,
            Conn::Unix(_) => "unix",
        }
    }

    /// Answers 503 `too_many_connections` without reading the request, and closes. The
    /// answer fits a fresh socket's empty send buffer, so one non-blocking write of the raw
    /// socket takes it whole and nothing waits (tokio's own `try_write` would not even try
    /// before the reactor has seen the socket writable); if it cannot be written at once,
    /// the connection is closed with nothing said.
    fn refuse(self, limit: usize) {
        let body = serde_json::to_string(&ErrorBody::new(
            "too_many_connections",
            format!(
                "the control API has {limit} connections open, its limit \
                 (--control-max-connections); try again"
            ),
        ))
        .unwrap_or_default();
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = match self {
            Conn::Tcp(s, _) => s.into_std().and_then(|mut s| s.write(answer.as_bytes())),
            Conn::Unix(s) => s.into_std().and_then(|mut s| s.write(answer.as_bytes())),
        };
    }
}

/// Whether a connection's first byte opens a msgpack map (a fixmap, map 16 or map 32): a
/// Serf RPC client's handshake. HTTP requests start with a method's ASCII letter.
fn is_msgpack_map(first: u8) -> bool {
    matches!(first, 0x80..=0x8f | 0xde | 0xdf)
}

/// Waits (at most the header timeout) for a TCP connection's first byte, without reading
/// it, and serves the connection as Serf RPC or as HTTP.
fn sniff(
    stream: TcpStream,
    peer: String,
    permit: OwnedSemaphorePermit,
    state: Arc<ControlState>,
    limits: Limits,
    rpc: RpcHandoff,
) {
    tokio::spawn(async move {
        let mut first = [0u8; 1];
        match tokio::time::timeout(limits.header_timeout, stream.peek(&mut first)).await {
            Ok(Ok(1)) if is_msgpack_map(first[0]) => {
                let _permit = permit;
                rpc(stream, peer).await;
            }
            Ok(Ok(1)) => spawn(stream, peer, permit, state, limits),
            // Closed, or failed, before a byte came.
            Ok(_) => {}
            Err(_) => {
                let timeout_ms = limits.header_timeout.as_millis() as u64;
                if state.warnings.timed_out.allow() {
                    warn!(%peer, timeout_ms,
                        "control connection closed: nothing sent within \
                         --control-header-timeout (further ones for 5 s at debug level)");
                } else {
                    debug!(%peer, timeout_ms, "control connection closed: nothing sent in time");
                }
            }
        }
    });
}

/// Serves one connection on its own task; the permit is its place among the open ones.
fn spawn<S>(
    stream: S,
    peer: String,
    permit: OwnedSemaphorePermit,
    state: Arc<ControlState>,
    limits: Limits,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let _permit = permit;
        let shared = state.clone();
        let svc = service_fn(move |req| {
            let state = shared.clone();
            async move { Ok::<_, std::convert::Infallible>(route(req, &state).await) }
        });
        let result = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), svc)
            .await;
        let timeout_ms = limits.header_timeout.as_millis() as u64;
        match result {
            Ok(()) => {}
            Err(error) if error.is_timeout() && state.warnings.timed_out.allow() => warn!(
                %peer, timeout_ms,
                "control connection closed: no whole request header within \
                 --control-header-timeout (further ones for 5 s at debug level)"
            ),
            Err(error) if error.is_timeout() => debug!(
                %peer, timeout_ms,
                "control connection closed: no whole request header within \
                 --control-header-timeout"
            ),
            Err(error) => debug!(%peer, %error, "control connection ended with an error"),
        }
    });
}
