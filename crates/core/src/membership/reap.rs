//! Reaping: members that stayed failed past `reconnect_timeout`, or left past
//! `tombstone_timeout`, leave the table (`member-reap`).
//!
//! Housekeeping asks every few hundred milliseconds; a scan of every entry each time was a
//! tenth of a thousand-node simulation's work once a few members had failed. The running sums
//! count the entries that may expire at all, and a scan remembers when the next one can: until
//! then, and while no entry changes ([`Membership::epoch`]), there is nothing to look at.

use std::net::SocketAddr;
use std::time::Instant;

use super::{Entry, Event, MemberEventKind, Membership};
use crate::identity::Identity;

impl Membership {
    /// Removes members that stayed failed or left past their timeout (`member-reap`).
    /// Returns the identities reaped (the engine logs them).
    pub fn reap(&mut self, now: Instant) -> Vec<Identity> {
        if self.sums.reapable == 0 {
            return Vec::new(); // the usual case: a scan of every entry for nothing
        }
        if let Some((epoch, due)) = self.reap_due
            && epoch == self.epoch()
            && due.is_none_or(|due| now < due)
        {
            return Vec::new();
        }
        let mut next: Option<Instant> = None;
        let expired: Vec<SocketAddr> = self
            .entries
            .values()
            .filter(|e| {
                let Some(at) = self.expiry(e, now) else {
                    return false;
                };
                if at <= now {
                    return true;
                }
                next = Some(next.map_or(at, |n| n.min(at)));
                false
            })
            .map(|e| e.id.addr)
            .collect();
        let mut reaped = Vec::with_capacity(expired.len());
        for addr in expired {
            if let Some(entry) = self.entries.remove(&addr) {
                self.forget_indexed(&entry);
                self.sums.remove(&entry);
                if !entry.known {
                    continue;
                }
                reaped.push(entry.id);
                self.touch();
                if entry.meta.is_some() {
                    let member = entry.member();
                    self.events.push(Event::Member {
                        kind: MemberEventKind::Reap,
                        member,
                    });
                }
            }
        }
        self.reap_due = Some((self.epoch(), next));
        reaped
    }

    /// When `e` is to be reaped (`None`: never, as it stands); `now` when at once.
    fn expiry(&self, e: &Entry, now: Instant) -> Option<Instant> {
        // An intent about a member foca never told us of (a push-pull from a node that has
        // not reaped it yet) is dropped again at once.
        if !e.known && e.intent_gen.is_some() && e.id.addr != self.local {
            return Some(now);
        }
        let since = e.down_since?;
        let limit = if e.intent() {
            self.tombstone_timeout
        } else {
            self.reconnect_timeout
        };
        since.checked_add(limit)
    }
}
