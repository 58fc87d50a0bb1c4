//! Serf's RPC protocol (msgpack over TCP), so Serf's CLI and client libraries drive a shoal
//! agent unchanged: `serf members -rpc-addr=...`, `serf event`, `serf query`, `serf monitor`.
//!
//! - this file: the state, the `--rpc-addr` listener and one connection's loop (handshake,
//!   auth, reading requests in order, one writer for answers and streamed records);
//! - [`commands`]: the request/answer commands, each through the same [`NodeHandle`] calls
//!   the HTTP control API makes;
//! - [`streams`]: `stream`, `monitor` and `query`, whose records follow their first answer;
//! - [`records`]: members and events as Serf's records;
//! - [`keys`]: the key commands;
//! - [`wire`]: the framing.
//!
//! The same connections are also accepted on the control port: the control server looks at
//! a connection's first byte and hands a msgpack map to [`serve_conn`] (see
//! [`crate::control::server`]).
//!
//! Authentication: with a key (`--rpc-auth`, or else the control token of
//! `--control-token-file`) every command after the handshake must follow a successful `auth`;
//! others are answered `Authentication required`, as Serf does.
//!
//! [`NodeHandle`]: shoal_core::NodeHandle

mod commands;
pub mod keys;
pub mod records;
mod streams;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::control::ControlState;
use wire::{Frames, WireError};

/// Serf's error strings, which its clients compare against.
pub mod errors {
    /// A command other than `handshake` came first.
    pub const HANDSHAKE_REQUIRED: &str = "Handshake required";
    /// A second handshake.
    pub const DUPLICATE_HANDSHAKE: &str = "Handshake already performed";
    /// A version other than 1.
    pub const UNSUPPORTED_VERSION: &str = "Unsupported IPC version";
    /// A command that does not exist.
    pub const UNSUPPORTED_COMMAND: &str = "Unsupported command";
    /// A command before `auth`, on an agent with a key.
    pub const AUTH_REQUIRED: &str = "Authentication required";
    /// `auth` with another key.
    pub const INVALID_AUTH: &str = "Invalid authentication token";
    /// A second `monitor` on one connection.
    pub const MONITOR_EXISTS: &str = "Monitor already exists";
    /// A `stream` filter that does not parse.
    pub const INVALID_FILTER: &str = "Invalid event filter";
    /// A second `stream` with one sequence number.
    pub const STREAM_EXISTS: &str = "Stream with given sequence exists";
    /// `respond` to a query this connection was not given, or one past its timeout.
    pub const INVALID_QUERY_ID: &str = "No pending queries matching ID";
}

/// The only version of Serf's RPC protocol.
const VERSION: i64 = 1;

/// Answers and records waiting for the connection's writer. Senders wait when it is full:
/// the request loop (one answer at a time), a query's task (its engine stream is bounded and
/// lossy) and stream tasks (their fan-out drops a reader that falls behind, never the agent).
const OUT_CAPACITY: usize = 64;

/// What the RPC connections need.
pub struct Rpc {
    /// The control API's state: the node, the streams, the monitors, the stop channel.
    pub control: Arc<ControlState>,
    /// The key `auth` must give; `None`: no authentication.
    pub auth: Option<String>,
    /// How long a new connection may take to send its first request (the handshake).
    pub handshake_timeout: Duration,
}

/// Serves `--rpc-addr` until the task is dropped, at most `max_connections` at once.
pub async fn serve(listener: TcpListener, rpc: Arc<Rpc>, max_connections: usize) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "RPC accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(%peer, limit = max_connections, "RPC connection refused: too many open");
            continue;
        };
        let rpc = rpc.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_conn(stream, peer.to_string(), rpc).await;
        });
    }
}

/// A query this connection was handed in a stream, which it may `respond` to.
#[derive(Debug, Clone, Copy)]
struct Pending {
    ltime: u64,
    id: u64,
    deadline: Instant,
}

/// Most queries a connection keeps for `respond` at once; past it the oldest is forgotten (a
/// `respond` to it is then `No pending queries matching ID`).
const MAX_PENDING: usize = 1024;

/// The queries a connection may answer, by the id it was given.
#[derive(Debug, Default)]
struct PendingQueries {
    next_id: u64,
    by_id: HashMap<u64, Pending>,
}

impl PendingQueries {
    /// Registers a query; returns the client's id for it. Expired entries go first.
    fn register(&mut self, ltime: u64, id: u64, timeout: Duration) -> u64 {
        let now = Instant::now();
        self.by_id.retain(|_, p| p.deadline > now);
        if self.by_id.len() >= MAX_PENDING
            && let Some(oldest) = self.by_id.keys().min().copied()
        {
            self.by_id.remove(&oldest);
        }
        self.next_id += 1;
        let deadline = now + timeout;
        self.by_id.insert(
            self.next_id,
            Pending {
                ltime,
                id,
                deadline,
            },
        );
        self.next_id
    }

    fn take(&mut self, client_id: u64) -> Option<Pending> {
        self.by_id
            .remove(&client_id)
            .filter(|p| p.deadline > Instant::now())
    }
}

/// A task that is aborted when dropped (the connection closed, or `stop`).
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One client connection.
struct Conn<R> {
    rpc: Arc<Rpc>,
    frames: Frames<R>,
    out: mpsc::Sender<Bytes>,
    peer: String,
    shaken: bool,
    authed: bool,
    streams: HashMap<u64, Task>,
    monitor: Option<(u64, Task)>,
    queries: Vec<Task>,
    pending: Arc<Mutex<PendingQueries>>,
}

/// Whether the loop goes on after a request.
enum Flow {
    Continue,
    Close,
}

/// Serves one RPC connection until the client closes it or breaks the protocol.
pub async fn serve_conn<S>(stream: S, peer: String, rpc: Arc<Rpc>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (reader, mut writer) = tokio::io::split(stream);
    let (out, mut queued) = mpsc::channel::<Bytes>(OUT_CAPACITY);
    let write = tokio::spawn(async move {
        while let Some(bytes) = queued.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    debug!(%peer, "RPC client connected");
    let mut conn = Conn {
        rpc,
        frames: Frames::new(reader),
        out,
        peer,
        shaken: false,
        authed: false,
        streams: HashMap::new(),
        monitor: None,
        queries: Vec::new(),
        pending: Arc::default(),
    };
    conn.run().await;
    let peer = conn.peer.clone();
    // Drops the streams' tasks and the last sender: the writer sends what is queued and ends.
    drop(conn);
    let _ = write.await;
    debug!(%peer, "RPC client disconnected");
}

impl<R: AsyncRead + Unpin> Conn<R> {
    async fn run(&mut self) {
        loop {
            let next = if self.shaken {
                self.frames.next().await
            } else {
                match tokio::time::timeout(self.rpc.handshake_timeout, self.frames.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        debug!(peer = %self.peer, "RPC connection closed: no handshake in time");
                        return;
                    }
                }
            };
            let header = match next {
                Ok(Some(header)) => header,
                Ok(None) => return,
                Err(error) => {
                    warn!(peer = %self.peer, %error, "RPC connection closed: unreadable request");
                    return;
                }
            };
            let (Ok(command), Ok(seq)) =
                (wire::string(&header, "Command"), wire::uint(&header, "Seq"))
            else {
                warn!(peer = %self.peer, "RPC connection closed: a request header without Command and Seq");
                return;
            };
            match self.request(&command, seq).await {
                Ok(Flow::Continue) => {}
                Ok(Flow::Close) => return,
                Err(error) => {
                    warn!(peer = %self.peer, %command, %error, "RPC connection closed: unreadable request body");
                    return;
                }
            }
        }
    }

    /// Queues an answer; false if the connection is gone.
    async fn send(&self, bytes: Bytes) -> bool {
        self.out.send(bytes).await.is_ok()
    }

    /// Reads the body every command but four carries (a clean end here is an error).
    async fn body(&mut self) -> Result<rmpv::Value, WireError> {
        self.frames
            .next()
            .await?
            .ok_or_else(|| WireError::Invalid("the stream ended before the request body".into()))
    }

    async fn request(&mut self, command: &str, seq: u64) -> Result<Flow, WireError> {
        let has_body = !matches!(command, "members" | "leave" | "list-keys" | "stats");
        if command != "handshake" && !self.shaken {
            self.send(wire::answer(seq, errors::HANDSHAKE_REQUIRED, None))
                .await;
            return Ok(Flow::Close);
        }
        if self.rpc.auth.is_some() && !self.authed && !matches!(command, "handshake" | "auth") {
            if has_body && commands::KNOWN.contains(&command) {
                self.body().await?;
            }
            if self.rpc.control.warnings.unauthorized.allow() {
                warn!(peer = %self.peer, %command,
                    "RPC command refused: authentication required (further ones for 5 s at debug level)");
            } else {
                debug!(peer = %self.peer, %command, "RPC command refused: authentication required");
            }
            self.send(wire::answer(seq, errors::AUTH_REQUIRED, None))
                .await;
            return Ok(Flow::Continue);
        }
        if !commands::KNOWN.contains(&command) {
            warn!(peer = %self.peer, %command, "RPC connection closed: unsupported command");
            self.send(wire::answer(seq, errors::UNSUPPORTED_COMMAND, None))
                .await;
            return Ok(Flow::Close);
        }
        let body = match has_body {
            true => self.body().await?,
            false => rmpv::Value::Nil,
        };
        Ok(self.dispatch(command, seq, body).await)
    }

    async fn dispatch(&mut self, command: &str, seq: u64, body: rmpv::Value) -> Flow {
        let answer = match command {
            "handshake" => self.handshake(seq, &body),
            "auth" => self.auth(seq, &body),
            "stream" => self.stream(seq, &body),
            "monitor" => self.monitor(seq, &body),
            "stop" => self.stop(seq, &body),
            "query" => self.query(seq, &body).await,
            "respond" => self.respond(seq, &body).await,
            "leave" => {
                let answer = commands::leave(&self.rpc.control, seq).await;
                let ok = self.send(answer).await;
                // Like `/v1/leave`: the agent exits once the answer is on its way.
                let _ = self.rpc.control.stopped.try_send(());
                return if ok { Flow::Continue } else { Flow::Close };
            }
            other => commands::run(&self.rpc.control, other, seq, &body).await,
        };
        match self.send(answer).await {
            true => Flow::Continue,
            false => Flow::Close,
        }
    }

    fn handshake(&mut self, seq: u64, body: &rmpv::Value) -> Bytes {
        let error = match wire::int(body, "Version") {
            Ok(VERSION) if self.shaken => errors::DUPLICATE_HANDSHAKE,
            Ok(VERSION) => {
                self.shaken = true;
                ""
            }
            _ => errors::UNSUPPORTED_VERSION,
        };
        wire::answer(seq, error, None)
    }

    fn auth(&mut self, seq: u64, body: &rmpv::Value) -> Bytes {
        let given = wire::string(body, "AuthKey").unwrap_or_default();
        let error = match &self.rpc.auth {
            Some(key) if crate::token::matches(given.as_bytes(), key.as_bytes()) => {
                self.authed = true;
                ""
            }
            // An agent without a key takes only the empty one, as Serf does.
            None if given.is_empty() => {
                self.authed = true;
                ""
            }
            _ => {
                if self.rpc.control.warnings.unauthorized.allow() {
                    warn!(peer = %self.peer,
                        "RPC auth refused: wrong key (further ones for 5 s at debug level)");
                } else {
                    debug!(peer = %self.peer, "RPC auth refused: wrong key");
                }
                errors::INVALID_AUTH
            }
        };
        wire::answer(seq, error, None)
    }
}
