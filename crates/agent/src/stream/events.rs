//! `GET /v1/stream`: events as NDJSON, one [`StreamEvent`] per line, for other programs.
//!
//! The dispatcher calls [`EventStreams::publish`] for every event the node hands it, before
//! coalescing; publishing never waits (see [`super::fanout`]). Each reader chooses what it
//! gets with `types`: `member`, `user`, `query` (every event of that kind), or any handler
//! filter word (`member-join`, `user:deploy`, `query:NAME`, `*`). The core has no query
//! events yet, so `query` is accepted and simply matches nothing until it does.

use std::sync::Arc;

use bytes::Bytes;
use shoal_core::{Event, MemberEventKind};
use shoal_proto::{ErrorDetail, MemberEvent, QueryStreamEvent, StreamEvent, UserStreamEvent};
use tokio::sync::OwnedSemaphorePermit;

use super::fanout::{CAPACITY, Fanout, LineStream};
use crate::handlers::filter::{self, Filter, ParseError};
use crate::view;

/// The accepted `types` words, for messages.
pub const TYPES: &str = "member, user, query, or a handler filter (member-join, member-leave, \
                         member-failed, member-update, member-reap, user:NAME, query:NAME, *)";

/// What one reader wants: handler filter words; empty wants everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFilter(Vec<Filter>);

impl StreamFilter {
    /// Parses a comma-separated `types` list; `None` (no `types` given) wants everything.
    pub fn parse(types: Option<&str>) -> Result<Self, ParseError> {
        let Some(types) = types else {
            return Ok(Self(Vec::new()));
        };
        let mut filters = Vec::new();
        for word in types.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "member" => filters.extend(
                    [
                        MemberEventKind::Join,
                        MemberEventKind::Leave,
                        MemberEventKind::Failed,
                        MemberEventKind::Update,
                        MemberEventKind::Reap,
                    ]
                    .map(Filter::Member),
                ),
                w => filters.push(Filter::parse(w)?),
            }
        }
        if filters.is_empty() {
            // `types=` with no word: a reader asking for nothing is a mistake, not "all".
            return Err(ParseError::UnknownFilter(types.to_string()));
        }
        Ok(Self(filters))
    }

    fn wants(&self, event: &Event) -> bool {
        match event {
            Event::Member { kind, .. } => filter::wants_member(&self.0, *kind),
            Event::User(user) => filter::wants_user(&self.0, &user.name),
            Event::Query(query) => filter::wants_query(&self.0, &query.name),
        }
    }
}

/// How an RPC reader's lines are made from events (Serf's msgpack records).
pub type Encode = fn(&Event) -> Bytes;

/// The `/v1/stream` readers, and the readers of Serf's RPC `stream` command.
pub struct EventStreams {
    fanout: Arc<Fanout<StreamFilter>>,
    rpc: Arc<Fanout<(StreamFilter, Encode)>>,
}

impl Default for EventStreams {
    fn default() -> Self {
        Self {
            fanout: Arc::new(Fanout::new(None)),
            rpc: Arc::new(Fanout::new(None)),
        }
    }
}

impl EventStreams {
    /// A new reader.
    pub fn subscribe(&self, filter: StreamFilter, permit: OwnedSemaphorePermit) -> LineStream {
        let ending = line(&StreamEvent::Error {
            error: ErrorDetail {
                code: "slow_reader".into(),
                message: format!(
                    "this reader fell {CAPACITY} events behind; the agent closed the stream and \
                     sent none of the later events"
                ),
            },
        });
        self.fanout.subscribe(filter, ending, permit)
    }

    /// A new RPC `stream` reader: its lines are `encode`'s (every RPC reader gives the same
    /// one); one that falls behind is closed (an empty last line says so).
    pub fn subscribe_rpc(
        &self,
        filter: StreamFilter,
        encode: Encode,
        permit: OwnedSemaphorePermit,
    ) -> LineStream {
        self.rpc.subscribe((filter, encode), Bytes::new(), permit)
    }

    /// Hands `event` to every reader that wants it; never waits. Returns how many readers
    /// were closed because they had fallen behind.
    pub fn publish(&self, event: &Event) -> usize {
        let mut lagged = 0;
        if !self.fanout.is_empty() {
            let mut encoded: Option<Bytes> = None;
            lagged += self.fanout.publish(|filter| {
                filter.wants(event).then(|| {
                    encoded
                        .get_or_insert_with(|| line(&stream_event(event)))
                        .clone()
                })
            });
        }
        if !self.rpc.is_empty() {
            let mut encoded: Option<Bytes> = None;
            lagged += self.rpc.publish(|(filter, encode)| {
                filter
                    .wants(event)
                    .then(|| encoded.get_or_insert_with(|| encode(event)).clone())
            });
        }
        lagged
    }

    /// Readers now (both kinds).
    pub fn readers(&self) -> usize {
        self.fanout.readers() + self.rpc.readers()
    }

    /// Readers closed for falling behind, since start.
    pub fn dropped(&self) -> u64 {
        self.fanout.dropped() + self.rpc.dropped()
    }
}

/// The stream's shape of an event.
pub fn stream_event(event: &Event) -> StreamEvent {
    match event {
        Event::Member { kind, member } => StreamEvent::Member(MemberEvent {
            event: kind.as_str().to_string(),
            members: vec![view::member_info(member)],
        }),
        Event::User(u) => StreamEvent::User(UserStreamEvent::new(
            &u.name, u.ltime, &u.payload, u.coalesce,
        )),
        Event::Query(q) => StreamEvent::Query(QueryStreamEvent::new(
            &q.name,
            q.ltime,
            &q.payload,
            q.origin.to_string(),
        )),
    }
}

/// One NDJSON line.
fn line(event: &StreamEvent) -> Bytes {
    let mut bytes = serde_json::to_vec(event).unwrap_or_else(|_| b"{}".to_vec());
    bytes.push(b'\n');
    Bytes::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::{Member, Status, UserEvent};

    fn join() -> Event {
        Event::Member {
            kind: MemberEventKind::Join,
            member: Member {
                name: "web-1".into(),
                addr: ([10, 0, 0, 5], 7948).into(),
                generation: 1,
                tags: [("role".to_string(), "web".to_string())].into(),
                role: Default::default(),
                status: Status::Alive,
            },
        }
    }

    fn user(name: &str) -> Event {
        Event::User(UserEvent {
            ltime: 7,
            name: name.into(),
            payload: b"v1".to_vec(),
            coalesce: true,
        })
    }

    #[test]
    fn types_choose_kinds_or_handler_filter_words_and_unknown_words_are_errors() {
        let all = StreamFilter::parse(None).expect("all");
        assert!(all.wants(&join()) && all.wants(&user("deploy")));
        let members = StreamFilter::parse(Some("member")).expect("member");
        assert!(members.wants(&join()) && !members.wants(&user("deploy")));
        let deploy = StreamFilter::parse(Some("member-leave, user:deploy")).expect("words");
        assert!(!deploy.wants(&join()) && deploy.wants(&user("deploy")));
        assert!(!deploy.wants(&user("restart")));
        let query = StreamFilter::parse(Some("query")).expect("query is accepted");
        assert!(!query.wants(&join()) && !query.wants(&user("deploy")));
        assert_eq!(
            StreamFilter::parse(Some("member,users")),
            Err(ParseError::UnknownFilter("users".into()))
        );
        assert!(StreamFilter::parse(Some("")).is_err());
    }

    #[test]
    fn a_member_event_line_has_the_members_shape_of_v1_members() {
        let text = String::from_utf8(line(&stream_event(&join())).to_vec()).expect("utf-8");
        assert_eq!(
            text,
            "{\"type\":\"member\",\"event\":\"member-join\",\"members\":[{\"name\":\"web-1\",\
             \"addr\":\"10.0.0.5:7948\",\"port\":7948,\"status\":\"alive\",\"tags\":{\"role\":\"web\"},\
             \"protocol\":{\"max\":1,\"min\":1,\"version\":1},\"health\":null,\"checks\":{}}]}\n"
        );
    }
}
