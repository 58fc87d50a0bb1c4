//! Operator joins (`shoal join`, `NodeHandle::join`) waiting for their answer: the engine
//! asks for the targets to be resolved, push-pulls with every address, and answers the caller
//! with how many answered, or with what was tried.

use std::collections::BTreeMap;

use tokio::sync::oneshot;

use super::outbox::JoinId;
use crate::error::CommandError;

/// Where a join's answer goes.
pub(crate) type JoinReply = oneshot::Sender<Result<usize, CommandError>>;

struct Pending {
    reply: JoinReply,
    /// The targets, and why any of them did not resolve: the error text if nobody answers.
    tried: String,
    /// Run the user events the answers bring (`shoal join --replay`).
    replay: bool,
}

/// The joins in progress.
#[derive(Default)]
pub(crate) struct PendingJoins {
    next: u64,
    pending: BTreeMap<JoinId, Pending>,
}

impl PendingJoins {
    /// A join of `targets` begins (`replay`: with `--replay`); its answer goes to `reply`.
    pub(crate) fn begin(&mut self, targets: &[String], replay: bool, reply: JoinReply) -> JoinId {
        self.next += 1;
        let id = JoinId(self.next);
        let tried = targets.join(", ");
        self.pending.insert(
            id,
            Pending {
                reply,
                tried,
                replay,
            },
        );
        id
    }

    /// Join `id` asked to replay old user events.
    pub(crate) fn replay(&self, id: JoinId) -> bool {
        self.pending.get(&id).is_some_and(|p| p.replay)
    }

    /// A join with `--replay` waits for its answer.
    pub(crate) fn replaying(&self) -> bool {
        self.pending.values().any(|p| p.replay)
    }

    /// Some targets of join `id` did not resolve: `(target, error)`.
    pub(crate) fn resolved(&mut self, id: JoinId, failed: &[(String, String)]) {
        if let Some(p) = self.pending.get_mut(&id) {
            for (target, error) in failed {
                p.tried.push_str(&format!(" ({target}: {error})"));
            }
        }
    }

    /// Join `id` is done: `joined` members answered.
    pub(crate) fn finish(&mut self, id: JoinId, joined: usize) {
        if let Some(p) = self.pending.remove(&id) {
            let result = if joined > 0 {
                Ok(joined)
            } else {
                Err(CommandError::JoinFailed(p.tried))
            };
            let _ = p.reply.send(result);
        }
    }

    /// How many joins wait for an answer.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_that_reached_nobody_fails_with_what_was_tried() {
        let mut joins = PendingJoins::default();
        let (tx, mut rx) = oneshot::channel();
        let id = joins.begin(&["a:1".into(), "b".into()], false, tx);
        joins.resolved(id, &[("b".into(), "no such host".into())]);
        joins.finish(id, 0);
        let err = rx.try_recv().expect("answered").expect_err("failed");
        assert_eq!(
            err.to_string(),
            "could not join any of a:1, b (b: no such host)"
        );
        assert_eq!(joins.len(), 0);
    }

    #[test]
    fn a_join_answers_with_the_count_once() {
        let mut joins = PendingJoins::default();
        let (tx, mut rx) = oneshot::channel();
        let id = joins.begin(&["a:1".into()], true, tx);
        assert!(joins.replay(id));
        assert!(joins.replaying());
        joins.finish(id, 2);
        assert!(!joins.replay(id), "forgotten once answered");
        assert!(!joins.replaying());
        joins.finish(id, 0);
        assert_eq!(rx.try_recv().expect("answered").expect("joined"), 2);
    }
}
