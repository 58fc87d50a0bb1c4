//! What each gossip datagram does once it is decoded ([`super::input::decode`]): foca's
//! messages go to foca, a direct leave notice marks its sender left, a digest that differs
//! from ours (members or recent user events) asks for a push-pull, a query's ack or answer is
//! collected or relayed; a user event, query or tag change sent directly is taken as gossip
//! is ([`super::direct`]); anything else is counted and dropped.

use std::net::SocketAddr;
use std::time::Duration;

use foca::State;
use tracing::{debug, warn};

use super::input::{self, Datagram};
use super::outbox::PushPull;
use super::{Engine, backoff};
use crate::anti_entropy::Digest;
use crate::broadcast::{BroadcastError, lock};
use crate::error::DropReason;
use crate::identity::Identity;
use crate::view::Stats;

/// How many gossip intervals a view must be still before a piggybacked digest that differs
/// from ours asks for a push-pull (lan: 300 ms).
const DIGEST_SETTLE_GOSSIPS: u32 = 3;

impl Engine {
    /// A foca message from `from` (the UDP source): the probe watch sees it first (an ack of
    /// the probe under way); then the sender's digest, if it carried one, is compared with
    /// ours. A push-pull goes to the UDP source, never to an address the payload names (a
    /// forged payload must not make us connect to a third party).
    /// `trusted`: the sender may speak for others (see `senders.rs`); otherwise foca's item
    /// handler takes only its items about itself.
    fn swim(
        &mut self,
        from: SocketAddr,
        (payload, trusted): (&[u8], bool),
        digest: Option<u32>,
    ) -> Result<(), foca::Error> {
        if let Some(h) = super::probe::header(payload) {
            self.probes.received(&h);
        }
        let only_about = (!trusted).then_some(from);
        lock(&self.shared).only_about = only_about;
        let result = self.foca.handle_data(payload, &mut self.runtime);
        lock(&self.shared).only_about = None;
        if !trusted && self.meta_wanted.is_none() && !self.trusted_sender(from) {
            // A member without its meta spoke, without it: fetch it (`notify.rs`).
            self.meta_wanted = Some(from);
        }
        if let Err(foca::Error::CustomBroadcast(error)) = &result
            && matches!(
                error.downcast_ref::<BroadcastError>(),
                Some(BroadcastError::Invalid(_))
            )
        {
            Stats::add(&self.stats.metas_refused, 1);
        }
        if let (Some(theirs), Ok(())) = (digest, &result) {
            self.piggybacked_digest(from, theirs);
        }
        result
    }

    /// A digest that rode on a SWIM message from `addr`. Right after any change digests
    /// differ until gossip has spread it (milliseconds: news is forwarded at once), so only a
    /// difference while our own view has been still for [`DIGEST_SETTLE_GOSSIPS`] gossip
    /// intervals asks for a push-pull. A member that gossip missed (the epidemic's tail, most
    /// often in a burst of joins) is repaired by the next datagram it sends or gets after
    /// that, not a second later.
    fn piggybacked_digest(&mut self, addr: SocketAddr, theirs: u32) {
        if theirs == self.short_digest() {
            return;
        }
        let still = self.now.saturating_duration_since(self.last_change);
        if still >= self.timings.gossip_interval * DIGEST_SETTLE_GOSSIPS {
            self.push_pull(addr);
        }
    }

    /// Our short digest (the one every SWIM datagram carries), recomputed only when the
    /// table changed; notes when it did.
    ///
    /// It covers the membership digest and the user-event clock (a member behind on events is
    /// behind on the clock too, as every event moves it). When the event clock moved, the full
    /// digest's cadence starts over: its hash of the recent events finds an event missed at a
    /// clock already reached. A membership change alone does not: the short digest carries
    /// all the full one says of membership, on every SWIM datagram.
    pub(super) fn short_digest(&mut self) -> u32 {
        let shared = lock(&self.shared);
        let key = (shared.table.revision(), shared.events.digest().clock);
        if key == self.digest_cache.0 {
            return self.digest_cache.1;
        }
        let digest = crate::anti_entropy::short_digest(shared.table.digest() ^ key.1);
        drop(shared);
        let events_moved = self.digest_cache.0.1 != u64::MAX && key.1 != self.digest_cache.0.1;
        if digest != self.digest_cache.1 {
            self.last_change = self.now;
        }
        if events_moved
            && let Some((generation, at)) = self.sync.changed(self.now, self.timings.sync_interval)
        {
            self.timers.push(at, super::ticks::Tick::Sync(generation));
        }
        self.digest_cache = (key, digest);
        digest
    }

    pub(super) fn datagram(&mut self, from: SocketAddr, packet: &[u8]) {
        let len = packet.len();
        Stats::add(&self.stats.packets_in, 1);
        Stats::add(&self.stats.bytes_in, len as u64);
        if self.leave.left() {
            // A node that left stays gone while its process winds down (say, while it waits to
            // stop its app): fed to foca, a peer's "you are down" would make it renew its
            // identity and rejoin.
            return;
        }
        // The most any node sends: foca's budget, our envelope and the 4-byte digest of a
        // SWIM datagram. Anything longer is not ours; it is refused before any decoding.
        let limit = self.config.max_packet_size + 4;
        if len > limit {
            self.dropped(from, len, &DropReason::TooLarge { len, limit });
            return;
        }
        self.index.refresh(self.foca.iter_membership_state());
        let result = input::decode(packet).and_then(|datagram| match datagram {
            Datagram::Swim(payload, digest) => match self.screen_swim(from, payload).map(|s| {
                let result = self.swim(from, (&s.payload, s.trusted), digest);
                self.apply_held(from, s.held);
                result
            })? {
                // Not bad packets: news about our own old identity, and gossip while alone.
                Ok(()) | Err(foca::Error::DataFromOurselves | foca::Error::NotConnected) => Ok(()),
                Err(error) => Err(DropReason::Swim(error)),
            },
            Datagram::Leave(id) => self.member_left(from, id),
            Datagram::LeaveAck(id) => {
                self.leave_acked(from, id);
                Ok(())
            }
            Datagram::Digest(digest) => {
                self.handle_digest(from, digest);
                Ok(())
            }
            Datagram::QueryResponse(response) => {
                self.query_response(response);
                Ok(())
            }
            Datagram::Item(item) => self.direct_item(from, item),
        });
        if let Err(error) = result {
            self.dropped(from, len, &error);
            if matches!(error, DropReason::Stranger) && self.stranger.is_none() {
                self.stranger = Some(from); // `notify.rs` introduces us
            }
        }
    }

    /// Counts a dropped datagram; warns at most every 5 s.
    fn dropped(&mut self, from: SocketAddr, len: usize, error: &DropReason) {
        Stats::add(&self.stats.packets_dropped, 1);
        let now = self.now;
        if self
            .last_warn
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(5))
        {
            self.last_warn = Some(now);
            warn!(%from, len, %error, "dropped a bad packet (further ones for 5 s at debug level)");
        } else {
            debug!(%from, len, %error, "dropped a bad packet");
        }
    }

    /// A member told us directly that it left: its intent, then its down, as gossip would
    /// bring them. Only the member itself may say so: the notice must come from its gossip
    /// address and name the identity foca knows there (a forged notice, say with a huge
    /// generation, is dropped; the leave still arrives by gossip).
    fn member_left(&mut self, from: SocketAddr, id: Identity) -> Result<(), DropReason> {
        if id.addr == self.local().addr {
            return Ok(());
        }
        if from != id.addr || self.incarnation_of(id).is_none() {
            return Err(DropReason::NotFromMember("leave notice"));
        }
        lock(&self.shared).table.apply_intent(id, false);
        self.apply_one(id, foca::Incarnation::MAX, State::Down, "a leave notice");
        Ok(())
    }

    /// A digest datagram that differs from ours in membership or in recent user events (one of
    /// the two missed an event, which gossip alone never repairs) asks for a push-pull with
    /// its UDP source.
    fn handle_digest(&mut self, from: SocketAddr, digest: Digest) {
        let shared = lock(&self.shared);
        let differs = digest.digest != shared.table.digest()
            || digest.events.is_some_and(|e| shared.events.differs(&e));
        drop(shared);
        if differs && !self.leave.left() {
            self.push_pull(from);
        }
    }

    /// A SWIM datagram came from `addr`, an address foca does not know and that we did not
    /// contact (it was dropped: [`crate::error::DropReason::Stranger`]). Often a member that
    /// joined in a burst whose gossip missed us: it knows us, we do not know it. A push-pull
    /// with it (within the limit of [`Self::fetch_meta`]) shows it our state, and its answer,
    /// since `addr` is not noted as a contact, speaks only for itself (`senders.rs`): if it is
    /// a member, it is listed a round trip later; a forger's answer adds nothing but itself,
    /// as its announce would, and one that does not answer TCP costs a refused connection.
    /// This is what a digest datagram from the same address already asks for.
    /// Returns whether it was sent (the limit may hold it back: see `notify.rs`).
    pub(super) fn introduce(&mut self, addr: SocketAddr) -> bool {
        let (now, every) = (self.now, self.timings.gossip_interval);
        if self.leave.left() || !backoff::due(&mut self.last_fetch, now, every) {
            return false;
        }
        debug!(%addr, "push-pull with a stranger that knows us (not a contact)");
        self.push_pull_uncontacted(addr);
        true
    }

    pub(super) fn push_pull_uncontacted(&mut self, addr: SocketAddr) {
        let (addrs, state, join) = (vec![addr], self.state(), None);
        self.out.push_pulls.push(PushPull { addrs, state, join });
    }
}
