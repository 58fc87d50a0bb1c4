//! The engine's own timers, in the same queue as foca's, and what each does when it fires:
//! anti-entropy digests, housekeeping (suspects, reaping, config scaling, missing metas, name
//! conflicts), join attempts while alone, discovery beacons, re-resolving join names, and the
//! moment a leave is carried out.

use std::net::SocketAddr;
use std::time::Duration;

use foca::{State, Timer};
use rand::RngExt;
use tracing::{debug, info, warn};

use super::outbox::{Purpose, Resolve, ms};
use super::{Engine, packet_budget};
use crate::anti_entropy::Digest;
use crate::broadcast::lock;

use crate::envelope::{self, Kind};
use crate::identity::Identity;

/// One timer of the engine's queue.
pub(crate) enum Tick {
    /// One of foca's.
    Foca(Timer<Identity>),
    /// Send the full digest (membership and recent user events) to a random member; only
    /// the tick of the current cadence (`sync.generation`) counts.
    Sync(u64),
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
    /// Send the leave intent again to the members that have not acknowledged it.
    LeaveAgain,
    /// foca's probe `n` had its RTT: ping over TCP too if no ack came.
    ProbeFallback(foca::ProbeNumber),
    /// A member whose port refused a probe had `refused_down` to refute: down if it did not.
    ConfirmDown {
        target: Identity,
        incarnation: foca::Incarnation,
    },
    /// The deadline of our suspicion of the member at this address (see `confirm.rs`).
    SuspectDue(SocketAddr, std::time::Instant),
    /// A query of ours (`(ltime, id)`) reached its timeout.
    QueryDone((u64, u64)),
    /// Send a query of ours again to the members that have not answered it.
    QueryRetry((u64, u64)),
    /// Send a user event or our tag change directly to every member a second time.
    DirectAgain(Box<crate::broadcast::Broadcast>),
    /// The limit on meta fetches allows one again: the wanted one goes (after the turn).
    FetchMeta,
}

impl Engine {
    pub(super) fn tick(&mut self, tick: Tick) {
        match tick {
            Tick::Foca(timer) => {
                if self.suspicion_was_refuted(&timer) {
                    return;
                }
                if matches!(timer, foca::Timer::RemoveDown(_)) {
                    // The only way foca's set of member addresses shrinks.
                    self.index.removing();
                }
                if let Err(error) = self.foca.handle_timer(timer, &mut self.runtime) {
                    debug!(%error, "timer failed");
                }
            }
            Tick::Sync(generation) => self.sync_tick(generation),
            Tick::Housekeeping => self.housekeeping(),
            Tick::Rejoin => self.rejoin_tick(),
            Tick::Beacon => self.beacon_tick(),
            Tick::Resolve => self.resolve_tick(),
            Tick::LeaveNow => self.leave_now(),
            Tick::LeaveAgain => self.leave_again(),
            Tick::ProbeFallback(number) => self.probe_fallback(number),
            Tick::ConfirmDown {
                target,
                incarnation,
            } => self.confirm_down(target, incarnation),
            Tick::SuspectDue(addr, at) => self.suspect_due(addr, at),
            Tick::QueryDone(key) => self.query_done(key),
            Tick::QueryRetry(key) => self.query_retry(key),
            Tick::DirectAgain(item) => self.direct_again(&item),
            // `drain`, after every turn, sends the fetch that waited.
            Tick::FetchMeta => self.fetch_armed = false,
        }
    }

    /// True for foca's "suspect to down" timer of a suspicion that no longer stands (the member
    /// refuted it with a higher incarnation). foca 2 would still send that member a
    /// `TurnUndead` (its `apply_existing_if` reports the member as found even when the
    /// incarnation check failed), and a healthy member told it is down renews its identity:
    /// under loss that churned every member's identity and ran `member-failed` and
    /// `member-join` handlers for members that were fine. Skipping the timer is all it takes.
    fn suspicion_was_refuted(&self, timer: &Timer<Identity>) -> bool {
        let Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            ..
        } = timer
        else {
            return false;
        };
        let still_suspect = self.is_suspect_at(member_id, *incarnation);
        if !still_suspect {
            debug!(member = %member_id.addr, generation = member_id.generation,
                "suspicion refuted before its timeout; no down, no TurnUndead");
        }
        !still_suspect
    }

    fn confirm_down(&mut self, target: Identity, incarnation: foca::Incarnation) {
        if !self.is_suspect_at(&target, incarnation) || self.leave.left() {
            return;
        }
        debug!(member = %target.addr, "a member that refused connections did not refute: down");
        self.apply_one(
            target,
            incarnation,
            State::Down,
            "a down after a refused probe",
        );
    }

    fn probe_fallback(&mut self, number: foca::ProbeNumber) {
        if self.leave.left() {
            return;
        }
        if let Some(target) = self.probes.fallback_due(number) {
            self.tcp_ping(target, number);
        }
    }

    /// Sends the full digest to one random member: every sync interval after a change,
    /// backing off to the profile's maximum while nothing changes (the short digest on every
    /// SWIM datagram covers membership; this one also covers user events, which a member
    /// that gossip missed would otherwise never get).
    fn sync_tick(&mut self, generation: u64) {
        if generation != self.sync.generation {
            return;
        }
        let next = self.sync.backoff.next();
        self.sync.due = self.now + next;
        self.timers.push(self.sync.due, Tick::Sync(generation));
        if self.leave.left() {
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
        let shared = lock(&self.shared);
        let digest = Digest {
            from: self.local(),
            digest: shared.table.digest(),
            events: Some(shared.events.digest()),
        };
        drop(shared);
        match postcard::to_stdvec(&digest) {
            Ok(payload) => {
                let packet = envelope::seal(Kind::Digest, &payload);
                self.send_datagram(packet, target);
            }
            Err(error) => warn!(%error, "digest could not be encoded"),
        }
    }

    fn housekeeping(&mut self) {
        let now = self.now;
        self.timers
            .push(now + self.timings.housekeeping, Tick::Housekeeping);
        let mut missing_meta = None;
        let mut suspected = Vec::new();
        {
            let mut shared = lock(&self.shared);
            // This runs over every member of every node: at a thousand members, two table
            // look-ups each were most of a simulation's time. Only members suspect now or at
            // the last round (the only ones whose flag can be set) are looked up for it, and
            // metas only when an entry or foca's member count changed since a round that
            // found them all current.
            let key = (shared.table.epoch(), self.foca.num_members());
            let check_metas = self.metas_current != Some(key);
            for member in self.foca.iter_membership_state() {
                let (id, state) = (*member.id(), member.state());
                let suspect = state == State::Suspect;
                if suspect || self.suspects.was_suspect(id.addr) {
                    shared.table.set_suspect(id, suspect);
                }
                if suspect {
                    suspected.push(id.addr);
                }
                if check_metas
                    && state != State::Down
                    && missing_meta.is_none()
                    && !shared.table.has_current_meta(id)
                {
                    missing_meta = Some(id.addr);
                }
            }
            self.metas_current = missing_meta.is_none().then_some(key);
            suspected.sort_unstable();
            // Kept for twice the longest suspicion after it ended (see `keep_only`).
            let longest = self.foca_suspicion() * super::suspicion::LONGEST_FACTOR * 2;
            let grace = (longest.as_millis() / self.timings.housekeeping.as_millis().max(1))
                .try_into()
                .unwrap_or(u32::MAX);
            shared
                .accusations
                .keep_only(|addr| suspected.binary_search(&addr).is_ok(), grace);
            for id in shared.table.reap(now) {
                debug!(addr = %id.addr, "reaped a member gone past its timeout");
            }
        }
        let stuck = self
            .suspects
            .observe(now, &suspected, self.foca_suspicion() / 4);
        self.check_name_conflict();
        if let Some(addr) = missing_meta {
            self.fetch_meta(addr);
        }
        // A suspicion that outlived its timeout twice is stuck (foca drops its timer when it
        // goes idle, and the member never heard of it to refute it): a push-pull shows the
        // member our state, suspicion included, and it refutes.
        if let Some(addr) = stuck
            && !self.leave.left()
        {
            debug!(%addr, "suspicion outlived its timeout; pushing our state to the member");
            self.push_pull(addr);
        }
        if self.alone() {
            self.schedule_rejoin(now + self.rejoin.delay());
        }
        self.rescale();
    }

    /// foca's config follows the cluster size (suspicion timeout, fan-out, retransmissions).
    /// Run after every input (a member count that changed) and by housekeeping.
    pub(super) fn rescale(&mut self) {
        let size = self.foca.num_members() + 1;
        if size != self.cluster_size {
            self.cluster_size = size;
            if let Err(error) = self.foca.set_config(self.foca_config()) {
                warn!(%error, size, "could not rescale gossip config");
            }
        }
    }

    /// foca's current suspicion timeout.
    pub(super) fn foca_suspicion(&self) -> Duration {
        self.timings
            .foca_config(self.cluster_size, packet_budget(&self.config))
            .suspect_to_down_after
    }

    fn rejoin_tick(&mut self) {
        self.rejoin.fired();
        if self.leave.left() {
            return;
        }
        if !self.alone() {
            // Someone joined us before we tried our own targets: still contact the ones that
            // are not members, or two clusters may form and never merge (seen in the N = 50
            // random-join benchmark: a node joined by another never pushed to its own seed).
            self.contact_non_members(self.rejoin.seeds().to_vec());
            return;
        }
        let mut targets = self.rejoin.targets(self.local().addr, self.down_addrs());
        targets.retain(|addr| !self.left_gracefully(*addr));
        let targets = self.rejoin.sample(targets);
        if targets.is_empty() {
            return;
        }
        let Some(delay) = self.join_attempt() else {
            return;
        };
        let attempt = self.rejoin.retries();
        debug!(attempt, targets = targets.len(), "join attempt");
        self.announce_all(&targets);
        self.push_pull_to(targets, None);
        self.schedule_rejoin(self.now + delay);
        if attempt == 2 || attempt.is_multiple_of(20) {
            // Quiet at first (the first attempt usually works), then now and then, so an agent
            // stuck alone says so at the default log level.
            info!(
                attempts = attempt,
                next_ms = ms(delay),
                "no member reachable yet; still trying"
            );
        } else {
            debug!(next_ms = ms(delay), "next join attempt");
        }
    }

    /// Push-pulls with those of `addrs` that are not live members (our own address excluded).
    fn contact_non_members(&mut self, addrs: Vec<SocketAddr>) {
        let me = self.local().addr;
        let mut members = self.member_addrs();
        members.sort_unstable();
        let addrs: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| *a != me && members.binary_search(a).is_err())
            .filter(|a| !self.left_gracefully(*a))
            .collect();
        if addrs.is_empty() {
            return;
        }
        let addrs = self.rejoin.sample(addrs);
        debug!(
            count = addrs.len(),
            "contacting join targets that are not members"
        );
        self.push_pull_to(addrs, None);
    }

    /// Sends a beacon: quickly (backing off) while alone, every ten sync intervals otherwise,
    /// so two clusters that formed apart on one LAN still merge.
    fn beacon_tick(&mut self) {
        if self.leave.left() {
            return;
        }
        let (local, alone) = (self.local(), self.alone());
        let every = self.timings.sync_interval * 10;
        let Some((packet, next)) = self.discovery.beacon(local, alone, every) else {
            return;
        };
        match packet {
            Ok(packet) => self.out.beacons.push(packet),
            Err(error) => warn!(%error, "beacon could not be encoded"),
        }
        self.timers.push(self.now + next, Tick::Beacon);
    }

    /// Counts a join attempt while alone (see [`Rejoin::attempt`]); the first time the limit
    /// is reached, says so and publishes the view, whose `gave_up_joining` tells the owner.
    ///
    /// [`Rejoin::attempt`]: super::rejoin::Rejoin::attempt
    pub(super) fn join_attempt(&mut self) -> Option<Duration> {
        let was = self.rejoin.gave_up();
        let delay = self.rejoin.attempt(self.config.retry_max);
        if delay.is_none() && !was {
            warn!(
                attempts = self.rejoin.retries(),
                "giving up joining: retry limit reached (--retry-max)"
            );
            self.republish = true;
        }
        delay
    }

    /// Asks for the join names to be resolved again: often while alone, rarely otherwise.
    fn resolve_tick(&mut self) {
        self.out.resolve.push(Resolve {
            targets: self.config.join.clone(),
            purpose: Purpose::Seeds,
        });
        let every = if self.alone() && !self.rejoin.gave_up() {
            self.rejoin.delay().max(self.timings.retry_interval)
        } else {
            self.timings.sync_interval * 30
        };
        self.timers.push(self.now + every, Tick::Resolve);
    }
}
