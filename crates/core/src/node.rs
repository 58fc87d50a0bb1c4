//! The tokio driver: one task owns the [`Engine`](crate::engine) and carries out its outbox.
//!
//! Everything else talks to the owner through one bounded inbox (commands) and reads the
//! member table from a `watch` of [`View`]s. The owner's loop waits on three things: the
//! inbox, the UDP socket and the earliest timer. After each input the engine drains foca's
//! runtime (send, then schedule, then notify) and the owner carries out what it asked for.
//! Nothing in a turn awaits: datagrams go out with `try_send_to`, events with `try_send`.
//!
//! - `node/owner.rs`: the loop and the outbox's I/O.
//! - `node/tasks.rs`: the push-pull server, outgoing push-pulls, the resolver, the beacon
//!   listener and the snapshot writer.
//! - `node/net.rs`: binding, the advertise guess, resolving names, the beacon socket.
//! - `node/push_pull.rs`: the push-pull over TCP.
//! - `node/sealing.rs`: the seal guard shared by all of them, its counters and log lines.

mod icmp;
mod net;
mod owner;
pub mod push_pull;
mod sealing;
mod tasks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::config::NodeConfig;
use crate::engine::{Command, Engine};
use crate::error::{CommandError, StartError};
use crate::identity::Identity;
use crate::membership::Event;
use crate::query::{QueryParams, QueryStarted, QueryUpdate};
use crate::role::Role;
use crate::view::{Stats, View};

/// How many commands may wait for the owner. Senders wait when it is full (back-pressure on
/// control requests and push-pull results, never on gossip, which the owner reads itself).
const INBOX_CAPACITY: usize = 256;
/// How many events may wait for the consumer. The owner never waits: past this, events are
/// dropped and counted in [`Stats::events_dropped`].
const EVENT_CAPACITY: usize = 4096;
/// How many acks and answers of one query may wait for its consumer. The owner never waits:
/// past this, updates are dropped (a consumer reading as they come never gets there: each
/// member sends at most one ack and one answer).
const QUERY_UPDATES: usize = 1024;

/// A handle to a running node. Cheap to clone.
#[derive(Clone)]
pub struct NodeHandle {
    inbox: mpsc::Sender<Command>,
    view: watch::Receiver<Arc<View>>,
    stats: Arc<Stats>,
    local_addr: SocketAddr,
    advertise: SocketAddr,
    stopped: watch::Receiver<bool>,
    sealer: Arc<sealing::Sealer>,
    cluster: String,
}

impl NodeHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, CommandError> {
        let (tx, rx) = oneshot::channel();
        self.inbox
            .send(make(tx))
            .await
            .map_err(|_| CommandError::Stopped)?;
        rx.await.map_err(|_| CommandError::Stopped)
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    /// A receiver that wakes on every change of the view.
    pub fn watch(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
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

    /// Whether gossip is sealed (a keyring is configured).
    pub fn encrypted(&self) -> bool {
        self.sealer.encrypted()
    }

    /// Whether plaintext packets are accepted beside sealed ones (`--encrypt-accept-plaintext`
    /// or `--encrypt-send-plaintext`).
    pub fn accepts_plaintext(&self) -> bool {
        self.sealer.accepts_plaintext()
    }

    /// Whether packets go out plaintext although a key is loaded (`--encrypt-send-plaintext`).
    pub fn sends_plaintext(&self) -> bool {
        self.sealer.sends_plaintext()
    }

    /// The cluster label (`--cluster`); empty: none.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The keyring as base64 keys, primary first; `None` when gossip is plaintext.
    pub fn keys(&self) -> Option<Vec<String>> {
        self.sealer.keys()
    }

    /// Adds `key` (base64) to this node's keyring and the keyring file. True when it was not
    /// there yet. Only this node: the cluster-wide operation is a query (see the agent).
    pub fn install_key(&self, key: &str) -> Result<bool, CommandError> {
        let key = crate::seal::Key::parse(key)?;
        self.sealer.change_keys(|ring| ring.install(key))
    }

    /// Makes the installed `key` the one this node seals with. True when it changed.
    pub fn use_key(&self, key: &str) -> Result<bool, CommandError> {
        let key = crate::seal::Key::parse(key)?;
        self.sealer.change_keys(|ring| ring.use_key(&key))
    }

    /// Removes `key` from this node's keyring; the key in use is refused. True when it was
    /// there.
    pub fn remove_key(&self, key: &str) -> Result<bool, CommandError> {
        let key = crate::seal::Key::parse(key)?;
        self.sealer.change_keys(|ring| ring.remove(&key))
    }

    /// Contacts each target (`ip:port` or `name:port`, every resolved address) with a
    /// push-pull; returns how many answered.
    /// With `replay`, the user events the cluster still remembers run here too (Serf's
    /// `join -replay`); without, they are history and never run.
    pub async fn join(&self, targets: Vec<String>, replay: bool) -> Result<usize, CommandError> {
        self.ask(|reply| Command::Join {
            targets,
            replay,
            reply,
        })
        .await?
    }

    /// Sends user event `name` with `payload` to every member, this one included (their
    /// `user` and `user:NAME` handlers run once); returns its Lamport time. `coalesce`: handlers
    /// may fold it into a newer event of the same name.
    pub async fn user_event(
        &self,
        name: String,
        payload: Vec<u8>,
        coalesce: bool,
    ) -> Result<u64, CommandError> {
        self.ask(|reply| Command::UserEvent {
            name,
            payload,
            coalesce,
            reply,
        })
        .await?
    }

    /// Sends a query to the members that pass `params.filters` (this one included); returns
    /// whom it expects answers from, and the stream of acks and answers, which ends with
    /// [`QueryUpdate::Done`] once every expected member answered or the timeout passed.
    /// With no member passing the filters nothing is sent and the stream holds only `Done`.
    pub async fn query(
        &self,
        params: QueryParams,
    ) -> Result<(QueryStarted, mpsc::Receiver<QueryUpdate>), CommandError> {
        let (updates, rx) = mpsc::channel(QUERY_UPDATES);
        let started = self
            .ask(|reply| Command::Query {
                params,
                updates,
                reply,
            })
            .await??;
        Ok((started, rx))
    }

    /// This node's answer to query `(ltime, id)` ([`Event::Query`]), sent to its origin. A
    /// node answers a query once, before its timeout, with at most
    /// [`crate::query::MAX_RESPONSE_LEN`] bytes.
    pub async fn respond_query(
        &self,
        ltime: u64,
        id: u64,
        payload: Vec<u8>,
    ) -> Result<(), CommandError> {
        self.ask(|reply| Command::RespondQuery {
            ltime,
            id,
            payload,
            reply,
        })
        .await?
    }

    /// Announces a leave intent, gossips it, then leaves the cluster.
    pub async fn leave(&self) -> Result<(), CommandError> {
        self.ask(|reply| Command::Leave { reply }).await
    }

    /// Marks a failed member as left everywhere (Serf's `force-leave`).
    pub async fn force_leave(&self, name: String) -> Result<(), CommandError> {
        self.ask(|reply| Command::ForceLeave { name, reply })
            .await?
    }

    /// Sets the tags in `set`, then deletes those in `delete`, and gossips the result to every
    /// member; returns the tags now in effect. Over the size limit nothing changes.
    pub async fn update_tags(
        &self,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<BTreeMap<String, String>, CommandError> {
        self.ask(|reply| Command::UpdateTags { set, delete, reply })
            .await?
    }

    /// Announces new health check states or a new primary group to every member (a
    /// `member-update` everywhere). Over the limits nothing changes.
    pub async fn update_role(&self, role: Role) -> Result<(), CommandError> {
        self.ask(|reply| Command::UpdateRole { role, reply })
            .await?
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
pub async fn start(config: NodeConfig) -> Result<(NodeHandle, mpsc::Receiver<Event>), StartError> {
    if !config.cluster.is_empty() {
        crate::seal::validate_label(&config.cluster)?;
    }
    if let (Some(ring), Some(path)) = (&config.keyring, &config.keyring_file)
        && !path.exists()
    {
        ring.save(path).map_err(|source| StartError::KeyringFile {
            path: path.clone(),
            source,
        })?;
    }
    let (udp, tcp) = net::bind_pair(config.bind).await?;
    if let Err(error) = icmp::enable(&udp) {
        // Only the early word of a killed member's port is lost: the TCP ping still says it.
        tracing::debug!(%error, "the gossip socket cannot queue ICMP errors");
    }
    // Join names resolved now too: the route toward a member is the best advertise guess.
    let join_addrs = if config.advertise.is_none() && config.bind.ip().is_unspecified() {
        net::resolve_targets(&config.join).await.0
    } else {
        Vec::new()
    };
    let local_addr = udp.local_addr().map_err(|source| StartError::Bind {
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
        .unwrap_or_else(|| net::guess_advertise(local_addr, &join_addrs));
    let restored = match &config.snapshot {
        Some(path) => crate::snapshot::restore(path, config.rejoin, advertise),
        None => Default::default(),
    };
    let beacon = match &config.discover {
        Some(cluster) => {
            crate::discover::validate_cluster(cluster)?;
            match net::beacon_socket(advertise.ip()) {
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
    if config.keyring.is_some() && config.send_plaintext {
        tracing::warn!(
            "gossip is NOT SEALED: the key is loaded but packets go out PLAINTEXT and plaintext \
             is accepted (--encrypt-send-plaintext); next step: --encrypt-accept-plaintext"
        );
    } else if config.keyring.is_some() && config.accept_plaintext {
        tracing::warn!(
            "gossip is sealed but PLAINTEXT IS ACCEPTED (--encrypt-accept-plaintext): anyone \
             can join and inject state; turn it off once every member is sealed"
        );
    }
    let guard = crate::seal::Guard::new(
        config.keyring.clone(),
        config.accept_plaintext,
        &config.cluster,
        rand::random(),
    )
    .sending_plaintext(config.send_plaintext);
    let sealer = Arc::new(sealing::Sealer::new(
        guard,
        stats.clone(),
        config.keyring_file.clone(),
    ));
    let cluster = config.cluster.clone();
    let snapshot_path = config.snapshot.clone();
    let discover = config.discover.clone();
    let engine = Engine::new(
        config,
        Identity::starting_at(advertise, std::time::SystemTime::now()),
        restored,
        beacon.is_some(),
        None,
        stats.clone(),
        Instant::now(),
    )?;
    let (view_tx, view_rx) = watch::channel(Arc::new(engine.view()));
    let mut tasks = vec![tasks::spawn_sync_server(
        tcp,
        inbox_tx.clone(),
        stats.clone(),
        engine.sync_limit(),
        sealer.clone(),
    )];
    if let (Some(sock), Some(cluster)) = (&beacon, discover) {
        tasks.push(tasks::spawn_beacon_listener(
            sock.clone(),
            cluster,
            advertise,
            inbox_tx.clone(),
            sealer.clone(),
        ));
    }
    let writer = snapshot_path.map(|p| tasks::spawn_snapshot_writer(p, view_rx.clone()));
    let owner = owner::Owner {
        engine,
        source: udp.local_addr().ok().map(|a| a.ip()),
        socket: Arc::new(udp),
        beacon,
        inbox_tx: inbox_tx.clone(),
        inbox: inbox_rx,
        events: event_tx,
        view_tx,
        stats: stats.clone(),
        sealer: sealer.clone(),
    };
    tokio::spawn(owner.run(tasks, writer, stopped_tx));
    let handle = NodeHandle {
        inbox: inbox_tx,
        view: view_rx,
        stats,
        local_addr,
        advertise,
        stopped: stopped_rx,
        sealer,
        cluster,
    };
    Ok((handle, event_rx))
}
