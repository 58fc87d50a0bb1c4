//! User events, queries, tag changes and leave intents sent straight to members, besides
//! their gossip.
//!
//! Gossip hands an item to a few random members per round and each forwards it a few times
//! (foca's `max_transmissions`), so now and then a member gets no copy at all. Traced in the
//! messaging benchmark (N = 20, 40 runs each): one member missed one user event and ran it
//! 0.53 s late, when an anti-entropy push-pull brought it; another missed two queries
//! (neither ack nor answer: queries have no anti-entropy), so those waited their whole
//! timeout; a tag change took 0.72 s the same way. So the sender of a user event or of its
//! own new tags also sends the item in one datagram to every live member (at most
//! [`DIRECT_MAX`], drawn at random past that), and the origin of a query to every member it
//! expects to answer, and again to those that have not answered after a while
//! ([`super::queries`]).
//!
//! A receiver treats a direct copy as it treats gossip, news to the handlers and duplicates
//! dropped, except that it does not gossip it on while the cluster is small enough for every
//! member to get a direct copy (at most [`DIRECT_MAX`] members): there the direct copies are
//! the dissemination. Against loss, a user event or tag change is sent directly twice, one
//! gossip interval apart, and a query again to those that have not answered; a member whose
//! copies were all lost still gets the item from the sender's own gossip (foca's
//! transmissions, to random members; received gossip news is forwarded as always) or from
//! anti-entropy (the digest covers user events and metas). Gossiping every direct copy on as well cost a user event 6.7 wire packets per
//! agent at N = 20, against Serf's 6.1 (benchmark, same run); without it, about 1.5. In a
//! larger cluster a direct copy is gossiped on like received news. A query's origin asking
//! again for an answer already given gets it again (the first one was lost). Only a live
//! member's copy is taken, and a meta or a leave intent only from the member it describes (a
//! leaving node sends its intent to every member itself and again to those that do not
//! acknowledge it, [`super::leave`]; a force-leave never travels this way).

use std::net::SocketAddr;

use rand::seq::SliceRandom;
use tracing::debug;

use super::Engine;
use super::ticks::Tick;
use crate::broadcast::{Broadcast, BroadcastError, lock, validate_meta};
use crate::envelope::{self, Kind};
use crate::error::DropReason;
use crate::identity::Identity;

/// Most members one item is sent to directly; past this, as many drawn at random (gossip
/// reaches the rest, as without direct copies).
pub(super) const DIRECT_MAX: usize = 64;

impl Engine {
    /// Sends `item` in one datagram to each of `targets` (at most [`DIRECT_MAX`] of them,
    /// drawn at random past that), never to this node.
    pub(super) fn send_direct(&mut self, item: &Broadcast, mut targets: Vec<SocketAddr>) {
        let me = self.local().addr;
        targets.retain(|a| *a != me);
        if targets.len() > DIRECT_MAX {
            targets.shuffle(&mut self.rng);
            targets.truncate(DIRECT_MAX);
        }
        match item.encode() {
            Ok(bytes) => {
                let packet = envelope::seal(Kind::Item, &bytes);
                for to in targets {
                    self.send_datagram(packet.clone(), to);
                }
            }
            Err(error) => debug!(%error, "direct item could not be encoded"),
        }
    }

    /// Sends `item` directly to every live member now, and again one gossip interval later
    /// to the members live then ([`super::ticks::Tick::DirectAgain`]): a lost copy costs the
    /// member only that interval (the copy is not gossiped on in a small cluster), and
    /// receivers drop the second copy as a duplicate.
    pub(super) fn send_to_all_twice(&mut self, item: Broadcast) {
        let members = self.member_addrs();
        self.send_direct(&item, members);
        let at = self.now + self.timings.gossip_interval;
        self.timers.push(at, Tick::DirectAgain(Box::new(item)));
    }

    /// The second direct copy of `item` ([`Self::send_to_all_twice`]).
    pub(super) fn direct_again(&mut self, item: &Broadcast) {
        if self.leave.left() {
            return;
        }
        let members = self.member_addrs();
        self.send_direct(item, members);
    }

    /// A user event or query sent to us directly by `from`.
    pub(super) fn direct_item(&mut self, from: SocketAddr, data: &[u8]) -> Result<(), DropReason> {
        let item: Broadcast =
            postcard::from_bytes(data).map_err(|error| DropReason::Undecodable {
                what: "direct item",
                error,
            })?;
        if !self.member_addrs().contains(&from) {
            // A member we have not heard of yet (it just joined): gossip brings the item.
            debug!(%from, "direct item from an address that is not a live member; ignored");
            return Ok(());
        }
        let news = match item {
            Broadcast::User(event) => {
                crate::user_event::validate(&event.name, &event.payload)
                    .map_err(BroadcastError::from)?;
                lock(&self.shared).events.receive(event)
            }
            Broadcast::Query(query) => {
                crate::query::validate(&query).map_err(BroadcastError::from)?;
                let key = (query.ltime, query.id);
                let origin = query.origin;
                let news = lock(&self.shared).queries.receive(query);
                if !news && from == origin {
                    self.answer_again(key);
                }
                news
            }
            // Only the member itself sends its meta directly (`shoal tags` on it).
            Broadcast::Meta(meta) => {
                self.check_sent_by_member(from, meta.id)?;
                validate_meta(&meta).map_err(BroadcastError::from)?;
                lock(&self.shared).table.apply_meta(meta)
            }
            Broadcast::MetaChanged { id, version } => {
                self.check_sent_by_member(from, id)?;
                let mut shared = lock(&self.shared);
                let news = shared.table.announce_meta(id, version);
                if news {
                    shared.fetch.push(id.addr);
                }
                news
            }
            // A leaving member's own intent, acknowledged ([`super::leave`]); never gossiped
            // on from here (the member sends it to everyone itself).
            Broadcast::Leave(id) => return self.direct_intent(from, id),
            Broadcast::ForceLeave(_) => return Err(DropReason::NotDirect("force-leave")),
            Broadcast::Suspect(_) => return Err(DropReason::NotDirect("accusation")),
        };
        if news && self.foca.num_members() + 1 > DIRECT_MAX {
            // A cluster larger than the direct copies cover: the members that got no copy
            // need the epidemic, so gossip it on as received news is (our handler knows it
            // now, and foca queues our copy for its next rounds).
            if let Err(error) = self.foca.add_broadcast(data) {
                debug!(%error, "direct item not queued for gossip");
            }
        }
        Ok(())
    }

    /// A meta sent directly must come from the member's own gossip address and name the
    /// identity foca knows there.
    fn check_sent_by_member(&self, from: SocketAddr, id: Identity) -> Result<(), DropReason> {
        if from != id.addr || self.incarnation_of(id).is_none() {
            return Err(DropReason::NotFromMember("direct meta"));
        }
        Ok(())
    }
}
