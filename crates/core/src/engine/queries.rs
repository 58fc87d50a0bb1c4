//! Queries in the engine: sending one (`shoal query`) and collecting its acks and answers at
//! the origin ([`Asking`]), and, on every member, acking a query whose filters it passes and
//! sending its handler's answer back ([`Answering`]).
//!
//! The origin knows whom to expect: the members of its own view (alive or suspect) that pass
//! the filters. The query ends as soon as all of them answered, or at its timeout (a timer);
//! then the origin's stream gets [`QueryUpdate::Done`] and closes. Acks and answers from one
//! member count once (relayed copies are dropped). A member answers once, and only until the
//! query's timeout has passed since it received it.
//!
//! Answers go to the query's origin address only when that address is a live member foca
//! knows (or this node itself), and relays forward only to such a member: no payload makes a
//! node send to an address on its own (DESIGN's rule for beacons and digests).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::RngExt;
use tokio::sync::mpsc;
use tracing::debug;

use super::Engine;
use super::ticks::Tick;
use crate::broadcast::{Broadcast, lock};
use crate::envelope::{self, Kind};
use crate::error::CommandError;
use crate::membership::{Event, Status};
use crate::query::{
    self, MAX_RESPONSE_LEN, Query, QueryError, QueryParams, QueryResponse, QueryStarted,
    QueryUpdate,
};

/// `(ltime, id)`: what names a query.
type Key = (u64, u64);

/// At most this many queries are answered at once here; the oldest is forgotten past it.
const MAX_ANSWERING: usize = 1024;

/// A query this node sent and is collecting answers for.
#[derive(Debug)]
pub(crate) struct Asking {
    /// Members expected to answer (by name).
    expected: BTreeSet<String>,
    acks: BTreeSet<String>,
    responses: BTreeSet<String>,
    /// Where acks and answers go. Bounded by the caller; a full stream drops the update
    /// (logged): the owner never waits.
    updates: mpsc::Sender<QueryUpdate>,
}

/// A query this node passes the filters of and may still answer.
#[derive(Debug)]
struct Answering {
    origin: SocketAddr,
    relay_factor: u8,
    deadline: Instant,
    answered: bool,
}

/// Both sides of the queries of one node.
#[derive(Debug, Default)]
pub(crate) struct QueryState {
    asking: BTreeMap<Key, Asking>,
    answering: BTreeMap<Key, Answering>,
}

impl QueryState {
    /// Starts collecting for query `key`.
    fn ask(&mut self, key: Key, expected: BTreeSet<String>, updates: mpsc::Sender<QueryUpdate>) {
        let asking = Asking {
            expected,
            acks: BTreeSet::new(),
            responses: BTreeSet::new(),
            updates,
        };
        self.asking.insert(key, asking);
    }

    /// An ack or an answer for one of our queries: passed on once per member. True when every
    /// expected member has now answered.
    fn deliver(&mut self, response: QueryResponse) -> bool {
        let Some(asking) = self.asking.get_mut(&(response.ltime, response.id)) else {
            debug!(from = %response.from, "an answer to no query of ours (late?)");
            return false;
        };
        let seen = if response.ack {
            &mut asking.acks
        } else {
            &mut asking.responses
        };
        if !seen.insert(response.from.clone()) {
            return false;
        }
        let update = if response.ack {
            QueryUpdate::Ack {
                from: response.from,
            }
        } else {
            QueryUpdate::Response {
                from: response.from,
                payload: response.payload,
            }
        };
        if asking.updates.try_send(update).is_err() {
            debug!("query consumer is behind or gone; update dropped");
        }
        !response.ack && asking.expected.is_subset(&asking.responses)
    }

    /// Ends query `key`: the stream gets `Done` and closes. Nothing when it ended already.
    fn finish(&mut self, key: Key, timed_out: bool) {
        if let Some(asking) = self.asking.remove(&key) {
            let _ = asking.updates.try_send(QueryUpdate::Done { timed_out });
        }
    }

    /// This node passes query `key`'s filters: it may answer until `deadline`.
    fn expect_answer(&mut self, key: Key, query: &Query, deadline: Instant, now: Instant) {
        self.answering.retain(|_, a| a.deadline > now);
        if self.answering.len() >= MAX_ANSWERING {
            self.answering.pop_first();
        }
        let answering = Answering {
            origin: query.origin,
            relay_factor: query.relay_factor,
            deadline,
            answered: false,
        };
        self.answering.insert(key, answering);
    }

    /// Where to send this node's answer to query `key`, once.
    fn answer(&mut self, key: Key, now: Instant) -> Result<(SocketAddr, u8), QueryError> {
        let answering = self
            .answering
            .get_mut(&key)
            .filter(|a| a.deadline > now)
            .ok_or(QueryError::NotAnswering)?;
        if std::mem::replace(&mut answering.answered, true) {
            return Err(QueryError::Answered);
        }
        Ok((answering.origin, answering.relay_factor))
    }
}

impl Engine {
    /// Sends a query; acks and answers go to `updates`, then `Done`. With no member passing
    /// the filters nothing is sent and `Done` follows at once.
    pub(super) fn query(
        &mut self,
        params: QueryParams,
        updates: mpsc::Sender<QueryUpdate>,
    ) -> Result<QueryStarted, CommandError> {
        let members = lock(&self.shared).table.members();
        let live = members
            .iter()
            .filter(|m| matches!(m.status, Status::Alive | Status::Suspect));
        let timeout_ms = params
            .timeout_ms
            .unwrap_or_else(|| super::outbox::ms(self.timings.query_timeout(live.clone().count())));
        let mut query = Query {
            ltime: 0,
            id: self.rng.random::<u64>(),
            name: params.name,
            payload: params.payload,
            filters: params.filters,
            origin: self.local().addr,
            timeout_ms,
            ack: params.ack,
            relay_factor: params.relay_factor,
        };
        query::validate(&query)?;
        let expected: BTreeSet<String> = live
            .filter(|m| query::matches(&query.filters, &m.name, &m.tags))
            .map(|m| m.name.clone())
            .collect();
        let mut started = QueryStarted {
            ltime: 0,
            id: query.id,
            timeout_ms,
            expected: expected.iter().cloned().collect(),
        };
        if expected.is_empty() {
            let _ = updates.try_send(QueryUpdate::Done { timed_out: false });
            return Ok(started);
        }
        query.ltime = lock(&self.shared).queries.clock.tick();
        started.ltime = query.ltime;
        let key = (query.ltime, query.id);
        self.queries.ask(key, expected, updates);
        let deadline = self.now + Duration::from_millis(timeout_ms);
        if !self.broadcast(Broadcast::Query(query)) {
            self.queries.asking.remove(&key);
            return Err(CommandError::Gossip);
        }
        self.timers.push(deadline, Tick::QueryDone(key));
        self.gossip_now();
        Ok(started)
    }

    /// The query's time is up.
    pub(super) fn query_done(&mut self, key: Key) {
        self.queries.finish(key, true);
    }

    /// Queries that arrived this turn: those this node passes the filters of are acked (when
    /// asked) and go to the handlers.
    pub(super) fn take_new_queries(&mut self) {
        let (fresh, local) = {
            let mut shared = lock(&self.shared);
            (shared.queries.take_new(), shared.table.local_meta().clone())
        };
        if fresh.is_empty() {
            return;
        }
        // The view carries the query memory the snapshot keeps.
        self.republish = true;
        for query in fresh {
            if !query::matches(&query.filters, &local.name, &local.tags) {
                continue;
            }
            let key = (query.ltime, query.id);
            let deadline = self.now + Duration::from_millis(query.timeout_ms);
            self.queries.expect_answer(key, &query, deadline, self.now);
            if query.ack {
                let ack = self.response(&query, true, Vec::new());
                self.send_response(ack, query.origin, query.relay_factor);
            }
            self.out.events.push(Event::Query(query));
        }
    }

    /// This node's answer to query `(ltime, id)` (a handler's output).
    pub(super) fn respond_query(
        &mut self,
        ltime: u64,
        id: u64,
        payload: Vec<u8>,
    ) -> Result<(), CommandError> {
        if payload.len() > MAX_RESPONSE_LEN {
            return Err(QueryError::ResponseTooLarge(payload.len()).into());
        }
        let (origin, relay_factor) = self.queries.answer((ltime, id), self.now)?;
        let response = QueryResponse {
            ltime,
            id,
            from: self.config.name.clone(),
            ack: false,
            payload,
            relay_to: None,
        };
        self.send_response(response, origin, relay_factor);
        Ok(())
    }

    /// A query-response datagram: ours to collect, or one to relay to its origin.
    pub(super) fn query_response(&mut self, mut response: QueryResponse) {
        match response.relay_to.take() {
            Some(to) if to != self.local().addr => {
                if self.member_addrs().contains(&to) {
                    self.send_encoded(&response, to);
                } else {
                    debug!(%to, "not relaying an answer to a non-member");
                }
            }
            _ => self.collect(response),
        }
    }

    fn collect(&mut self, response: QueryResponse) {
        let key = (response.ltime, response.id);
        if self.queries.deliver(response) {
            self.queries.finish(key, false);
        }
    }

    fn response(&self, query: &Query, ack: bool, payload: Vec<u8>) -> QueryResponse {
        QueryResponse {
            ltime: query.ltime,
            id: query.id,
            from: self.config.name.clone(),
            ack,
            payload,
            relay_to: None,
        }
    }

    /// To the origin directly, and through `relay_factor` random other members.
    fn send_response(&mut self, response: QueryResponse, origin: SocketAddr, relay_factor: u8) {
        if origin == self.local().addr {
            self.collect(response);
            return;
        }
        let mut members = self.member_addrs();
        if !members.contains(&origin) {
            debug!(%origin, "not answering a query whose origin is not a live member");
            return;
        }
        self.send_encoded(&response, origin);
        members.retain(|a| *a != origin);
        let relayed = QueryResponse {
            relay_to: Some(origin),
            ..response
        };
        for _ in 0..usize::from(relay_factor).min(members.len()) {
            let via = members.swap_remove(self.rng.random_range(0..members.len()));
            self.send_encoded(&relayed, via);
        }
    }

    fn send_encoded(&mut self, response: &QueryResponse, to: SocketAddr) {
        match postcard::to_stdvec(response) {
            Ok(bytes) => self.send_datagram(envelope::seal(Kind::QueryResponse, &bytes), to),
            Err(error) => debug!(%error, "query response could not be encoded"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(from: &str, ack: bool) -> QueryResponse {
        QueryResponse {
            ltime: 1,
            id: 9,
            from: from.into(),
            ack,
            payload: format!("from {from}").into_bytes(),
            relay_to: None,
        }
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_origin_passes_each_members_ack_and_answer_once_and_is_done_when_all_answered() {
        let mut state = QueryState::default();
        let (tx, mut rx) = mpsc::channel(16);
        state.ask((1, 9), names(&["m1", "m2"]), tx);
        assert!(!state.deliver(answer("m1", true)));
        assert!(!state.deliver(answer("m1", true)), "a relayed copy");
        assert!(!state.deliver(answer("m1", false)));
        assert!(!state.deliver(answer("m1", false)), "a relayed copy");
        assert!(
            !state.deliver(answer("x9", false)),
            "not expected, still shown"
        );
        assert!(state.deliver(answer("m2", false)));
        state.finish((1, 9), false);
        state.finish((1, 9), true);
        let mut got = Vec::new();
        while let Ok(update) = rx.try_recv() {
            got.push(update);
        }
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[0], QueryUpdate::Ack { from: "m1".into() });
        assert_eq!(got[4], QueryUpdate::Done { timed_out: false });
        assert!(rx.try_recv().is_err(), "closed after done");
    }

    #[test]
    fn a_member_answers_once_and_only_before_the_deadline() {
        let mut state = QueryState::default();
        let t0 = Instant::now();
        let query = Query {
            ltime: 1,
            id: 9,
            name: "q".into(),
            payload: Vec::new(),
            filters: Vec::new(),
            origin: "127.0.0.1:1".parse().expect("addr"),
            timeout_ms: 1000,
            ack: true,
            relay_factor: 2,
        };
        let deadline = t0 + Duration::from_secs(1);
        state.expect_answer((1, 9), &query, deadline, t0);
        state.expect_answer((2, 9), &query, deadline, t0);
        assert_eq!(state.answer((1, 9), t0), Ok((query.origin, 2)));
        assert_eq!(state.answer((1, 9), t0), Err(QueryError::Answered));
        assert_eq!(state.answer((3, 9), t0), Err(QueryError::NotAnswering));
        assert_eq!(
            state.answer((2, 9), deadline),
            Err(QueryError::NotAnswering),
            "too late"
        );
    }
}
