//! The simulated network: a node's outbox carried out (datagrams with latency and loss,
//! push-pulls and TCP pings over lossy TCP, DNS look-ups), and deliveries handed to engines.

use std::cmp::Reverse;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::RngExt;
use tokio::sync::oneshot;

use super::{CLUSTER_NAME, Delivery, Sim};
use crate::anti_entropy::SyncState;
use crate::engine::{Command, Outbox, Resolve, TcpPing};

/// The bytes of a push-pull frame of `state` (length prefix and envelope included), or 0 when
/// not counted: what `anti_entropy::encode_frame` would write, counted without writing it.
fn frame_len(count: bool, state: &SyncState) -> u64 {
    if !count {
        return 0;
    }
    postcard::experimental::serialized_size(state)
        .map_or(0, |len| (4 + crate::envelope::HEADER_LEN + len) as u64)
}

impl Sim {
    /// Simulated DNS: [`CLUSTER_NAME`] resolves to every node's address, an `ip:port` to
    /// itself, any other name to nothing.
    fn resolve(&self, targets: &[String]) -> (Vec<SocketAddr>, Vec<(String, String)>) {
        let mut addrs = Vec::new();
        let mut failed = Vec::new();
        for target in targets {
            if target == CLUSTER_NAME {
                addrs.extend(self.names.keys().copied());
            } else if let Ok(a) = target.parse::<SocketAddr>() {
                addrs.push(a);
            } else {
                failed.push((target.clone(), "no such host in the simulation".to_string()));
            }
        }
        (addrs, failed)
    }

    /// The time a TCP exchange of `segments` segments takes under `tcp_loss`: the latency of
    /// each, plus the retransmission timeouts of the lost ones.
    fn tcp_time(&mut self, segments: usize) -> Duration {
        let p = self.tcp_loss.clamp(0.0, 0.9);
        let mut total = Duration::ZERO;
        for i in 0..segments {
            let mut rto = if i == 0 {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(200)
            };
            // Linux doubles the RTO up to two minutes and gives up after 15 retries; past
            // that the exchange is as good as lost (and the sum cannot overflow).
            let mut retries = 0;
            while retries < 15 && self.rng.random_bool(p) {
                total += rto;
                rto = (rto * 2).min(Duration::from_secs(120));
                retries += 1;
            }
            total += self.latency();
        }
        total
    }

    /// A TCP ping from `at`: answered when the target runs (and is not paused past the
    /// limit) under that very identity.
    fn tcp_ping(&mut self, at: SocketAddr, ping: TcpPing) {
        let to = ping.target.addr;
        if !self.linked(at, to) {
            return;
        }
        let Some(node) = self.nodes.get(&to) else {
            if self.silent.contains(&to) {
                // The host is off: the SYN goes unanswered.
                return;
            }
            // Nothing listens there: the connection is refused.
            let (target, number) = (ping.target, ping.number);
            let took = self.tcp_time(2);
            if took <= ping.limit {
                self.command_later(at, took, Command::TcpRefused { target, number });
            }
            return;
        };
        if node.engine.identity() != ping.target {
            return;
        }
        let paused = node
            .paused_until
            .map_or(Duration::ZERO, |p| p.saturating_duration_since(self.now));
        let took = self.tcp_time(4).max(paused + self.latency());
        if took <= ping.limit {
            let (target, number) = (ping.target, ping.number);
            self.command_later(at, took, Command::TcpAnswered { target, number });
        }
    }

    pub(super) fn linked(&self, a: SocketAddr, b: SocketAddr) -> bool {
        self.groups.get(&a).copied().unwrap_or(0) == self.groups.get(&b).copied().unwrap_or(0)
    }

    fn latency(&mut self) -> Duration {
        Duration::from_micros(self.rng.random_range(200..2000))
    }

    pub(super) fn schedule(&mut self, at: Instant, delivery: Delivery) {
        self.seq += 1;
        let id = match self.free.pop() {
            Some(id) => {
                self.deliveries[id] = Some(delivery);
                id
            }
            None => {
                self.deliveries.push(Some(delivery));
                self.deliveries.len() - 1
            }
        };
        self.queue.push(Reverse((at, self.seq, id)));
    }

    pub(super) fn command_later(&mut self, to: SocketAddr, delay: Duration, cmd: Command) {
        let Some(generation) = self.nodes.get(&to).map(|n| n.generation) else {
            return;
        };
        let at = self.now + delay;
        self.schedule(
            at,
            Delivery::Command {
                to,
                generation,
                cmd,
            },
        );
    }

    /// Carries out the outbox of the node at `at`.
    pub(super) fn flush(&mut self, at: SocketAddr) {
        let Some(node) = self.nodes.get_mut(&at) else {
            return;
        };
        let Outbox {
            datagrams,
            push_pulls,
            resolve,
            tcp_pings,
            beacons: _,
            events,
            view_changed: _,
        } = node.engine.take_outbox();
        node.events.extend(events);
        node.sent.datagrams += datagrams.len() as u64;
        let bytes = datagrams.iter().map(|(_, p)| p.len() as u64).sum::<u64>();
        node.sent.datagram_bytes += bytes;
        self.sent.0 += datagrams.len() as u64;
        self.sent.1 += bytes;
        for (to, packet) in datagrams {
            let lost = self.rng.random_bool(self.loss.clamp(0.0, 1.0));
            if lost || !self.linked(at, to) {
                self.dropped += 1;
                continue;
            }
            let when = self.now + self.latency();
            self.schedule(
                when,
                Delivery::Datagram {
                    from: at,
                    to,
                    packet,
                },
            );
        }
        for pp in push_pulls {
            let bytes = frame_len(self.count_frames, &pp.state);
            let mut joined = 0;
            // As in the driver, the join is reported done after every answer was applied.
            let mut done = Duration::ZERO;
            // The state is cloned for every peer but the last reached, which takes it.
            let reached: Vec<SocketAddr> = (pp.addrs.into_iter())
                .filter(|peer| self.linked(at, *peer) && self.nodes.contains_key(peer))
                .collect();
            let mut state = Some(pp.state);
            let last = reached.len().saturating_sub(1);
            for (i, peer) in reached.into_iter().enumerate() {
                joined += 1;
                if let Some(node) = self.nodes.get_mut(&at) {
                    node.sent.push_pulls += 1;
                    node.sent.push_pull_bytes += bytes;
                }
                // Their side applies ours, then answers with theirs.
                let there = self.tcp_time(3);
                let back = self.latency();
                done = done.max(there + back + Duration::from_millis(1));
                let state = if i == last {
                    state.take().unwrap_or_default()
                } else {
                    state.clone().unwrap_or_default()
                };
                let exchange = Delivery::Exchange {
                    to: peer,
                    from: at,
                    state,
                    back,
                    join: pp.join,
                };
                self.schedule(self.now + there, exchange);
            }
            if let Some(join) = pp.join {
                self.command_later(at, done, Command::JoinedVia { joined, join });
            }
        }
        for ping in tcp_pings {
            self.tcp_ping(at, ping);
        }
        for Resolve { targets, purpose } in resolve {
            let (addrs, failed) = self.resolve(&targets);
            let delay = self.latency();
            let cmd = Command::Resolved {
                addrs,
                failed,
                purpose,
            };
            self.command_later(at, delay, cmd);
        }
        self.requeue(at);
    }

    pub(super) fn deliver(&mut self, delivery: Delivery) {
        let to = match &delivery {
            Delivery::Datagram { to, .. }
            | Delivery::Command { to, .. }
            | Delivery::Exchange { to, .. } => *to,
        };
        // A paused node reads nothing: what arrives waits until it resumes.
        if let Some(until) = self.nodes.get(&to).and_then(|n| n.paused_until)
            && until > self.now
        {
            self.schedule(until, delivery);
            return;
        }
        match delivery {
            Delivery::Datagram { from, to, packet } => {
                let now = self.now;
                if let Some(node) = self.nodes.get_mut(&to) {
                    self.delivered += 1;
                    node.engine.handle_datagram(now, from, &packet);
                    self.flush(to);
                } else if !self.silent.contains(&to)
                    && !self.rng.random_bool(self.loss.clamp(0.0, 1.0))
                {
                    // The host is up, no process holds the port: its kernel answers with
                    // ICMP port unreachable (lost as a datagram would be).
                    let delay = self.latency();
                    self.command_later(from, delay, Command::PortUnreachable { addr: to });
                }
            }
            Delivery::Exchange {
                to,
                from,
                state,
                back,
                join,
            } => {
                let now = self.now;
                let Some(node) = self.nodes.get_mut(&to) else {
                    return;
                };
                let (reply, mut answer) = oneshot::channel();
                node.engine.handle_command(
                    now,
                    Command::Exchange {
                        state,
                        peer: from,
                        reply,
                    },
                );
                self.flush(to);
                if let Ok(theirs) = answer.try_recv() {
                    let bytes = frame_len(self.count_frames, &theirs);
                    if let Some(node) = self.nodes.get_mut(&to) {
                        node.sent.push_pulls += 1;
                        node.sent.push_pull_bytes += bytes;
                    }
                    let cmd = Command::ApplyState {
                        state: theirs,
                        join,
                        peer: to,
                    };
                    self.command_later(from, back, cmd);
                }
            }
            Delivery::Command {
                to,
                generation,
                cmd,
            } => {
                let now = self.now;
                if let Some(node) = self.nodes.get_mut(&to)
                    && node.generation == generation
                {
                    node.engine.handle_command(now, cmd);
                    self.flush(to);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_frame_is_as_long_as_the_encoded_one() {
        let mut sim = Sim::new(1, 3, crate::profile::Profile::Lan);
        sim.run_until(Duration::from_secs(2));
        let at = Sim::addr(0);
        let state = sim.nodes[&at].engine.state();
        let encoded = crate::anti_entropy::encode_frame(&state).expect("encodes");
        assert_eq!(frame_len(true, &state), 4 + encoded.len() as u64);
        assert_eq!(frame_len(false, &state), 0);
    }
}
