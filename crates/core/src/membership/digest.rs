//! The table's digest, kept as a running sum.
//!
//! The digest is the wrapping sum of one hash per entry that matters: an entry that is up
//! hashes its address text, generation and meta version; one known to have left hashes
//! `left`, its address text and generation. Every SWIM datagram carries it, and after every
//! change of the table it was recomputed over all entries: at a thousand members, with the
//! table changing on nearly every datagram while a cluster forms, that was most of a node's
//! work. Each change of an entry now subtracts the entry's old hash and adds its new one
//! ([`Membership::tracked`]); removals subtract theirs. The value is the same as recomputing
//! (debug builds check it on every read).
//!
//! The same bookkeeping counts, per name, the entries that are not up and have that name, so
//! that a join does not scan the table for a stale namesake when there is none.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::{Entry, Membership};
use crate::fnv::Fnv;

/// The running sums over every entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Sums {
    /// The digest.
    pub(super) digest: u64,
    /// How many entries that are not up have each name (candidates to be replaced by a
    /// namesake that joins).
    pub(super) down_names: BTreeMap<String, usize>,
    /// Entries that [`Membership::reap`] may remove some day (down, or an intent about a
    /// member never known): none, and it need not look.
    pub(super) reapable: usize,
    /// Counts every entry brought in or out of the sums (so every change of an entry, its
    /// removal included): while it stands still, no entry changed ([`Membership::epoch`]).
    /// Not a sum: a recount starts it over.
    pub(super) changes: u64,
    /// Leave knowledge stays out of the digest ([`Membership::digest_without_left`]).
    pub(super) without_left: bool,
}

impl Sums {
    pub(super) fn add(&mut self, e: &Entry) {
        self.changes = self.changes.wrapping_add(1);
        self.reapable += usize::from(reapable(e));
        self.digest = self.digest.wrapping_add(hash(e, !self.without_left));
        if let Some(name) = down_name(e) {
            match self.down_names.get_mut(name) {
                Some(count) => *count += 1,
                None => {
                    self.down_names.insert(name.to_string(), 1);
                }
            }
        }
    }

    pub(super) fn remove(&mut self, e: &Entry) {
        self.changes = self.changes.wrapping_add(1);
        self.reapable -= usize::from(reapable(e));
        self.digest = self.digest.wrapping_sub(hash(e, !self.without_left));
        if let Some(name) = down_name(e)
            && let Some(count) = self.down_names.get_mut(name)
        {
            *count -= 1;
            if *count == 0 {
                self.down_names.remove(name);
            }
        }
    }

    /// True when some entry that is not up has `name`.
    pub(super) fn down_name_exists(&self, name: &str) -> bool {
        self.down_names.contains_key(name)
    }
}

/// An entry [`Membership::reap`] looks at: down since some time, or an intent about a member
/// foca never told of.
fn reapable(e: &Entry) -> bool {
    e.down_since.is_some() || (!e.known && e.intent_gen.is_some())
}

/// The name of an entry that is not up and has a meta.
fn down_name(e: &Entry) -> Option<&str> {
    e.meta.as_ref().filter(|_| !e.up).map(|m| m.name.as_str())
}

/// The entry's share of the digest (0 when it is neither up nor, with `left`, known to have
/// left).
fn hash(e: &Entry, left: bool) -> u64 {
    if e.up {
        let version = e
            .meta
            .as_ref()
            .filter(|m| m.id.generation == e.id.generation)
            .map_or(0, |m| m.version);
        let mut h = e.addr_hash.0;
        h.write(&e.id.generation.to_le_bytes());
        h.write(&version.to_le_bytes());
        h.finish()
    } else if left && e.known && e.intent() {
        let mut h = e.addr_hash.1;
        h.write(&e.id.generation.to_le_bytes());
        h.finish()
    } else {
        0
    }
}

impl Membership {
    /// Runs `change`, which may alter (or create) the entry at `addr` and remove others (those
    /// it removes it subtracts itself), and brings the sums up to date for `addr`.
    pub(super) fn tracked<R>(
        &mut self,
        addr: SocketAddr,
        change: impl FnOnce(&mut Self) -> R,
    ) -> R {
        if let Some(e) = self.entries.get(&addr) {
            self.sums.remove(e);
        }
        let result = change(self);
        if let Some(e) = self.entries.get(&addr) {
            self.sums.add(e);
        }
        debug_assert!(self.meta_order_agrees(addr), "meta order index out of step");
        result
    }

    /// Changes whenever an entry may have changed, appeared or gone (a suspect flag aside): a
    /// caller that derived something from the entries (housekeeping: does every member have
    /// its current meta?) need not look again while it stands still.
    pub fn epoch(&self) -> u64 {
        self.sums.changes
    }

    /// The sums over every entry, from scratch.
    pub(super) fn recount(&self) -> Sums {
        let mut sums = Sums {
            without_left: self.sums.without_left,
            ..Sums::default()
        };
        for e in self.entries.values() {
            sums.add(e);
        }
        sums
    }

    /// Leaves members known to have left out of the digest from now on. For a plaintext
    /// cluster, where nobody relays a leave intent (issue 10): a node that missed one, or
    /// joined after it, can never learn it from a peer, and with it in the digest the two
    /// would push-pull every sync interval until the tombstone is reaped.
    pub fn digest_without_left(&mut self) {
        self.sums.without_left = true;
        self.sums = self.recount();
    }

    /// A digest of the membership that matters: identities that are up with their meta
    /// versions, and members known to have left. Two nodes with the same view have the same
    /// digest; a difference triggers a push-pull. (Leave knowledge is in it so that a node that
    /// missed an intent, say across a partition, still gets it from a sealed peer: it would
    /// list `failed` forever. Not in plaintext: [`Self::digest_without_left`].)
    pub fn digest(&self) -> u64 {
        #[cfg(debug_assertions)]
        {
            let fresh = self.recount();
            assert_eq!(
                (self.sums.digest, &self.sums.down_names, self.sums.reapable),
                (fresh.digest, &fresh.down_names, fresh.reapable),
                "the running sums missed a change"
            );
            assert!(self.indexes_agree(), "the meta index missed a change");
        }
        self.sums.digest
    }
}

/// The digest hashes an entry's address as its text (`10.0.0.1:7948`), alone or after
/// `left`; these are the hash states after those prefixes (an entry never changes address, so
/// they are computed once).
pub(super) fn addr_hashes(addr: SocketAddr) -> (Fnv, Fnv) {
    let text = addr.to_string();
    let mut up = Fnv::new();
    up.write(text.as_bytes());
    let mut left = Fnv::new();
    left.write(b"left");
    left.write(text.as_bytes());
    (up, left)
}
