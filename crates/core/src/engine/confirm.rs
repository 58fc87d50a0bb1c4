//! Lifeguard's dynamic suspicion in the engine: foca's suspect-to-down timers are held
//! ([`super::suspicion::HeldTimers`]) and handed back at a deadline that shortens as other
//! members confirm the suspicion; our own failed probes are announced as accusations
//! ([`crate::accusation`]) so the others can count them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use foca::Timer;
use tracing::debug;

use super::Engine;
use super::ticks::Tick;
use crate::accusation::Accusation;
use crate::broadcast::{Broadcast, lock};
use crate::identity::Identity;

impl Engine {
    /// Queues a timer foca asked for. A suspect-to-down timer (foca's own probe of the member
    /// failed) is held: it fires after twice foca's time with no confirmation, sooner with
    /// each independent accuser (at half foca's time at once where nobody can confirm: a
    /// pair), and our accusation goes out.
    pub(super) fn schedule_foca(&mut self, after: Duration, timer: Timer<Identity>) {
        if matches!(timer, Timer::PeriodicGossip(_)) && !self.foca_has_gossip() {
            // foca's gossip timer (every 100 ms on lan) sends nothing while its queues are
            // empty: held instead of firing, it costs an idle agent no wake-ups, and it goes
            // back in as soon as there is something to gossip (`unpark_gossip`), after the
            // news itself went out at once (`gossip_now`).
            self.parked_gossip = Some((after, timer));
            return;
        }
        let after = self.stretched(after, &timer);
        let Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            ..
        } = &timer
        else {
            self.timers.push(self.now + after, Tick::Foca(timer));
            return;
        };
        let (id, incarnation) = (*member_id, *incarnation);
        let me = self.local().addr;
        let confirmations = lock(&self.shared)
            .accusations
            .confirmations(id, incarnation, me);
        let expected = crate::accusation::expected_confirmations(self.cluster_size);
        let held = self.suspicions.hold(
            self.now,
            timer,
            (id, incarnation),
            after,
            (confirmations, expected),
        );
        if let Some(at) = held {
            debug!(member = %id.addr, confirmations, in_ms = super::outbox::ms(at - self.now),
                "our probe failed: suspect, down at the deadline unless refuted");
            self.timers.push(at, Tick::SuspectDue(id.addr, at));
            self.accuse(id, incarnation);
        }
    }

    /// Tells the cluster our probe of `target` at `incarnation` failed.
    pub(super) fn accuse(&mut self, target: Identity, incarnation: foca::Incarnation) {
        if self.leave.left() {
            return;
        }
        let accuser = self.local();
        self.broadcast(Broadcast::Suspect(Accusation {
            target,
            incarnation,
            accuser,
        }));
    }

    /// Whether foca holds member updates or custom broadcasts still to gossip.
    fn foca_has_gossip(&self) -> bool {
        self.foca.updates_backlog() > 0 || self.foca.custom_broadcast_backlog() > 0
    }

    /// Schedules foca's gossip timer again once it has something to gossip.
    pub(super) fn unpark_gossip(&mut self) {
        if self.parked_gossip.is_some()
            && self.foca_has_gossip()
            && let Some((after, timer)) = self.parked_gossip.take()
        {
            self.timers.push(self.now + after, Tick::Foca(timer));
        }
    }

    /// Members newly accused by others: our suspicions of them move closer.
    pub(super) fn take_confirmations(&mut self) {
        let accused = std::mem::take(&mut lock(&self.shared).accused);
        let me = self.local().addr;
        for target in accused {
            let Some(incarnation) = self.suspicions.incarnation_of(target) else {
                continue;
            };
            let count = lock(&self.shared)
                .accusations
                .confirmations(target, incarnation, me);
            if let Some(at) = self
                .suspicions
                .confirmed(self.now, target, incarnation, count)
            {
                debug!(member = %target.addr, confirmations = count,
                    in_ms = super::outbox::ms(at - self.now), "suspicion confirmed: sooner");
                self.timers.push(at, Tick::SuspectDue(target.addr, at));
            }
        }
    }

    /// The deadline `at` of our suspicion of the member at `addr`: foca's timer now, unless
    /// the deadline moved.
    pub(super) fn suspect_due(&mut self, addr: SocketAddr, at: Instant) {
        if let Some(timer) = self.suspicions.due(addr, at) {
            self.tick(Tick::Foca(timer));
        }
    }
}
