//! A graceful leave, told by the member itself (issue 10: in plaintext nobody else may say
//! that a member leaves, so the leave cannot lean on relays).
//!
//! 1. **Intent.** The node marks itself `leaving`, gossips its intent and sends it straight
//!    to every live member ([`Kind::Item`] with [`Broadcast::Leave`]). Each member that takes
//!    it answers with a [`Kind::LeaveAck`]; the intent goes again, every
//!    [`resend_interval`], to the members that have not answered and are still live.
//! 2. **Leave.** Once every member answered, or `leave_propagate` after the start at the
//!    latest (a member that never answers: dead but not yet detected, cut off, or an older
//!    build), the node leaves foca (which gossips its own `Down`) and sends the direct "I
//!    have left" notice ([`Kind::Leave`]) to every member. From then on it answers nothing.
//!
//! A member that holds the intent lists the node `left` on the notice, on the node's own
//! `Down`, or on a `Down` relayed by anyone (the member said it is leaving; see
//! `senders.rs`): a lost notice costs no suspicion timeout. At 20% loss each try reaches a
//! member and comes back with probability 0.64; lan's 500 ms at 50 ms allow 10 tries, so a
//! member misses the intent with probability 0.2^10 (about 10^-7) and the leave waits for
//! the deadline with about 19 × 0.36^10 (7 × 10^-4) at N = 20. Without loss every member
//! answers within a round trip and the node leaves at once.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::Engine;
use super::ticks::Tick;
use crate::broadcast::{Broadcast, lock};
use crate::envelope::{self, Kind};
use crate::error::DropReason;
use crate::identity::Identity;
use crate::profile::Timings;

/// Where the local node is in its leave.
#[derive(Debug, Default)]
pub(crate) struct Leave {
    /// Callers waiting for the leave to finish.
    replies: Vec<oneshot::Sender<()>>,
    started: bool,
    left: bool,
    /// Members that have not acknowledged the intent yet.
    unacked: BTreeSet<SocketAddr>,
    /// When the node leaves at the latest, answered or not.
    deadline: Option<Instant>,
}

/// What [`Leave::start`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// First request: announce the intent and schedule the leave.
    Begin,
    /// A leave is under way or done; the caller is answered with it.
    Joined,
}

impl Leave {
    /// True once a leave was asked for (by an operator or a lost name).
    pub(crate) fn started(&self) -> bool {
        self.started
    }

    /// True once the node has left.
    pub(crate) fn left(&self) -> bool {
        self.left
    }

    /// A leave is asked for; `reply` (if any) is answered when it is done (at once if it is).
    pub(crate) fn start(&mut self, reply: Option<oneshot::Sender<()>>) -> Start {
        if self.left {
            if let Some(reply) = reply {
                let _ = reply.send(());
            }
            return Start::Joined;
        }
        self.replies.extend(reply);
        if std::mem::replace(&mut self.started, true) {
            Start::Joined
        } else {
            Start::Begin
        }
    }

    /// The intent went to `members`; the node leaves at `deadline` at the latest.
    pub(crate) fn await_acks(
        &mut self,
        members: impl IntoIterator<Item = SocketAddr>,
        deadline: Instant,
    ) {
        self.unacked = members.into_iter().collect();
        self.deadline = Some(deadline);
    }

    /// The member at `from` acknowledged the intent. True when that made every member's
    /// answer in (while the leave is still waiting for them).
    pub(crate) fn acked(&mut self, from: SocketAddr) -> bool {
        self.started && !self.left && self.unacked.remove(&from) && self.unacked.is_empty()
    }

    /// The members still to answer, less those for which `live` is false (declared down
    /// meanwhile: they answer nothing). Empty once every live member answered.
    pub(crate) fn unacked(&mut self, live: impl Fn(&SocketAddr) -> bool) -> Vec<SocketAddr> {
        self.unacked.retain(|a| live(a));
        self.unacked.iter().copied().collect()
    }

    /// When the node leaves at the latest (`None` before the intent went out).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The node has left: every waiting caller is answered.
    pub(crate) fn finish(&mut self) {
        self.left = true;
        self.unacked.clear();
        self.answer_all();
    }

    /// The node stops: every waiting caller is answered, left or not.
    pub(crate) fn answer_all(&mut self) {
        for reply in self.replies.drain(..) {
            let _ = reply.send(());
        }
    }
}

/// How often the intent goes again to the members that have not acknowledged it: half a
/// gossip interval (lan 50 ms, local 25 ms, wan 250 ms), many round trips on a LAN.
pub(crate) fn resend_interval(timings: &Timings) -> Duration {
    (timings.gossip_interval / 2).max(Duration::from_millis(1))
}

/// The direct "I have left" datagram of `id` (envelope kind [`Kind::Leave`]).
pub(crate) fn notice(id: Identity) -> Result<Vec<u8>, postcard::Error> {
    Ok(envelope::seal(Kind::Leave, &postcard::to_stdvec(&id)?))
}

/// The direct copy of `id`'s leave intent ([`Kind::Item`]).
pub(crate) fn intent(id: Identity) -> Result<Vec<u8>, crate::broadcast::BroadcastError> {
    Ok(envelope::seal(Kind::Item, &Broadcast::Leave(id).encode()?))
}

/// A member's acknowledgement of `id`'s intent ([`Kind::LeaveAck`]).
pub(crate) fn ack(id: Identity) -> Result<Vec<u8>, postcard::Error> {
    Ok(envelope::seal(Kind::LeaveAck, &postcard::to_stdvec(&id)?))
}

impl Engine {
    /// Begins a leave (see the module docs); `reply` is answered once the node has left.
    pub(super) fn start_leave(&mut self, reply: Option<oneshot::Sender<()>>) {
        if self.leave.start(reply) != Start::Begin {
            return;
        }
        info!("leaving the cluster");
        lock(&self.shared).table.set_local_leaving();
        self.broadcast(Broadcast::Leave(self.local()));
        self.gossip_now();
        let members = self.member_addrs();
        if members.is_empty() {
            self.timers.push(self.now, Tick::LeaveNow);
            return;
        }
        self.send_intent(&members);
        let deadline = self.now + self.timings.leave_propagate;
        self.leave.await_acks(members, deadline);
        self.timers.push(deadline, Tick::LeaveNow);
        let again = self.now + resend_interval(&self.timings);
        if again < deadline {
            self.timers.push(again, Tick::LeaveAgain);
        }
    }

    /// Our intent, straight to each of `to`.
    fn send_intent(&mut self, to: &[SocketAddr]) {
        match intent(self.local()) {
            Ok(packet) => {
                for addr in to {
                    self.send_datagram(packet.clone(), *addr);
                }
            }
            Err(error) => warn!(%error, "leave intent could not be encoded"),
        }
    }

    /// The intent again to the live members that have not acknowledged it; the leave at
    /// once when there are none left to wait for.
    pub(super) fn leave_again(&mut self) {
        if self.leave.left() {
            return;
        }
        let live = self.member_addrs();
        let unacked = self.leave.unacked(|a| live.contains(a));
        if unacked.is_empty() {
            self.leave_now();
            return;
        }
        debug!(
            count = unacked.len(),
            "leave intent again to the members that have not acknowledged it"
        );
        self.send_intent(&unacked);
        let again = self.now + resend_interval(&self.timings);
        if self.leave.deadline().is_some_and(|d| again < d) {
            self.timers.push(again, Tick::LeaveAgain);
        }
    }

    /// A leave acknowledgement from `from`: counted only from a member the intent went to,
    /// about our current identity; the last one makes us leave now.
    pub(super) fn leave_acked(&mut self, from: SocketAddr, id: Identity) {
        if id != self.local() {
            debug!(%from, "leave acknowledgement for another identity; ignored");
            return;
        }
        if self.leave.acked(from) {
            debug!("every member acknowledged the leave intent");
            self.leave_now();
        }
    }

    /// A leave intent sent to us directly by `from`: it counts only from the member itself
    /// (its gossip address, the identity foca knows there). It is applied and acknowledged,
    /// a copy already known too (our first ack was lost).
    pub(super) fn direct_intent(
        &mut self,
        from: SocketAddr,
        id: Identity,
    ) -> Result<(), DropReason> {
        if from != id.addr || self.incarnation_of(id).is_none() {
            return Err(DropReason::NotFromMember("leave intent"));
        }
        lock(&self.shared).table.apply_intent(id, false);
        match ack(id) {
            Ok(packet) => self.send_datagram(packet, from),
            Err(error) => debug!(%error, "leave acknowledgement could not be encoded"),
        }
        Ok(())
    }

    /// Every member answered, or the deadline came: leave foca, then tell every member
    /// directly. Once only.
    pub(super) fn leave_now(&mut self) {
        if self.leave.left() {
            return;
        }
        let members = self.member_addrs();
        if let Err(error) = self.foca.leave_cluster(&mut self.runtime) {
            warn!(%error, "leave failed");
        }
        match notice(self.local()) {
            Ok(packet) => {
                for to in members {
                    self.send_datagram(packet.clone(), to);
                }
            }
            Err(error) => warn!(%error, "leave notice could not be encoded"),
        }
        self.leave.finish();
        self.republish = true;
        info!("left the cluster");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_request_begins_the_leave_and_later_ones_wait_for_it() {
        let mut leave = Leave::default();
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        assert_eq!(leave.start(Some(tx1)), Start::Begin);
        assert_eq!(leave.start(Some(tx2)), Start::Joined);
        assert!(leave.started() && !leave.left());
        assert!(rx1.try_recv().is_err());
        leave.finish();
        assert!(leave.left());
        assert!(rx1.try_recv().is_ok() && rx2.try_recv().is_ok());
    }

    #[test]
    fn a_request_after_the_leave_is_answered_at_once() {
        let mut leave = Leave::default();
        leave.start(None);
        leave.finish();
        let (tx, mut rx) = oneshot::channel();
        assert_eq!(leave.start(Some(tx)), Start::Joined);
        assert!(rx.try_recv().is_ok());
    }

    #[test]
    fn the_last_acknowledgement_of_the_members_asked_ends_the_wait_and_others_do_not_count() {
        let a: SocketAddr = "127.0.0.1:2".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:3".parse().expect("addr");
        let stranger: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let mut leave = Leave::default();
        assert!(!leave.acked(a), "no leave under way");
        leave.start(None);
        leave.await_acks([a, b], Instant::now());
        assert!(!leave.acked(stranger));
        assert!(!leave.acked(a));
        assert!(!leave.acked(a), "a duplicate");
        assert_eq!(leave.unacked(|_| true), [b]);
        assert!(leave.acked(b), "the last one");
        leave.await_acks([a, b], Instant::now());
        assert_eq!(leave.unacked(|x| *x != b), [a], "b was declared down");
        assert!(leave.acked(a));
    }

    #[test]
    fn the_notice_intent_and_ack_carry_the_identity() {
        let id = Identity::new("127.0.0.1:7948".parse().expect("addr"));
        let packet = notice(id).expect("encode");
        let (kind, payload) = envelope::open(&packet).expect("envelope");
        assert_eq!(kind, Kind::Leave);
        assert_eq!(
            postcard::from_bytes::<Identity>(payload).expect("decode"),
            id
        );
        let packet = ack(id).expect("encode");
        let (kind, payload) = envelope::open(&packet).expect("envelope");
        assert_eq!(kind, Kind::LeaveAck);
        assert_eq!(
            postcard::from_bytes::<Identity>(payload).expect("decode"),
            id
        );
        let packet = intent(id).expect("encode");
        let (kind, payload) = envelope::open(&packet).expect("envelope");
        assert_eq!(kind, Kind::Item);
        assert_eq!(
            postcard::from_bytes::<Broadcast>(payload).expect("decode"),
            Broadcast::Leave(id)
        );
    }
}
