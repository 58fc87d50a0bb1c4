//! The RPC commands answered at once: each calls what the HTTP control API calls.

use std::collections::BTreeMap;

use bytes::Bytes;
use rmpv::Value;
use shoal_core::{CommandError, Member};
use tracing::info;

use super::keys::{self, KeyOp};
use super::records;
use super::wire::{self, answer, map};
use crate::control::{ControlState, TagsError};

/// Every command of Serf's RPC protocol.
pub const KNOWN: &[&str] = &[
    "handshake",
    "auth",
    "event",
    "force-leave",
    "join",
    "members",
    "members-filtered",
    "stream",
    "monitor",
    "stop",
    "leave",
    "install-key",
    "use-key",
    "remove-key",
    "list-keys",
    "tags",
    "query",
    "respond",
    "stats",
    "get-coordinate",
];

/// A bad field, as the answer's error.
fn bad(seq: u64, message: String, body: Option<&Value>) -> Bytes {
    answer(seq, &format!("invalid request: {message}"), body)
}

/// The answer of the commands without a stream (those [`super::Conn`] does not handle
/// itself).
pub async fn run(st: &ControlState, command: &str, seq: u64, body: &Value) -> Bytes {
    match command {
        "event" => event(st, seq, body).await,
        "force-leave" => force_leave(st, seq, body).await,
        "join" => join(st, seq, body).await,
        "members" => members(st, seq, None),
        "members-filtered" => members(st, seq, Some(body)),
        "tags" => tags(st, seq, body).await,
        "install-key" | "use-key" | "remove-key" | "list-keys" => key(st, command, seq, body).await,
        "stats" => stats(st, seq),
        "get-coordinate" => coordinate(seq),
        // `Conn::request` lets through only the commands above and its own.
        _ => answer(seq, super::errors::UNSUPPORTED_COMMAND, None),
    }
}

fn error_text(result: Result<(), CommandError>) -> String {
    result.err().map(|e| e.to_string()).unwrap_or_default()
}

async fn event(st: &ControlState, seq: u64, body: &Value) -> Bytes {
    let (name, payload, coalesce) = match (
        wire::string(body, "Name"),
        wire::bytes(body, "Payload"),
        wire::boolean(body, "Coalesce"),
    ) {
        (Ok(n), Ok(p), Ok(c)) => (n, p, c),
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => return bad(seq, e, None),
    };
    let sent = st.node.user_event(name, payload, coalesce).await;
    answer(seq, &error_text(sent.map(drop)), None)
}

async fn force_leave(st: &ControlState, seq: u64, body: &Value) -> Bytes {
    let node = match wire::string(body, "Node") {
        Ok(node) => node,
        Err(e) => return bad(seq, e, None),
    };
    if wire::boolean(body, "Prune").unwrap_or(false) {
        return answer(
            seq,
            "shoal has no -prune: a force-left member is removed after --tombstone-timeout",
            None,
        );
    }
    answer(seq, &error_text(st.node.force_leave(node).await), None)
}

async fn join(st: &ControlState, seq: u64, body: &Value) -> Bytes {
    let num = |n: usize| map([("Num", Value::from(n as i64))]);
    let (existing, replay) = match (
        wire::strings(body, "Existing"),
        wire::boolean(body, "Replay"),
    ) {
        (Ok(e), Ok(r)) => (e, r),
        (Err(e), _) | (_, Err(e)) => return bad(seq, e, Some(&num(0))),
    };
    if existing.is_empty() {
        return answer(seq, "no addresses to join", Some(&num(0)));
    }
    match st.node.join(existing, replay).await {
        Ok(joined) => answer(seq, "", Some(&num(joined))),
        Err(e) => answer(seq, &e.to_string(), Some(&num(0))),
    }
}

/// `members` and `members-filtered` (tags, status and name are anchored regular
/// expressions, as in Serf).
fn members(st: &ControlState, seq: u64, filter: Option<&Value>) -> Bytes {
    let view = st.node.view();
    let list = |members: Vec<&Member>| {
        map([(
            "Members",
            Value::Array(members.into_iter().map(records::member).collect()),
        )])
    };
    let filter = match filter.map(MemberFilter::parse).transpose() {
        Ok(filter) => filter,
        Err(e) => return answer(seq, &e, Some(&list(Vec::new()))),
    };
    let chosen = view
        .members
        .iter()
        .filter(|m| filter.as_ref().is_none_or(|f| f.wants(m)))
        .collect();
    answer(seq, "", Some(&list(chosen)))
}

/// A `members-filtered` request, compiled.
struct MemberFilter {
    tags: Vec<(String, regex_lite::Regex)>,
    status: Option<regex_lite::Regex>,
    name: Option<regex_lite::Regex>,
}

impl MemberFilter {
    fn parse(body: &Value) -> Result<Self, String> {
        let anchored = |expr: &str| {
            regex_lite::Regex::new(&format!("^(?:{expr})$"))
                .map_err(|e| format!("Failed to compile regex: {e}"))
        };
        let optional = |expr: String| match expr.is_empty() {
            true => Ok(None),
            false => anchored(&expr).map(Some),
        };
        let tags = wire::string_map(body, "Tags")?
            .into_iter()
            .map(|(k, re)| anchored(&re).map(|re| (k, re)))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            tags,
            status: optional(wire::string(body, "Status")?)?,
            name: optional(wire::string(body, "Name")?)?,
        })
    }

    fn wants(&self, m: &Member) -> bool {
        self.tags
            .iter()
            .all(|(k, re)| re.is_match(m.tags.get(k).map_or("", String::as_str)))
            && self
                .status
                .as_ref()
                .is_none_or(|re| re.is_match(records::status(m.status)))
            && self.name.as_ref().is_none_or(|re| re.is_match(&m.name))
    }
}

async fn tags(st: &ControlState, seq: u64, body: &Value) -> Bytes {
    let (set, delete) = match (
        wire::string_map(body, "Tags"),
        wire::strings(body, "DeleteTags"),
    ) {
        (Ok(s), Ok(d)) => (s, d),
        (Err(e), _) | (_, Err(e)) => return bad(seq, e, None),
    };
    let error = match crate::control::change_tags(st, set, delete).await {
        Ok(_) => String::new(),
        Err(TagsError::Bad(message) | TagsError::NotSaved(message)) => message,
        Err(TagsError::Command(e)) => e.to_string(),
    };
    answer(seq, &error, None)
}

async fn key(st: &ControlState, command: &str, seq: u64, body: &Value) -> Bytes {
    let key = wire::string(body, "Key").unwrap_or_default();
    let op = match command {
        "install-key" => KeyOp::Install(key),
        "use-key" => KeyOp::Use(key),
        "remove-key" => KeyOp::Remove(key),
        _ => KeyOp::List,
    };
    info!(command, "RPC key command");
    let reply = keys::run(op, &st.node, &st.name).await;
    answer(seq, &reply.error, Some(&reply.body()))
}

/// `stats` (`serf info`): Serf's sections, each a map of strings.
fn stats(st: &ControlState, seq: u64) -> Bytes {
    // The same numbers as `GET /v1/info` and `shoal info`, in Serf's sections.
    let info = crate::control::info::info(st);
    let section = |pairs: Vec<(&str, String)>| {
        Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (Value::from(k), Value::from(v)))
                .collect(),
        )
    };
    let (r, sf, s) = (&info.runtime, &info.serf, &info.stats);
    let handlers: BTreeMap<String, String> = info
        .handlers
        .iter()
        .map(|h| (h.script.clone(), h.filter.clone()))
        .collect();
    let body = map([
        ("agent", section(vec![("name", info.agent.name.clone())])),
        (
            "runtime",
            section(vec![
                ("os", r.os.clone()),
                ("arch", r.arch.clone()),
                ("version", r.version.clone()),
                ("cpu_count", r.cpu_count.to_string()),
            ]),
        ),
        (
            "serf",
            section(vec![
                ("members", sf.members.to_string()),
                ("failed", sf.failed.to_string()),
                ("left", sf.left.to_string()),
                ("health_score", sf.health_score.to_string()),
                ("encrypted", sf.encrypted.to_string()),
                ("event_time", sf.event_time.to_string()),
                ("query_time", sf.query_time.to_string()),
                ("packets_in", s.packets_in.to_string()),
                ("packets_out", s.packets_out.to_string()),
                ("push_pulls", s.push_pulls.to_string()),
            ]),
        ),
        ("tags", wire::string_map_value(&info.agent.tags)),
        ("event_handlers", wire::string_map_value(&handlers)),
    ]);
    answer(seq, "", Some(&body))
}

/// `get-coordinate`: shoal keeps no network coordinates, so the answer is Serf's for a node
/// without one (`Ok` false; `serf rtt` says it could not find a coordinate).
fn coordinate(seq: u64) -> Bytes {
    let coord = map([
        ("Adjustment", Value::F64(0.0)),
        ("Error", Value::F64(0.0)),
        ("Height", Value::F64(0.0)),
        ("Vec", Value::Nil),
    ]);
    answer(
        seq,
        "",
        Some(&map([("Coord", coord), ("Ok", Value::from(false))])),
    )
}

/// `leave`: leaves the cluster; the caller then stops the agent.
pub async fn leave(st: &ControlState, seq: u64) -> Bytes {
    info!("RPC leave: leaving the cluster");
    answer(seq, &error_text(st.node.leave().await), None)
}
