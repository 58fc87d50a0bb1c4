//! Tasks beside the owner: the push-pull server, outgoing push-pulls, the resolver, the beacon
//! listener and the snapshot writer. Each reports back through the owner's inbox (or, the
//! writer, reads the view's `watch`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::net::resolve_targets;
use super::push_pull::{self, SyncError};
use super::sealing::Sealer;
use crate::anti_entropy::{Frame, PingFrame};
use crate::engine::{Command, PushPull, Resolve, TcpPing};
use crate::seal::Channel;
use crate::view::{Stats, View};

/// At most this many inbound push-pulls (and TCP pings) are served at once; a connection
/// beyond it is closed at once, counted and logged (each served one is cut off at the read
/// timeout, the engine's sync limit).
pub const MAX_INBOUND_SYNCS: usize = 32;

/// One warning per 5 s about refused inbound connections; the rest at debug level.
#[derive(Default)]
struct RateLimitedWarn {
    last: Option<std::time::Instant>,
}

impl RateLimitedWarn {
    fn warn(&mut self, peer: &SocketAddr) {
        let now = std::time::Instant::now();
        if self
            .last
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(5))
        {
            self.last = Some(now);
            warn!(%peer, limit = MAX_INBOUND_SYNCS,
                "refused an inbound push-pull: the limit of concurrent inbound streams is reached (further ones for 5 s at debug level)");
        } else {
            debug!(%peer, limit = MAX_INBOUND_SYNCS, "refused an inbound push-pull: limit reached");
        }
    }
}

/// Accepts push-pull connections: read theirs, answer with ours, hand theirs to the owner.
pub(super) fn spawn_sync_server(
    listener: TcpListener,
    inbox: mpsc::Sender<Command>,
    stats: Arc<Stats>,
    limit: Duration,
    sealer: Arc<Sealer>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(MAX_INBOUND_SYNCS));
        let mut refused_warn = RateLimitedWarn::default();
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(error) => {
                    warn!(%error, "push-pull accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                // Every slot is held (slow or stalled peers; each is cut off at the read
                // timeout): refuse this one at once rather than let it wait unseen in the
                // backlog, which would also hold up the TCP pings that share the port.
                // Logged, rate-limited.
                refused_warn.warn(&peer);
                drop(stream);
                continue;
            };
            let inbox = inbox.clone();
            let stats = stats.clone();
            let sealer = sealer.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(error) = serve_one(stream, peer, &inbox, &stats, limit, &sealer).await {
                    debug!(%peer, %error, "push-pull from peer failed");
                }
            });
        }
    })
}

async fn serve_one(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    inbox: &mpsc::Sender<Command>,
    stats: &Stats,
    limit: Duration,
    sealer: &Sealer,
) -> Result<(), SyncError> {
    let frame = push_pull::with_timeout(limit, push_pull::read_frame(&mut stream, sealer)).await?;
    let theirs = match frame {
        Frame::State(state) => state,
        Frame::Ping(ping) => return answer_ping(stream, ping, inbox, limit, sealer).await,
    };
    let (tx, rx) = oneshot::channel();
    let exchange = Command::Exchange {
        state: theirs,
        peer,
        reply: tx,
    };
    if inbox.send(exchange).await.is_err() {
        return Ok(());
    }
    let Ok(ours) = rx.await else { return Ok(()) };
    push_pull::with_timeout(limit, push_pull::write_state(&mut stream, &ours, sealer)).await?;
    Stats::add(&stats.push_pulls, 1);
    Ok(())
}

/// Answers a TCP ping with this node's identity, taken from the owner: an answer shows that
/// the node's loop is running, not only its socket.
async fn answer_ping(
    mut stream: tokio::net::TcpStream,
    ping: PingFrame,
    inbox: &mpsc::Sender<Command>,
    limit: Duration,
    sealer: &Sealer,
) -> Result<(), SyncError> {
    let (tx, rx) = oneshot::channel();
    if inbox.send(Command::Identity { reply: tx }).await.is_err() {
        return Ok(());
    }
    let Ok(me) = rx.await else { return Ok(()) };
    let answer = PingFrame {
        from: me,
        to: ping.from,
    };
    push_pull::with_timeout(limit, push_pull::write_ping(&mut stream, &answer, sealer)).await
}

/// The fallback probe: pings `ping.target` over TCP; an answer from that very identity in
/// time goes to the owner.
pub(super) fn spawn_tcp_ping(
    ping: TcpPing,
    source: Option<std::net::IpAddr>,
    inbox: mpsc::Sender<Command>,
    sealer: Arc<Sealer>,
) {
    tokio::spawn(async move {
        let frame = PingFrame {
            from: ping.from,
            to: ping.target,
        };
        match push_pull::ping(frame, source, ping.limit, &sealer).await {
            Ok(answer) if answer.from == ping.target => {
                let (target, number) = (ping.target, ping.number);
                let _ = inbox.send(Command::TcpAnswered { target, number }).await;
            }
            Ok(answer) => {
                debug!(addr = %ping.target.addr, answered = %answer.from.addr,
                    generation = answer.from.generation, "TCP ping answered by another identity")
            }
            Err(SyncError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                let (target, number) = (ping.target, ping.number);
                let _ = inbox.send(Command::TcpRefused { target, number }).await;
            }
            Err(error) => debug!(addr = %ping.target.addr, %error, "TCP ping failed"),
        }
    });
}

/// Push-pulls with each address; applies every answer; for an operator join, reports how many
/// answered.
pub(super) fn spawn_push_pull(
    pp: PushPull,
    source: Option<std::net::IpAddr>,
    inbox: mpsc::Sender<Command>,
    stats: Arc<Stats>,
    limit: Duration,
    sealer: Arc<Sealer>,
) {
    let PushPull {
        addrs,
        state: ours,
        join,
    } = pp;
    tokio::spawn(async move {
        let mut joined = 0;
        for addr in addrs {
            match push_pull::push_pull(addr, source, &ours, limit, &sealer).await {
                Ok(theirs) => {
                    joined += 1;
                    Stats::add(&stats.push_pulls, 1);
                    if inbox
                        .send(Command::ApplyState {
                            state: theirs,
                            join,
                            peer: addr,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(error) => debug!(%addr, %error, "push-pull failed"),
            }
        }
        if let Some(join) = join {
            let _ = inbox.send(Command::JoinedVia { joined, join }).await;
        }
    });
}

/// Writes the snapshot file whenever the published view changes (and once at start and at the
/// end), except while the node knows no other member. Runs beside the owner so file I/O never blocks gossip.
pub(super) fn spawn_snapshot_writer(
    path: std::path::PathBuf,
    mut view: tokio::sync::watch::Receiver<Arc<View>>,
) -> JoinHandle<()> {
    use crate::snapshot::{self, SnapshotFile};
    tokio::spawn(async move {
        let mut last: Option<SnapshotFile> = None;
        let mut first = true;
        loop {
            let closed = !first && view.changed().await.is_err();
            first = false;
            let file = SnapshotFile::from_view(&view.borrow_and_update());
            // A node alone has learned nothing yet: keep what the file remembers (a node that
            // did not rejoin from it may still be restarted with --rejoin later).
            let worth_writing = !file.members.is_empty() || file.left;
            if worth_writing && last.as_ref() != Some(&file) {
                let (p, f) = (path.clone(), file.clone());
                match tokio::task::spawn_blocking(move || snapshot::write(&p, &f)).await {
                    Ok(Ok(())) => last = Some(file),
                    Ok(Err(error)) => {
                        warn!(path = %path.display(), %error, "could not write the snapshot")
                    }
                    Err(error) => warn!(%error, "snapshot writer failed"),
                }
            }
            if closed {
                return;
            }
        }
    })
}

/// Listens on the discovery group: beacons of our cluster from others go to the owner, when
/// the address a beacon names is on the host it came from.
pub(super) fn spawn_beacon_listener(
    socket: Arc<tokio::net::UdpSocket>,
    cluster: String,
    own: SocketAddr,
    inbox: mpsc::Sender<Command>,
    sealer: Arc<Sealer>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            let (len, source) = match socket.recv_from(&mut buf).await {
                Ok(received) => received,
                Err(error) => {
                    debug!(%error, "beacon receive failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(opened) = sealer.open(Channel::Datagram, &buf[..len], source) else {
                continue;
            };
            let Some(beacon) = crate::discover::decode(&opened) else {
                continue;
            };
            if beacon.cluster != cluster || beacon.from.addr == own {
                continue;
            }
            if !crate::discover::names_its_source(&beacon, source) {
                // Contacting the address would let anyone on the LAN aim this agent's
                // announce and full state at a third party.
                debug!(%source, named = %beacon.from.addr, "ignored a beacon that names another host than its source");
                continue;
            }
            if inbox
                .send(Command::Discovered {
                    addr: beacon.from.addr,
                })
                .await
                .is_err()
            {
                return;
            }
        }
    })
}

/// Resolves names and hands the addresses (and the names that failed) to the owner.
pub(super) fn spawn_resolve(request: Resolve, inbox: mpsc::Sender<Command>) {
    tokio::spawn(async move {
        let (addrs, failed) = resolve_targets(&request.targets).await;
        let purpose = request.purpose;
        let _ = inbox
            .send(Command::Resolved {
                addrs,
                failed,
                purpose,
            })
            .await;
    });
}
