//! Where foca keeps each member, by address: the questions every SWIM datagram asks (is its
//! sender a member? is a ping request's target? what is known live at each address its
//! updates name?) answered without a search of foca's member list, which at a thousand
//! members was a sixth of the simulation's time under loss.
//!
//! foca keeps one member per address in a list: a new one is appended (then swapped with a
//! random position), one is removed (swapped out) only when a `RemoveDown` timer fires, and
//! the list is shuffled between probe rounds. The index maps each address to its position,
//! and its answers are exact:
//! - a position is checked when used (the member there must have that address: foca holds
//!   one per address, so it is that one);
//! - an address missing from the index is absent only while foca's member count and the
//!   count of `RemoveDown` timers handed to foca are what they were when it was built (the
//!   set of addresses changes only by an insertion, which grows the count, or a removal).
//!
//! Otherwise the answer is [`Found::Unknown`] and the caller searches the list as before. The
//! index is rebuilt once the list has stood still for a few inputs: in a burst of joins it
//! changes with nearly every datagram, and a rebuild per datagram would cost more than the
//! searches it saves.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;

use foca::Member;

use crate::fnv::AddrHash;
use crate::identity::Identity;

/// Inputs for which foca's member count must stand still before the index is rebuilt.
const STILL_FOR: u32 = 4;

/// What the index says about an address.
pub(super) enum Found<'a> {
    /// foca's member at that address.
    Member(&'a Member<Identity>),
    /// foca holds no member there.
    Absent,
    /// The index cannot tell: search the list.
    Unknown,
}

/// Positions of foca's members by address (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct FocaIndex {
    at: HashMap<SocketAddr, usize, AddrHash>,
    /// foca's member count and `removals` when the index was built (`None`: never built).
    built: Option<(usize, u64)>,
    /// `RemoveDown` timers handed to foca so far.
    removals: u64,
    /// A position did not match (foca reordered its list): rebuild at the next refresh.
    stale: Cell<bool>,
    /// foca's member count at the last refresh, and for how many refreshes it stood still.
    still: (usize, u32),
}

impl FocaIndex {
    /// foca is about to handle a `RemoveDown` timer: the set of addresses may shrink.
    pub(super) fn removing(&mut self) {
        self.removals += 1;
    }

    /// At the start of an input, with foca's members: notes their count, and rebuilds the
    /// index when it is out of date and the count stood still for [`STILL_FOR`] inputs.
    pub(super) fn refresh<'a>(
        &mut self,
        members: impl ExactSizeIterator<Item = &'a Member<Identity>>,
    ) {
        let len = members.len();
        self.still = if self.still.0 == len {
            (len, self.still.1.saturating_add(1))
        } else {
            (len, 0)
        };
        let current = self.built == Some((len, self.removals)) && !self.stale.get();
        if current || self.still.1 < STILL_FOR {
            return;
        }
        self.at.clear();
        self.at
            .extend(members.enumerate().map(|(i, m)| (m.id().addr, i)));
        self.built = Some((len, self.removals));
        self.stale.set(false);
    }

    /// True when the index answers for foca's members as they are (`len` of them).
    pub(super) fn current(&self, len: usize) -> bool {
        self.built == Some((len, self.removals))
    }

    /// foca's member at `addr`, given foca's members.
    pub(super) fn find<'a>(
        &self,
        mut members: impl ExactSizeIterator<Item = &'a Member<Identity>>,
        addr: SocketAddr,
    ) -> Found<'a> {
        if !self.current(members.len()) {
            return Found::Unknown;
        }
        let Some(&i) = self.at.get(&addr) else {
            return Found::Absent;
        };
        match members.nth(i) {
            Some(m) if m.id().addr == addr => Found::Member(m),
            _ => {
                self.stale.set(true);
                Found::Unknown
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::State;

    fn member(i: u8) -> Member<Identity> {
        let id = Identity::new(SocketAddr::from(([10, 0, 0, i], 7948)));
        Member::new(id, 0, State::Alive)
    }

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 7948))
    }

    #[test]
    fn the_index_answers_only_for_the_list_it_was_built_from() {
        let mut list: Vec<Member<Identity>> = (1..=5).map(member).collect();
        let mut index = FocaIndex::default();
        for _ in 0..STILL_FOR {
            index.refresh(list.iter());
            assert!(matches!(index.find(list.iter(), addr(1)), Found::Unknown));
        }
        index.refresh(list.iter());
        assert!(
            matches!(index.find(list.iter(), addr(3)), Found::Member(m) if m.id().addr == addr(3))
        );
        assert!(matches!(index.find(list.iter(), addr(9)), Found::Absent));
        // Reordered: the position no longer matches, so it cannot tell (and rebuilds later).
        list.swap(0, 2);
        assert!(matches!(index.find(list.iter(), addr(3)), Found::Unknown));
        index.refresh(list.iter());
        assert!(
            matches!(index.find(list.iter(), addr(3)), Found::Member(m) if m.id().addr == addr(3))
        );
        // An insertion changes the count: nothing is known absent any more.
        list.push(member(9));
        assert!(matches!(index.find(list.iter(), addr(9)), Found::Unknown));
        // A removal and an insertion keep the count, but the removal was announced.
        list.pop();
        index.refresh(list.iter());
        index.removing();
        list.swap_remove(0);
        list.push(member(8));
        assert!(matches!(index.find(list.iter(), addr(8)), Found::Unknown));
    }
}
