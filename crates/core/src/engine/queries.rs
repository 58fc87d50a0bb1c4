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
//! The origin gossips the query and also sends it directly to every expected member
//! ([`super::direct`]); after the probe RTT, and twice more at doubling waits, it sends it
//! directly again to the expected members that have not answered yet. A member that never
//! got it runs it then; one that answered already gives the same answer again (the first
//! was lost); one still running its handler drops the copy.
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
/// How many times the origin sends a query again, directly, to the members that have not
/// answered: after the profile's probe RTT, then twice and four times as long.
const MAX_RETRIES: u32 = 3;

/// A query this node sent and is collecting answers for.
#[derive(Debug)]
pub(crate) struct Asking {
    /// Members expected to answer (by name).
    expected: BTreeSet<String>,
    acks: BTreeSet<String>,
    responses: BTreeSet<String>,
    /// The query, sent again to those that have not answered.
    query: Query,
    /// Times sent again so far, and the wait before the next time.
    retries: u32,
    retry_in: Duration,
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
    /// The answer given, kept to give it again if the origin asks (the first was lost).
    answer: Option<Vec<u8>>,
}

/// Both sides of the queries of one node.
#[derive(Debug, Default)]
pub(crate) struct QueryState {
    asking: BTreeMap<Key, Asking>,
    answering: BTreeMap<Key, Answering>,
}

impl QueryState {
    /// Starts collecting for `query`; the first direct copy to the silent goes out after
    /// `retry_in`.
    fn ask(
        &mut self,
        query: &Query,
        expected: BTreeSet<String>,
        updates: mpsc::Sender<QueryUpdate>,
        retry_in: Duration,
    ) {
        let asking = Asking {
            expected,
            acks: BTreeSet::new(),
            responses: BTreeSet::new(),
            query: query.clone(),
            retries: 0,
            retry_in,
            updates,
        };
        let key = (query.ltime, query.id);
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
            if timed_out {
                let silent: Vec<&String> = asking.expected.difference(&asking.responses).collect();
                debug!(
                    ltime = key.0,
                    ?silent,
                    acks = asking.acks.len(),
                    "query timed out"
                );
            }
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
            answer: None,
        };
        self.answering.insert(key, answering);
    }

    /// Where to send this node's answer `payload` to query `key`, once.
    fn answer(
        &mut self,
        key: Key,
        now: Instant,
        payload: &[u8],
    ) -> Result<(SocketAddr, u8), QueryError> {
        let answering = self
            .answering
            .get_mut(&key)
            .filter(|a| a.deadline > now)
            .ok_or(QueryError::NotAnswering)?;
        if answering.answer.is_some() {
            return Err(QueryError::Answered);
        }
        answering.answer = Some(payload.to_vec());
        Ok((answering.origin, answering.relay_factor))
    }

    /// The answer already given to query `key`, with where it went, while the query runs.
    fn given(&self, key: Key, now: Instant) -> Option<(SocketAddr, u8, Vec<u8>)> {
        let answering = self.answering.get(&key).filter(|a| a.deadline > now)?;
        let answer = answering.answer.clone()?;
        Some((answering.origin, answering.relay_factor, answer))
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
        let (expected, addrs): (BTreeSet<String>, Vec<SocketAddr>) = live
            .filter(|m| query::matches(&query.filters, &m.name, &m.tags))
            .map(|m| (m.name.clone(), m.addr))
            .unzip();
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
        let retry_in = self.timings.probe_rtt;
        self.queries.ask(&query, expected, updates, retry_in);
        let deadline = self.now + Duration::from_millis(timeout_ms);
        let item = Broadcast::Query(query);
        if !self.broadcast(item.clone()) {
            self.queries.asking.remove(&key);
            return Err(CommandError::Gossip);
        }
        self.send_direct(&item, addrs);
        self.timers.push(deadline, Tick::QueryDone(key));
        self.timers.push(self.now + retry_in, Tick::QueryRetry(key));
        self.gossip_now();
        Ok(started)
    }

    /// The query's time is up.
    pub(super) fn query_done(&mut self, key: Key) {
        self.queries.finish(key, true);
    }

    /// Sends query `key` again, directly, to the expected members that have not answered
    /// yet (their copy or their answer may have been lost; one that has the query and is
    /// still running its handler drops the copy); then waits twice as long.
    pub(super) fn query_retry(&mut self, key: Key) {
        let Some(asking) = self.queries.asking.get_mut(&key) else {
            return;
        };
        let silent: Vec<String> = asking
            .expected
            .difference(&asking.responses)
            .cloned()
            .collect();
        if silent.is_empty() || asking.retries >= MAX_RETRIES {
            return;
        }
        asking.retries += 1;
        asking.retry_in *= 2;
        let (query, next) = (asking.query.clone(), asking.retry_in);
        let addrs: Vec<SocketAddr> = {
            let shared = lock(&self.shared);
            silent
                .iter()
                .filter_map(|name| shared.table.find_by_name(name))
                .filter(|(_, status)| matches!(status, Status::Alive | Status::Suspect))
                .map(|(id, _)| id.addr)
                .collect()
        };
        debug!(
            ltime = key.0,
            silent = silent.len(),
            "query sent again to the members that have not answered"
        );
        self.send_direct(&Broadcast::Query(query), addrs);
        self.timers.push(self.now + next, Tick::QueryRetry(key));
    }

    /// The origin sent query `key` again and this node has answered it: the answer was
    /// lost, so it goes again (the origin counts each member once).
    pub(super) fn answer_again(&mut self, key: Key) {
        let Some((origin, relay_factor, payload)) = self.queries.given(key, self.now) else {
            return;
        };
        debug!(ltime = key.0, "the origin asked again; answering again");
        let response = QueryResponse {
            ltime: key.0,
            id: key.1,
            from: self.config.name.clone(),
            ack: false,
            payload,
            relay_to: None,
        };
        self.send_response(response, origin, relay_factor);
    }

    /// Queries that arrived this turn: those this node passes the filters of are acked (when
    /// asked) and go to the handlers.
    pub(super) fn take_new_queries(&mut self) {
        // Runs after every input: the local meta (name and tags, for the filters) is cloned
        // only when a query arrived (a clone per datagram was 2% of a 1,000-node simulation).
        let (fresh, local) = {
            let mut shared = lock(&self.shared);
            let fresh = shared.queries.take_new();
            if fresh.is_empty() {
                return;
            }
            (fresh, shared.table.local_meta().clone())
        };
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
        let (origin, relay_factor) = self.queries.answer((ltime, id), self.now, &payload)?;
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

    fn query() -> Query {
        Query {
            ltime: 1,
            id: 9,
            name: "q".into(),
            payload: Vec::new(),
            filters: Vec::new(),
            origin: "127.0.0.1:1".parse().expect("addr"),
            timeout_ms: 1000,
            ack: true,
            relay_factor: 2,
        }
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_origin_passes_each_members_ack_and_answer_once_and_is_done_when_all_answered() {
        let mut state = QueryState::default();
        let (tx, mut rx) = mpsc::channel(16);
        state.ask(
            &query(),
            names(&["m1", "m2"]),
            tx,
            Duration::from_millis(300),
        );
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
        let query = query();
        let deadline = t0 + Duration::from_secs(1);
        state.expect_answer((1, 9), &query, deadline, t0);
        state.expect_answer((2, 9), &query, deadline, t0);
        assert_eq!(state.given((1, 9), t0), None, "nothing given yet");
        assert_eq!(state.answer((1, 9), t0, b"up"), Ok((query.origin, 2)));
        assert_eq!(state.answer((1, 9), t0, b"up"), Err(QueryError::Answered));
        assert_eq!(
            state.answer((3, 9), t0, b"up"),
            Err(QueryError::NotAnswering)
        );
        assert_eq!(
            state.answer((2, 9), deadline, b"up"),
            Err(QueryError::NotAnswering),
            "too late"
        );
        assert_eq!(
            state.given((1, 9), t0),
            Some((query.origin, 2, b"up".to_vec())),
            "kept to give again"
        );
        assert_eq!(state.given((1, 9), deadline), None, "not past the timeout");
    }
}
