//! A graceful leave: the intent is gossiped first, foca's leave follows once the intent had
//! `leave_propagate` to spread, and every member is then also told directly (gossip alone
//! leaves a tail: a member the epidemic reaches late).

use tokio::sync::oneshot;

use crate::envelope::{self, Kind};
use crate::identity::Identity;

/// Where the local node is in its leave.
#[derive(Debug, Default)]
pub(crate) struct Leave {
    /// Callers waiting for the leave to finish.
    replies: Vec<oneshot::Sender<()>>,
    started: bool,
    left: bool,
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

    /// The node has left: every waiting caller is answered.
    pub(crate) fn finish(&mut self) {
        self.left = true;
        self.answer_all();
    }

    /// The node stops: every waiting caller is answered, left or not.
    pub(crate) fn answer_all(&mut self) {
        for reply in self.replies.drain(..) {
            let _ = reply.send(());
        }
    }
}

/// The direct "I have left" datagram of `id` (envelope kind [`Kind::Leave`]).
pub(crate) fn notice(id: Identity) -> Result<Vec<u8>, postcard::Error> {
    Ok(envelope::seal(Kind::Leave, &postcard::to_stdvec(&id)?))
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
    fn the_notice_carries_the_identity() {
        let id = Identity::new("127.0.0.1:7948".parse().expect("addr"));
        let packet = notice(id).expect("encode");
        let (kind, payload) = envelope::open(&packet).expect("envelope");
        assert_eq!(kind, Kind::Leave);
        assert_eq!(
            postcard::from_bytes::<Identity>(payload).expect("decode"),
            id
        );
    }
}
