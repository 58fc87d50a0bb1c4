//! A query's answer: the stdout of a handler run that exited 0 and printed at most
//! [`MAX_RESPONSE_LEN`] bytes. A run that fails, is killed at its timeout or prints more gives
//! no answer (logged); the origin then waits until the query's timeout. With several handlers
//! for one query, the first that succeeds answers (a member answers once).

use shoal_core::NodeHandle;
use shoal_core::query::MAX_RESPONSE_LEN;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::shell::{Outcome, Ran};

/// Why a run gives no answer, or `None` when it does.
pub fn refusal(ran: &Ran) -> Option<String> {
    match ran.outcome {
        Outcome::Exited(Some(0)) if ran.stdout_len > MAX_RESPONSE_LEN => Some(format!(
            "the handler printed {} bytes; an answer may take {MAX_RESPONSE_LEN}",
            ran.stdout_len
        )),
        Outcome::Exited(Some(0)) => None,
        Outcome::Exited(Some(code)) => Some(format!("the handler failed (exit code {code})")),
        Outcome::Exited(None) => Some("the handler was killed by a signal".into()),
        Outcome::TimedOut => Some("the handler timed out".into()),
        Outcome::SpawnFailed => Some("the handler could not be started".into()),
    }
}

/// Waits for the run of a query's handler, then sends its answer to the origin.
pub async fn answer(node: NodeHandle, ltime: u64, id: u64, ran: oneshot::Receiver<Ran>) {
    // The sender is dropped unrun when the handler's queue was full (already logged).
    let Ok(ran) = ran.await else {
        return;
    };
    if let Some(reason) = refusal(&ran) {
        warn!(ltime, %reason, "query not answered");
        return;
    }
    if let Err(error) = node.respond_query(ltime, id, ran.stdout).await {
        debug!(ltime, %error, "query answer not sent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(outcome: Outcome, len: usize) -> Ran {
        Ran {
            outcome,
            stdout: vec![b'x'; len.min(8192)],
            stdout_len: len,
            stderr: Vec::new(),
        }
    }

    #[test]
    fn only_a_successful_run_within_the_size_limit_answers() {
        assert_eq!(refusal(&ran(Outcome::Exited(Some(0)), 1024)), None);
        let big = refusal(&ran(Outcome::Exited(Some(0)), 1025)).expect("too much");
        assert!(
            big.contains("printed 1025 bytes; an answer may take 1024"),
            "{big}"
        );
        assert!(refusal(&ran(Outcome::Exited(Some(3)), 0)).is_some());
        assert!(refusal(&ran(Outcome::TimedOut, 0)).is_some());
    }
}
