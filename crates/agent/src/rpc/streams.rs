//! The commands whose first answer is followed by records with the same sequence number:
//! `stream` (events), `monitor` (log lines) and `query` (acks, answers, then `done`), and
//! `stop` and `respond`, which act on them.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rmpv::Value;
use shoal_core::{QueryFilter, QueryParams, QueryUpdate};
use shoal_proto::{MonitorFormat, MonitorLevel};
use tokio::io::AsyncRead;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tracing::{debug, warn};

use super::records::{self, QUERY_ID, QUERY_LTIME, QUERY_TIMEOUT_MS};
use super::wire::{self, answer, map};
use super::{Conn, PendingQueries, Task, errors};
use crate::stream::events::StreamFilter;
use crate::stream::fanout::LineStream;
use crate::stream::monitor::MonitorKey;

impl<R: AsyncRead + Unpin> Conn<R> {
    /// A place under the agent's cap on open streams (shared with `/v1/stream` and
    /// `/v1/monitor`), or the answer's error.
    fn slot(&self) -> Result<OwnedSemaphorePermit, String> {
        self.rpc
            .control
            .stream_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                format!(
                    "{} streams (stream and monitor, RPC and HTTP together) are open; close one first",
                    crate::control::MAX_STREAMS
                )
            })
    }

    pub(super) fn stream(&mut self, seq: u64, body: &Value) -> Bytes {
        let filter = wire::string(body, "Type")
            .ok()
            .and_then(|t| StreamFilter::parse(Some(&t)).ok());
        let Some(filter) = filter else {
            return answer(seq, errors::INVALID_FILTER, None);
        };
        if self.streams.contains_key(&seq) {
            return answer(seq, errors::STREAM_EXISTS, None);
        }
        let permit = match self.slot() {
            Ok(permit) => permit,
            Err(e) => return answer(seq, &e, None),
        };
        let lines = self
            .rpc
            .control
            .events
            .subscribe_rpc(filter, records::event, permit);
        let (out, pending, peer) = (self.out.clone(), self.pending.clone(), self.peer.clone());
        // The first answer is queued before the task can queue a record: one writer, in order.
        let ok = answer(seq, "", None);
        let task = tokio::spawn(forward_events(lines, seq, out, pending, peer));
        self.streams.insert(seq, Task(task));
        ok
    }

    pub(super) fn monitor(&mut self, seq: u64, body: &Value) -> Bytes {
        let word = wire::string(body, "LogLevel").unwrap_or_default();
        let Some(level) = MonitorLevel::parse(&word) else {
            return answer(
                seq,
                &format!("Unknown log level: {}", word.to_uppercase()),
                None,
            );
        };
        if self.monitor.is_some() {
            return answer(seq, errors::MONITOR_EXISTS, None);
        }
        let permit = match self.slot() {
            Ok(permit) => permit,
            Err(e) => return answer(seq, &e, None),
        };
        let key = MonitorKey {
            format: MonitorFormat::Text,
            level,
        };
        let lines = self.rpc.control.monitors.subscribe(key, permit);
        let task = tokio::spawn(forward_logs(lines, seq, self.out.clone()));
        self.monitor = Some((seq, Task(task)));
        answer(seq, "", None)
    }

    /// `stop`: ends the stream or monitor opened with sequence number `Stop`; always
    /// succeeds, as in Serf.
    pub(super) fn stop(&mut self, seq: u64, body: &Value) -> Bytes {
        if let Ok(stop) = wire::uint(body, "Stop") {
            self.streams.remove(&stop);
            if self.monitor.as_ref().is_some_and(|(s, _)| *s == stop) {
                self.monitor = None;
            }
        }
        answer(seq, "", None)
    }

    pub(super) async fn query(&mut self, seq: u64, body: &Value) -> Bytes {
        let params = match query_params(body) {
            Ok(params) => params,
            Err(e) => return answer(seq, &format!("invalid request: {e}"), None),
        };
        let (started, updates) = match self.rpc.control.node.query(params).await {
            Ok(sent) => sent,
            Err(e) => return answer(seq, &e.to_string(), None),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(started.timeout_ms);
        self.queries.retain(|t| !t.0.is_finished());
        let task = tokio::spawn(forward_query(updates, deadline, seq, self.out.clone()));
        self.queries.push(Task(task));
        answer(seq, "", None)
    }

    pub(super) async fn respond(&mut self, seq: u64, body: &Value) -> Bytes {
        let (id, payload) = match (wire::uint(body, "ID"), wire::bytes(body, "Payload")) {
            (Ok(id), Ok(payload)) => (id, payload),
            (Err(e), _) | (_, Err(e)) => {
                return answer(seq, &format!("invalid request: {e}"), None);
            }
        };
        let pending = lock(&self.pending).take(id);
        let Some(query) = pending else {
            return answer(seq, errors::INVALID_QUERY_ID, None);
        };
        let sent = self
            .rpc
            .control
            .node
            .respond_query(query.ltime, query.id, payload)
            .await;
        answer(
            seq,
            &sent.err().map(|e| e.to_string()).unwrap_or_default(),
            None,
        )
    }
}

fn lock(pending: &Mutex<PendingQueries>) -> std::sync::MutexGuard<'_, PendingQueries> {
    // Every change under the lock is one insert, retain or remove: a panic leaves it whole.
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serf's `queryRequest` as the engine's query.
fn query_params(body: &Value) -> Result<QueryParams, String> {
    let mut filters = Vec::new();
    let nodes = wire::strings(body, "FilterNodes")?;
    if !nodes.is_empty() {
        filters.push(QueryFilter::Nodes(nodes));
    }
    filters.extend(
        wire::string_map(body, "FilterTags")?
            .into_iter()
            .map(|(key, re)| QueryFilter::Tag { key, re }),
    );
    let timeout_ns = wire::int(body, "Timeout")?;
    let relay_factor = u8::try_from(wire::uint(body, "RelayFactor")?)
        .map_err(|_| "RelayFactor must be at most 255".to_string())?;
    Ok(QueryParams {
        name: wire::string(body, "Name")?,
        payload: wire::bytes(body, "Payload")?,
        filters,
        // Go's time.Duration is in nanoseconds; 0 (unset) takes the agent's default.
        timeout_ms: (timeout_ns > 0).then(|| (timeout_ns as u64).div_ceil(1_000_000)),
        ack: wire::boolean(body, "RequestAck")?,
        relay_factor,
    })
}

/// A query's acks and answers as records, then `done` at the query's timeout, as Serf sends
/// it (shoal's query may end sooner, when every member answered; Serf's clients stop reading
/// at `done` and may drop an answer that arrived just before it).
async fn forward_query(
    mut updates: mpsc::Receiver<QueryUpdate>,
    deadline: tokio::time::Instant,
    seq: u64,
    out: mpsc::Sender<Bytes>,
) {
    while let Some(update) = updates.recv().await {
        let record = match update {
            QueryUpdate::Ack { from } => records::query_record("ack", &from, None),
            QueryUpdate::Response { from, payload } => {
                records::query_record("response", &from, Some(payload))
            }
            QueryUpdate::Done { .. } => break,
        };
        if out.send(answer(seq, "", Some(&record))).await.is_err() {
            return;
        }
    }
    tokio::time::sleep_until(deadline).await;
    let done = records::query_record("done", "", None);
    let _ = out.send(answer(seq, "", Some(&done))).await;
}

/// Events as records; a query record gets this connection's id for `respond`.
async fn forward_events(
    mut lines: LineStream,
    seq: u64,
    out: mpsc::Sender<Bytes>,
    pending: Arc<Mutex<PendingQueries>>,
    peer: String,
) {
    while let Some(line) = lines.next().await {
        if line.is_empty() {
            warn!(%peer, "RPC event stream closed: the client fell behind");
            return;
        }
        let Some(mut record) = wire::decode(&line) else {
            continue;
        };
        give_query_id(&mut record, &pending);
        if out.send(answer(seq, "", Some(&record))).await.is_err() {
            return;
        }
    }
    debug!(%peer, "RPC event stream ended");
}

/// Replaces a query record's internal fields by the `ID` this connection answers with.
fn give_query_id(record: &mut Value, pending: &Mutex<PendingQueries>) {
    let Value::Map(entries) = record else {
        return;
    };
    let take = |entries: &mut Vec<(Value, Value)>, name: &str| {
        let at = entries.iter().position(|(k, _)| k.as_str() == Some(name))?;
        entries.remove(at).1.as_u64()
    };
    let (Some(ltime), Some(id), Some(timeout_ms)) = (
        take(entries, QUERY_LTIME),
        take(entries, QUERY_ID),
        take(entries, QUERY_TIMEOUT_MS),
    ) else {
        return;
    };
    let client_id = lock(pending).register(ltime, id, Duration::from_millis(timeout_ms));
    if let Some((_, v)) = entries.iter_mut().find(|(k, _)| k.as_str() == Some("ID")) {
        *v = Value::from(client_id);
    }
}

/// Log lines as `{Log: line}` records.
async fn forward_logs(mut lines: LineStream, seq: u64, out: mpsc::Sender<Bytes>) {
    while let Some(line) = lines.next().await {
        let text = String::from_utf8_lossy(&line);
        let record = map([("Log", Value::from(text.trim_end_matches(['\n', '\r'])))]);
        if out.send(answer(seq, "", Some(&record))).await.is_err() {
            return;
        }
    }
}
