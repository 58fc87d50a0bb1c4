//! User events (`shoal event NAME PAYLOAD`), as Serf has them: the wire type, the Lamport
//! clock that orders them, and [`UserEvents`], the buffer of recent events that drops
//! duplicates, so that every live member hands each event to its handlers exactly once.
//!
//! Rules (Serf's `handleUserEvent`):
//! - every event carries the sender's Lamport time; receiving one witnesses it;
//! - an event is a duplicate when one with the same `(ltime, name, payload)` is in the buffer;
//! - events older than the buffer's window ([`EVENT_WINDOW`] Lamport ticks behind the clock)
//!   are dropped as too old, since the buffer can no longer tell whether they ran;
//! - events before the minimum time are dropped: the minimum is raised past every event a
//!   restarted node handled before (from its snapshot) and, on a join without replay, to the
//!   cluster's clock, so a new member does not run the cluster's history.
//!
//! Gossip alone can miss a member (each copy goes to a random few), and nothing else would
//! repair that: so the anti-entropy digest carries an [`EventDigest`], and two members whose
//! recent events differ push-pull, which hands each the events it lacks.
//!
//! This lives in the rules layer because foca's broadcast handler decides, while it decodes
//! an item, whether it is news to forward; it holds this state next to the member table.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::fnv::Fnv;
use crate::lamport::{Admit, LamportClock, Recent};

/// Largest name + payload of a user event, in bytes (Serf's default limit).
pub const MAX_USER_EVENT_LEN: usize = 512;
/// How many Lamport ticks of recent events are remembered for duplicate detection and sent
/// in push-pull (Serf's default event buffer).
pub const EVENT_WINDOW: u64 = 64;

/// One user event, as gossiped and as handed to the handlers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEvent {
    /// The sender's Lamport time for it.
    pub ltime: u64,
    /// Its name (`user:NAME` filters match it).
    pub name: String,
    /// Opaque payload, given to handlers on stdin.
    pub payload: Vec<u8>,
    /// Handlers may coalesce it with newer events of the same name (Serf's `-coalesce`).
    pub coalesce: bool,
}

/// A user event that cannot be sent. Nothing was sent and the clock did not move.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UserEventError {
    /// The name is empty.
    #[error("user event name is empty")]
    EmptyName,
    /// Name and payload over [`MAX_USER_EVENT_LEN`].
    #[error("user event name and payload take {0} bytes; the limit is {MAX_USER_EVENT_LEN}")]
    TooLarge(usize),
}

/// Checks a name and payload against the limits.
pub fn validate(name: &str, payload: &[u8]) -> Result<(), UserEventError> {
    if name.is_empty() {
        return Err(UserEventError::EmptyName);
    }
    let size = name.len() + payload.len();
    if size > MAX_USER_EVENT_LEN {
        return Err(UserEventError::TooLarge(size));
    }
    Ok(())
}

/// What a digest tells about the sender's recent events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDigest {
    /// The sender's event clock.
    pub clock: u64,
    /// The oldest Lamport time `hash` covers: the newer half of the window, or less when
    /// the sender skipped older ones as history.
    pub floor: u64,
    /// A hash of the sender's events from `floor` on.
    pub hash: u64,
}

/// The node's event clock and the buffer of recent events. See the module docs.
#[derive(Debug)]
pub struct UserEvents {
    /// Serf's `eventClock`: its time is the Lamport time the next own event gets.
    pub clock: LamportClock,
    /// Recent events, within [`EVENT_WINDOW`] of the clock.
    recent: Recent<UserEvent>,
    /// Events accepted since the last [`Self::take_new`], oldest first.
    fresh: Vec<UserEvent>,
}

impl Default for UserEvents {
    fn default() -> Self {
        Self::restored(None)
    }
}

impl UserEvents {
    /// The state of a node that restarted having handled every event up to `ltime` (from its
    /// snapshot); `None`: a new node.
    pub fn restored(ltime: Option<u64>) -> Self {
        let mut clock = LamportClock::default();
        let recent = Recent::restored(EVENT_WINDOW, ltime, &mut clock);
        Self {
            clock,
            recent,
            fresh: Vec::new(),
        }
    }

    /// A join without replay: events before `t` (the cluster's clock) are history this node
    /// was not part of; they are never handled.
    pub fn ignore_before(&mut self, t: u64) {
        self.recent.ignore_before(t);
    }

    /// The newest Lamport time that must never run again here: handled, or skipped as
    /// history. What the snapshot keeps; `None` while there is none.
    pub fn done_up_to(&self) -> Option<u64> {
        self.recent.done_up_to()
    }

    /// An event arrived (or was sent here). Returns true when it is news: it is then queued
    /// for the handlers ([`Self::take_new`]) and should be forwarded.
    pub fn receive(&mut self, event: UserEvent) -> bool {
        self.clock.witness(event.ltime);
        let same = |e: &UserEvent| e.name == event.name && e.payload == event.payload;
        match self
            .recent
            .admit(self.clock, event.ltime, event.clone(), same)
        {
            Admit::New => {
                tracing::debug!(name = %event.name, ltime = event.ltime, "new user event");
                self.fresh.push(event);
                true
            }
            Admit::Known => false,
            Admit::TooOld => {
                // Debug, not warn: a lagging peer's push-pull can hold several of these.
                tracing::debug!(name = %event.name, ltime = event.ltime,
                    clock = self.clock.time(), "dropping a user event older than the event buffer");
                false
            }
        }
    }

    /// This node's [`EventDigest`].
    pub fn digest(&self) -> EventDigest {
        let clock = self.clock.time();
        let floor = self
            .recent
            .min_time()
            .max(clock.saturating_sub(EVENT_WINDOW / 2));
        EventDigest {
            clock,
            floor,
            hash: self.hash_from(floor),
        }
    }

    /// True when a peer's digest shows that one of the two misses an event the other has, so
    /// a push-pull is due. Only events both would still accept are compared: from the
    /// peer's floor on, unless this node skipped part of that range as history (the peer
    /// then compares from ours, which is later).
    pub fn differs(&self, theirs: &EventDigest) -> bool {
        if theirs.clock != self.clock.time() {
            return true;
        }
        self.recent.min_time() <= theirs.floor && self.hash_from(theirs.floor) != theirs.hash
    }

    /// Order-independent hash of the recent events from `floor` on.
    fn hash_from(&self, floor: u64) -> u64 {
        self.recent
            .items_from(floor)
            .map(|e| {
                let mut h = Fnv::new();
                h.write(&e.ltime.to_le_bytes());
                h.write(&(e.name.len() as u64).to_le_bytes());
                h.write(e.name.as_bytes());
                h.write(&e.payload);
                h.finish()
            })
            .fold(0u64, u64::wrapping_add)
    }

    /// Events accepted since the last call, oldest first.
    pub fn take_new(&mut self) -> Vec<UserEvent> {
        std::mem::take(&mut self.fresh)
    }

    /// The recent events, oldest first (for push-pull).
    pub fn recent(&self) -> Vec<UserEvent> {
        self.recent.items().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ltime: u64, name: &str, payload: &str) -> UserEvent {
        UserEvent {
            ltime,
            name: name.into(),
            payload: payload.as_bytes().to_vec(),
            coalesce: true,
        }
    }

    #[test]
    fn an_event_is_news_once_by_ltime_name_and_payload() {
        let mut e = UserEvents::default();
        assert!(e.receive(event(5, "deploy", "v42")));
        assert!(!e.receive(event(5, "deploy", "v42")), "re-gossiped copy");
        assert!(e.receive(event(5, "deploy", "v43")), "other payload");
        assert!(
            e.receive(event(6, "deploy", "v42")),
            "a second identical send"
        );
        let got: Vec<(u64, Vec<u8>)> = e
            .take_new()
            .into_iter()
            .map(|x| (x.ltime, x.payload))
            .collect();
        assert_eq!(
            got,
            vec![
                (5, b"v42".to_vec()),
                (5, b"v43".to_vec()),
                (6, b"v42".to_vec())
            ]
        );
        assert!(e.take_new().is_empty());
        assert_eq!(e.clock.time(), 7);
        assert_eq!(e.recent().len(), 3);
    }

    #[test]
    fn events_older_than_the_window_are_dropped_and_forgotten() {
        let mut e = UserEvents::default();
        assert!(e.receive(event(1, "a", "")));
        assert!(e.receive(event(100, "b", "")));
        assert!(!e.receive(event(2, "late", "")), "too old to tell");
        assert_eq!(e.recent(), vec![event(100, "b", "")]);
    }

    #[test]
    fn a_restarted_node_never_runs_what_it_handled_and_a_join_skips_history() {
        let mut e = UserEvents::restored(Some(7));
        assert!(
            !e.receive(event(7, "deploy", "v1")),
            "handled before the restart"
        );
        assert!(e.receive(event(8, "deploy", "v2")), "missed while down");
        assert_eq!(e.done_up_to(), Some(8));
        let mut fresh = UserEvents::restored(None);
        assert_eq!(fresh.done_up_to(), None);
        fresh.ignore_before(20);
        assert!(!fresh.receive(event(19, "deploy", "old")));
        assert!(fresh.receive(event(20, "deploy", "new")));
        let mut joined = UserEvents::default();
        joined.ignore_before(20);
        assert_eq!(
            joined.done_up_to(),
            Some(19),
            "skipped history is never replayed later"
        );
    }

    #[test]
    fn digests_differ_when_one_member_missed_an_event_even_at_the_same_clock() {
        let mut a = UserEvents::default();
        let mut b = UserEvents::default();
        for e in [&mut a, &mut b] {
            assert!(e.receive(event(1, "deploy", "v1")));
        }
        assert!(!a.differs(&b.digest()) && !b.differs(&a.digest()));
        assert!(a.receive(event(2, "deploy", "v2")));
        assert!(a.differs(&b.digest()), "b's clock is behind");
        assert!(a.receive(event(3, "deploy", "v3")) && b.receive(event(3, "deploy", "v3")));
        assert_eq!(a.clock.time(), b.clock.time());
        assert!(
            a.differs(&b.digest()) && b.differs(&a.digest()),
            "b missed v2"
        );
        assert!(b.receive(event(2, "deploy", "v2")));
        assert!(!a.differs(&b.digest()) && !b.differs(&a.digest()));
    }

    #[test]
    fn a_member_that_skipped_history_compares_only_what_both_accept() {
        let mut old = UserEvents::default();
        assert!(old.receive(event(10, "deploy", "v1")));
        let mut new = UserEvents::default();
        new.ignore_before(old.clock.time());
        new.clock.catch_up(old.clock.time());
        assert!(!new.differs(&old.digest()), "its floor is later than old's");
        assert!(!old.differs(&new.digest()), "nothing since new's floor");
        for e in [&mut old, &mut new] {
            assert!(e.receive(event(11, "deploy", "v2")));
        }
        assert!(!new.differs(&old.digest()) && !old.differs(&new.digest()));
    }

    #[test]
    fn names_and_payloads_over_the_limit_are_refused_with_the_limit() {
        assert_eq!(validate("deploy", b"v42"), Ok(()));
        assert_eq!(validate("", b"x"), Err(UserEventError::EmptyName));
        let err = validate("deploy", &[b'x'; 600]).expect_err("too large");
        assert_eq!(
            err.to_string(),
            "user event name and payload take 606 bytes; the limit is 512"
        );
    }
}
