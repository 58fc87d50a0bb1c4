//! From node events to handler runs: coalescing, the members file, and one worker per handler.
//!
//! Member events are collected until no new one arrived for the quiet window (or for at most
//! `MAX_HOLD` in a storm); per member the latest event wins, except that a join stays a join.
//! User events wait in the same window, where only the newest of each name is kept
//! ([`super::user`]), unless they were sent with `--coalesce=false`: those run at once, as
//! queries always do (their runs' stdout is the answer, [`super::query`]).
//! Then the whole view is written to `SHOAL_MEMBERS_FILE` and each batch (one per event kind,
//! Serf's shape; one per user event) is queued to every handler whose filter wants it. Each
//! handler has its own worker and bounded queue, so a slow or hung handler delays only itself,
//! and its events run in order.
//!
//! Every event is first handed, as it arrives and uncoalesced, to the `/v1/stream` readers
//! ([`EventStreams::publish`], which never waits).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shoal_core::{Event, Member, MemberEventKind, NodeHandle, Query, UserEvent, View};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::warn;

use super::env::{
    member_event_env, member_event_stdin, payload_stdin, query_env, user_event_env,
    user_event_stdin,
};
use super::filter::HandlerSpec;
use super::members_dir::MembersDir;
use super::user::UserPending;
use crate::shell::{self, Job, Outcome};
use crate::stream::events::EventStreams;
use crate::view;

/// Longest a member event is held back while events keep coming.
const MAX_HOLD: Duration = Duration::from_secs(1);
/// Runs queued per handler; past this, new runs for it are dropped with a warning.
const QUEUE_PER_HANDLER: usize = 128;

/// Handler counters for `shoal info`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Runs finished.
    pub runs: AtomicU64,
    /// Runs killed at the timeout.
    pub timeouts: AtomicU64,
    /// Runs dropped because the handler's queue was full.
    pub dropped: AtomicU64,
    /// Member events received from the node (before coalescing).
    pub member_events: AtomicU64,
    /// User events received from the node (before coalescing).
    pub user_events: AtomicU64,
    /// Queries received that this member passes the filters of.
    pub query_events: AtomicU64,
    /// User events queued to at least one handler.
    pub user_handled: AtomicU64,
}

struct Worker {
    spec: HandlerSpec,
    tx: mpsc::Sender<Job>,
}

/// Settings of the dispatcher.
pub struct Settings {
    /// Quiet window (zero: no coalescing).
    pub coalesce: Duration,
    /// Handler timeout.
    pub timeout: Duration,
}

/// Runs until the event stream ends.
pub async fn run(
    mut events: mpsc::Receiver<Event>,
    node: NodeHandle,
    mut handlers: watch::Receiver<Arc<Vec<HandlerSpec>>>,
    settings: Settings,
    counters: Arc<Counters>,
    streams: Arc<EventStreams>,
) {
    let tmp = std::env::temp_dir();
    let dir = match MembersDir::create(&tmp) {
        Ok(dir) => {
            // Off the runtime thread (it is the gossip loop's too), and not waited for: the
            // clean-up reads the whole temporary directory.
            let own = dir.path().to_path_buf();
            tokio::task::spawn_blocking(move || MembersDir::remove_stale(&tmp, &own));
            Some(dir)
        }
        Err(error) => {
            warn!(%error, "no temporary directory: SHOAL_MEMBERS_FILE will not be set");
            None
        }
    };
    let mut workers = spawn_workers(&handlers.borrow_and_update(), &settings, &counters);
    let mut pending = Pending::default();
    let mut first_at: Option<Instant> = None;
    let mut last_at = Instant::now();
    loop {
        let flush_at = first_at.map(|first| (last_at + settings.coalesce).min(first + MAX_HOLD));
        let sleep = async move {
            match flush_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else {
                    flush(&mut pending, &workers, &node, dir.as_ref(), &counters).await;
                    return;
                };
                // The agent's own queries (key rotation): answered here, never shown to
                // handlers or streams.
                if let Event::Query(query) = &event
                    && query.name.starts_with(crate::keys::PREFIX)
                {
                    tokio::spawn(crate::keys::answer(query.clone(), node.clone()));
                    continue;
                }
                received(&event, &streams, &counters);
                match event {
                    Event::Member { kind, member } => merge(&mut pending.members, kind, member),
                    Event::User(user) if user.coalesce && !settings.coalesce.is_zero() => {
                        pending.users.add(user);
                    }
                    Event::User(user) => {
                        run_users(&[user], &workers, &node, dir.as_ref(), &counters).await;
                        continue;
                    }
                    Event::Query(query) => {
                        let limit = settings.timeout;
                        run_query(&query, &workers, &node, dir.as_ref(), &counters, limit).await;
                        continue;
                    }
                }
                last_at = Instant::now();
                first_at.get_or_insert(last_at);
                if settings.coalesce.is_zero() {
                    flush(&mut pending, &workers, &node, dir.as_ref(), &counters).await;
                    first_at = None;
                }
            }
            _ = sleep => {
                flush(&mut pending, &workers, &node, dir.as_ref(), &counters).await;
                first_at = None;
            }
            changed = handlers.changed() => {
                if changed.is_err() {
                    continue;
                }
                // Old workers finish what they queued, then stop when their sender drops.
                workers = spawn_workers(&handlers.borrow_and_update(), &settings, &counters);
            }
        }
    }
}

/// Counts `event` and hands it to the stream readers.
fn received(event: &Event, streams: &EventStreams, counters: &Counters) {
    let counter = match event {
        Event::Member { .. } => &counters.member_events,
        Event::User(_) => &counters.user_events,
        Event::Query(_) => &counters.query_events,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let closed = streams.publish(event);
    if closed > 0 {
        warn!(
            readers = closed,
            "a /v1/stream reader fell behind; closed its stream"
        );
    }
}

/// Per member the latest event wins, except that an update after a join stays a join, and a
/// failure followed by a join with the same name and tags is no event at all: the member only
/// renewed its identity (as every node does when a partition heals), it never went away.
fn merge(pending: &mut Vec<(MemberEventKind, Member)>, kind: MemberEventKind, member: Member) {
    let Some(i) = pending.iter().position(|(_, m)| m.addr == member.addr) else {
        pending.push((kind, member));
        return;
    };
    let (before, old) = &pending[i];
    if *before == MemberEventKind::Failed
        && kind == MemberEventKind::Join
        && old.name == member.name
        && old.tags == member.tags
    {
        pending.remove(i);
        return;
    }
    let keep_join = *before == MemberEventKind::Join && kind == MemberEventKind::Update;
    pending[i] = (
        if keep_join {
            MemberEventKind::Join
        } else {
            kind
        },
        member,
    );
}

/// Groups by kind in order of first appearance (one handler run per kind, as in Serf).
fn batches(pending: Vec<(MemberEventKind, Member)>) -> Vec<(MemberEventKind, Vec<Member>)> {
    let mut out: Vec<(MemberEventKind, Vec<Member>)> = Vec::new();
    for (kind, member) in pending {
        match out.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, list)) => list.push(member),
            None => out.push((kind, vec![member])),
        }
    }
    out
}

/// Events waiting for the quiet window to end.
#[derive(Default)]
struct Pending {
    members: Vec<(MemberEventKind, Member)>,
    users: UserPending,
}

async fn flush(
    pending: &mut Pending,
    workers: &[Worker],
    node: &NodeHandle,
    dir: Option<&MembersDir>,
    counters: &Counters,
) {
    let members = std::mem::take(&mut pending.members);
    let users = pending.users.take();
    if workers.is_empty() || (members.is_empty() && users.is_empty()) {
        return;
    }
    let (snapshot, file) = context(node, dir).await;
    for (kind, members) in batches(members) {
        let stdin = member_event_stdin(&members).into_bytes();
        for worker in workers.iter().filter(|w| w.spec.wants_member(kind)) {
            let job = Job {
                event: kind.as_str().to_string(),
                env: member_event_env(kind, &snapshot.local, &members, file.as_deref()),
                stdin: stdin.clone(),
                ..Job::default()
            };
            queue(worker, job, counters);
        }
    }
    queue_users(&users, workers, &snapshot.local, file.as_deref(), counters);
}

/// Runs user events now, outside the quiet window (sent with `--coalesce=false`).
async fn run_users(
    users: &[UserEvent],
    workers: &[Worker],
    node: &NodeHandle,
    dir: Option<&MembersDir>,
    counters: &Counters,
) {
    if workers.is_empty() {
        return;
    }
    let (snapshot, file) = context(node, dir).await;
    queue_users(users, workers, &snapshot.local, file.as_deref(), counters);
}

/// One run per user event for every handler whose filter wants its name.
fn queue_users(
    users: &[UserEvent],
    workers: &[Worker],
    local: &Member,
    file: Option<&Path>,
    counters: &Counters,
) {
    for user in users {
        if workers.iter().any(|w| w.spec.wants_user(&user.name)) {
            counters.user_handled.fetch_add(1, Ordering::Relaxed);
        }
        for worker in workers.iter().filter(|w| w.spec.wants_user(&user.name)) {
            let job = Job {
                event: format!("user:{}", user.name),
                env: user_event_env(user, local, file),
                stdin: user_event_stdin(user),
                ..Job::default()
            };
            queue(worker, job, counters);
        }
    }
}

/// Runs a query at once (queries are never coalesced) for every handler whose filter wants
/// its name; the first run that succeeds answers it ([`super::query::answer`]). Each run is
/// killed at the handler timeout or when the query's time is up, whichever comes first.
async fn run_query(
    query: &Query,
    workers: &[Worker],
    node: &NodeHandle,
    dir: Option<&MembersDir>,
    counters: &Counters,
    handler_timeout: Duration,
) {
    let wanted: Vec<&Worker> = workers
        .iter()
        .filter(|w| w.spec.wants_query(&query.name))
        .collect();
    if wanted.is_empty() {
        return;
    }
    let (snapshot, file) = context(node, dir).await;
    let timeout = Duration::from_millis(query.timeout_ms).min(handler_timeout);
    for worker in wanted {
        let (done, ran) = oneshot::channel();
        let job = Job {
            event: format!("query:{}", query.name),
            env: query_env(query, &snapshot.local, file.as_deref()),
            stdin: payload_stdin(&query.payload),
            timeout: Some(timeout),
            done: Some(done),
            ..Job::default()
        };
        queue(worker, job, counters);
        tokio::spawn(super::query::answer(
            node.clone(),
            query.ltime,
            query.id,
            ran,
        ));
    }
}

/// The view the runs see, and the members file written from it.
async fn context(node: &NodeHandle, dir: Option<&MembersDir>) -> (Arc<View>, Option<PathBuf>) {
    let snapshot = node.view();
    let file = match dir {
        Some(d) => write_members_file(d.path().join("members.json"), &snapshot).await,
        None => None,
    };
    (snapshot, file)
}

/// Queues `job` to `worker`, or drops it with a warning when the worker is behind.
fn queue(worker: &Worker, job: Job, counters: &Counters) {
    let event = job.event.clone();
    if worker.tx.try_send(job).is_err() {
        counters.dropped.fetch_add(1, Ordering::Relaxed);
        warn!(handler = %worker.spec.raw, %event, "handler is behind; event dropped");
    }
}

/// Writes the view to `path` atomically, off the runtime thread (it is also the gossip
/// loop's); returns the path.
async fn write_members_file(path: PathBuf, snapshot: &View) -> Option<PathBuf> {
    let json = match serde_json::to_vec_pretty(&view::members(snapshot)) {
        Ok(json) => json,
        Err(error) => {
            warn!(%error, "could not encode the members file");
            return None;
        }
    };
    let target = path.clone();
    let result =
        tokio::task::spawn_blocking(move || shoal_core::fs::write_atomically(&target, &json)).await;
    match result {
        Ok(Ok(())) => Some(path),
        Ok(Err(error)) => {
            warn!(%error, path = %path.display(), "could not write the members file");
            None
        }
        Err(error) => {
            warn!(%error, "members file writer failed");
            None
        }
    }
}

fn spawn_workers(
    specs: &[HandlerSpec],
    settings: &Settings,
    counters: &Arc<Counters>,
) -> Vec<Worker> {
    specs
        .iter()
        .map(|spec| {
            let (tx, mut rx) = mpsc::channel::<Job>(QUEUE_PER_HANDLER);
            let script = spec.script.clone();
            let timeout = settings.timeout;
            let counters = counters.clone();
            tokio::spawn(async move {
                while let Some(job) = rx.recv().await {
                    let outcome = shell::run(&script, job, timeout).await;
                    counters.runs.fetch_add(1, Ordering::Relaxed);
                    if outcome == Outcome::TimedOut {
                        counters.timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            Worker {
                spec: spec.clone(),
                tx,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::Status;

    fn m(port: u16, status: Status) -> Member {
        Member {
            name: format!("n{port}"),
            addr: ([127, 0, 0, 1], port).into(),
            generation: 1,
            tags: Default::default(),
            role: Default::default(),
            status,
        }
    }

    #[test]
    fn latest_event_per_member_wins_but_join_stays_join() {
        let mut p = Vec::new();
        merge(&mut p, MemberEventKind::Join, m(1, Status::Alive));
        merge(&mut p, MemberEventKind::Update, m(1, Status::Alive));
        merge(&mut p, MemberEventKind::Failed, m(2, Status::Failed));
        merge(&mut p, MemberEventKind::Leave, m(2, Status::Left));
        merge(&mut p, MemberEventKind::Join, m(3, Status::Alive));
        merge(&mut p, MemberEventKind::Failed, m(4, Status::Failed));
        merge(&mut p, MemberEventKind::Join, m(4, Status::Alive));
        let b = batches(p);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].0, MemberEventKind::Join);
        assert_eq!(
            b[0].1.iter().map(|m| m.addr.port()).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(b[1].0, MemberEventKind::Leave);
    }
}
