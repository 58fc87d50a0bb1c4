//! What must hold in a quiet simulated cluster: the invariants the sweep checks.

use std::net::SocketAddr;

use super::Sim;
use crate::membership::Status;

impl Sim {
    /// True when `at` heard all of `gone`'s leave ([`Sim::audiences`]): it must list it
    /// `left`. (A node cut off, paused or started while `gone` left lists it `failed`, the
    /// truth as far as it can know: nobody but the member may say that it left.)
    fn heard_leave(&self, gone: SocketAddr, at: SocketAddr) -> bool {
        self.audiences.get(&gone).is_some_and(|a| a.contains(&at))
    }

    /// Checks the invariants of a quiet cluster; returns what is wrong: a live node not listed
    /// alive by every live node, or a departed node listed as anything but left (or failed,
    /// by a node that could not hear its leave).
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
                    Some(Status::Failed) if !self.heard_leave(*gone, *at) => {}
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
