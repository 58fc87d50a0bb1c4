//! After every input: what foca queued is sent and scheduled, its notifications are applied to
//! the member table (and to the rejoin state), fresh news is forwarded at once, and the events
//! and the new view are published into the outbox.

use std::net::SocketAddr;

use foca::OwnedNotification;
use tracing::{debug, info, warn};

use super::Engine;
use super::ticks::Tick;
use crate::broadcast::lock;
use crate::envelope::{self, Kind};
use crate::identity::Identity;
use crate::membership::Event;

impl Engine {
    /// Sends what foca queued, schedules its timers, applies its notifications; forwards news
    /// at once; publishes events and the view.
    pub(super) fn drain(&mut self) {
        let mut forwarded = false;
        loop {
            while let Some((to, data)) = self.runtime.to_send() {
                if let Some(h) = super::probe::header(&data) {
                    if h.message == foca::Message::Announce && self.left_gracefully(to.addr) {
                        // foca's periodic announce to down members: one that left gracefully
                        // stays out until it contacts the cluster itself (Serf reconnects
                        // only to failed members).
                        continue;
                    }
                    if h.src_incarnation > self.incarnation {
                        // We refuted a suspicion of ourselves: others could not reach us.
                        self.incarnation = h.src_incarnation;
                        self.health_changed(1);
                    }
                    if let Some((number, previous)) = self.probes.sent(&h) {
                        // An unanswered probe says little about our own health under loss
                        // (foca has no nacks to tell): only successes move the score here.
                        if previous == Some(super::probe::Outcome::Acked) {
                            self.health_changed(-1);
                        }
                        let at = self.now + self.probe_rtt();
                        self.timers.push(at, Tick::ProbeFallback(number));
                    }
                }
                let digest = self.short_digest();
                let mut buf = Vec::with_capacity(envelope::HEADER_LEN + 4 + data.len());
                envelope::begin(Kind::SwimDigest, &mut buf);
                buf.extend_from_slice(&digest.to_be_bytes());
                buf.extend_from_slice(&data);
                self.send_datagram(buf, to.addr);
            }
            while let Some((after, timer)) = self.runtime.to_schedule() {
                self.schedule_foca(after, timer);
            }
            self.take_confirmations();
            self.unpark_gossip();
            let mut news = false;
            while let Some(notification) = self.runtime.to_notify() {
                news |= self.notify(notification);
            }
            news |= std::mem::take(&mut lock(&self.shared).news);
            if news && !forwarded && !self.leave.left() {
                // Push fresh news to a few members now instead of at the next gossip tick:
                // this is what makes a leave or a failure visible everywhere in milliseconds.
                forwarded = true;
                self.gossip_now();
                continue;
            }
            break;
        }
        // At once, not at the next housekeeping round: in a burst of joins the retransmission
        // count of the news being spread is set by the cluster size known now.
        self.rescale();
        self.fetch_missing_meta();
        self.fetch_announced_metas();
        self.take_new_queries();
        self.publish();
        self.unpark_gossip();
    }

    /// Applies one foca notification; true when it was news worth forwarding.
    fn notify(&mut self, notification: OwnedNotification<Identity>) -> bool {
        let now = self.now;
        let mut shared = lock(&self.shared);
        match notification {
            OwnedNotification::MemberUp(id) => {
                shared.table.member_up(id);
                if !shared.table.has_current_meta(id) && self.meta_wanted.is_none() {
                    self.meta_wanted = Some(id.addr);
                }
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
                self.rejoin.joined();
                info!("joined the cluster");
                false
            }
            OwnedNotification::Idle => {
                drop(shared);
                if !self.leave.left() {
                    info!("no other live member: alone");
                    self.schedule_rejoin(now + self.rejoin.delay());
                }
                false
            }
            OwnedNotification::Defunct => {
                if !self.leave.left() {
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
                self.broadcast_meta(meta);
                if self.alone() {
                    // The new identity is accepted where the old one was down: try at once.
                    self.rejoin.hurry();
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

    /// A member that came up without its meta (its name and tags: it is not listed until
    /// they arrive) is asked for its state at once, in a push-pull within its limit
    /// ([`Self::fetch_meta`]), rather than at the next housekeeping round. In a burst of joins
    /// this is how a member heard of through a relay that did not have its meta yet (or whose
    /// own gossip of its meta was spent before it was known here) is listed within a round
    /// trip. The member's answer carries the metas it knows, so one fetch usually lists
    /// every member missing here; housekeeping fetches any still missing.
    ///
    /// A fetch the limit holds back waits for it (a timer), not for housekeeping; so does the
    /// push-pull with a stranger that spoke to us ([`Self::introduce`]).
    fn fetch_missing_meta(&mut self) {
        if let Some(addr) = self.stranger {
            let known = self
                .foca
                .iter_membership_state()
                .any(|m| m.id().addr == addr);
            if known || self.leave.left() || self.introduce(addr) {
                self.stranger = None;
            } else {
                self.arm_fetch();
            }
        }
        let Some(addr) = self.meta_wanted else {
            return;
        };
        let current = {
            let shared = lock(&self.shared);
            self.foca
                .iter_members()
                .find(|m| m.id().addr == addr)
                .is_none_or(|m| shared.table.has_current_meta(*m.id()))
        };
        if current || self.leave.left() || self.fetch_meta(addr) {
            self.meta_wanted = None;
        } else {
            self.arm_fetch();
        }
    }

    /// Sets the timer for when the limit on meta fetches allows one again (once).
    fn arm_fetch(&mut self) {
        if !self.fetch_armed
            && let Some(last) = self.last_fetch
        {
            self.fetch_armed = true;
            let at = last + self.timings.gossip_interval;
            self.timers.push(at, Tick::FetchMeta);
        }
    }

    /// Push-pulls with each member that announced a meta too large to gossip. Only live
    /// members foca knows are contacted, never an address only a payload names; a member not
    /// known yet is fetched by housekeeping once it is (its meta counts as stale).
    fn fetch_announced_metas(&mut self) {
        let mut fetch = std::mem::take(&mut lock(&self.shared).fetch);
        if fetch.is_empty() {
            // The usual case, after every input: listing the members is O(N).
            return;
        }
        let members = self.member_addrs();
        fetch.retain(|addr| members.contains(addr));
        fetch.dedup();
        if self.leave.left() || fetch.is_empty() {
            return;
        }
        debug!(count = fetch.len(), "fetching announced metas by push-pull");
        for addr in fetch {
            self.push_pull_to(vec![addr], None);
        }
    }

    /// Announces to (and push-pulls with) up to 8 members foca knows as down.
    fn announce_to_down(&mut self) {
        let down: Vec<SocketAddr> = self.down_addrs().take(8).collect();
        if down.is_empty() {
            return;
        }
        self.announce_all(&down);
        self.push_pull_to(down, None);
    }

    fn publish(&mut self) {
        // Notes a change of the digest (and starts the full digest's cadence over).
        self.short_digest();
        let mut shared = lock(&self.shared);
        let member_events = shared.table.take_events();
        member_events.iter().for_each(log_event);
        self.out.events.extend(member_events);
        let user_events = shared.events.take_new();
        user_events.iter().for_each(|e| {
            info!(name = %e.name, ltime = e.ltime, coalesce = e.coalesce, "user-event");
        });
        // The view carries the event memory the snapshot keeps: publish it when it moved.
        self.republish |= !user_events.is_empty();
        self.out
            .events
            .extend(user_events.into_iter().map(Event::User));
        // Both flags are taken every time (a short-circuit would leave `republish` set and
        // publish an unchanged view on the next turn).
        let changed = shared.table.take_changed();
        if std::mem::take(&mut self.republish) || changed {
            self.out.view_changed = true;
        }
    }
}

/// Serf's INFO line for a member event (`serf: EventMemberJoin: web-1 10.0.0.5`), with
/// tracing fields: `member-join member=web-1 addr=10.0.0.5:7948`.
fn log_event(event: &Event) {
    if let Event::Member { kind, member } = event {
        info!(member = %member.name, addr = %member.addr, status = %member.status.as_str(),
              "{}", kind.as_str());
    }
}
