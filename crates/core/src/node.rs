//! The tokio driver: one task owns `Foca` and the member table.
//!
//! Everything else talks to the owner through one bounded inbox ([`Command`]) and reads the
//! table from a `watch` of [`Snapshot`]s. The owner's loop waits on three things: the inbox,
//! the UDP socket and the earliest timer. After each input it drains foca's runtime (send, then
//! schedule, then notify) and publishes what changed. Nothing in a turn awaits: datagrams go out
//! with `try_send_to`, events with `try_send`.

mod owner;
mod tasks;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};

use crate::anti_entropy::SyncState;
use crate::engine;
use crate::identity::Identity;
use crate::membership::{Event, Member, Status};
use crate::profile::Profile;

/// How many commands may wait for the owner. Senders wait when it is full (back-pressure on
/// control requests and push-pull results, never on gossip, which the owner reads itself).
const INBOX_CAPACITY: usize = 256;
/// How many events may wait for the consumer. The owner never waits: past this, events are
/// dropped and counted in [`Stats::events_dropped`].
const EVENT_CAPACITY: usize = 4096;

/// What a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Node name, unique in the cluster.
    pub name: String,
    /// Address to bind UDP and TCP gossip to. Port 0 picks a free port.
    pub bind: SocketAddr,
    /// Address to tell others; default: the bound address, with an unspecified IP replaced by
    /// the one that routes to the first join target (or the default route).
    pub advertise: Option<SocketAddr>,
    /// Initial tags.
    pub tags: BTreeMap<String, String>,
    /// Timing profile.
    pub profile: Profile,
    /// Join targets (`ip:port` or `name:port`), resolved now and periodically.
    pub join: Vec<String>,
    /// Maximum join attempts while alone; 0 means no limit.
    pub retry_max: u32,
    /// First delay between join attempts while alone (doubles up to the profile's maximum);
    /// `None` takes the profile's.
    pub retry_interval: Option<Duration>,
    /// How long a failed member stays listed before it is reaped.
    pub reconnect_timeout: Duration,
    /// How long a left member stays listed before it is reaped.
    pub tombstone_timeout: Duration,
    /// UDP payload budget in bytes, envelope included (1400 suits Ethernet).
    pub max_packet_size: usize,
    /// Where to keep the snapshot of known members (`--snapshot`); `None`: no snapshot.
    pub snapshot: Option<std::path::PathBuf>,
    /// Rejoin the snapshot's members even if this node left gracefully last time.
    pub rejoin: bool,
    /// Cluster name for multicast discovery (`--discover`); `None`: off.
    pub discover: Option<String>,
}

impl NodeConfig {
    /// A config with Serf-like defaults for `name` bound to `bind`.
    pub fn new(name: impl Into<String>, bind: SocketAddr) -> Self {
        Self {
            name: name.into(),
            bind,
            advertise: None,
            tags: BTreeMap::new(),
            profile: Profile::Lan,
            join: Vec::new(),
            retry_max: 0,
            retry_interval: None,
            reconnect_timeout: Duration::from_secs(24 * 3600),
            tombstone_timeout: Duration::from_secs(24 * 3600),
            max_packet_size: 1400,
            snapshot: None,
            rejoin: false,
            discover: None,
        }
    }
}

/// Why a node could not start or a command failed.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The gossip address could not be bound. Nothing is running.
    #[error("cannot bind gossip address {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The discovery cluster name is invalid. Nothing is running.
    #[error("{0}")]
    Discover(#[from] crate::discover::DiscoverError),
    /// Name or tags break the limits. Nothing changed.
    #[error("invalid name or tags: {0}")]
    Meta(#[from] crate::broadcast::MetaError),
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
    /// None of the join targets answered.
    #[error("could not join any of {0}")]
    JoinFailed(String),
    /// The node has stopped.
    #[error("the node is shut down")]
    Stopped,
    /// foca refused the operation.
    #[error("gossip: {0}")]
    Foca(String),
}

/// Counters, readable at any time without asking the owner.
#[derive(Debug, Default)]
pub struct Stats {
    /// Datagrams received.
    pub packets_in: AtomicU64,
    /// Datagrams sent.
    pub packets_out: AtomicU64,
    /// Bytes received over UDP and TCP.
    pub bytes_in: AtomicU64,
    /// Bytes sent over UDP and TCP.
    pub bytes_out: AtomicU64,
    /// Datagrams dropped as malformed (bad envelope, undecodable, from a stranger).
    pub packets_dropped: AtomicU64,
    /// Push-pulls completed (both directions).
    pub push_pulls: AtomicU64,
    /// Events dropped because the consumer fell behind.
    pub events_dropped: AtomicU64,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The published view of the cluster.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The local member.
    pub local: Member,
    /// Every known member, the local one included, sorted by name.
    pub members: Vec<Member>,
    /// True once this node has left the cluster.
    pub left: bool,
    /// Set when another live member claims this node's name and keeps it (it was there
    /// first): this node leaves, and its owner should exit with this message.
    pub conflict: Option<String>,
}

impl Snapshot {
    /// Number of members with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.members.iter().filter(|m| m.status == status).count()
    }
}

pub(crate) enum Command {
    Join {
        targets: Vec<String>,
        reply: oneshot::Sender<Result<usize, NodeError>>,
    },
    Leave {
        reply: oneshot::Sender<()>,
    },
    ForceLeave {
        name: String,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    SetTags {
        tags: BTreeMap<String, String>,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    GetState {
        reply: oneshot::Sender<SyncState>,
    },
    ApplyState {
        state: SyncState,
    },
    JoinedVia {
        joined: usize,
        reply: Option<oneshot::Sender<Result<usize, NodeError>>>,
        tried: String,
    },
    Resolved {
        addrs: Vec<SocketAddr>,
    },
    Discovered {
        addr: SocketAddr,
    },
    Shutdown,
}

/// A handle to a running node. Cheap to clone.
#[derive(Clone)]
pub struct NodeHandle {
    inbox: mpsc::Sender<Command>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    stats: Arc<Stats>,
    local_addr: SocketAddr,
    advertise: SocketAddr,
    stopped: watch::Receiver<bool>,
}

impl NodeHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.inbox
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// The current view.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver that wakes on every change of the view.
    pub fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The bound gossip address (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address other members use.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.advertise
    }

    /// Contacts each target (`ip:port` or `name:port`, every resolved address) with a
    /// push-pull; returns how many answered.
    pub async fn join(&self, targets: Vec<String>) -> Result<usize, NodeError> {
        self.ask(|reply| Command::Join { targets, reply }).await?
    }

    /// Announces a leave intent, gossips it, then leaves the cluster.
    pub async fn leave(&self) -> Result<(), NodeError> {
        self.ask(|reply| Command::Leave { reply }).await
    }

    /// Marks a failed member as left everywhere (Serf's `force-leave`).
    pub async fn force_leave(&self, name: String) -> Result<(), NodeError> {
        self.ask(|reply| Command::ForceLeave { name, reply })
            .await?
    }

    /// Replaces the local tags and gossips them.
    pub async fn set_tags(&self, tags: BTreeMap<String, String>) -> Result<(), NodeError> {
        self.ask(|reply| Command::SetTags { tags, reply }).await?
    }

    /// Stops the owner and its tasks (without leaving: call [`Self::leave`] first) and waits,
    /// at most 3 s, until they are gone and the snapshot, if any, is written.
    pub async fn shutdown(&self) {
        let _ = self.inbox.send(Command::Shutdown).await;
        let mut stopped = self.stopped.clone();
        let _ = tokio::time::timeout(Duration::from_secs(3), stopped.wait_for(|s| *s)).await;
    }
}

/// Starts a node: binds UDP and TCP on the same port, spawns the owner. Returns the handle and
/// the event stream.
pub async fn start(config: NodeConfig) -> Result<(NodeHandle, mpsc::Receiver<Event>), NodeError> {
    let (udp, tcp) = bind_pair(config.bind).await?;
    // Join names resolved now too: the route toward a member is the best advertise guess.
    let join_addrs = if config.advertise.is_none() && config.bind.ip().is_unspecified() {
        resolve_targets(&config.join).await.0
    } else {
        Vec::new()
    };
    let local_addr = udp.local_addr().map_err(|source| NodeError::Bind {
        addr: config.bind,
        source,
    })?;
    let advertise = config
        .advertise
        .map(|a| {
            if a.port() == 0 {
                SocketAddr::new(a.ip(), local_addr.port())
            } else {
                a
            }
        })
        .unwrap_or_else(|| guess_advertise(local_addr, &join_addrs));
    let seeds = snapshot_seeds(&config, advertise);
    let beacon = match &config.discover {
        Some(cluster) => {
            crate::discover::validate_cluster(cluster)?;
            match crate::discover::socket(advertise.ip()) {
                Ok(sock) => Some(Arc::new(sock)),
                Err(error) => {
                    tracing::error!(%error, "discovery is off: the beacon socket could not be set up");
                    None
                }
            }
        }
        None => None,
    };
    let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_CAPACITY);
    let (event_tx, event_rx) = mpsc::channel(EVENT_CAPACITY);
    let (stopped_tx, stopped_rx) = watch::channel(false);
    let stats = Arc::new(Stats::default());
    let snapshot_path = config.snapshot.clone();
    let discover = config.discover.clone();
    let engine = engine::Engine::new(
        config,
        Identity::new(advertise),
        seeds,
        beacon.is_some(),
        None,
        stats.clone(),
        Instant::now(),
    )?;
    let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(engine.view()));
    let mut tasks = vec![tasks::spawn_sync_server(
        tcp,
        inbox_tx.clone(),
        stats.clone(),
        engine.sync_limit(),
    )];
    if let (Some(sock), Some(cluster)) = (&beacon, discover) {
        tasks.push(tasks::spawn_beacon_listener(
            sock.clone(),
            cluster,
            advertise,
            inbox_tx.clone(),
        ));
    }
    let writer = snapshot_path.map(|p| tasks::spawn_snapshot_writer(p, snapshot_rx.clone()));
    let owner = owner::Owner {
        engine,
        socket: Arc::new(udp),
        beacon,
        inbox_tx: inbox_tx.clone(),
        inbox: inbox_rx,
        events: event_tx,
        snapshot_tx,
        stats: stats.clone(),
    };
    tokio::spawn(owner.run(tasks, writer, stopped_tx));
    let handle = NodeHandle {
        inbox: inbox_tx,
        snapshot: snapshot_rx,
        stats,
        local_addr,
        advertise,
        stopped: stopped_rx,
    };
    Ok((handle, event_rx))
}

/// The members to rejoin from the snapshot, if there is one and it may be used.
fn snapshot_seeds(config: &NodeConfig, advertise: SocketAddr) -> Vec<SocketAddr> {
    let Some(path) = &config.snapshot else {
        return Vec::new();
    };
    match crate::snapshot::load(path) {
        Ok(None) => Vec::new(),
        Ok(Some(file)) if file.left && !config.rejoin => {
            tracing::info!(path = %path.display(),
                "this node left the cluster gracefully last time: not rejoining its snapshot (use --rejoin)");
            Vec::new()
        }
        Ok(Some(file)) => {
            let seeds: Vec<SocketAddr> = file
                .members
                .iter()
                .map(|m| m.addr)
                .filter(|a| *a != advertise)
                .collect();
            tracing::info!(path = %path.display(), members = seeds.len(), "rejoining members from the snapshot");
            seeds
        }
        Err(error) => {
            tracing::warn!(%error, "ignoring the snapshot");
            Vec::new()
        }
    }
}

/// Binds UDP, then TCP on the same port. With port 0, retries when the TCP side of the port the
/// kernel picked for UDP is taken.
async fn bind_pair(bind: SocketAddr) -> Result<(UdpSocket, TcpListener), NodeError> {
    let err = |source| NodeError::Bind { addr: bind, source };
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(bind).await.map_err(err)?;
        let addr = udp.local_addr().map_err(err)?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if bind.port() == 0 => last = Some(e),
            Err(e) => return Err(err(e)),
        }
    }
    Err(err(
        last.unwrap_or_else(|| std::io::Error::other("no free port"))
    ))
}

/// For an unspecified bind IP: the local IP that routes toward a join target (a UDP `connect`
/// sends nothing), else toward a documentation address (the default route), else the first
/// IPv4 address of an interface that is up and not loopback (Serf's choice), else loopback.
fn guess_advertise(local: SocketAddr, join: &[SocketAddr]) -> SocketAddr {
    if !local.ip().is_unspecified() {
        return local;
    }
    let probes = join
        .iter()
        .copied()
        .filter(|a| !a.ip().is_loopback())
        .chain([SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 9)]);
    for target in probes {
        let routed = StdUdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .and_then(|s| s.connect(target).map(|_| s))
            .and_then(|s| s.local_addr());
        if let Ok(addr) = routed
            && !addr.ip().is_unspecified()
        {
            return SocketAddr::new(addr.ip(), local.port());
        }
    }
    let interface_ip = nix::ifaddrs::getifaddrs().ok().and_then(|mut addrs| {
        addrs.find_map(|ifa| {
            let up = ifa.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
            let ip = ifa.address?.as_sockaddr_in()?.ip();
            (up && !ip.is_loopback()).then_some(IpAddr::V4(ip))
        })
    });
    let ip = interface_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    SocketAddr::new(ip, local.port())
}

/// Parses and resolves join targets; returns the addresses and the targets that failed with
/// their error.
pub async fn resolve_targets(targets: &[String]) -> (Vec<SocketAddr>, Vec<(String, String)>) {
    let mut addrs = Vec::new();
    let mut failed = Vec::new();
    for target in targets {
        let with_port = if target.parse::<SocketAddr>().is_ok() || has_port(target) {
            target.clone()
        } else {
            format!("{target}:{}", crate::DEFAULT_PORT)
        };
        match tokio::net::lookup_host(with_port.as_str()).await {
            Ok(found) => {
                let mut any = false;
                for a in found {
                    any = true;
                    if !addrs.contains(&a) {
                        addrs.push(a);
                    }
                }
                if !any {
                    failed.push((target.clone(), "resolved to no address".to_string()));
                }
            }
            Err(e) => failed.push((target.clone(), e.to_string())),
        }
    }
    (addrs, failed)
}

fn has_port(target: &str) -> bool {
    target
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// Wait helper for [`Duration`] display in logs.
pub(crate) fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}
