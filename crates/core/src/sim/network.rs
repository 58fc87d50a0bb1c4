//! The simulated network beyond datagrams: DNS, and TCP (a push-pull's or a TCP ping's time
//! under segment loss, a ping's answer or refusal).

use std::net::SocketAddr;
use std::time::Duration;

use rand::RngExt;

use super::{CLUSTER_NAME, Sim};
use crate::engine::{Command, TcpPing};

impl Sim {
    /// Simulated DNS: [`CLUSTER_NAME`] resolves to every node's address, an `ip:port` to
    /// itself, any other name to nothing.
    pub(super) fn resolve(&self, targets: &[String]) -> (Vec<SocketAddr>, Vec<(String, String)>) {
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
    pub(super) fn tcp_time(&mut self, segments: usize) -> Duration {
        let p = self.tcp_loss.clamp(0.0, 0.9);
        let mut total = Duration::ZERO;
        for i in 0..segments {
            let mut rto = if i == 0 {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(200)
            };
            while self.rng.random_bool(p) {
                total += rto;
                rto *= 2;
            }
            total += self.latency();
        }
        total
    }

    /// A TCP ping from `at`: answered when the target runs (and is not paused past the
    /// limit) under that very identity.
    pub(super) fn tcp_ping(&mut self, at: SocketAddr, ping: TcpPing) {
        let to = ping.target.addr;
        if !self.linked(at, to) {
            return;
        }
        let Some(node) = self.nodes.get(&to) else {
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
}
