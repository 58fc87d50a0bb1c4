//! Who may say what (issue 10): the rules a SWIM datagram and a push-pull state pass before
//! foca or the member table sees them, sealed or not.
//!
//! - A SWIM datagram's header must name its UDP source: a header that claims another
//!   member's address (a forged "alive", or an update smuggled in a member's name) is dropped.
//! - From an address foca does not know (in any state) and this node did not contact, only
//!   an announce (a join) is taken: a newcomer's other messages to a member that has not heard
//!   of it yet are dropped (the indirect probes through members that know it still reach this
//!   node, and gossip brings the newcomer in milliseconds). Such a datagram asks for a
//!   push-pull with its source that does not make it a contact (`Engine::introduce`): the
//!   answer speaks only for its sender, so a member that gossip missed is listed a round
//!   trip later, and a forger gains nothing it could not get by announcing.
//! - A request to ping a member for the sender, or to forward an ack to one, must name a
//!   member foca knows: foca would send to whatever address the request names.
//! - A sender this node does not know (no member at that address with a meta, and not an
//!   address this node contacted to join) speaks only for itself: its updates about others and
//!   its custom broadcasts (leave intents, metas, events) are cut; what is left (it exists)
//!   foca handles as a join. A newcomer's own news reaches everyone through the member it
//!   joined; a stranger's forged news about a healthy member reaches no one. When the same
//!   datagram carried the sender's own meta (so that it is now a member with a meta, as it
//!   would be at its next datagram), its updates about others are applied after all, through
//!   the same rules as a known member's: in a burst of joins most first contacts are of this
//!   kind, and the news they carried was otherwise lost to this node until anti-entropy.
//! - A third party cannot win a member's address for another identity: an update that names
//!   a live member's address with another generation (the `u64::MAX` takeover) is cut unless
//!   it comes from that address itself.
//! - A `Down` about a member this node sees alive, from anyone but the member, counts as a
//!   suspicion at that incarnation: the member refutes it if it is alive, and this node's own
//!   suspicion timeout declares it down if it is not. A forged failure costs a refutation, not
//!   a flap; a real one is detected at most one suspicion timeout later by a node that missed
//!   the suspicion. Except for a member that itself announced its leave (its intent is here):
//!   then the `Down` is the leave going through, taken as it comes.
//! - A push-pull state about others is taken only from the member whose state it is (its
//!   claimed identity on the peer's IP); its members list passes the same update rules. Its
//!   leave intents: the sender's own; about members down here, from a trusted sender, an
//!   operator's force-leave, or in a sealed cluster any intent (a key holder is trusted); in
//!   plaintext, about a member this node never knew (it joined later) as hearsay, dropped
//!   should the member come up (`Membership::apply_heard_intent`).
//! - A gossiped leave intent: in plaintext only from the member itself; a gossiped
//!   force-leave only about a member that is not up here (`broadcast.rs`,
//!   [`crate::broadcast::Shared::relayed_leaves`]). The direct ones: `leave.rs`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use foca::{Codec, Member, Message, PostcardCodec, State};
use tracing::debug;

use super::Engine;
use super::foca_index::Found;
use crate::anti_entropy::SyncState;
use crate::broadcast::lock;
use crate::error::DropReason;
use crate::fnv::AddrHash;
use crate::identity::Identity;

/// A live member foca knows: its identity, incarnation and state.
type Live = (Identity, foca::Incarnation, State);
/// The members foca knows (in any state), by address.
pub(super) type Known = HashMap<SocketAddr, Live, AddrHash>;

/// A datagram with more updates than this to screen looks them all up in one pass over
/// foca's members ([`Engine::live_among`]) rather than with a search each.
const ONE_PASS_FROM: usize = 3;

/// Addresses contacted to join are trusted for this long.
const CONTACT_TRUST: Duration = Duration::from_secs(30);
/// At most this many remembered contacts (the oldest go first).
const MAX_CONTACTS: usize = 1024;

/// The addresses this node announced to (join targets, seeds, discovered peers, down members):
/// their answers (foca's feed) may speak for others before they are members.
#[derive(Debug, Default)]
pub(crate) struct Contacts {
    at: BTreeMap<SocketAddr, Instant>,
}

impl Contacts {
    /// `addr` was contacted at `now`.
    pub(crate) fn note(&mut self, addr: SocketAddr, now: Instant) {
        self.at.insert(addr, now);
        if self.at.len() > MAX_CONTACTS {
            self.at
                .retain(|_, t| now.saturating_duration_since(*t) < CONTACT_TRUST);
        }
        if self.at.len() > MAX_CONTACTS
            && let Some(oldest) = self.at.iter().min_by_key(|(_, t)| **t).map(|(a, _)| *a)
        {
            self.at.remove(&oldest);
        }
    }

    /// True when `addr` was contacted less than [`CONTACT_TRUST`] before `now`.
    pub(crate) fn recent(&self, addr: SocketAddr, now: Instant) -> bool {
        self.at
            .get(&addr)
            .is_some_and(|t| now.saturating_duration_since(*t) < CONTACT_TRUST)
    }
}

/// A SWIM datagram as foca may see it ([`Engine::screen_swim`]).
pub(super) struct Screened<'a> {
    /// The payload for foca.
    pub(super) payload: Cow<'a, [u8]>,
    /// The sender may speak for others.
    pub(super) trusted: bool,
    /// Its updates about others, cut because it was not trusted: applied after foca read the
    /// datagram if that made it a member with a meta ([`Engine::apply_held`]).
    pub(super) held: Vec<Member<Identity>>,
}

impl Engine {
    /// True when `addr` may speak for others: a member foca knows there (in any state; the
    /// caller looked it up: `known`) whose meta the table has, or an address contacted to join.
    fn trusted_given(&self, addr: SocketAddr, known: bool) -> bool {
        // The member test first: it is the usual answer, and it spares the look-up of
        // contacts.
        (known && lock(&self.shared).table.has_meta(addr)) || self.contacts.recent(addr, self.now)
    }

    /// [`Self::trusted_given`], looking `addr` up in foca's members.
    pub(super) fn trusted_sender(&self, addr: SocketAddr) -> bool {
        let known = self.foca_member(addr).is_some();
        self.trusted_given(addr, known)
    }

    /// foca's member at `addr` (it holds one per address, in any state): from the index of
    /// positions when it can tell ([`super::foca_index`]), else by a linear search.
    pub(super) fn foca_member(&self, addr: SocketAddr) -> Option<&Member<Identity>> {
        match self.index.find(self.foca.iter_membership_state(), addr) {
            Found::Member(m) => Some(m),
            Found::Absent => None,
            Found::Unknown => self
                .foca
                .iter_membership_state()
                .find(|m| m.id().addr == addr),
        }
    }

    /// The live member foca knows at `addr`, with its incarnation ([`Self::foca_member`]: a
    /// whole push-pull state looks them up in a [`Known`] instead).
    fn live_at(&self, addr: SocketAddr) -> Option<Live> {
        self.foca_member(addr)
            .filter(|m| m.state() != State::Down)
            .map(|m| (*m.id(), m.incarnation(), m.state()))
    }

    /// What [`Self::live_at`] says about each of `addrs`, in one pass over foca's members
    /// (the first live member at each address, as the search finds it); an address with no
    /// live member is absent. For the updates of a datagram: at a thousand members, a search
    /// per update was 7% of a simulation's time.
    fn live_among(
        &self,
        addrs: impl Iterator<Item = SocketAddr>,
    ) -> HashMap<SocketAddr, Option<Live>, AddrHash> {
        let mut wanted: HashMap<SocketAddr, Option<Live>, AddrHash> =
            HashMap::with_hasher(AddrHash::new());
        wanted.extend(addrs.map(|a| (a, None)));
        for m in self.foca.iter_membership_state() {
            if m.state() != State::Down
                && let Some(slot @ None) = wanted.get_mut(&m.id().addr)
            {
                *slot = Some((*m.id(), m.incarnation(), m.state()));
            }
        }
        wanted
    }

    /// [`Self::live_at`] for every update of `updates`, in order: a search each for a few,
    /// one pass over foca's members ([`Self::live_among`]) for more.
    fn live_of(&self, updates: &[Member<Identity>]) -> Vec<Option<Live>> {
        let indexed = self.index.current(self.foca.iter_membership_state().len());
        if indexed || updates.len() <= ONE_PASS_FROM {
            return updates.iter().map(|u| self.live_at(u.id().addr)).collect();
        }
        let found = self.live_among(updates.iter().map(|u| u.id().addr));
        updates
            .iter()
            .map(|u| found.get(&u.id().addr).copied().flatten())
            .collect()
    }

    /// Every member foca knows (in any state), by address, in one pass (foca holds one per
    /// address), in `known` (emptied first; a map kept from the last push-pull). A push-pull
    /// state is screened and applied against it.
    pub(super) fn known_members(&self, mut known: Known) -> Known {
        let members = self.foca.iter_membership_state();
        known.clear();
        known.reserve(members.len());
        known.extend(members.map(|m| (m.id().addr, (*m.id(), m.incarnation(), m.state()))));
        known
    }

    /// An update about another member, as received from `sender`: kept, rewritten (a down
    /// about a member seen alive is a suspicion) or cut (`None`). `live` is what foca knows
    /// live at the update's address.
    fn screen_update(
        &self,
        sender: SocketAddr,
        update: Member<Identity>,
        live: Option<Live>,
    ) -> Option<Member<Identity>> {
        let id = *update.id();
        if id.addr == sender {
            return Some(update);
        }
        let Some((known, incarnation, state)) = live else {
            return Some(update);
        };
        if known != id {
            // Only the address itself may claim it for another identity.
            return (id.generation < known.generation).then_some(update);
        }
        if update.state() == State::Down
            && state == State::Alive
            && update.incarnation() >= incarnation
            && !lock(&self.shared).table.announced_leave(id)
        {
            return Some(Member::new(id, update.incarnation(), State::Suspect));
        }
        Some(update)
    }

    /// Screens foca's message `payload` from UDP source `from` (see the module docs): the
    /// payload as foca may see it and whether its sender may speak for others, or why it is
    /// dropped.
    pub(super) fn screen_swim<'a>(
        &self,
        from: SocketAddr,
        payload: &'a [u8],
    ) -> Result<Screened<'a>, DropReason> {
        let mut codec = PostcardCodec;
        let mut rest = payload;
        let whole = |trusted| Screened {
            payload: Cow::Borrowed(payload),
            trusted,
            held: Vec::new(),
        };
        let Ok(header) = Codec::<Identity>::decode_header(&mut codec, &mut rest) else {
            return Ok(whole(false)); // foca names the decode error
        };
        if header.src.addr != from {
            return Err(DropReason::NotFromMember("SWIM header"));
        }
        let member = self.foca_member(from).is_some();
        if !member && header.message != Message::Announce && !self.contacts.recent(from, self.now) {
            return Err(DropReason::Stranger);
        }
        if let Message::PingReq { target, .. } | Message::IndirectAck { target, .. } =
            &header.message
            && self
                .foca_member(target.addr)
                .is_none_or(|m| m.id() != target)
        {
            // foca would send to whatever the request names: a reflection to a third party.
            return Err(DropReason::UnknownTarget);
        }
        let trusted = self.trusted_given(from, member);
        let mut updates = Vec::new();
        if rest.len() >= 2 && header.message != Message::Broadcast {
            let count = u16::from_be_bytes([rest[0], rest[1]]);
            rest = &rest[2..];
            // Each update takes several bytes: a forged count reserves no more than the
            // datagram could hold.
            updates.reserve(usize::from(count).min(rest.len() / 4));
            for _ in 0..count {
                match Codec::<Identity>::decode_member(&mut codec, &mut rest) {
                    Ok(member) => updates.push(member),
                    Err(_) => return Ok(whole(trusted)), // foca names it
                }
            }
        }
        let received = updates.len();
        let (own, held): (Vec<_>, Vec<_>) = updates
            .iter()
            .cloned()
            .partition(|u| trusted || u.id().addr == from);
        let lives = self.live_of(&own);
        // An update that says what foca holds already (the same identity, incarnation and
        // state of a live member) is a no-op for foca, which would still search its member
        // list for it: most updates are (each is gossiped a dozen times at a thousand
        // members), and that search was a fifth of a simulation's time. It goes, as foca
        // would change nothing for it even after the updates before it in the datagram
        // (foca's states only move forward, and an update about this node's own address is
        // always kept, as are those of an announce, which foca refuses whole if it carries
        // any).
        let me = self.local().addr;
        let announce = header.message == Message::Announce;
        let (mut no_ops, mut rewritten) = (0, false);
        let kept: Vec<Member<Identity>> = own
            .into_iter()
            .zip(lives)
            .filter_map(|(u, live)| {
                let original = u.clone();
                let u = self.screen_update(from, u, live)?;
                rewritten |= u != original;
                let held_so = live == Some((*u.id(), u.incarnation(), u.state()));
                if held_so && u.id().addr != me && !announce {
                    no_ops += 1;
                    return None;
                }
                Some(u)
            })
            .collect();
        // The custom broadcasts go on whole: foca's item handler keeps, for a sender that may
        // speak only for itself, its own items (its meta: without it a newcomer heard of
        // only through itself would wait for a push-pull to be listed) and skips the rest.
        let tail = rest;
        if kept.len() == received
            && kept.iter().zip(&updates).all(|(k, u)| k == u)
            && tail.len() == rest.len()
        {
            return Ok(whole(trusted));
        }
        if kept.len() + no_ops != received || rewritten {
            debug!(%from, trusted, received, kept = kept.len(),
                "screened a SWIM datagram: updates about others cut or down made suspect");
        }
        let mut out = Vec::with_capacity(payload.len());
        if codec.encode_header(&header, &mut out).is_err() {
            return Err(DropReason::Truncated("SWIM header"));
        }
        if header.message == Message::Broadcast {
            out.extend_from_slice(tail); // no updates in a broadcast-only message
        } else if !kept.is_empty() || !tail.is_empty() {
            out.extend_from_slice(&(kept.len() as u16).to_be_bytes());
            for member in &kept {
                if codec.encode_member(member, &mut out).is_err() {
                    return Err(DropReason::Truncated("SWIM update"));
                }
            }
            out.extend_from_slice(tail);
        }
        Ok(Screened {
            payload: Cow::Owned(out),
            trusted,
            held,
        })
    }

    /// The updates about others that `from`'s datagram carried while it was not trusted
    /// ([`Screened::held`]), now that foca read the datagram: applied (through
    /// [`Self::screen_update`]) if it made `from` a member with a meta, dropped otherwise.
    pub(super) fn apply_held(&mut self, from: SocketAddr, held: Vec<Member<Identity>>) {
        if held.is_empty() || !self.trusted_sender(from) {
            return;
        }
        let lives = self.live_of(&held);
        let updates: Vec<Member<Identity>> = held
            .into_iter()
            .zip(lives)
            .filter_map(|(u, live)| self.screen_update(from, u, live))
            .collect();
        debug!(%from, count = updates.len(),
            "a first datagram brought its sender's meta: its updates about others count");
        if let Err(error) = self
            .foca
            .apply_many(updates.into_iter(), true, &mut self.runtime)
        {
            debug!(%error, "foca refused held updates");
        }
    }

    /// Screens a push-pull state that came from `peer` (the TCP peer: the address dialled, or
    /// the inbound connection's source). A state whose claimed sender is not on the peer's IP
    /// keeps only what it says about its claimed sender... of which there is none to trust:
    /// it is emptied. Otherwise its members pass [`Self::screen_update`] and its leave intents
    /// about live members are kept only when they are the sender's own.
    pub(super) fn screen_state(
        &self,
        mut state: SyncState,
        peer: SocketAddr,
        known: &Known,
    ) -> SyncState {
        let Some(sender) = state.from.filter(|f| f.addr.ip() == peer.ip()) else {
            if !state.members.is_empty() || !state.intents.is_empty() {
                debug!(%peer, claimed = ?state.from, "ignored a push-pull state not sent from the address it claims");
            }
            return SyncState::default();
        };
        let from = sender.addr;
        let trusted = self.trusted_given(from, known.contains_key(&from));
        // Looked up in `known` (one pass over foca's members for the whole state), not by a
        // search per member it names: at a thousand members, a push-pull cost a million
        // comparisons.
        let live = |addr: &SocketAddr| known.get(addr).copied().filter(|k| k.2 != State::Down);
        state.members = std::mem::take(&mut state.members)
            .into_iter()
            .filter(|m| trusted || m.id().addr == from)
            .filter_map(|m| {
                let at = live(&m.id().addr);
                self.screen_update(from, m, at)
            })
            .collect();
        let shared = lock(&self.shared);
        let (relayed, table) = (shared.relayed_leaves, &shared.table);
        state.intents.retain(|(id, forced)| {
            id.addr == from
                || (trusted
                    && (relayed || *forced || !table.knows(id.addr))
                    && live(&id.addr).is_none())
        });
        drop(shared);
        if !trusted {
            state.metas.retain(|m| m.id.addr == from);
            state.events.clear();
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_contact_is_trusted_for_a_while_and_the_memory_stays_bounded() {
        let mut c = Contacts::default();
        let t0 = Instant::now();
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        c.note(a, t0);
        assert!(c.recent(a, t0 + CONTACT_TRUST / 2));
        assert!(!c.recent(a, t0 + CONTACT_TRUST));
        for port in 0..(MAX_CONTACTS as u16 + 10) {
            c.note(
                SocketAddr::from(([127, 0, 0, 2], port)),
                t0 + CONTACT_TRUST * 2,
            );
        }
        assert_eq!(c.at.len(), MAX_CONTACTS);
        assert!(!c.recent(a, t0 + CONTACT_TRUST * 2));
    }
}
