//! What each gossip datagram does once it is decoded ([`super::input::decode`]): foca's
//! messages go to foca, a direct leave notice marks its sender left, a digest that differs
//! from ours asks for a push-pull, a query's ack or answer is collected or relayed; anything
//! else is counted and dropped.

use std::net::SocketAddr;
use std::time::Duration;

use foca::State;
use tracing::{debug, warn};

use super::Engine;
use super::input::{self, Datagram};
use crate::anti_entropy::Digest;
use crate::broadcast::lock;
use crate::error::DropReason;
use crate::identity::Identity;
use crate::view::Stats;

impl Engine {
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
        let result = input::decode(packet).and_then(|datagram| match datagram {
            Datagram::Swim(payload) => match self.foca.handle_data(payload, &mut self.runtime) {
                // Not bad packets: news about our own old identity, and gossip while alone.
                Ok(()) | Err(foca::Error::DataFromOurselves | foca::Error::NotConnected) => Ok(()),
                Err(error) => Err(DropReason::Swim(error)),
            },
            Datagram::Leave(id) => {
                self.member_left(id);
                Ok(())
            }
            Datagram::Digest(digest) => {
                self.handle_digest(digest);
                Ok(())
            }
            Datagram::QueryResponse(response) => {
                self.query_response(response);
                Ok(())
            }
        });
        if let Err(error) = result {
            self.dropped(from, len, &error);
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
    /// bring them (foca ignores the down if it knows a newer identity at that address).
    fn member_left(&mut self, id: Identity) {
        if id.addr == self.local().addr {
            return;
        }
        lock(&self.shared).table.apply_intent(id, false);
        let down = foca::Member::new(id, foca::Incarnation::MAX, State::Down);
        if let Err(error) = self
            .foca
            .apply_many(std::iter::once(down), true, &mut self.runtime)
        {
            debug!(%error, "applying a leave notice failed");
        }
    }

    fn handle_digest(&mut self, digest: Digest) {
        let ours = lock(&self.shared).table.digest();
        if digest.digest != ours && !self.leave.left() {
            self.push_pull(digest.from.addr);
        }
    }
}
