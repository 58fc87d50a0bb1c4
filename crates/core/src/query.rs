//! Queries (`shoal query NAME PAYLOAD`), as Serf has them: the gossiped [`Query`], the
//! [`QueryResponse`] datagram that carries acks and answers back to the origin, the filters
//! that pick which members answer, and [`Queries`], the query clock and the buffer of recent
//! query ids that makes every member handle a query once.
//!
//! Rules (Serf's `handleQuery`):
//! - every query carries the origin's query Lamport time (its own clock, apart from the
//!   user-event clock); receiving one witnesses it;
//! - a query is a duplicate when one with the same `(ltime, id)` is in the buffer;
//! - queries older than [`QUERY_WINDOW`] ticks behind the clock are dropped as too old, and
//!   those before the minimum time (past everything a restarted node handled, from its
//!   snapshot) are dropped too;
//! - only members whose name and tags pass the filters ack, run their handlers and answer.
//!
//! It lives in the rules layer for the reason [`crate::user_event`] does: foca's broadcast
//! handler decides while it decodes an item whether it is news to forward.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use regex_lite::Regex;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::lamport::{Admit, LamportClock, Recent};

/// Largest name + payload + filter texts of a query, in bytes (Serf's query size limit).
/// The encoded query stays well inside one datagram.
pub const MAX_QUERY_LEN: usize = 1024;
/// Largest answer (a handler's stdout), in bytes (Serf's response size limit). An answer
/// travels in one UDP datagram; a handler that prints more gives no answer.
pub const MAX_RESPONSE_LEN: usize = 1024;
/// Most members an answer may be relayed through (`--relay-factor`; Serf's limit).
pub const MAX_RELAY_FACTOR: u8 = 5;
/// Longest query timeout accepted.
pub const MAX_QUERY_TIMEOUT_MS: u64 = 3_600_000;
/// How many Lamport ticks of query ids are remembered (Serf's default query buffer).
pub const QUERY_WINDOW: u64 = 512;

/// Picks the members that answer a query. Every filter must pass; see [`matches`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryFilter {
    /// The member's name matches one of these regular expressions (anchored).
    Nodes(Vec<String>),
    /// The member has tag `key` and its value matches `re` (anchored).
    Tag {
        /// The tag key.
        key: String,
        /// The regular expression its value must match.
        re: String,
    },
}

impl QueryFilter {
    fn text_len(&self) -> usize {
        match self {
            QueryFilter::Nodes(res) => res.iter().map(String::len).sum(),
            QueryFilter::Tag { key, re } => key.len() + re.len(),
        }
    }
}

/// One query, as gossiped to every member and handed to the matching members' handlers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// The origin's query Lamport time for it.
    pub ltime: u64,
    /// Random, so two queries at one Lamport time differ.
    pub id: u64,
    /// Its name (`query:NAME` handlers match it).
    pub name: String,
    /// Opaque payload, given to handlers on stdin.
    pub payload: Vec<u8>,
    /// Who answers; empty: every member.
    pub filters: Vec<QueryFilter>,
    /// The origin's gossip address: acks and answers go there.
    pub origin: SocketAddr,
    /// How long the origin waits, in milliseconds; members do not answer later than this
    /// after they received it.
    pub timeout_ms: u64,
    /// The origin wants an ack from every matching member as it receives the query.
    pub ack: bool,
    /// Each answer is also sent through this many random members (for lossy paths).
    pub relay_factor: u8,
}

/// An ack or an answer to a query: the payload of a [`crate::envelope::Kind::QueryResponse`]
/// datagram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryResponse {
    /// The query's Lamport time.
    pub ltime: u64,
    /// The query's id.
    pub id: u64,
    /// The answering member's name.
    pub from: String,
    /// An ack (no payload) rather than an answer.
    pub ack: bool,
    /// The answer (a handler's stdout).
    pub payload: Vec<u8>,
    /// Set on the copies sent through relays: the relay forwards it there (the origin),
    /// cleared.
    pub relay_to: Option<SocketAddr>,
}

/// A query that cannot be sent, or an answer that cannot be given. Nothing was sent and the
/// clock did not move.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum QueryError {
    /// The name is empty.
    #[error("query name is empty")]
    EmptyName,
    /// Name, payload and filters over [`MAX_QUERY_LEN`].
    #[error("query name, payload and filters take {0} bytes; the limit is {MAX_QUERY_LEN}")]
    TooLarge(usize),
    /// A filter's regular expression does not compile.
    #[error("invalid {what} regular expression {re:?}: {error}")]
    BadRegex {
        /// `node` or `tag KEY`.
        what: String,
        /// The expression.
        re: String,
        /// The compiler's message.
        error: String,
    },
    /// A tag filter with an empty key.
    #[error("a tag filter needs a key")]
    EmptyTagKey,
    /// Relay factor over [`MAX_RELAY_FACTOR`].
    #[error("relay factor {0} is over the limit of {MAX_RELAY_FACTOR}")]
    RelayFactor(u8),
    /// Timeout zero or over [`MAX_QUERY_TIMEOUT_MS`].
    #[error("query timeout of {0} ms is out of range (1 ms to {MAX_QUERY_TIMEOUT_MS} ms)")]
    Timeout(u64),
    /// An answer over [`MAX_RESPONSE_LEN`].
    #[error("answer of {0} bytes is over the limit of {MAX_RESPONSE_LEN}")]
    ResponseTooLarge(usize),
    /// This node is not answering that query: it never got it, it does not match, or the
    /// query's time is up.
    #[error("no such query to answer (unknown, not for this node, or timed out)")]
    NotAnswering,
    /// This node already answered that query (a member answers once).
    #[error("this query was already answered")]
    Answered,
}

/// `^(?:re)$`, as every shoal filter is anchored.
fn anchored(what: impl Fn() -> String, re: &str) -> Result<Regex, QueryError> {
    Regex::new(&format!("^(?:{re})$")).map_err(|e| QueryError::BadRegex {
        what: what(),
        re: re.to_string(),
        error: e.to_string(),
    })
}

/// Checks a query's name, payload, filters, timeout and relay factor against the limits.
pub fn validate(query: &Query) -> Result<(), QueryError> {
    if query.name.is_empty() {
        return Err(QueryError::EmptyName);
    }
    let size = query.name.len()
        + query.payload.len()
        + query
            .filters
            .iter()
            .map(QueryFilter::text_len)
            .sum::<usize>();
    if size > MAX_QUERY_LEN {
        return Err(QueryError::TooLarge(size));
    }
    if query.relay_factor > MAX_RELAY_FACTOR {
        return Err(QueryError::RelayFactor(query.relay_factor));
    }
    if query.timeout_ms == 0 || query.timeout_ms > MAX_QUERY_TIMEOUT_MS {
        return Err(QueryError::Timeout(query.timeout_ms));
    }
    for filter in &query.filters {
        match filter {
            QueryFilter::Nodes(res) => {
                for re in res {
                    anchored(|| "node".into(), re)?;
                }
            }
            QueryFilter::Tag { key, .. } if key.is_empty() => return Err(QueryError::EmptyTagKey),
            QueryFilter::Tag { key, re } => {
                anchored(|| format!("tag {key}"), re)?;
            }
        }
    }
    Ok(())
}

/// Whether a member named `name` with `tags` passes every filter. A filter that does not
/// compile passes nobody ([`validate`] refuses such queries before they are sent).
pub fn matches(filters: &[QueryFilter], name: &str, tags: &BTreeMap<String, String>) -> bool {
    filters.iter().all(|filter| match filter {
        QueryFilter::Nodes(res) => res
            .iter()
            .any(|re| anchored(String::new, re).is_ok_and(|r| r.is_match(name))),
        QueryFilter::Tag { key, re } => tags
            .get(key)
            .is_some_and(|v| anchored(String::new, re).is_ok_and(|r| r.is_match(v))),
    })
}

/// The node's query clock and the ids of recent queries. See the module docs.
#[derive(Debug)]
pub struct Queries {
    /// Serf's `queryClock`: its time is the Lamport time the next own query gets.
    pub clock: LamportClock,
    /// Ids of recent queries, within [`QUERY_WINDOW`] of the clock.
    recent: Recent<u64>,
    /// Queries accepted since the last [`Self::take_new`], oldest first.
    fresh: Vec<Query>,
}

impl Default for Queries {
    fn default() -> Self {
        Self::restored(None)
    }
}

impl Queries {
    /// The state of a node that restarted having handled every query up to `ltime` (from its
    /// snapshot); `None`: a new node.
    pub fn restored(ltime: Option<u64>) -> Self {
        let mut clock = LamportClock::default();
        let recent = Recent::restored(QUERY_WINDOW, ltime, &mut clock);
        Self {
            clock,
            recent,
            fresh: Vec::new(),
        }
    }

    /// The newest Lamport time that must never be handled again here; what the snapshot keeps.
    pub fn done_up_to(&self) -> Option<u64> {
        self.recent.done_up_to()
    }

    /// A query arrived (or was sent here). True when it is news: it is then queued
    /// ([`Self::take_new`]) and should be forwarded.
    pub fn receive(&mut self, query: Query) -> bool {
        self.clock.witness(query.ltime);
        let id = query.id;
        match self.recent.admit(self.clock, query.ltime, id, |x| *x == id) {
            Admit::New => {
                self.fresh.push(query);
                true
            }
            Admit::Known => false,
            Admit::TooOld => {
                tracing::debug!(name = %query.name, ltime = query.ltime,
                    clock = self.clock.time(), "dropping a query older than the query buffer");
                false
            }
        }
    }

    /// Queries accepted since the last call, oldest first.
    pub fn take_new(&mut self) -> Vec<Query> {
        std::mem::take(&mut self.fresh)
    }
}

/// What the origin of a query learns, in order: acks and answers as they arrive, then
/// [`QueryUpdate::Done`] once (the stream then ends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryUpdate {
    /// Member `from` received the query (and passes the filters).
    Ack {
        /// The member's name.
        from: String,
    },
    /// Member `from` answered.
    Response {
        /// The member's name.
        from: String,
        /// Its answer.
        payload: Vec<u8>,
    },
    /// The query is over: every expected member answered, or its time is up.
    Done {
        /// True when the timeout ended it.
        timed_out: bool,
    },
}

/// What the origin knows once its query is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryStarted {
    /// The query's Lamport time.
    pub ltime: u64,
    /// The query's id.
    pub id: u64,
    /// How long it waits, in milliseconds.
    pub timeout_ms: u64,
    /// The members that pass the filters in the origin's view (alive or suspect), by name:
    /// the query ends as soon as all of them answered. Empty: nothing was sent.
    pub expected: Vec<String>,
}

/// What the origin asks ([`crate::NodeHandle::query`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueryParams {
    /// The query's name.
    pub name: String,
    /// Given to the handlers on stdin.
    pub payload: Vec<u8>,
    /// Who answers.
    pub filters: Vec<QueryFilter>,
    /// How long to wait, in milliseconds; `None`: the profile's default for the cluster size
    /// ([`crate::profile::Timings::query_timeout`]).
    pub timeout_ms: Option<u64>,
    /// Ask every matching member for an ack.
    pub ack: bool,
    /// Relay each answer through this many random members too.
    pub relay_factor: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(ltime: u64, id: u64) -> Query {
        Query {
            ltime,
            id,
            name: "swarm-token".into(),
            payload: Vec::new(),
            filters: Vec::new(),
            origin: "127.0.0.1:1".parse().expect("addr"),
            timeout_ms: 1000,
            ack: true,
            relay_factor: 0,
        }
    }

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_query_is_news_once_by_ltime_and_id_and_the_clock_witnesses_it() {
        let mut q = Queries::default();
        assert!(q.receive(query(5, 1)));
        assert!(!q.receive(query(5, 1)), "re-gossiped copy");
        assert!(q.receive(query(5, 2)), "another query at the same time");
        assert_eq!(q.clock.time(), 6);
        assert_eq!(q.clock.tick(), 6);
        assert_eq!(q.take_new().len(), 2);
        assert!(q.take_new().is_empty());
        q.clock.catch_up(3);
        assert_eq!(q.clock.time(), 7);
    }

    #[test]
    fn queries_older_than_the_window_or_handled_before_a_restart_are_dropped() {
        let mut q = Queries::default();
        assert!(q.receive(query(1000, 1)));
        assert!(!q.receive(query(1000 - QUERY_WINDOW - 1, 2)), "too old");
        assert!(
            q.receive(query(1000 - QUERY_WINDOW + 10, 3)),
            "inside the window"
        );
        let mut restarted = Queries::restored(q.done_up_to());
        assert_eq!(restarted.done_up_to(), Some(1000));
        assert!(restarted.clock.tick() > 1000, "own queries come after");
        assert!(
            !restarted.receive(query(1000, 1)),
            "handled before the restart"
        );
        assert!(restarted.receive(query(1002, 4)));
    }

    #[test]
    fn filters_are_anchored_nodes_match_any_and_tags_must_all_match() {
        let managers = vec![QueryFilter::Tag {
            key: "role".into(),
            re: "manager".into(),
        }];
        assert!(matches(&managers, "m1", &tags(&[("role", "manager")])));
        assert!(!matches(&managers, "m1", &tags(&[("role", "managers")])));
        assert!(!matches(&managers, "w1", &tags(&[])));
        let nodes = vec![QueryFilter::Nodes(vec!["m1".into(), "w.*".into()])];
        assert!(matches(&nodes, "m1", &tags(&[])));
        assert!(matches(&nodes, "w7", &tags(&[])));
        assert!(!matches(&nodes, "m12", &tags(&[])));
        let both = [nodes, managers].concat();
        assert!(!matches(&both, "w7", &tags(&[])));
        assert!(matches(&[], "anyone", &tags(&[])));
    }

    #[test]
    fn bad_queries_are_refused_with_the_reason_and_the_limit() {
        let mut q = query(0, 1);
        assert_eq!(validate(&q), Ok(()));
        q.filters = vec![QueryFilter::Nodes(vec!["(".into()])];
        let err = validate(&q).expect_err("bad regex").to_string();
        assert!(
            err.starts_with("invalid node regular expression \"(\""),
            "{err}"
        );
        q.filters.clear();
        q.payload = vec![b'x'; 2000];
        assert_eq!(
            validate(&q).expect_err("too large").to_string(),
            "query name, payload and filters take 2011 bytes; the limit is 1024"
        );
        q.payload.clear();
        q.relay_factor = 6;
        assert_eq!(validate(&q), Err(QueryError::RelayFactor(6)));
        q.relay_factor = 0;
        q.timeout_ms = 0;
        assert_eq!(validate(&q), Err(QueryError::Timeout(0)));
        q.timeout_ms = 1;
        q.name.clear();
        assert_eq!(validate(&q), Err(QueryError::EmptyName));
    }
}
