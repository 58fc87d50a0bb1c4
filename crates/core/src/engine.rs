//! The engine: foca, the member table and every protocol rule of the node, without I/O.
//!
//! Every entry point takes the current `Instant`, keeps it as `now` for the turn, and puts
//! everything it wants done (datagrams to send, push-pulls and look-ups to start, beacons,
//! events, a new view) into its [`Outbox`], which the caller drains. The tokio driver
//! ([`crate::node`]) and the deterministic simulator ([`crate::sim`]) are two such callers.
//!
//! The state is factored as foca factors its own: the sub-states live in `engine/`, each in a
//! file with its tests ([`rejoin`], [`leave`], [`join`], [`suspicion`], [`conflict`],
//! [`discovery`], [`backoff`]; [`events`] sends user events and applies those of
//! push-pulls; [`queries`] sends queries, collects their answers and answers others'). This
//! file holds the entry points, the dispatch of commands (what each does is in [`commands`])
//! and the verbs every path shares (`broadcast`, `broadcast_meta`, `gossip_now`,
//! `push_pull_to`, `announce_all`).
//! What each timer does is in [`ticks`], what each datagram does in [`datagrams`], what
//! happens after every input (foca's runtime drained, notifications applied, the view
//! published) in [`notify`], and liveness beyond foca's rules (TCP fallback, stalls, local
//! health) in [`liveness`]. Scenario tests feed a whole engine in `engine/tests.rs`.

mod backoff;
mod cadence;
mod commands;
mod confirm;
mod conflict;
mod datagrams;
mod direct;
mod discovery;
mod events;
mod foca_index;
mod health;
mod input;
mod join;
mod leave;
mod liveness;
mod notify;
mod outbox;
mod probe;
mod queries;
mod rejoin;
mod senders;
mod suspicion;
mod ticks;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foca::{AccumulatingRuntime, Foca, PostcardCodec, State};
use rand::rngs::StdRng;
use tracing::{debug, info, warn};

pub(crate) use input::Command;
pub(crate) use outbox::{JoinId, Outbox, Purpose, PushPull, Resolve, TcpPing};

use crate::anti_entropy::SyncState;
use crate::broadcast::{Broadcast, ItemHandler, Shared, lock, validate_meta};
use crate::config::NodeConfig;
use crate::envelope;
use crate::error::StartError;
use crate::identity::Identity;
use crate::membership::{Membership, Meta, Status};
use crate::profile::Timings;
use crate::query::Queries;
use crate::snapshot::Restored;
use crate::timers::TimerQueue;
use crate::user_event::UserEvents;
use crate::view::{Stats, View};
use backoff::Backoff;
use cadence::SyncCadence;
use conflict::NameConflict;
use discovery::Discovery;
use events::EventHistory;
use health::LocalHealth;
use join::PendingJoins;
use leave::Leave;
use probe::ProbeWatch;
use queries::QueryState;
use rejoin::Rejoin;
use senders::Contacts;
use suspicion::{HeldTimers, SuspectTracker};
use ticks::Tick;

type Gossip = Foca<Identity, PostcardCodec, StdRng, ItemHandler>;

/// One node's protocol state. See the module docs.
pub(crate) struct Engine {
    foca: Gossip,
    runtime: AccumulatingRuntime<Identity>,
    /// The member table, shared with foca's broadcast handler.
    shared: Arc<Mutex<Shared>>,
    out: Outbox,
    /// The time of the current turn.
    now: Instant,
    stats: Arc<Stats>,
    timers: TimerQueue<Tick>,
    timings: Timings,
    config: NodeConfig,
    rejoin: Rejoin,
    joins: PendingJoins,
    leave: Leave,
    conflict: NameConflict,
    suspects: SuspectTracker,
    /// foca's suspect-to-down timers, held until their dynamic deadline.
    suspicions: HeldTimers,
    /// `(table epoch, foca's member count)` of the last housekeeping round that found every
    /// member's current meta in the table (`None`: one was missing, or not checked yet).
    metas_current: Option<(u64, usize)>,
    /// foca's periodic gossip timer, held while foca has nothing to gossip (see `confirm.rs`).
    parked_gossip: Option<(Duration, foca::Timer<Identity>)>,
    /// A member known without its current meta (it came up so, or spoke without it): fetched
    /// at once, or as soon as the limit allows (`fetch_armed`: the timer for that is set).
    meta_wanted: Option<SocketAddr>,
    /// A stranger that spoke to us ([`Engine::introduce`]), while the limit holds it back.
    stranger: Option<SocketAddr>,
    fetch_armed: bool,
    /// The table epoch of the last name-conflict check.
    names_checked: Option<u64>,
    discovery: Discovery,
    probes: ProbeWatch,
    health: LocalHealth,
    /// Our own incarnation, as foca last sent it (in every header).
    incarnation: foca::Incarnation,
    /// What the short digest was computed from (table revision, event clock), the short
    /// digest, and when it last changed.
    digest_cache: ((u64, u64), u32),
    /// The map of foca's members a push-pull is applied against, kept between push-pulls
    /// (empty) so that its table (160 KB at a thousand members) is not allocated each time.
    known_buf: senders::Known,
    /// Where foca keeps each member, by address (per-datagram look-ups without a search).
    index: foca_index::FocaIndex,
    last_change: Instant,
    /// The full digest's cadence.
    sync: SyncCadence,
    rng: StdRng,
    history: EventHistory,
    queries: QueryState,
    /// Publish the view even if the table did not change (left / conflict changed).
    republish: bool,
    /// The cluster size foca's config was last scaled for.
    cluster_size: usize,
    last_push_pull: Option<Instant>,
    /// The last push-pull for a missing meta or with a stranger ([`Engine::fetch_meta`]).
    last_fetch: Option<Instant>,
    last_warn: Option<Instant>,
    /// Addresses contacted to join: their answers may speak for others ([`senders`]).
    contacts: Contacts,
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
    /// A node with `identity`; `restored` is what its snapshot remembers (the seeds are always
    /// join targets); `beacon_on` when the caller can send discovery beacons; `seed` makes
    /// every random choice reproducible.
    pub(crate) fn new(
        config: NodeConfig,
        identity: Identity,
        restored: Restored,
        beacon_on: bool,
        seed: Option<u64>,
        stats: Arc<Stats>,
        now: Instant,
    ) -> Result<Self, StartError> {
        let meta = Meta {
            id: identity,
            version: 0,
            name: config.name.clone(),
            tags: config.tags.clone(),
            role: config.role.clone(),
        };
        validate_meta(&meta)?;
        let mut table = Membership::new(meta, config.reconnect_timeout, config.tombstone_timeout);
        if !relays_leaves(&config) {
            table.digest_without_left();
        }
        let history = EventHistory::new(config.replay, restored.event_ltime.is_some());
        let events = UserEvents::restored(restored.event_ltime);
        let queries = Queries::restored(restored.query_ltime);
        let mut shared = Shared::new(table, events, queries);
        shared.relayed_leaves = relays_leaves(&config);
        let shared = Arc::new(Mutex::new(shared));
        let timings = config
            .timings
            .clone()
            .unwrap_or_else(|| config.profile.timings());
        // A node starts with no events of its own and gets the cluster's with its join's
        // push-pull: its full digest starts at the quiet cadence (see `short_digest`).
        let sync = SyncCadence::new(
            timings.sync_interval,
            timings.sync_interval * 30,
            now + timings.sync_interval * 30,
        );
        let foca = Foca::with_custom_broadcast(
            identity,
            timings.foca_config(1, packet_budget(&config)),
            rng(seed),
            PostcardCodec,
            ItemHandler::new(shared.clone()),
        );
        let first = config.retry_interval.unwrap_or(timings.retry_interval);
        let backoff = Backoff::new(first, timings.retry_max_interval);
        let cluster = config.discover.clone().filter(|_| beacon_on);
        Ok(Self {
            foca,
            runtime: AccumulatingRuntime::new(),
            shared,
            out: Outbox::default(),
            now,
            stats,
            timers: TimerQueue::default(),
            timings,
            config,
            rejoin: Rejoin::new(
                restored.seeds,
                backoff.clone(),
                rng(seed.map(|s| s ^ 0x6a6f_696e_5f73_6565)),
            ),
            history,
            queries: QueryState::default(),
            joins: PendingJoins::default(),
            leave: Leave::default(),
            conflict: NameConflict::default(),
            suspects: SuspectTracker::default(),
            suspicions: HeldTimers::default(),
            metas_current: None,
            parked_gossip: None,
            meta_wanted: None,
            stranger: None,
            fetch_armed: false,
            names_checked: None,
            discovery: Discovery::new(cluster, backoff),
            probes: ProbeWatch::default(),
            health: LocalHealth::default(),
            incarnation: 0,
            digest_cache: ((u64::MAX, u64::MAX), 0),
            known_buf: senders::Known::default(),
            index: foca_index::FocaIndex::default(),
            last_change: now,
            sync,
            rng: rng(seed.map(|s| s.wrapping_add(1))),
            republish: false,
            cluster_size: 1,
            last_push_pull: None,
            last_fetch: None,
            last_warn: None,
            contacts: Contacts::default(),
        })
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
            self.rejoin.scheduled(),
            self.rejoin.retries(),
            self.rejoin.delay(),
            self.foca.num_members(),
            self.rejoin.seeds().len(),
            self.timers.len()
        )
    }

    /// This node's identity.
    pub(crate) fn identity(&self) -> Identity {
        self.local()
    }

    /// The earliest timer.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// The current view.
    pub(crate) fn view(&self) -> View {
        let shared = lock(&self.shared);
        View::of(
            &shared.table,
            (
                self.leave.left(),
                self.conflict.lost().cloned(),
                self.rejoin.gave_up(),
            ),
            (shared.events.done_up_to(), shared.queries.done_up_to()),
        )
    }

    /// The status of the member at `addr` as the view lists it (`None`: not listed), without
    /// building the whole view.
    pub(crate) fn member_status(&self, addr: SocketAddr) -> Option<Status> {
        lock(&self.shared).table.status_of(addr)
    }

    /// How many members the view lists with `status`, without building it.
    pub(crate) fn count(&self, status: Status) -> usize {
        lock(&self.shared).table.count(status)
    }

    /// How long a push-pull may take.
    pub(crate) fn sync_limit(&self) -> Duration {
        self.timings.probe_period * 10
    }

    /// Starts the node: own meta broadcast, timers, first join attempt.
    pub(crate) fn start(&mut self, now: Instant) {
        self.now = now;
        let local_meta = lock(&self.shared).table.local_meta().clone();
        self.broadcast_meta(local_meta);
        self.timers.push(self.sync.due, Tick::Sync(0));
        self.timers
            .push(now + self.timings.housekeeping, Tick::Housekeeping);
        if !self.config.join.is_empty() {
            self.timers.push(now, Tick::Resolve);
        }
        if !self.rejoin.seeds().is_empty() {
            self.schedule_rejoin(now);
        }
        if self.discovery.on() {
            self.timers.push(now, Tick::Beacon);
        }
        self.republish = true;
        self.drain();
        info!(name = %self.config.name, addr = %self.local().addr, "node started");
    }

    /// Answers every pending request as the node stops.
    pub(crate) fn stop(&mut self) {
        self.leave.answer_all();
    }

    /// A command from the handle, a task or the caller.
    pub(crate) fn handle_command(&mut self, now: Instant, cmd: Command) {
        self.now = now;
        self.command(cmd);
        self.drain();
    }

    /// A datagram from the gossip socket.
    pub(crate) fn handle_datagram(&mut self, now: Instant, from: SocketAddr, packet: &[u8]) {
        self.now = now;
        self.datagram(from, packet);
        self.drain();
    }

    /// Fires every timer due at `now`.
    pub(crate) fn fire_timers(&mut self, now: Instant) {
        self.now = now;
        if let Some(due) = self.timers.next_deadline()
            && now.saturating_duration_since(due) > self.timings.stall
        {
            self.stalled(now - due);
        }
        while let Some(tick) = self.timers.pop_due(now) {
            self.tick(tick);
        }
        self.drain();
    }

    /// Our full state, as a push-pull sends it.
    pub(crate) fn state(&self) -> SyncState {
        let known = self.foca.iter_membership_state();
        let mut members = Vec::with_capacity(known.len() + 1);
        members.extend(known.cloned());
        if !self.leave.left() {
            // Our own entry carries our incarnation: a peer that suspects us learns the
            // refutation from it.
            members.push(foca::Member::new(
                self.local(),
                self.incarnation,
                State::Alive,
            ));
        }
        let shared = lock(&self.shared);
        SyncState {
            from: Some(self.local()),
            members,
            metas: shared.table.metas(),
            intents: shared.table.intents(),
            event_clock: shared.events.clock.time(),
            events: shared.events.recent(),
            query_clock: shared.queries.clock.time(),
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Join {
                targets,
                replay,
                reply,
            } => {
                let id = self.joins.begin(&targets, replay, reply);
                self.out.resolve.push(Resolve {
                    targets,
                    purpose: Purpose::Join(id),
                });
            }
            Command::Resolved {
                addrs,
                failed,
                purpose: Purpose::Join(id),
            } => {
                self.joins.resolved(id, &failed);
                if addrs.is_empty() {
                    self.joins.finish(id, 0);
                } else {
                    self.announce_all(&addrs);
                    self.push_pull_to(addrs, Some(id));
                }
            }
            Command::Resolved {
                addrs,
                failed,
                purpose: Purpose::Seeds,
            } => {
                for (target, error) in failed {
                    warn!(%target, %error, "join target does not resolve; will retry");
                }
                self.seeds_resolved(addrs);
            }
            Command::JoinedVia { joined, join } => self.joins.finish(join, joined),
            Command::Leave { reply } => self.start_leave(Some(reply)),
            Command::ForceLeave { name, reply } => {
                let _ = reply.send(self.force_leave(&name));
            }
            Command::UpdateTags { set, delete, reply } => {
                let _ = reply.send(self.update_tags(set, &delete));
            }
            Command::UpdateRole { role, reply } => {
                let _ = reply.send(self.update_role(role));
            }
            Command::Exchange { state, peer, reply } => {
                self.apply_state(state, None, peer);
                // foca's refutation (if ours was suspected) is in its state once drained.
                self.drain();
                let _ = reply.send(self.state());
            }
            Command::ApplyState { state, join, peer } => self.apply_state(state, join, peer),
            Command::UserEvent {
                name,
                payload,
                coalesce,
                reply,
            } => {
                let _ = reply.send(self.user_event(name, payload, coalesce));
            }
            Command::Query {
                params,
                updates,
                reply,
            } => {
                let _ = reply.send(self.query(params, updates));
            }
            Command::RespondQuery {
                ltime,
                id,
                payload,
                reply,
            } => {
                let _ = reply.send(self.respond_query(ltime, id, payload));
            }
            Command::Discovered { addr } => self.discovered(addr),
            Command::TcpAnswered { target, number } => self.tcp_answered(target, number),
            Command::TcpRefused { target, number } => self.tcp_refused(target, number),
            Command::PortUnreachable { addr } => self.port_unreachable(addr),
            Command::Identity { reply } => {
                let _ = reply.send(self.local());
            }
            Command::Shutdown => {}
        }
    }

    // ---- shared verbs -------------------------------------------------------------------

    /// No other live member. Derived from foca every time: foca's renewal after being declared
    /// down resets it to disconnected without an `Idle` notice, so a flag would go stale.
    fn alone(&self) -> bool {
        self.foca.num_members() == 0
    }

    fn local(&self) -> Identity {
        *self.foca.identity()
    }

    /// The addresses of the live members foca knows.
    fn member_addrs(&self) -> Vec<SocketAddr> {
        self.foca.iter_members().map(|m| m.id().addr).collect()
    }

    /// The addresses of the members foca knows as down, ourselves and those that left
    /// gracefully excluded (a node that left stays out until it contacts us itself).
    fn down_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        let me = self.local().addr;
        self.foca
            .iter_membership_state()
            .filter(move |m| m.state() == State::Down && m.id().addr != me)
            .map(|m| m.id().addr)
            .filter(|addr| !self.left_gracefully(*addr))
    }

    /// True when the member at `addr` left gracefully: nothing but an answer goes there.
    fn left_gracefully(&self, addr: SocketAddr) -> bool {
        lock(&self.shared).table.left_gracefully(addr)
    }

    /// Queues `item` for gossip (foca hands it to our own handler first); false, logged, when
    /// it could not be.
    fn broadcast(&mut self, item: Broadcast) -> bool {
        match item.encode().map(|data| self.foca.add_broadcast(&data)) {
            Ok(Ok(_)) => true,
            Ok(Err(error)) => {
                warn!(%error, "broadcast refused by gossip layer");
                false
            }
            Err(error) => {
                warn!(%error, "broadcast could not be encoded");
                false
            }
        }
    }

    /// Gossips our meta ([`Self::meta_item`]).
    fn broadcast_meta(&mut self, meta: Meta) {
        let item = self.meta_item(meta);
        self.broadcast(item);
    }

    /// How our meta travels: whole when it fits in half a datagram, else as a
    /// [`Broadcast::MetaChanged`] announcement that makes receivers fetch it by push-pull.
    fn meta_item(&self, meta: Meta) -> Broadcast {
        let whole = Broadcast::Meta(meta);
        let fits = whole
            .encode()
            .is_ok_and(|data| data.len() <= packet_budget(&self.config) / 2);
        if fits {
            return whole;
        }
        let Broadcast::Meta(meta) = whole else {
            return whole;
        };
        debug!(
            version = meta.version,
            "meta too large to gossip; announcing its version"
        );
        Broadcast::MetaChanged {
            id: meta.id,
            version: meta.version,
        }
    }

    fn gossip_now(&mut self) {
        if let Err(error) = self.foca.gossip(&mut self.runtime) {
            debug!(%error, "gossip failed");
        }
    }

    /// Tells foca that `id` is in `state` at `incarnation` (as a received update would),
    /// gossiping it on; `what` names it in the log if foca refuses.
    fn apply_one(
        &mut self,
        id: Identity,
        incarnation: foca::Incarnation,
        state: State,
        what: &str,
    ) {
        let update = foca::Member::new(id, incarnation, state);
        if let Err(error) = self
            .foca
            .apply_many(std::iter::once(update), true, &mut self.runtime)
        {
            debug!(%error, what, "foca refused an update");
        }
    }

    /// True while foca lists `id` as suspect at `incarnation` (not refuted, not down).
    fn is_suspect_at(&self, id: &Identity, incarnation: foca::Incarnation) -> bool {
        self.foca
            .iter_membership_state()
            .any(|m| m.id() == id && m.state() == State::Suspect && m.incarnation() == incarnation)
    }

    /// foca announces us to each address (the identity there is unknown: generation 0).
    fn announce_all(&mut self, addrs: &[SocketAddr]) {
        for addr in addrs {
            self.contacts.note(*addr, self.now);
            let target = Identity {
                addr: *addr,
                generation: 0,
            };
            if let Err(error) = self.foca.announce(target, &mut self.runtime) {
                debug!(%error, %addr, "announce failed");
            }
        }
    }

    /// A push-pull of our current state with each of `addrs`.
    fn push_pull_to(&mut self, addrs: Vec<SocketAddr>, join: Option<JoinId>) {
        for addr in &addrs {
            self.contacts.note(*addr, self.now);
        }
        let state = self.state();
        self.out.push_pulls.push(PushPull { addrs, state, join });
    }

    /// A push-pull with `addr`, at most one per half sync interval (digests, missing metas
    /// and stuck suspicions ask for these; a burst of them needs only one).
    fn push_pull(&mut self, addr: SocketAddr) {
        let (now, every) = (self.now, self.timings.sync_interval / 2);
        if !backoff::due(&mut self.last_push_pull, now, every) {
            return;
        }
        debug!(%addr, "push-pull");
        let known = self
            .foca
            .iter_membership_state()
            .any(|m| m.id().addr == addr);
        match known {
            true => self.push_pull_to(vec![addr], None),
            // A digest from an address foca does not know: no contact is noted (a contact
            // may speak for others), as for a stranger's SWIM datagram.
            false => self.push_pull_uncontacted(addr),
        }
    }

    /// A push-pull with the live member at `addr` for its meta (missing here: the member is
    /// not listed until it arrives), at most one per gossip interval, apart from the
    /// anti-entropy ones of [`Self::push_pull`] (a burst of joins needs both). Returns
    /// whether it was sent.
    fn fetch_meta(&mut self, addr: SocketAddr) -> bool {
        let (now, every) = (self.now, self.timings.gossip_interval);
        if self.leave.left() || !backoff::due(&mut self.last_fetch, now, every) {
            return false;
        }
        debug!(%addr, "push-pull for a missing meta");
        self.push_pull_to(vec![addr], None);
        true
    }

    fn send_datagram(&mut self, packet: Vec<u8>, to: SocketAddr) {
        // foca announces to members it knows as down, our own previous identity included
        // after a renewal: nothing to say to ourselves.
        if to != self.local().addr {
            self.out.datagrams.push((to, packet));
        }
    }

    fn schedule_rejoin(&mut self, at: Instant) {
        if !self.leave.left() && self.rejoin.schedule() {
            self.timers.push(at, Tick::Rejoin);
        }
    }
}

/// Whether leave intents may be relayed ([`Shared::relayed_leaves`]): only when every packet
/// is sealed, so every sender holds the key. In plaintext (and while a rolling upgrade takes
/// plaintext) only the member itself may say that it leaves.
fn relays_leaves(config: &NodeConfig) -> bool {
    config.keyring.is_some() && !config.accept_plaintext && !config.send_plaintext
}

/// foca's share of a datagram: the UDP budget minus our envelope.
fn packet_budget(config: &NodeConfig) -> usize {
    config
        .max_packet_size
        .saturating_sub(envelope::HEADER_LEN)
        .saturating_sub(crate::seal::overhead(
            config.keyring.is_some(),
            &config.cluster,
        ))
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<Engine>();
}

#[cfg(test)]
mod tests;
