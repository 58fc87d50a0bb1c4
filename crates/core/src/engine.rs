//! The engine: foca, the member table and every protocol rule of the node, without I/O.
//!
//! Every entry point takes the current `Instant`; everything the engine wants done (datagrams
//! to send, push-pulls and DNS look-ups to start, beacons, events, a new view) goes into its
//! [`Outbox`], which the caller drains. The tokio driver ([`crate::node`]) and the
//! deterministic simulator ([`crate::sim`]) are two such callers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec, State, Timer};
use rand::RngExt;
use rand::rngs::StdRng;
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use crate::anti_entropy::{Digest, SyncState};
use crate::broadcast::{self, Broadcast, Inbox, Shared, lock, validate_meta};
use crate::envelope::{self, Kind};
use crate::identity::Identity;
use crate::membership::{Event, Membership, Meta, Status};
use crate::node::{Command, NodeConfig, NodeError, Snapshot, Stats, ms};
use crate::profile::Timings;

type Gossip = Foca<Identity, PostcardCodec, StdRng, Inbox>;

/// Our own timers, in the same queue as foca's.
enum Tick {
    Foca(Timer<Identity>),
    /// Send the digest to a random member.
    Sync,
    /// Suspect polling, reaping, config scaling, missing metas.
    Housekeeping,
    /// Join attempt while alone.
    Rejoin,
    /// Send a discovery beacon.
    Beacon,
    /// Re-resolve join names.
    Resolve,
    /// The leave intent had its time: leave now.
    LeaveNow,
}

/// A push-pull the engine wants made with each of `addrs`.
pub(crate) struct PushPull {
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) state: SyncState,
    pub(crate) reply: Option<oneshot::Sender<Result<usize, NodeError>>>,
    pub(crate) tried: String,
}

/// A `join` request: resolve the targets, then push-pull with every address.
pub(crate) struct JoinRequest {
    pub(crate) targets: Vec<String>,
    pub(crate) state: SyncState,
    pub(crate) reply: oneshot::Sender<Result<usize, NodeError>>,
}

/// What the engine wants done; drained by the caller after every input.
#[derive(Default)]
pub(crate) struct Outbox {
    /// Enveloped datagrams and where to send them.
    pub(crate) datagrams: Vec<(SocketAddr, Vec<u8>)>,
    /// Push-pulls to start; each answer comes back as `Command::ApplyState`, then one
    /// `Command::JoinedVia` with the count.
    pub(crate) push_pulls: Vec<PushPull>,
    /// Join requests to resolve and carry out.
    pub(crate) joins: Vec<JoinRequest>,
    /// Join names to resolve; the addresses come back as `Command::Resolved`.
    pub(crate) resolve: Option<Vec<String>>,
    /// Beacon datagrams for the discovery group.
    pub(crate) beacons: Vec<Vec<u8>>,
    /// Events for the handlers, oldest first.
    pub(crate) events: Vec<Event>,
    /// The new view, when it changed.
    pub(crate) snapshot: Option<Snapshot>,
}

pub(crate) struct Engine {
    foca: Gossip,
    runtime: AccumulatingRuntime<Identity>,
    shared: Arc<Mutex<Shared>>,
    out: Outbox,
    now: Instant,
    stats: Arc<Stats>,
    timers: crate::timers::TimerQueue<Tick>,
    timings: Timings,
    config: NodeConfig,
    seeds: Vec<SocketAddr>,
    /// Members remembered in the snapshot: always join targets.
    snapshot_seeds: Vec<SocketAddr>,
    /// The join targets' addresses at the last resolution.
    resolved: Vec<SocketAddr>,
    retry_delay: Duration,
    retries: u32,
    rejoin_scheduled: bool,
    leaving: Vec<oneshot::Sender<()>>,
    leave_started: bool,
    left: bool,
    /// Why this node gave up its name (it leaves and its owner should exit).
    conflict: Option<String>,
    conflict_warned: Vec<SocketAddr>,
    /// Publish the snapshot even if the table did not change (left / conflict changed).
    republish: bool,
    cluster_size: usize,
    last_push_pull: Option<Instant>,
    last_warn: Option<Instant>,
    rng: StdRng,
    /// Discovery is on (the caller has a beacon socket).
    beacon_on: bool,
    beacon_delay: Duration,
    /// When each discovered address was last contacted.
    discovered: std::collections::BTreeMap<SocketAddr, Instant>,
    /// Since when each member has been suspect.
    suspect_since: std::collections::BTreeMap<SocketAddr, Instant>,
}

/// How an engine is seeded: real randomness for agents, a seed for simulations.
pub(crate) fn rng(seed: Option<u64>) -> StdRng {
    use rand::SeedableRng;
    match seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => rand::make_rng::<StdRng>(),
    }
}

impl Engine {
    /// A node with `identity`; `snapshot_seeds` are always join targets; `beacon_on` when the
    /// caller can send discovery beacons; `seed` makes every random choice reproducible.
    pub(crate) fn new(
        config: NodeConfig,
        identity: Identity,
        snapshot_seeds: Vec<SocketAddr>,
        beacon_on: bool,
        seed: Option<u64>,
        stats: Arc<Stats>,
        now: Instant,
    ) -> Result<Self, NodeError> {
        let meta = Meta {
            id: identity,
            version: 0,
            name: config.name.clone(),
            tags: config.tags.clone(),
        };
        validate_meta(&meta)?;
        let table = Membership::new(meta, config.reconnect_timeout, config.tombstone_timeout);
        let shared = Arc::new(Mutex::new(Shared { table, news: false }));
        let timings = config.profile.timings();
        let budget = config.max_packet_size.saturating_sub(envelope::HEADER_LEN);
        let foca = Foca::with_custom_broadcast(
            identity,
            timings.foca_config(1, budget),
            rng(seed),
            PostcardCodec,
            Inbox::new(shared.clone()),
        );
        let retry_delay = config.retry_interval.unwrap_or(timings.retry_interval);
        let engine = Self {
            foca,
            runtime: AccumulatingRuntime::new(),
            shared,
            out: Outbox::default(),
            now,
            stats,
            timers: Default::default(),
            timings,
            config,
            seeds: snapshot_seeds.clone(),
            snapshot_seeds,
            resolved: Vec::new(),
            retry_delay,
            retries: 0,
            rejoin_scheduled: false,
            leaving: Vec::new(),
            leave_started: false,
            left: false,
            conflict: None,
            conflict_warned: Vec::new(),
            republish: false,
            cluster_size: 1,
            last_push_pull: None,
            last_warn: None,
            rng: rng(seed.map(|s| s.wrapping_add(1))),
            beacon_on,
            beacon_delay: retry_delay,
            discovered: Default::default(),
            suspect_since: Default::default(),
        };
        Ok(engine)
    }

    /// Everything the engine wants done since the last call.
    pub(crate) fn take_outbox(&mut self) -> Outbox {
        std::mem::take(&mut self.out)
    }

    /// Internal state for simulation reports.
    #[cfg(test)]
    pub(crate) fn debug_line(&self) -> String {
        format!(
            "id={:?} alone={} rejoin_scheduled={} retries={} delay={:?} foca_members={} seeds={} timers={}",
            self.local(),
            self.alone(),
            self.rejoin_scheduled,
            self.retries,
            self.retry_delay,
            self.foca.num_members(),
            self.seeds.len(),
            self.timers.len()
        )
    }

    /// The earliest timer.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// The current view.
    pub(crate) fn view(&self) -> Snapshot {
        Self::snapshot_of(&lock(&self.shared).table, self.left, self.conflict.clone())
    }

    fn snapshot_of(table: &Membership, left: bool, conflict: Option<String>) -> Snapshot {
        let members = table.members();
        let local_addr = table.local_meta().id.addr;
        let local = members
            .iter()
            .find(|m| m.addr == local_addr)
            .cloned()
            .expect("the local member is always in the table");
        Snapshot {
            local,
            members,
            left,
            conflict,
        }
    }

    /// Starts the node: own meta broadcast, timers, first join attempt.
    pub(crate) fn start(&mut self, now: Instant) {
        self.now = now;
        let local_meta = lock(&self.shared).table.local_meta().clone();
        self.broadcast(Broadcast::Meta(local_meta));
        self.timers
            .push(now + self.timings.sync_interval, Tick::Sync);
        self.timers
            .push(now + self.timings.probe_period, Tick::Housekeeping);
        if !self.config.join.is_empty() {
            self.timers.push(now, Tick::Resolve);
        }
        if !self.seeds.is_empty() {
            self.rejoin_scheduled = true;
            self.timers.push(now, Tick::Rejoin);
        }
        if self.beacon_on {
            self.timers.push(now, Tick::Beacon);
        }
        self.republish = true;
        self.drain();
        info!(name = %self.config.name, addr = %self.foca.identity().addr, "node started");
    }

    /// Answers every pending request as the node stops.
    pub(crate) fn stop(&mut self) {
        for reply in self.leaving.drain(..) {
            let _ = reply.send(());
        }
    }

    /// No other live member. Derived from foca every time: foca's renewal after being declared
    /// down resets it to disconnected without an `Idle` notice, so a flag would go stale.
    fn alone(&self) -> bool {
        self.foca.num_members() == 0
    }

    fn local(&self) -> Identity {
        *self.foca.identity()
    }

    pub(crate) fn state(&self) -> SyncState {
        let mut members: Vec<_> = self.foca.iter_membership_state().cloned().collect();
        if !self.left {
            members.push(foca::Member::alive(self.local()));
        }
        let shared = lock(&self.shared);
        SyncState {
            from: Some(self.local()),
            members,
            metas: shared.table.metas(),
            intents: shared.table.intents(),
        }
    }

    fn broadcast(&mut self, item: Broadcast) {
        match item.encode().map(|data| self.foca.add_broadcast(&data)) {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => warn!(%error, "broadcast refused by gossip layer"),
            Err(error) => warn!(%error, "broadcast could not be encoded"),
        }
    }

    fn gossip_now(&mut self) {
        if let Err(error) = self.foca.gossip(&mut self.runtime) {
            debug!(%error, "gossip failed");
        }
    }

    /// A command from the handle, a task or the caller.
    pub(crate) fn handle_command(&mut self, now: Instant, cmd: Command) {
        self.now = now;
        self.command(cmd);
        self.drain();
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Join { targets, reply } => {
                let state = self.state();
                self.out.joins.push(JoinRequest {
                    targets,
                    state,
                    reply,
                });
            }
            Command::JoinedVia {
                joined,
                reply,
                tried,
            } => {
                if let Some(reply) = reply {
                    let result = if joined > 0 {
                        Ok(joined)
                    } else {
                        Err(NodeError::JoinFailed(tried))
                    };
                    let _ = reply.send(result);
                }
            }
            Command::Leave { reply } => self.start_leave(Some(reply)),
            Command::ForceLeave { name, reply } => {
                let _ = reply.send(self.force_leave(&name));
            }
            Command::SetTags { tags, reply } => {
                let _ = reply.send(self.set_tags(tags));
            }
            Command::GetState { reply } => {
                let _ = reply.send(self.state());
            }
            Command::ApplyState { state } => self.apply_state(state),
            Command::Resolved { addrs } => self.resolved(addrs),
            Command::Discovered { addr } => self.discovered(addr),
            Command::Shutdown => {}
        }
    }

    /// New resolution of the join names: they and the snapshot's members are the seeds. While
    /// alone, try them now; otherwise contact only addresses that are new in DNS and not yet
    /// members (a service scaled up).
    fn resolved(&mut self, addrs: Vec<SocketAddr>) {
        let me = self.local().addr;
        let addrs: Vec<SocketAddr> = addrs.into_iter().filter(|a| *a != me).collect();
        let members: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        // Every address that is not a member: new in DNS (a service scaled up), or a seed of a
        // cluster that formed apart from ours (they merge at the next resolution).
        let fresh: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| !members.contains(a))
            .collect();
        self.resolved = addrs.clone();
        self.seeds = addrs;
        for s in &self.snapshot_seeds {
            if !self.seeds.contains(s) {
                self.seeds.push(*s);
            }
        }
        if self.left {
            return;
        }
        if self.alone() {
            if !self.rejoin_scheduled {
                self.rejoin_scheduled = true;
                self.timers.push(self.now, Tick::Rejoin);
            }
        } else if !fresh.is_empty() {
            debug!(
                count = fresh.len(),
                "join names resolve to new addresses; contacting them"
            );
            self.out.push_pulls.push(PushPull {
                addrs: fresh,
                state: self.state(),
                reply: None,
                tried: String::new(),
            });
        }
    }

    /// A beacon of our cluster from `addr`: join it unless it is already a member (or was
    /// contacted less than a retry interval ago).
    fn discovered(&mut self, addr: SocketAddr) {
        if self.left || self.foca.iter_members().any(|m| m.id().addr == addr) {
            return;
        }
        let now = self.now;
        let recent = self.timings.retry_interval;
        if self
            .discovered
            .get(&addr)
            .is_some_and(|t| now.duration_since(*t) < recent)
        {
            return;
        }
        self.discovered.insert(addr, now);
        self.discovered
            .retain(|_, t| now.duration_since(*t) < recent * 20);
        debug!(%addr, "discovered a member by its beacon");
        let target = Identity {
            addr,
            generation: 0,
        };
        if let Err(error) = self.foca.announce(target, &mut self.runtime) {
            debug!(%error, %addr, "announce failed");
        }
        self.out.push_pulls.push(PushPull {
            addrs: vec![addr],
            state: self.state(),
            reply: None,
            tried: String::new(),
        });
    }

    /// Sends a beacon: quickly (backing off) while alone, every ten sync intervals otherwise,
    /// so two clusters that formed apart on one LAN still merge.
    fn beacon_tick(&mut self, now: Instant) {
        if !self.beacon_on || self.left {
            return;
        }
        let beacon = crate::discover::Beacon {
            cluster: self.config.discover.clone().unwrap_or_default(),
            from: self.local(),
        };
        match crate::discover::encode(&beacon) {
            Ok(packet) => self.out.beacons.push(packet),
            Err(error) => warn!(%error, "beacon could not be encoded"),
        }
        let next = if self.alone() {
            let d = self.beacon_delay;
            self.beacon_delay = (d * 2).min(self.timings.retry_max_interval);
            d
        } else {
            self.beacon_delay = self.timings.retry_interval;
            self.timings.sync_interval * 10
        };
        self.timers.push(now + next, Tick::Beacon);
    }

    /// foca's current suspicion timeout.
    fn foca_suspicion(&self) -> Duration {
        let budget = self
            .config
            .max_packet_size
            .saturating_sub(envelope::HEADER_LEN);
        self.timings
            .foca_config(self.cluster_size, budget)
            .suspect_to_down_after
    }

    /// How long a push-pull may take.
    pub(crate) fn sync_limit(&self) -> Duration {
        self.timings.probe_period * 10
    }

    fn start_leave(&mut self, reply: Option<oneshot::Sender<()>>) {
        if self.left {
            if let Some(reply) = reply {
                let _ = reply.send(());
            }
            return;
        }
        self.leaving.extend(reply);
        if self.leave_started {
            return;
        }
        self.leave_started = true;
        info!("leaving the cluster");
        lock(&self.shared).table.set_local_leaving();
        self.broadcast(Broadcast::Leave(self.local()));
        self.gossip_now();
        let wait = if self.foca.num_members() == 0 {
            Duration::ZERO
        } else {
            self.timings.leave_propagate
        };
        self.timers.push(self.now + wait, Tick::LeaveNow);
    }

    fn force_leave(&mut self, name: &str) -> Result<(), NodeError> {
        let found = lock(&self.shared).table.find_by_name(name);
        let (id, status) = found.ok_or_else(|| NodeError::UnknownMember(name.to_string()))?;
        if status != Status::Failed {
            return Err(NodeError::NotFailed {
                name: name.to_string(),
                status: status.as_str(),
            });
        }
        lock(&self.shared).table.apply_intent(id, true);
        self.broadcast(Broadcast::ForceLeave(id));
        self.gossip_now();
        Ok(())
    }

    fn set_tags(
        &mut self,
        tags: std::collections::BTreeMap<String, String>,
    ) -> Result<(), NodeError> {
        let mut candidate = lock(&self.shared).table.local_meta().clone();
        candidate.tags = tags.clone();
        validate_meta(&candidate)?;
        let meta = lock(&self.shared).table.set_local_tags(tags);
        self.broadcast(Broadcast::Meta(meta));
        self.gossip_now();
        Ok(())
    }

    fn apply_state(&mut self, state: SyncState) {
        if self.left {
            return;
        }
        {
            let mut shared = lock(&self.shared);
            for meta in state.metas {
                if validate_meta(&meta).is_ok() {
                    shared.table.apply_meta(meta);
                }
            }
            for (id, forced) in state.intents {
                shared.table.apply_intent(id, forced);
            }
        }
        if let Err(error) = self
            .foca
            .apply_many(state.members.into_iter(), true, &mut self.runtime)
        {
            debug!(%error, "applying push-pull state failed");
        }
    }

    /// A datagram from the gossip socket.
    pub(crate) fn handle_datagram(&mut self, now: Instant, from: SocketAddr, packet: &[u8]) {
        self.now = now;
        self.datagram(from, packet);
        self.drain();
    }

    fn datagram(&mut self, from: SocketAddr, packet: &[u8]) {
        let len = packet.len();
        Stats::add(&self.stats.packets_in, 1);
        Stats::add(&self.stats.bytes_in, len as u64);
        if self.left {
            // A node that left stays gone while its process winds down (say, while it waits to
            // stop its app): fed to foca, a peer's "you are down" would make it renew its
            // identity and rejoin.
            return;
        }
        let result = match envelope::open(packet) {
            Ok((Kind::Swim, payload)) => match self.foca.handle_data(payload, &mut self.runtime) {
                // Not bad packets: news about our own old identity, and gossip while alone.
                Err(foca::Error::DataFromOurselves | foca::Error::NotConnected) => Ok(()),
                other => other.map_err(|e| e.to_string()),
            },
            Ok((Kind::Leave, payload)) => match postcard::from_bytes::<Identity>(payload) {
                Ok(id) => {
                    self.member_left(id);
                    Ok(())
                }
                Err(e) => Err(format!("undecodable leave notice: {e}")),
            },
            Ok((Kind::Digest, payload)) => match postcard::from_bytes::<Digest>(payload) {
                Ok(digest) => {
                    self.handle_digest(digest);
                    Ok(())
                }
                Err(e) => Err(format!("undecodable digest: {e}")),
            },
            Ok((kind, _)) => Err(format!("{kind:?} is not a datagram kind")),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = result {
            Stats::add(&self.stats.packets_dropped, 1);
            let now = self.now;
            if self
                .last_warn
                .is_none_or(|t| now.duration_since(t) > Duration::from_secs(5))
            {
                self.last_warn = Some(now);
                warn!(%from, len, %error, "dropped a bad packet (further ones for 5 s at debug level)");
            } else {
                debug!(%from, len, %error, "dropped a bad packet");
            }
        }
    }

    /// A member told us directly that it left: its intent, then its down, as gossip would
    /// bring them (foca ignores the down if it knows a newer identity at that address).
    fn member_left(&mut self, id: Identity) {
        if id.addr == self.local().addr {
            return;
        }
        lock(&self.shared).table.apply_intent(id, false);
        let down = foca::Member::new(id, foca::Incarnation::MAX, State::Down);
        if let Err(error) = self
            .foca
            .apply_many(std::iter::once(down), true, &mut self.runtime)
        {
            debug!(%error, "applying a leave notice failed");
        }
    }

    fn handle_digest(&mut self, digest: Digest) {
        let ours = lock(&self.shared).table.digest();
        if digest.digest != ours && !self.left {
            self.push_pull(digest.from.addr);
        }
    }

    /// Starts a push-pull with `addr`, at most one per half sync interval.
    fn push_pull(&mut self, addr: SocketAddr) {
        let now = self.now;
        if self
            .last_push_pull
            .is_some_and(|t| now.duration_since(t) < self.timings.sync_interval / 2)
        {
            return;
        }
        self.last_push_pull = Some(now);
        debug!(%addr, "push-pull");
        self.out.push_pulls.push(PushPull {
            addrs: vec![addr],
            state: self.state(),
            reply: None,
            tried: addr.to_string(),
        });
    }

    /// Fires every timer due at `now`.
    pub(crate) fn fire_timers(&mut self, now: Instant) {
        self.now = now;
        self.timers_due(now);
        self.drain();
    }

    fn timers_due(&mut self, now: Instant) {
        while let Some(tick) = self.timers.pop_due(now) {
            match tick {
                Tick::Foca(timer) => {
                    if let Err(error) = self.foca.handle_timer(timer, &mut self.runtime) {
                        debug!(%error, "timer failed");
                    }
                }
                Tick::Sync => self.sync_tick(now),
                Tick::Housekeeping => self.housekeeping(now),
                Tick::Rejoin => self.rejoin_tick(now),
                Tick::Beacon => self.beacon_tick(now),
                Tick::Resolve => {
                    self.out.resolve = Some(self.config.join.clone());
                    let every = if self.alone() {
                        self.retry_delay.max(self.timings.retry_interval)
                    } else {
                        self.timings.sync_interval * 30
                    };
                    self.timers.push(now + every, Tick::Resolve);
                }
                Tick::LeaveNow => {
                    let members: Vec<SocketAddr> =
                        self.foca.iter_members().map(|m| m.id().addr).collect();
                    if let Err(error) = self.foca.leave_cluster(&mut self.runtime) {
                        warn!(%error, "leave failed");
                    }
                    // Gossip alone leaves a tail (a member the epidemic reaches late): a leave
                    // happens once, so also tell every member directly.
                    match postcard::to_stdvec(&self.local()) {
                        Ok(payload) => {
                            let packet = envelope::seal(Kind::Leave, &payload);
                            for to in members {
                                self.send_datagram_raw(packet.clone(), to);
                            }
                        }
                        Err(error) => warn!(%error, "leave notice could not be encoded"),
                    }
                    self.left = true;
                    self.republish = true;
                    info!("left the cluster");
                    for reply in self.leaving.drain(..) {
                        let _ = reply.send(());
                    }
                }
            }
        }
    }

    fn sync_tick(&mut self, now: Instant) {
        self.timers
            .push(now + self.timings.sync_interval, Tick::Sync);
        if self.left {
            return;
        }
        let count = self.foca.num_members();
        if count == 0 {
            return;
        }
        let pick = self.rng.random_range(0..count);
        let Some(target) = self.foca.iter_members().nth(pick).map(|m| m.id().addr) else {
            return;
        };
        let digest = Digest {
            from: self.local(),
            digest: lock(&self.shared).table.digest(),
        };
        match postcard::to_stdvec(&digest) {
            Ok(payload) => {
                let packet = envelope::seal(Kind::Digest, &payload);
                self.send_datagram_raw(packet, target);
            }
            Err(error) => warn!(%error, "digest could not be encoded"),
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        self.timers
            .push(now + self.timings.probe_period, Tick::Housekeeping);
        let mut missing_meta = None;
        let mut stuck = None;
        let stuck_after = self.foca_suspicion() * 2;
        let mut suspects = std::mem::take(&mut self.suspect_since);
        {
            let mut shared = lock(&self.shared);
            let mut suspected = Vec::new();
            for member in self.foca.iter_membership_state() {
                let (id, state) = (*member.id(), member.state());
                shared.table.set_suspect(id, state == State::Suspect);
                if state == State::Suspect {
                    suspected.push(id.addr);
                    let since = *suspects.entry(id.addr).or_insert(now);
                    if stuck.is_none() && now.duration_since(since) > stuck_after {
                        stuck = Some(id.addr);
                    }
                }
                if state != State::Down
                    && missing_meta.is_none()
                    && !shared.table.has_current_meta(id)
                {
                    missing_meta = Some(id.addr);
                }
            }
            suspects.retain(|a, _| suspected.contains(a));
            shared.table.reap(now);
        }
        self.suspect_since = suspects;
        self.check_name_conflict();
        if let Some(addr) = missing_meta
            && !self.left
        {
            self.push_pull(addr);
        }
        // A suspicion that outlived its timeout twice is stuck (foca drops its timer when it
        // goes idle, and the member never heard of it to refute it): a push-pull shows the
        // member our state, suspicion included, and it refutes.
        if let Some(addr) = stuck
            && !self.left
        {
            debug!(%addr, "suspicion outlived its timeout; pushing our state to the member");
            self.suspect_since.insert(addr, now);
            self.push_pull(addr);
        }
        if self.alone() {
            self.schedule_rejoin(now + self.retry_delay);
        }
        let size = self.foca.num_members() + 1;
        if size != self.cluster_size {
            self.cluster_size = size;
            let budget = self
                .config
                .max_packet_size
                .saturating_sub(envelope::HEADER_LEN);
            if let Err(error) = self.foca.set_config(self.timings.foca_config(size, budget)) {
                warn!(%error, size, "could not rescale gossip config");
            }
        }
    }

    /// Two live members with one name: the one that started first (lower generation, then
    /// lower address) keeps it; the other logs the conflict, leaves, and reports it in its view
    /// so the agent exits.
    fn check_name_conflict(&mut self) {
        if self.conflict.is_some() || self.leave_started {
            return;
        }
        let Some(other) = lock(&self.shared).table.name_conflict() else {
            return;
        };
        let me = self.local();
        let name = self.config.name.clone();
        if (other.generation, other.addr) < (me.generation, me.addr) {
            let message = format!(
                "node name {name:?} is already used by the member at {}, which started first",
                other.addr
            );
            error!(%name, other = %other.addr, "name conflict: this node gives up the name and leaves");
            self.conflict = Some(message);
            self.republish = true;
            self.start_leave(None);
        } else if !self.conflict_warned.contains(&other.addr) {
            self.conflict_warned.push(other.addr);
            warn!(%name, other = %other.addr,
                "name conflict: a member that started later claims this node's name; it will leave");
        }
    }

    /// Where to try while alone: the seeds (join names, snapshot) and, after a partition or a
    /// restart of everyone else, up to 8 members foca knows as down. foca's own announces to
    /// down members only run while it is connected, so a node left alone needs this.
    fn rejoin_targets(&self) -> Vec<SocketAddr> {
        let mut targets = self.seeds.clone();
        let me = self.local().addr;
        let limit = self.seeds.len() + 8;
        for m in self.foca.iter_membership_state() {
            let a = m.id().addr;
            if m.state() == State::Down && a != me && !targets.contains(&a) && targets.len() < limit
            {
                targets.push(a);
            }
        }
        targets
    }

    /// Push-pulls with those of `addrs` that are not live members (our own address excluded).
    fn contact_non_members(&mut self, addrs: Vec<SocketAddr>) {
        let me = self.local().addr;
        let members: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        let addrs: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| *a != me && !members.contains(a))
            .collect();
        if addrs.is_empty() {
            return;
        }
        debug!(
            count = addrs.len(),
            "contacting join targets that are not members"
        );
        let state = self.state();
        self.out.push_pulls.push(PushPull {
            addrs,
            state,
            reply: None,
            tried: String::new(),
        });
    }

    /// Announces to (and push-pulls with) up to 8 members foca knows as down.
    fn announce_to_down(&mut self) {
        let me = self.local().addr;
        let down: Vec<SocketAddr> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == State::Down && m.id().addr != me)
            .map(|m| m.id().addr)
            .take(8)
            .collect();
        if down.is_empty() {
            return;
        }
        for addr in &down {
            let target = Identity {
                addr: *addr,
                generation: 0,
            };
            if let Err(error) = self.foca.announce(target, &mut self.runtime) {
                debug!(%error, %addr, "announce failed");
            }
        }
        let state = self.state();
        self.out.push_pulls.push(PushPull {
            addrs: down,
            state,
            reply: None,
            tried: String::new(),
        });
    }

    fn schedule_rejoin(&mut self, at: Instant) {
        if !self.rejoin_scheduled && !self.left {
            self.rejoin_scheduled = true;
            self.timers.push(at, Tick::Rejoin);
        }
    }

    fn rejoin_tick(&mut self, now: Instant) {
        self.rejoin_scheduled = false;
        if self.left {
            return;
        }
        if !self.alone() {
            // Someone joined us before we tried our own targets: still contact the ones that
            // are not members, or two clusters may form and never merge (seen in the N = 50
            // random-join benchmark: a node joined by another never pushed to its own seed).
            self.contact_non_members(self.seeds.clone());
            return;
        }
        let targets = self.rejoin_targets();
        if targets.is_empty() {
            return;
        }
        let max = self.config.retry_max;
        if max > 0 && self.retries >= max {
            warn!(
                attempts = self.retries,
                "giving up joining: retry limit reached"
            );
            return;
        }
        self.retries += 1;
        debug!(
            attempt = self.retries,
            targets = targets.len(),
            "join attempt"
        );
        for seed in targets.clone() {
            let target = Identity {
                addr: seed,
                generation: 0,
            };
            if let Err(error) = self.foca.announce(target, &mut self.runtime) {
                debug!(%error, %seed, "announce failed");
            }
        }
        self.out.push_pulls.push(PushPull {
            addrs: targets,
            state: self.state(),
            reply: None,
            tried: String::new(),
        });
        let delay = self.retry_delay;
        self.retry_delay = (delay * 2).min(self.timings.retry_max_interval);
        self.rejoin_scheduled = true;
        self.timers.push(now + delay, Tick::Rejoin);
        if self.retries == 2 || self.retries.is_multiple_of(20) {
            // Quiet at first (the first attempt usually works), then now and then, so an agent
            // stuck alone says so at the default log level.
            info!(
                attempts = self.retries,
                next_ms = ms(delay),
                "no member reachable yet; still trying"
            );
        } else {
            debug!(next_ms = ms(delay), "next join attempt");
        }
    }

    fn send_datagram_raw(&mut self, packet: Vec<u8>, to: SocketAddr) {
        // foca announces to members it knows as down, our own previous identity included
        // after a renewal: nothing to say to ourselves.
        if to != self.local().addr {
            self.out.datagrams.push((to, packet));
        }
    }

    /// Sends what foca queued, schedules its timers, applies its notifications; forwards news
    /// at once; publishes events and the snapshot.
    fn drain(&mut self) {
        let mut forwarded = false;
        loop {
            while let Some((to, data)) = self.runtime.to_send() {
                let mut buf = Vec::with_capacity(envelope::HEADER_LEN + data.len());
                envelope::begin(Kind::Swim, &mut buf);
                buf.extend_from_slice(&data);
                self.send_datagram_raw(buf, to.addr);
            }
            let now = self.now;
            while let Some((after, timer)) = self.runtime.to_schedule() {
                self.timers.push(now + after, Tick::Foca(timer));
            }
            let mut news = false;
            while let Some(notification) = self.runtime.to_notify() {
                news |= self.notify(notification, now);
            }
            news |= std::mem::take(&mut lock(&self.shared).news);
            if news && !forwarded && !self.left {
                // Push fresh news to a few members now instead of at the next gossip tick:
                // this is what makes a leave or a failure visible everywhere in milliseconds.
                forwarded = true;
                self.gossip_now();
                continue;
            }
            break;
        }
        self.publish();
    }

    fn notify(&mut self, notification: OwnedNotification<Identity>, now: Instant) -> bool {
        let mut shared = lock(&self.shared);
        match notification {
            OwnedNotification::MemberUp(id) => {
                shared.table.member_up(id);
                true
            }
            OwnedNotification::MemberDown(id) => {
                shared.table.member_down(id, now);
                true
            }
            OwnedNotification::Rename(old, new) => {
                shared.table.rename(old, new);
                true
            }
            OwnedNotification::Active => {
                drop(shared);
                self.retries = 0;
                self.retry_delay = self
                    .config
                    .retry_interval
                    .unwrap_or(self.timings.retry_interval);
                info!("joined the cluster");
                false
            }
            OwnedNotification::Idle => {
                drop(shared);
                if !self.left {
                    info!("no other live member: alone");
                    self.schedule_rejoin(now + self.retry_delay);
                }
                false
            }
            OwnedNotification::Defunct => {
                if !self.left {
                    warn!("the cluster declared this node down and it cannot rejoin");
                }
                false
            }
            OwnedNotification::Rejoin(id) => {
                let meta = shared.table.renew_local(id);
                drop(shared);
                info!(
                    generation = id.generation,
                    "declared down by the cluster; rejoined"
                );
                self.broadcast(Broadcast::Meta(meta));
                if self.alone() {
                    // The new identity is accepted where the old one was down: try at once.
                    self.retry_delay = self
                        .config
                        .retry_interval
                        .unwrap_or(self.timings.retry_interval);
                    self.schedule_rejoin(now);
                } else {
                    // Typically a healed partition: the other side knows only our old identity,
                    // as down. Tell them now rather than at their next announce to down members.
                    self.announce_to_down();
                }
                true
            }
        }
    }

    fn publish(&mut self) {
        let mut shared = lock(&self.shared);
        self.out.events.extend(shared.table.take_events());
        if shared.table.take_changed() || std::mem::take(&mut self.republish) {
            let snapshot = Self::snapshot_of(&shared.table, self.left, self.conflict.clone());
            self.out.snapshot = Some(snapshot);
        }
    }
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<Engine>();
    let _ = broadcast::MAX_NAME_LEN;
}
