//! What the node's commands do to its membership: seeds resolved, a beacon heard, a
//! force-leave, a tag change, a peer's state applied, and the name-conflict rule (a leave is
//! in [`super::leave`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use foca::Member as FocaMember;
use tracing::{debug, warn};

use super::conflict::Verdict;
use super::{Engine, JoinId};
use crate::anti_entropy::SyncState;
use crate::broadcast::{Broadcast, MetaError, lock, validate_meta};
use crate::error::CommandError;
use crate::identity::Identity;
use crate::membership::Status;
use crate::role::Role;
use crate::view::Stats;

impl Engine {
    /// New resolution of the join names. While alone, try the seeds now; otherwise contact
    /// only addresses that are not members (a service scaled up, or a cluster that formed
    /// apart from ours: they merge at the next resolution). While alone with no name
    /// resolving and nothing else to try, the resolution counts as a failed join attempt, so
    /// `retry_max` and the doubling delay (the next resolution waits for it) apply to names.
    pub(super) fn seeds_resolved(&mut self, addrs: Vec<SocketAddr>) {
        let unresolved = addrs.is_empty();
        let members = self.member_addrs();
        let mut fresh = self.rejoin.on_resolved(addrs, self.local().addr, &members);
        // A join name of a member that left gracefully: it stays out until it joins again.
        fresh.retain(|addr| !self.left_gracefully(*addr));
        if self.leave.left() {
            return;
        }
        if self.alone()
            && unresolved
            && self
                .rejoin
                .targets(self.local().addr, self.down_addrs())
                .is_empty()
        {
            if let Some(delay) = self.join_attempt() {
                debug!(
                    next_ms = delay.as_millis() as u64,
                    "no join name resolves yet"
                );
            }
        } else if self.alone() {
            self.schedule_rejoin(self.now);
        } else if !fresh.is_empty() {
            debug!(
                count = fresh.len(),
                "join names resolve to new addresses; contacting them"
            );
            let fresh = self.rejoin.sample(fresh);
            self.push_pull_to(fresh, None);
        }
    }

    /// A beacon of our cluster from `addr`: join it unless it is already a member (or was
    /// contacted less than a retry interval ago).
    pub(super) fn discovered(&mut self, addr: SocketAddr) {
        if self.leave.left() || self.member_addrs().contains(&addr) {
            return;
        }
        if !self
            .discovery
            .should_contact(addr, self.now, self.timings.retry_interval)
        {
            return;
        }
        debug!(%addr, "discovered a member by its beacon");
        self.announce_all(&[addr]);
        self.push_pull_to(vec![addr], None);
    }

    pub(super) fn force_leave(&mut self, name: &str) -> Result<(), CommandError> {
        let found = lock(&self.shared).table.find_by_name(name);
        let (id, status) = found.ok_or_else(|| CommandError::UnknownMember(name.to_string()))?;
        if status != Status::Failed {
            return Err(CommandError::NotFailed {
                name: name.to_string(),
                status: status.as_str(),
            });
        }
        lock(&self.shared).table.apply_intent(id, true);
        self.broadcast(Broadcast::ForceLeave(id));
        self.gossip_now();
        Ok(())
    }

    /// Sets and deletes local tags (deletions last); returns the tags now in effect. An
    /// update that changes nothing is not gossiped.
    pub(super) fn update_tags(
        &mut self,
        set: BTreeMap<String, String>,
        delete: &[String],
    ) -> Result<BTreeMap<String, String>, CommandError> {
        let mut candidate = lock(&self.shared).table.local_meta().clone();
        candidate.tags.extend(set);
        for key in delete {
            candidate.tags.remove(key);
        }
        validate_meta(&candidate)?;
        if candidate.tags == lock(&self.shared).table.local_meta().tags {
            return Ok(candidate.tags);
        }
        let meta = lock(&self.shared).table.set_local_tags(candidate.tags);
        let tags = meta.tags.clone();
        let item = self.meta_item(meta);
        self.broadcast(item.clone());
        self.send_to_all_twice(item);
        self.gossip_now();
        Ok(tags)
    }

    /// Replaces the local health checks and group and sends the result like a tag change:
    /// straight to every live member, twice, and gossiped. A role equal to the current one is
    /// not sent.
    pub(super) fn update_role(&mut self, role: Role) -> Result<(), CommandError> {
        let mut candidate = lock(&self.shared).table.local_meta().clone();
        if candidate.role == role {
            return Ok(());
        }
        candidate.role = role;
        validate_meta(&candidate)?;
        let meta = lock(&self.shared).table.set_local_role(candidate.role);
        let item = self.meta_item(meta);
        self.broadcast(item.clone());
        self.send_to_all_twice(item);
        self.gossip_now();
        Ok(())
    }

    /// A peer's state from a push-pull with `peer`, screened first ([`super::senders`]).
    pub(super) fn apply_state(&mut self, state: SyncState, join: Option<JoinId>, peer: SocketAddr) {
        if self.leave.left() {
            return;
        }
        let buf = std::mem::take(&mut self.known_buf);
        let mut known = self.known_members(buf);
        let state = self.screen_state(state, peer, &known);
        if state.from.is_some_and(|from| from != self.local()) {
            self.apply_events(state.event_clock, state.events, join);
        }
        let mut refused = None;
        let mut relay = None;
        {
            let mut shared = lock(&self.shared);
            shared.queries.clock.catch_up(state.query_clock);
            for meta in state.metas {
                match validate_meta(&meta) {
                    // Only the sender's own meta is kept (cloned) to relay: cloning each of
                    // a thousand metas per push-pull was 3% of a simulation's time.
                    Ok(()) if state.from == Some(meta.id) => {
                        if shared.table.apply_meta(meta.clone()) {
                            relay = Some(meta);
                        }
                    }
                    Ok(()) => {
                        shared.table.apply_meta(meta);
                    }
                    Err(error) => {
                        Stats::add(&self.stats.metas_refused, 1);
                        refused = Some((meta.id.addr, error));
                    }
                }
            }
            let sender = state.from.map(|f| f.addr);
            for (id, forced) in state.intents {
                if forced || sender == Some(id.addr) {
                    shared.table.apply_intent(id, forced);
                } else {
                    shared.table.apply_heard_intent(id);
                }
            }
            if let Some(from) = state.from {
                // The member's own state holds its current meta: no announcement beyond it
                // is left to fetch (a bogus one would otherwise be fetched forever).
                shared.table.settle_announced(from);
            }
        }
        if let Some((member, error)) = refused {
            self.refused_meta(member, &error);
        }
        if let Some(meta) = relay {
            // The sender's own meta, news to us: typically a newcomer's join push-pull, which
            // reaches its join target before (or instead of) the announce that carries the
            // same meta as gossip. Gossiped on with foca's update about the member, so the
            // members that hear of it hear its name too; without this they listed it only
            // once a housekeeping push-pull fetched it (a burst of joins took seconds).
            let item = self.meta_item(meta);
            self.broadcast(item);
        }
        let down: Vec<_> = state
            .members
            .iter()
            .filter(|m| m.state() == foca::State::Down)
            .map(|m| *m.id())
            .collect();
        let news = not_known_as_is(state.members, &known);
        known.clear();
        self.known_buf = known;
        if let Err(error) = self
            .foca
            .apply_many(news.into_iter(), true, &mut self.runtime)
        {
            debug!(%error, "applying push-pull state failed");
        }
        // Members that left before we joined: foca registers them down without a notice.
        let mut shared = lock(&self.shared);
        for id in down {
            shared.table.learn_departed(id, self.now);
        }
    }

    /// A push-pull carried a meta that breaks the name rules (counted already): warns at most
    /// every 5 s, like a dropped packet.
    fn refused_meta(&mut self, member: SocketAddr, error: &MetaError) {
        let now = self.now;
        if self
            .last_warn
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(5))
        {
            self.last_warn = Some(now);
            warn!(%member, %error,
                "refused a member's name or tags from a push-pull (further ones for 5 s at debug level)");
        } else {
            debug!(%member, %error, "refused a member's name or tags from a push-pull");
        }
    }

    /// Two live members with one name: see [`conflict`].
    pub(super) fn check_name_conflict(&mut self) {
        if self.leave.started() {
            return;
        }
        // A scan of the whole table: only when an entry changed since the last one.
        let epoch = lock(&self.shared).table.epoch();
        if self.names_checked == Some(epoch) {
            return;
        }
        self.names_checked = Some(epoch);
        let Some(other) = lock(&self.shared).table.name_conflict() else {
            return;
        };
        let name = self.config.name.clone();
        match self.conflict.judge(&name, self.local(), other) {
            Verdict::GiveUp(_) => {
                tracing::error!(%name, other = %other.addr,
                    "name conflict: this node gives up the name and leaves");
                self.republish = true;
                self.start_leave(None);
            }
            Verdict::Warn => warn!(%name, other = %other.addr,
                "name conflict: a member that started later claims this node's name; it will leave"),
            Verdict::Nothing => {}
        }
    }
}

/// The members of a peer's state that foca does not already hold exactly so (identity,
/// incarnation and state; `known` is foca's member list by address): those are no-ops for
/// foca, which would still look each up in its member list, a linear search. A push-pull
/// between converged members holds nothing else, and at a thousand members each one cost a
/// million comparisons; the simulator's start of a thousand nodes spent most of its time there.
fn not_known_as_is(
    members: Vec<FocaMember<Identity>>,
    known: &super::senders::Known,
) -> Vec<FocaMember<Identity>> {
    members
        .into_iter()
        .filter(|m| known.get(&m.id().addr) != Some(&(*m.id(), m.incarnation(), m.state())))
        .collect()
}
