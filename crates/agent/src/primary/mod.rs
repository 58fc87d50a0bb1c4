//! Primary selection (`--group`): every member of a group computes the group's primary from
//! its own view; this node runs `--on-primary` / `--on-backup` / `--on-fault` on its own
//! transitions and announces its claim (`Group.primary`) through the [`crate::role::RoleCell`].
//! See docs/primary.md, and its honest part: a membership view is not consensus.
//!
//! - [`elect`]: the rule and the transition state machine, pure (no I/O, no clock of its own);
//! - [`driver`]: the task that feeds them the node's views and runs the scripts.

pub mod driver;
pub mod elect;

use std::sync::Arc;
use std::time::Duration;

use shoal_core::Group;
use tokio::sync::{mpsc, oneshot, watch};

pub use elect::State;

/// The validated `--group` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The group entry this node announces (its claim starts false).
    pub group: Group,
    /// `--preempt`.
    pub preempt: bool,
    /// `--group-quorum`.
    pub quorum: usize,
    /// `--primary-delay`.
    pub delay: Duration,
    /// `--on-primary`.
    pub on_primary: Option<String>,
    /// `--on-backup`.
    pub on_backup: Option<String>,
    /// `--on-fault`.
    pub on_fault: Option<String>,
    /// The node has somewhere to join: it takes no role before it sees another member (or
    /// [`driver::JOIN_WAIT`] passed).
    pub wait_to_join: bool,
}

impl Settings {
    /// The script for entering `state`, if one is set.
    pub fn script(&self, state: State) -> Option<&str> {
        match state {
            State::Primary => self.on_primary.as_deref(),
            State::Backup => self.on_backup.as_deref(),
            State::Fault => self.on_fault.as_deref(),
        }
    }
}

/// What this node acted on last, for `/v1/primary` and `/v1/info`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Its state (`None` before the first transition).
    pub state: Option<State>,
    /// The primary it acted on.
    pub primary: Option<String>,
    /// The primary before that.
    pub previous: Option<String>,
}

/// The running driver, as the control API and the shutdown see it.
#[derive(Clone)]
pub struct Handle {
    /// The settings it runs with.
    pub settings: Arc<Settings>,
    status: watch::Receiver<Status>,
    stop: mpsc::Sender<oneshot::Sender<()>>,
}

impl Handle {
    /// What it acted on last.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Stops the driver before the agent leaves; a primary runs `--on-backup` first (as
    /// Keepalived runs notify_backup on shutdown), so the others may take over as soon as
    /// they see it leave. Returns once that script ended (or at once for a backup).
    pub async fn step_down(&self) {
        let (done, wait) = oneshot::channel();
        if self.stop.send(done).await.is_ok() {
            let _ = wait.await;
        }
    }
}
