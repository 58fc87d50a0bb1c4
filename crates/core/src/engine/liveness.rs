//! Liveness beyond foca's own rules: what a TCP fallback answer or refusal means
//! ([`super::probe`]), the refutation after a stall, and the local health score
//! ([`super::health`]) that stretches the probe timings.

use std::time::Duration;

use foca::State;
use tracing::{debug, warn};

use super::{Engine, outbox, packet_budget, probe, ticks};
use crate::identity::Identity;
use crate::view::Stats;

impl Engine {
    /// A member answered our TCP ping while foca still waits for its probe's ack: hand foca
    /// the ack the UDP path lost.
    pub(super) fn tcp_answered(&mut self, target: Identity, number: foca::ProbeNumber) {
        if !self.probes.tcp_answered(target, number) {
            return;
        }
        let incarnation = self.incarnation_of(target).unwrap_or(0);
        let Some(ack) = probe::synthetic_ack(target, incarnation, self.local(), number) else {
            return;
        };
        debug!(member = %target.addr, "UDP probe unanswered, TCP ping answered: member is alive");
        Stats::add(&self.stats.tcp_fallbacks, 1);
        if let Err(error) = self.foca.handle_data(&ack, &mut self.runtime) {
            debug!(%error, "the TCP ack was refused");
        }
    }

    /// The member's gossip port refused a probe's TCP ping: nothing listens there, its process
    /// is gone (`kill -9`, a crash). Suspect it now rather than at the end of the probe
    /// period, and declare it down after `refused_down` unless it refutes meanwhile; a member
    /// that is paused, partitioned or behind loss refuses nothing and gets foca's full
    /// suspicion timeout.
    pub(super) fn tcp_refused(&mut self, target: Identity, number: foca::ProbeNumber) {
        if !self.probes.tcp_refused(target, number) {
            return;
        }
        let Some(incarnation) = self.incarnation_of(target) else {
            return;
        };
        debug!(member = %target.addr, "probe unanswered and its port refused a TCP ping: suspect");
        self.apply_one(target, incarnation, State::Suspect, "a refused probe");
        self.accuse(target, incarnation);
        let at = self.now + self.timings.refused_down;
        self.timers.push(
            at,
            ticks::Tick::ConfirmDown {
                target,
                incarnation,
            },
        );
    }

    /// A datagram to `addr` came back as ICMP port unreachable (the driver asks the kernel
    /// for those errors). When `addr` is the unanswered probe's target, its TCP ping goes out
    /// now instead of at the probe RTT: a killed member's port refuses it within a round
    /// trip. The ICMP alone suspects nobody: anyone who can send us a packet can forge one
    /// (the kernel checks only the quoted addresses), and a firewall's REJECT sends one for a
    /// member that is alive, which then answers the TCP ping (the UDP probe's ack).
    pub(super) fn port_unreachable(&mut self, addr: std::net::SocketAddr) {
        if self.leave.left() {
            return;
        }
        let Some((target, number)) = self.probes.port_unreachable(addr) else {
            return;
        };
        debug!(member = %addr, "its UDP port is unreachable (ICMP): TCP ping now");
        self.tcp_ping(target, number);
    }

    /// Asks the driver to ping `target` over TCP for probe `number`; an answer counts within
    /// the rest of the probe period after its RTT.
    pub(super) fn tcp_ping(&mut self, target: Identity, number: foca::ProbeNumber) {
        let limit = self.probe_period().saturating_sub(self.probe_rtt());
        self.out.tcp_pings.push(super::TcpPing {
            from: self.local(),
            target,
            number,
            limit,
        });
    }

    /// The probe RTT, stretched by the local health.
    pub(super) fn probe_rtt(&self) -> Duration {
        self.timings.probe_rtt * self.health.multiplier()
    }

    /// The probe period, stretched by the local health.
    pub(super) fn probe_period(&self) -> Duration {
        self.timings.probe_period * self.health.multiplier()
    }

    /// foca's config for the cluster size. foca refuses a new probe period or RTT once it runs
    /// (`set_config` fails, and with it the size's rescale), so the local health stretches
    /// foca's probe and suspicion timers as they are queued instead ([`Self::stretched`]).
    pub(super) fn foca_config(&self) -> foca::Config {
        self.timings
            .foca_config(self.cluster_size, packet_budget(&self.config))
    }

    /// The delay of a timer foca asked for, stretched by the local health where it is one of
    /// the probe's (period, RTT) or a suspicion's: a node that misses its own acks or lags
    /// gives the others more time, as Lifeguard's local health does.
    pub(super) fn stretched(&self, after: Duration, timer: &foca::Timer<Identity>) -> Duration {
        match timer {
            foca::Timer::ProbeRandomMember(_)
            | foca::Timer::SendIndirectProbe { .. }
            | foca::Timer::ChangeSuspectToDown { .. } => after * self.health.multiplier(),
            _ => after,
        }
    }

    /// Moves the local health score by `delta`; the probe timers queued from then on follow.
    pub(super) fn health_changed(&mut self, delta: i8) {
        if !self.health.apply(delta) {
            return;
        }
        let score = self.health.score();
        self.stats
            .health_score
            .store(u64::from(score), std::sync::atomic::Ordering::Relaxed);
        debug!(score, "local health score changed");
    }

    /// foca's incarnation of a member it knows.
    pub(super) fn incarnation_of(&self, id: Identity) -> Option<foca::Incarnation> {
        self.foca
            .iter_membership_state()
            .find(|m| *m.id() == id)
            .map(|m| m.incarnation())
    }

    /// The loop did not run for `lag` (the process was stopped, the host stalled): the
    /// cluster may have started suspecting this node. Refute at once, before anyone acts:
    /// telling foca it is suspected at its current incarnation makes it bump the incarnation
    /// and gossip, and every message it sends from then on carries the refutation.
    pub(super) fn stalled(&mut self, lag: Duration) {
        if self.leave.left() || self.alone() {
            return;
        }
        warn!(
            lag_ms = outbox::ms(lag),
            "the node did not run for a while; refuting any suspicion"
        );
        self.health_changed(2);
        let (me, incarnation) = (self.local(), self.incarnation);
        self.apply_one(
            me,
            incarnation,
            State::Suspect,
            "a refutation after a stall",
        );
    }
}
