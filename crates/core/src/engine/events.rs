//! User events in the engine: sending one (`shoal event`), and the events a push-pull brings,
//! which a node joining without replay skips as history (Serf's `eventJoinIgnore`): it sets
//! its minimum event time to the peer's clock, so only events from then on run.
//!
//! Received gossip needs nothing here: foca's handler feeds the event buffer
//! ([`crate::user_event::UserEvents`]) directly, and the engine hands new events to the
//! handlers when it publishes.

use super::Engine;
use super::outbox::JoinId;
use crate::broadcast::{Broadcast, lock};
use crate::error::CommandError;
use crate::user_event::{self, UserEvent};

/// Whether the events of the next push-pull are history to skip.
#[derive(Debug)]
pub(crate) struct EventHistory {
    /// No contact yet, started without `--replay` and without an event memory (snapshot).
    fresh: bool,
}

impl EventHistory {
    /// `replay`: the node was started with `--replay`; `restored`: its snapshot says up to
    /// which event it ran (then it catches up on what it missed, as Serf does).
    pub(crate) fn new(replay: bool, restored: bool) -> Self {
        Self {
            fresh: !replay && !restored,
        }
    }

    /// A peer's state arrives: skip its events? An operator join decides for itself
    /// (`join_replay`: `Some(replay)`); otherwise only the first contact of a fresh node does.
    pub(crate) fn skip(&mut self, join_replay: Option<bool>) -> bool {
        let skip = join_replay.map_or(self.fresh, |replay| !replay);
        self.fresh = false;
        skip
    }
}

impl Engine {
    /// Sends a user event to every member, this node included, by gossip and directly
    /// ([`super::direct`]); returns its Lamport time.
    pub(super) fn user_event(
        &mut self,
        name: String,
        payload: Vec<u8>,
        coalesce: bool,
    ) -> Result<u64, CommandError> {
        user_event::validate(&name, &payload)?;
        let ltime = lock(&self.shared).events.clock.tick();
        let event = UserEvent {
            ltime,
            name,
            payload,
            coalesce,
        };
        let item = Broadcast::User(event);
        if !self.broadcast(item.clone()) {
            return Err(CommandError::Gossip);
        }
        self.send_to_all_twice(item);
        self.gossip_now();
        Ok(ltime)
    }

    /// The event clock and recent events of a peer's push-pull state (`join`: the operator
    /// join it answers, if any).
    pub(super) fn apply_events(
        &mut self,
        clock: u64,
        events: Vec<UserEvent>,
        join: Option<JoinId>,
    ) {
        // Another contact that comes first while a `--replay` join waits for its answer (a
        // peer push-pulled with us on hearing our announce) is part of that join: the
        // operator asked for the history, so it is not skipped.
        let join_replay = join
            .map(|id| self.joins.replay(id))
            .or_else(|| self.joins.replaying().then_some(true));
        let skip = self.history.skip(join_replay);
        let mut shared = lock(&self.shared);
        if skip {
            shared.events.ignore_before(clock);
        }
        shared.events.clock.catch_up(clock);
        let mut new = 0;
        for event in events {
            if user_event::validate(&event.name, &event.payload).is_ok()
                && shared.events.receive(event)
            {
                new += 1;
            }
        }
        if new > 0 {
            tracing::debug!(new, skip, "a push-pull brought user events");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_node_skips_the_history_of_its_first_contact_only() {
        let mut h = EventHistory::new(false, false);
        assert!(h.skip(None));
        assert!(!h.skip(None), "later push-pulls bring news, not history");
    }

    #[test]
    fn replay_or_an_event_memory_means_nothing_is_skipped_unless_a_join_says_so() {
        assert!(!EventHistory::new(true, false).skip(None));
        let mut restored = EventHistory::new(false, true);
        assert!(!restored.skip(None), "a restarted node catches up");
        assert!(restored.skip(Some(false)), "shoal join without --replay");
        assert!(!restored.skip(Some(true)), "shoal join --replay");
    }
}
