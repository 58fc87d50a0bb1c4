//! The task that runs primary selection: it wakes on every change of the node's view (and
//! when a `--primary-delay` or the join wait ends), feeds [`elect`] the members, announces
//! this node's claim through the [`RoleCell`] and hands the scripts, in order, to one runner
//! task: never two at once for the group, each bounded by `--handler-timeout`, in its own
//! process group, logged ([`crate::shell`]).

use std::sync::Arc;
use std::time::Duration;

use shoal_core::{NodeHandle, Status as MemberStatus};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use super::elect::{self, Change, Machine, Rules, State, Step};
use super::{Handle, Settings, Status};
use crate::role::RoleCell;
use crate::shell::{self, Job, Outcome};

/// How long a node that has somewhere to join waits to see another member before it may take
/// the role alone (as a VRRP backup waits three adverts before it becomes master).
pub const JOIN_WAIT: Duration = Duration::from_secs(3);

/// Transitions waiting for the script runner; the driver waits when it is full.
const QUEUE: usize = 16;

/// One script to run (`None`: only a marker, told when the scripts before it ended).
struct Script {
    command: Option<String>,
    state: State,
    env: Vec<(String, String)>,
    /// Told when it ended (the step-down before a leave waits for it).
    done: Option<oneshot::Sender<()>>,
}

/// Starts the driver and its script runner; scripts get `timeout` (`--handler-timeout`).
pub fn spawn(node: NodeHandle, role: RoleCell, settings: Settings, timeout: Duration) -> Handle {
    let settings = Arc::new(settings);
    let (status_tx, status) = watch::channel(Status::default());
    let (stop, stop_rx) = mpsc::channel(1);
    let (jobs, jobs_rx) = mpsc::channel(QUEUE);
    tokio::spawn(run_scripts(jobs_rx, timeout));
    let driver = Driver {
        local: node.view().local.name.clone(),
        node,
        role,
        settings: settings.clone(),
        status: status_tx,
        jobs,
    };
    tokio::spawn(driver.run(stop_rx));
    Handle {
        settings,
        status,
        stop,
    }
}

/// Runs the scripts one after the other, in the order the transitions happened.
async fn run_scripts(mut jobs: mpsc::Receiver<Script>, timeout: Duration) {
    while let Some(script) = jobs.recv().await {
        let Some(command) = script.command else {
            if let Some(done) = script.done {
                let _ = done.send(());
            }
            continue;
        };
        let event = format!("on-{}", script.state);
        info!(script = %command, %event, "running the primary group's script");
        let job = Job {
            event,
            env: script.env,
            ..Job::default()
        };
        let outcome = shell::run(&command, job, timeout).await;
        if outcome != Outcome::Exited(Some(0)) {
            warn!(script = %command, ?outcome, "the primary group's script failed");
        }
        if let Some(done) = script.done {
            let _ = done.send(());
        }
    }
}

struct Driver {
    node: NodeHandle,
    local: String,
    role: RoleCell,
    settings: Arc<Settings>,
    status: watch::Sender<Status>,
    jobs: mpsc::Sender<Script>,
}

impl Driver {
    async fn run(self, mut stop: mpsc::Receiver<oneshot::Sender<()>>) {
        let rules = Rules {
            group: self.settings.group.name.clone(),
            preempt: self.settings.preempt,
            quorum: self.settings.quorum,
        };
        let mut machine = Machine::new(self.settings.delay);
        let mut views = self.node.watch();
        let started = Instant::now();
        // Once another member was seen, the join wait is over for good (it may leave later).
        let mut seen_others = false;
        loop {
            let view = views.borrow_and_update().clone();
            if view.left {
                return self.finish(machine.acted().map(|o| o.state), stop).await;
            }
            let now = Instant::now();
            seen_others = seen_others
                || view.members.iter().any(|m| {
                    m.name != self.local
                        && matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect)
                });
            let join_wait_over = now >= started + JOIN_WAIT;
            let may_promote = !self.settings.wait_to_join || seen_others || join_wait_over;
            let desired = elect::decide(&view.members, &self.local, &rules, may_promote);
            if let Step::Act(change) = machine.step(desired, now.into_std()) {
                self.act(&change).await;
            }
            let mut wake = machine.due().map(Instant::from_std);
            if !may_promote {
                let end = started + JOIN_WAIT;
                wake = Some(wake.map_or(end, |w| w.min(end)));
            }
            tokio::select! {
                changed = views.changed() => if changed.is_err() {
                    // The node stopped (it does once it has left).
                    return self.finish(machine.acted().map(|o| o.state), stop).await;
                },
                _ = tokio::time::sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
                done = stop.recv() => {
                    self.step_down(machine.acted().map(|o| o.state), done).await;
                    return;
                }
            }
        }
    }

    /// The node left (`shoal leave`) or stopped: a primary still releases the role, and the
    /// agent's own step-down is answered once that ran.
    async fn finish(&self, acted: Option<State>, mut stop: mpsc::Receiver<oneshot::Sender<()>>) {
        let (ran, wait) = oneshot::channel();
        self.step_down(acted, Some(ran)).await;
        let _ = wait.await;
        while let Some(done) = stop.recv().await {
            let _ = done.send(());
        }
    }

    /// Announces the claim, records the outcome and queues the new state's script.
    async fn act(&self, change: &Change) {
        let state = change.to.state;
        let mut group = self.settings.group.clone();
        group.primary = state == State::Primary;
        if let Err(error) = self.role.set_group(Some(group)).await {
            warn!(%error, "the primary claim could not be announced");
        }
        let primary = change.to.primary.clone();
        self.status.send_replace(Status {
            state: Some(state),
            primary: primary.clone(),
            previous: change.previous.clone(),
        });
        if !change.state_changed() {
            info!(group = %self.settings.group.name, primary = primary.as_deref().unwrap_or(""),
                previous = change.previous.as_deref().unwrap_or(""), "the group's primary changed");
            return;
        }
        info!(group = %self.settings.group.name, %state, primary = primary.as_deref().unwrap_or(""),
            previous = change.previous.as_deref().unwrap_or(""), "primary group transition");
        self.queue(state, primary, change.previous.clone(), None)
            .await;
    }

    /// Before the agent leaves: a primary runs on-backup (the new primary is not known yet).
    async fn step_down(&self, acted: Option<State>, done: Option<oneshot::Sender<()>>) {
        let Some(done) = done else {
            return;
        };
        if acted != Some(State::Primary) {
            // Still, the scripts already queued (an on-backup as the node started leaving)
            // finish before the agent exits.
            let marker = Script {
                command: None,
                state: State::Backup,
                env: Vec::new(),
                done: Some(done),
            };
            if let Err(unsent) = self.jobs.send(marker).await
                && let Some(done) = unsent.0.done
            {
                let _ = done.send(());
            }
            return;
        }
        info!(group = %self.settings.group.name, "stopping: the primary steps down before it leaves");
        let previous = Some(self.local.clone());
        self.status.send_modify(|s| {
            s.state = Some(State::Backup);
            s.primary = None;
            s.previous = previous.clone();
        });
        self.queue(State::Backup, None, previous, Some(done)).await;
    }

    /// Hands `state`'s script to the runner (without one, a marker that says `done` once the
    /// scripts before it ended).
    async fn queue(
        &self,
        state: State,
        primary: Option<String>,
        previous: Option<String>,
        done: Option<oneshot::Sender<()>>,
    ) {
        let command = self.settings.script(state).map(str::to_string);
        let env = vec![
            ("SHOAL_GROUP".into(), self.settings.group.name.clone()),
            ("SHOAL_PRIMARY".into(), primary.unwrap_or_default()),
            (
                "SHOAL_PREVIOUS_PRIMARY".into(),
                previous.unwrap_or_default(),
            ),
            ("SHOAL_STATE".into(), state.as_str().into()),
            ("SERF_SELF_NAME".into(), self.local.clone()),
            ("SHOAL_SELF_NAME".into(), self.local.clone()),
        ];
        let script = Script {
            command,
            state,
            env,
            done,
        };
        if let Err(unsent) = self.jobs.send(script).await {
            warn!("the primary group's script runner stopped");
            if let Some(done) = unsent.0.done {
                let _ = done.send(());
            }
        }
    }
}
