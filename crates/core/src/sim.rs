//! Deterministic simulation of whole clusters.
//!
//! [`Sim`] runs many [`Engine`]s (the same code the agent runs) against virtual time and a
//! simulated network with latency, loss and partitions, all drawn from one seed: the same seed
//! gives the same run. Faults: partition into groups and heal, packet loss, crash, restart (a
//! new generation at the same address) and graceful leave. Push-pulls and DNS are simulated
//! too; every node joins by one name that resolves to every node, as with identical config.
//!
//! The sweep in `sim/tests.rs` checks, for many seeds: after the faults end and the network is
//! quiet, every live node lists every live node alive (itself included), nobody lists a live
//! node failed, and a node that left stays left.
//!
//! Events are taken in time order from two queues: deliveries (datagrams, push-pulls, answers)
//! and one entry per node for its earliest timer (re-queued after each turn of that node; an
//! entry that no longer matches the node's deadline is skipped), so a step costs O(log N), not
//! O(N): a thousand nodes run in seconds (`sim/scale.rs`). Views are built only when asked for.
//! The network code (outboxes carried out, deliveries, TCP, DNS) is in `sim/network.rs`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngExt;
use rand::rngs::StdRng;
use tokio::sync::oneshot;

use crate::config::NodeConfig;
use crate::engine::{Command, Engine, rng};
use crate::error::CommandError;
use crate::identity::Identity;
use crate::membership::{Event, Status};
use crate::profile::Profile;
use crate::snapshot::Restored;
use crate::view::{Stats, View};

/// The name every simulated node joins by; it resolves to every node's address.
pub const CLUSTER_NAME: &str = "cluster:7948";

enum Delivery {
    Datagram {
        from: SocketAddr,
        to: SocketAddr,
        packet: Vec<u8>,
    },
    Command {
        to: SocketAddr,
        generation: u64,
        cmd: Command,
    },
    /// A push-pull arriving at `to`: it applies `state`, and its answer goes back to `from`
    /// after `back`.
    Exchange {
        to: SocketAddr,
        from: SocketAddr,
        state: crate::anti_entropy::SyncState,
        back: Duration,
        /// The operator join the push-pull serves, if any.
        join: Option<crate::engine::JoinId>,
    },
}

struct Node {
    engine: Engine,
    generation: u64,
    events: Vec<Event>,
    leave_done: Option<oneshot::Receiver<()>>,
    /// A paused node (`kill -STOP`) runs no timer and reads nothing until then; what arrives
    /// meanwhile waits in its socket buffer.
    paused_until: Option<Instant>,
    /// The deadline of this node's entry in `Sim::timers` (`None`: no valid entry).
    queued: Option<Instant>,
    /// What it sent.
    sent: Traffic,
}

/// What a node sent: datagrams (their full length, envelope included, lost or not) and
/// push-pull frames (the encoded state, each way: its own pushes and its answers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Datagrams sent.
    pub datagrams: u64,
    /// Their bytes.
    pub datagram_bytes: u64,
    /// Push-pull frames sent (pushes and answers).
    pub push_pulls: u64,
    /// Their bytes (length prefix included).
    pub push_pull_bytes: u64,
}

impl Traffic {
    /// Every byte sent, UDP and TCP.
    pub fn bytes(&self) -> u64 {
        self.datagram_bytes + self.push_pull_bytes
    }

    fn add(&mut self, other: &Traffic) {
        self.datagrams += other.datagrams;
        self.datagram_bytes += other.datagram_bytes;
        self.push_pulls += other.push_pulls;
        self.push_pull_bytes += other.push_pull_bytes;
    }
}

impl Node {
    /// When the node next has something to do on its own.
    fn next_deadline(&self) -> Option<Instant> {
        let d = self.engine.next_deadline()?;
        Some(self.paused_until.map_or(d, |p| d.max(p)))
    }
}

/// A simulated cluster.
pub struct Sim {
    start: Instant,
    now: Instant,
    rng: StdRng,
    seq: u64,
    profile: Profile,
    /// The join names every node is started with.
    join: Vec<String>,
    nodes: BTreeMap<SocketAddr, Node>,
    names: BTreeMap<SocketAddr, String>,
    /// Addresses of nodes that left gracefully and were not restarted.
    left: Vec<SocketAddr>,
    /// Crashed and not restarted.
    crashed: Vec<SocketAddr>,
    /// Crashed nodes whose host is gone too ([`Sim::power_off`]): nothing refuses a TCP ping.
    silent: BTreeSet<SocketAddr>,
    /// What each crashed node's snapshot remembers of user events and queries.
    event_memory: BTreeMap<SocketAddr, (Option<u64>, Option<u64>)>,
    queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    /// Each node's earliest deadline; stale entries (not the node's `queued`) are skipped.
    timers: BinaryHeap<Reverse<(Instant, SocketAddr)>>,
    /// Nodes with a leave under way (they stop once it is done).
    leaving: BTreeSet<SocketAddr>,
    /// For each node that started a leave, the nodes that could hear it all along: listed up
    /// by it when it started, on its side of every partition and never paused while it
    /// left, nor crashed since. Only the member itself may announce its leave (issue 10), so only
    /// these must list it `left`.
    audiences: BTreeMap<SocketAddr, BTreeSet<SocketAddr>>,
    /// Whether push-pull frames are encoded to count their bytes (on by default).
    count_frames: bool,
    /// What each queued delivery carries, by the slot its `queue` entry names (a slab: slots
    /// are reused through `free`, so queuing allocates nothing; a map here cost 3% of a
    /// 1,000-node run).
    deliveries: Vec<Option<Delivery>>,
    free: Vec<usize>,
    /// Partition group of each address; packets between different groups are dropped.
    groups: BTreeMap<SocketAddr, u8>,
    loss: f64,
    /// Probability that a TCP segment is lost (each is retransmitted: SYN after 1 s, others
    /// after 200 ms, doubling).
    tcp_loss: f64,
    /// Datagrams delivered and dropped, for reports.
    pub delivered: u64,
    /// Datagrams lost to loss or partitions.
    pub dropped: u64,
    /// Datagrams and their bytes sent by all nodes (envelope included, no IP/UDP headers).
    pub sent: (u64, u64),
    /// Timings that replace the profile's for every node booted from now on.
    timings: Option<crate::profile::Timings>,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250 + 1) as u8], 7948))
}

impl Sim {
    /// A cluster of `n` nodes, all started at time zero with identical configuration: each
    /// joins [`CLUSTER_NAME`].
    pub fn new(seed: u64, n: usize, profile: Profile) -> Self {
        Self::with_join(seed, n, profile, vec![CLUSTER_NAME.to_string()])
    }

    /// `n` nodes started at time zero with no join names: each is alone until an operator
    /// joins it ([`Sim::join`]).
    pub fn unjoined(seed: u64, n: usize, profile: Profile) -> Self {
        Self::with_join(seed, n, profile, Vec::new())
    }

    /// `n` nodes joining [`CLUSTER_NAME`] with `timings` instead of the lan profile's (to
    /// measure other settings).
    pub fn with_timings(seed: u64, n: usize, timings: crate::profile::Timings) -> Self {
        let mut sim = Self::with_join(seed, 0, Profile::Lan, vec![CLUSTER_NAME.to_string()]);
        sim.timings = Some(timings);
        for i in 0..n {
            sim.names.insert(addr(i), format!("n{i}"));
        }
        for i in 0..n {
            sim.boot(addr(i));
        }
        sim
    }

    /// The address of the `i`th node.
    pub fn addr(i: usize) -> SocketAddr {
        addr(i)
    }

    fn with_join(seed: u64, n: usize, profile: Profile, join: Vec<String>) -> Self {
        let start = Instant::now();
        let mut sim = Self {
            start,
            now: start,
            rng: rng(Some(seed)),
            seq: 0,
            profile,
            join,
            timings: None,
            sent: (0, 0),
            nodes: BTreeMap::new(),
            names: BTreeMap::new(),
            left: Vec::new(),
            crashed: Vec::new(),
            silent: BTreeSet::new(),
            event_memory: BTreeMap::new(),
            queue: BinaryHeap::new(),
            timers: BinaryHeap::new(),
            leaving: BTreeSet::new(),
            audiences: BTreeMap::new(),
            count_frames: true,
            deliveries: Vec::new(),
            free: Vec::new(),
            groups: BTreeMap::new(),
            loss: 0.0,
            tcp_loss: 0.0,
            delivered: 0,
            dropped: 0,
        };
        for i in 0..n {
            sim.names.insert(addr(i), format!("n{i}"));
        }
        for i in 0..n {
            sim.boot(addr(i));
        }
        sim
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Addresses of the nodes running now.
    pub fn live(&self) -> Vec<SocketAddr> {
        self.nodes.keys().copied().collect()
    }

    /// Addresses of nodes that left gracefully and are gone.
    pub fn departed(&self) -> &[SocketAddr] {
        &self.left
    }

    /// Addresses of crashed nodes not restarted.
    pub fn crashed(&self) -> &[SocketAddr] {
        &self.crashed
    }

    /// The view of the node at `at` (built now: O(members)).
    pub fn view(&self, at: SocketAddr) -> Option<View> {
        self.nodes.get(&at).map(|n| n.engine.view())
    }

    /// How the node at `at` lists the member at `of` (`None`: not listed, or `at` is not
    /// running), without building its view.
    pub fn status(&self, at: SocketAddr, of: SocketAddr) -> Option<Status> {
        self.nodes.get(&at)?.engine.member_status(of)
    }

    /// How many members the node at `at` lists with `status` (itself included).
    pub fn count(&self, at: SocketAddr, status: Status) -> usize {
        self.nodes.get(&at).map_or(0, |n| n.engine.count(status))
    }

    /// What the node at `at` sent since it (re)started.
    pub fn sent_by(&self, at: SocketAddr) -> Traffic {
        self.nodes
            .get(&at)
            .map_or_else(Traffic::default, |n| n.sent)
    }

    /// What every running node sent since it (re)started, summed.
    pub fn sent_by_live(&self) -> Traffic {
        let mut total = Traffic::default();
        for node in self.nodes.values() {
            total.add(&node.sent);
        }
        total
    }

    /// Turns the encoding of push-pull frames (to count their bytes) on or off.
    pub fn count_push_pull_bytes(&mut self, on: bool) {
        self.count_frames = on;
    }

    /// The current generation of the node at `at` (0 when it is not running): it grows when
    /// the node is declared down and renews its identity.
    pub fn generation(&self, at: SocketAddr) -> u64 {
        self.nodes
            .get(&at)
            .map_or(0, |n| n.engine.identity().generation)
    }

    /// Events the node at `at` produced so far.
    pub fn events(&self, at: SocketAddr) -> &[Event] {
        self.nodes.get(&at).map_or(&[], |n| &n.events)
    }

    fn boot(&mut self, at: SocketAddr) {
        let name = self.names[&at].clone();
        let mut config = NodeConfig::new(name, at);
        config.profile = self.profile;
        config.timings = self.timings.clone();
        config.join = self.join.clone();
        config.reconnect_timeout = Duration::from_secs(3600);
        config.tombstone_timeout = Duration::from_secs(3600);
        let generation = 1 + self.elapsed().as_millis() as u64;
        let seed = self.rng.random::<u64>();
        let id = Identity {
            addr: at,
            generation,
        };
        let memory = self.event_memory.get(&at).copied().unwrap_or_default();
        // Every simulated node keeps its event memory as `--snapshot` would (no seeds: a
        // restarted node finds the cluster by the join name).
        let restored = Restored {
            seeds: Vec::new(),
            event_ltime: memory.0,
            query_ltime: memory.1,
        };
        let engine = Engine::new(
            config,
            id,
            restored,
            false,
            Some(seed),
            Arc::new(Stats::default()),
            self.now,
        )
        .expect("simulated configs are valid");
        self.nodes.insert(
            at,
            Node {
                engine,
                generation,
                events: Vec::new(),
                leave_done: None,
                paused_until: None,
                queued: None,
                sent: Traffic::default(),
            },
        );
        if let Some(node) = self.nodes.get_mut(&at) {
            node.engine.start(self.now);
        }
        self.flush(at);
    }

    /// Splits the network: each address goes to the group at its index in `groups`
    /// (addresses not named stay in group 0).
    pub fn partition(&mut self, groups: &[Vec<SocketAddr>]) {
        self.groups.clear();
        for (g, members) in groups.iter().enumerate() {
            for a in members {
                self.groups.insert(*a, g as u8);
            }
        }
        for leaver in &self.leaving {
            let side = self.groups.get(leaver).copied().unwrap_or(0);
            if let Some(audience) = self.audiences.get_mut(leaver) {
                audience.retain(|a| self.groups.get(a).copied().unwrap_or(0) == side);
            }
        }
    }

    /// `at` stops hearing the leaves under way (paused), or every leave (crashed: what it
    /// heard goes with it, and it comes back as a new node).
    fn deafen(&mut self, at: SocketAddr, crashed: bool) {
        for (leaver, audience) in &mut self.audiences {
            if crashed || self.leaving.contains(leaver) {
                audience.remove(&at);
            }
        }
    }

    /// Ends every partition.
    pub fn heal(&mut self) {
        self.groups.clear();
    }

    /// Sets the probability that a datagram is lost.
    pub fn set_loss(&mut self, p: f64) {
        self.loss = p;
    }

    /// Sets the probability that a TCP segment (of a push-pull or a TCP ping) is lost.
    pub fn set_tcp_loss(&mut self, p: f64) {
        self.tcp_loss = p;
    }

    /// Pauses the node at `at` for `how_long` (like `kill -STOP`, then `kill -CONT`).
    pub fn pause(&mut self, at: SocketAddr, how_long: Duration) {
        let until = self.now + how_long;
        if let Some(node) = self.nodes.get_mut(&at) {
            node.paused_until = Some(until);
        }
        self.deafen(at, false);
        self.requeue(at);
    }

    /// Kills the node at `at` (like `kill -9`); its snapshot (event memory) stays.
    pub fn crash(&mut self, at: SocketAddr) {
        if let Some(node) = self.nodes.remove(&at) {
            let view = node.engine.view();
            self.event_memory
                .insert(at, (view.event_ltime, view.query_ltime));
            self.leaving.remove(&at);
            self.deafen(at, true);
            self.crashed.push(at);
        }
    }

    /// Powers off the host of the node at `at`: a crash after which its address answers
    /// nothing, not even a refusal of a TCP connection (a killed process's port refuses it).
    pub fn power_off(&mut self, at: SocketAddr) {
        if self.nodes.contains_key(&at) {
            self.crash(at);
            self.silent.insert(at);
        }
    }

    /// Restarts a crashed node at the same address, with a new generation.
    pub fn restart(&mut self, at: SocketAddr) {
        if self.nodes.contains_key(&at) {
            return;
        }
        self.silent.remove(&at);
        self.crashed.retain(|a| *a != at);
        self.left.retain(|a| *a != at);
        self.boot(at);
    }

    /// Delivers `packet` to the node at `to` now, as from `from` (a stranger's or a forger's
    /// datagram: the forged-packet tests and the fuzz targets feed them here).
    pub fn inject(&mut self, from: SocketAddr, to: SocketAddr, packet: Vec<u8>) {
        self.schedule(self.now, Delivery::Datagram { from, to, packet });
    }

    /// Delivers a push-pull `state` to the node at `to` now, as opened by `from`.
    pub fn inject_state(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        state: crate::anti_entropy::SyncState,
    ) {
        let back = Duration::ZERO;
        let (join, at) = (None, self.now);
        self.schedule(
            at,
            Delivery::Exchange {
                to,
                from,
                state,
                back,
                join,
            },
        );
    }

    /// Starts a graceful leave of the node at `at`; it stops once the leave is done.
    pub fn leave(&mut self, at: SocketAddr) {
        let Some(node) = self.nodes.get_mut(&at) else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        node.leave_done = Some(rx);
        node.engine
            .handle_command(self.now, Command::Leave { reply: tx });
        let side = |a: &SocketAddr| self.groups.get(a).copied().unwrap_or(0);
        let up = |a: &SocketAddr| {
            let status = self.nodes.get(&at).and_then(|n| n.engine.member_status(*a));
            matches!(status, Some(Status::Alive | Status::Suspect))
        };
        let audience = (self.nodes.keys())
            .filter(|a| **a != at && side(a) == side(&at) && up(a))
            .copied()
            .collect();
        self.audiences.insert(at, audience);
        self.leaving.insert(at);
        self.flush(at);
    }

    /// An operator's `shoal join TARGETS` at the node at `at`: the answer arrives on the
    /// receiver (how many answered) once the simulation has run far enough.
    pub fn join(
        &mut self,
        at: SocketAddr,
        targets: Vec<String>,
        replay: bool,
    ) -> oneshot::Receiver<Result<usize, CommandError>> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Join {
            targets,
            replay,
            reply,
        };
        self.command_now(at, cmd);
        rx
    }

    fn command_now(&mut self, at: SocketAddr, cmd: Command) {
        if let Some(node) = self.nodes.get_mut(&at) {
            node.engine.handle_command(self.now, cmd);
            self.flush(at);
        }
    }

    /// Runs until `deadline` (virtual time since start).
    pub fn run_until(&mut self, deadline: Duration) {
        let end = self.start + deadline;
        loop {
            let next_delivery = self.queue.peek().map(|Reverse((t, ..))| *t);
            let next_timer = self.next_timer();
            let next = match (next_delivery, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            if next_delivery == Some(next) {
                let Some(Reverse((_, _, id))) = self.queue.pop() else {
                    break;
                };
                let slot = self.deliveries.get_mut(id).and_then(Option::take);
                self.free.push(id);
                if let Some(delivery) = slot {
                    self.deliver(delivery);
                }
            } else {
                // Every node due now, in address order, then their turns (a timer one of
                // them sets for `now` itself waits for the next step, after deliveries).
                let mut due = Vec::new();
                while let Some(Reverse((d, at))) = self.timers.peek().copied() {
                    if d > self.now {
                        break;
                    }
                    self.timers.pop();
                    if let Some(node) = self.nodes.get_mut(&at)
                        && node.queued == Some(d)
                    {
                        node.queued = None;
                        due.push(at);
                    }
                }
                for at in due {
                    if let Some(node) = self.nodes.get_mut(&at) {
                        node.engine.fire_timers(self.now);
                    }
                    self.flush(at);
                }
            }
            self.reap_departed();
        }
        self.now = self.now.max(end);
    }

    /// The earliest valid timer entry (stale ones are dropped on the way).
    fn next_timer(&mut self) -> Option<Instant> {
        while let Some(Reverse((d, at))) = self.timers.peek().copied() {
            if self.nodes.get(&at).is_some_and(|n| n.queued == Some(d)) {
                return Some(d);
            }
            self.timers.pop();
        }
        None
    }

    /// Puts the node at `at` in the timer queue under its current deadline, after anything
    /// that may have changed it (a turn, a pause).
    fn requeue(&mut self, at: SocketAddr) {
        let Some(node) = self.nodes.get_mut(&at) else {
            return;
        };
        let deadline = node.next_deadline();
        if deadline != node.queued {
            node.queued = deadline;
            if let Some(d) = deadline {
                self.timers.push(Reverse((d, at)));
            }
        }
    }

    /// Nodes whose leave finished stop running, as the agent exits.
    fn reap_departed(&mut self) {
        if self.leaving.is_empty() {
            return;
        }
        let done: Vec<SocketAddr> = self
            .leaving
            .iter()
            .copied()
            .filter(|a| {
                self.nodes
                    .get_mut(a)
                    .and_then(|n| n.leave_done.as_mut())
                    .is_some_and(|rx| rx.try_recv().is_ok())
            })
            .collect();
        for at in done {
            self.leaving.remove(&at);
            self.nodes.remove(&at);
            self.left.push(at);
        }
    }
}

mod invariants;
mod network;
mod operator;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod scale;

#[cfg(test)]
mod tests;
