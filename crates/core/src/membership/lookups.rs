//! Questions the engine's sender rules ask the table about one address, and the one intent
//! they take on hearsay.

use std::net::SocketAddr;

use super::{Entry, Membership, Status};
use crate::identity::Identity;

impl Membership {
    /// True when the member at `addr` is down after a leave of its own (not a force-leave):
    /// it stays out until it contacts the cluster itself (`--join`, `--rejoin`).
    pub fn left_gracefully(&self, addr: SocketAddr) -> bool {
        (self.entries.get(&addr)).is_some_and(|e| e.status() == Status::Left && !e.forced)
    }

    /// True when the table has a meta (a name, tags) for the member at `addr`: it spoke as a
    /// shoal agent, not merely as a foca sender.
    pub fn has_meta(&self, addr: SocketAddr) -> bool {
        self.meta_orders.contains_key(&addr)
    }

    /// True when the member at `id.addr` has a meta for `id`'s generation or newer, and none
    /// newer was announced without being carried ([`Self::announce_meta`]).
    pub fn has_current_meta(&self, id: Identity) -> bool {
        if self.announced == 0 {
            // Nothing announced: the index alone answers (asked for every member by
            // housekeeping after a change, and after every `MemberUp`).
            return self
                .meta_orders
                .get(&id.addr)
                .is_some_and(|order| order.0 >= id.generation);
        }
        self.entries.get(&id.addr).is_some_and(|e| {
            e.meta.as_ref().is_some_and(|m| {
                m.id.generation >= id.generation && e.announced.is_none_or(|a| m.order() >= a)
            })
        })
    }

    /// True when [`Self::meta_orders`] holds for the entry at `addr` what the entry says
    /// (checked in debug builds after every tracked change).
    pub(super) fn meta_order_agrees(&self, addr: SocketAddr) -> bool {
        let entry = self.entries.get(&addr).and_then(|e| e.meta.as_ref());
        entry.map(super::Meta::order) == self.meta_orders.get(&addr).copied()
            && self.meta_orders.len() <= self.entries.len()
    }

    /// True when the meta index and the count of announced metas agree with every entry
    /// (checked in debug builds on every digest read, as the digest's sums are).
    #[cfg(debug_assertions)]
    pub(super) fn indexes_agree(&self) -> bool {
        let with_meta = self.entries.values().filter(|e| e.meta.is_some()).count();
        let announced = self
            .entries
            .values()
            .filter(|e| e.announced.is_some())
            .count();
        with_meta == self.meta_orders.len()
            && announced == self.announced
            && self.entries.keys().all(|a| self.meta_order_agrees(*a))
    }

    /// An entry left the table: out of the meta index and the count of announced metas.
    pub(super) fn forget_indexed(&mut self, gone: &Entry) {
        self.meta_orders.remove(&gone.id.addr);
        self.announced = (self.announced).saturating_sub(usize::from(gone.announced.is_some()));
    }

    /// True when the member at `addr` is up (alive, suspect or leaving) in the table.
    pub fn is_up(&self, addr: SocketAddr) -> bool {
        (self.entries.get(&addr)).is_some_and(|e| e.up)
    }

    /// True when `id` itself announced that it is leaving (an intent for its current
    /// generation that is not an operator's force-leave).
    pub fn announced_leave(&self, id: Identity) -> bool {
        (self.entries.get(&id.addr)).is_some_and(|e| e.id == id && e.intent() && !e.forced)
    }

    /// True when foca told us about the member at `addr` (up or down) at some point.
    pub fn knows(&self, addr: SocketAddr) -> bool {
        (self.entries.get(&addr)).is_some_and(|e| e.known)
    }

    /// A peer's push-pull says `id` left, about a member this node never knew (it joined
    /// later): taken, so [`Self::learn_departed`] lists it `left` as the older nodes do, but
    /// as hearsay: should the member come up after all, the intent is dropped, so a false one
    /// cannot list a healthy member `leaving`. Returns true when it was news.
    pub fn apply_heard_intent(&mut self, id: Identity) -> bool {
        let news = self.apply_intent(id, false);
        if news && let Some(e) = self.entries.get_mut(&id.addr) {
            e.heard = true;
        }
        news
    }
}
