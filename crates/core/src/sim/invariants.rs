//! What must hold in a quiet simulated cluster: the invariants the sweep checks.

use std::net::SocketAddr;

use super::Sim;
use crate::membership::Status;

impl Sim {
    /// True when some live node lists `gone` as left: then every node listing it must.
    /// (A node that left inside a partition whose intent never crossed it is `failed` to the
    /// other side, which is the truth as far as anyone can know.)
    fn known_left_somewhere(&self, gone: SocketAddr) -> bool {
        self.nodes
            .values()
            .any(|n| n.engine.member_status(gone) == Some(Status::Left))
    }

    /// Checks the invariants of a quiet cluster; returns what is wrong: a live node not listed
    /// alive by every live node, or a departed node listed as anything but left (or failed,
    /// when no live node knows it left).
    pub fn check_converged(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let live = self.live();
        for (at, node) in &self.nodes {
            let status = |a: SocketAddr| node.engine.member_status(a);
            for other in &live {
                if status(*other) != Some(Status::Alive) {
                    problems.push(format!(
                        "{} lists live {} as {:?}",
                        self.names[at],
                        self.names[other],
                        status(*other)
                    ));
                }
            }
            for gone in &self.left {
                match status(*gone) {
                    None | Some(Status::Left) => {}
                    Some(Status::Failed) if !self.known_left_somewhere(*gone) => {}
                    Some(s) => problems.push(format!(
                        "{} lists departed {} as {s:?}",
                        self.names[at], self.names[gone]
                    )),
                }
            }
        }
        problems
    }
}
