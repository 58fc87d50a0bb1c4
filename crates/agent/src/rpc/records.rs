//! What shoal's members and events look like in Serf's RPC protocol.

use std::net::IpAddr;

use bytes::Bytes;
use rmpv::Value;
use shoal_core::{Event, Member, Status};

use super::wire::{encode, map, string_map_value};

/// The protocol version reported for every member (`ProtocolMin/Max/Cur` and
/// `DelegateMin/Max/Cur`): shoal's wire version ([`crate::view::PROTOCOL`]). Serf's
/// `members -detailed` prints it.
pub const PROTOCOL: u8 = crate::view::PROTOCOL.version;

/// Fields of a stream's query record the connection reads and removes: the query's Lamport
/// time, id and timeout, so `respond` can find it.
pub const QUERY_LTIME: &str = "shoal.ltime";
/// See [`QUERY_LTIME`].
pub const QUERY_ID: &str = "shoal.id";
/// See [`QUERY_LTIME`].
pub const QUERY_TIMEOUT_MS: &str = "shoal.timeout_ms";

/// A member's status as Serf names it: Serf has no `suspect` (its members are `alive` until
/// they are found `failed`).
pub fn status(status: Status) -> &'static str {
    match status {
        Status::Suspect => Status::Alive.as_str(),
        other => other.as_str(),
    }
}

/// A member as Serf's `Member` record.
pub fn member(m: &Member) -> Value {
    let addr = match m.addr.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    let version = || Value::from(PROTOCOL);
    map([
        ("Name", Value::from(m.name.as_str())),
        ("Addr", Value::Binary(addr)),
        ("Port", Value::from(m.addr.port())),
        ("Tags", string_map_value(&m.tags)),
        ("Status", Value::from(status(m.status))),
        ("ProtocolMin", version()),
        ("ProtocolMax", version()),
        ("ProtocolCur", version()),
        ("DelegateMin", version()),
        ("DelegateMax", version()),
        ("DelegateCur", version()),
    ])
}

/// An event as a stream record (Serf's `memberEventRecord`, `userEventRecord`,
/// `queryEventRecord`), encoded. A query record carries [`QUERY_LTIME`] and its siblings
/// and an `ID` of 0: the connection gives it the client's own id.
pub fn event(event: &Event) -> Bytes {
    let value = match event {
        Event::Member { kind, member: m } => map([
            ("Event", Value::from(kind.as_str())),
            ("Members", Value::Array(vec![member(m)])),
        ]),
        Event::User(u) => map([
            ("Event", Value::from("user")),
            ("LTime", Value::from(u.ltime)),
            ("Name", Value::from(u.name.as_str())),
            ("Payload", Value::Binary(u.payload.clone())),
            ("Coalesce", Value::from(u.coalesce)),
        ]),
        Event::Query(q) => map([
            ("Event", Value::from("query")),
            ("ID", Value::from(0u64)),
            ("LTime", Value::from(q.ltime)),
            ("Name", Value::from(q.name.as_str())),
            ("Payload", Value::Binary(q.payload.clone())),
            (QUERY_LTIME, Value::from(q.ltime)),
            (QUERY_ID, Value::from(q.id)),
            (QUERY_TIMEOUT_MS, Value::from(q.timeout_ms)),
        ]),
    };
    encode(&value)
}

/// A query's ack, answer or end (Serf's `queryRecord`).
pub fn query_record(kind: &str, from: &str, payload: Option<Vec<u8>>) -> Value {
    map([
        ("Type", Value::from(kind)),
        ("From", Value::from(from)),
        ("Payload", payload.map_or(Value::Nil, Value::Binary)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::wire;

    fn m(addr: &str, status: Status) -> Member {
        Member {
            name: "web-1".into(),
            addr: addr.parse().expect("addr"),
            generation: 1,
            tags: [("role".to_string(), "web".to_string())].into(),
            role: Default::default(),
            status,
        }
    }

    #[test]
    fn a_member_record_has_serfs_fields_and_a_suspect_is_alive() {
        let rec = member(&m("10.0.0.5:7948", Status::Suspect));
        assert_eq!(wire::string(&rec, "Status").as_deref(), Ok("alive"));
        assert_eq!(wire::bytes(&rec, "Addr"), Ok(vec![10, 0, 0, 5]));
        assert_eq!(wire::uint(&rec, "Port"), Ok(7948));
        assert_eq!(wire::uint(&rec, "DelegateCur"), Ok(u64::from(PROTOCOL)));
        assert_eq!(wire::string_map(&rec, "Tags").expect("tags").len(), 1);
        let v6 = member(&m("[::1]:7948", Status::Failed));
        assert_eq!(wire::bytes(&v6, "Addr").expect("addr").len(), 16);
        assert_eq!(wire::string(&v6, "Status").as_deref(), Ok("failed"));
    }

    #[test]
    fn a_query_record_carries_what_respond_needs_until_the_connection_takes_it() {
        let q = Event::Query(shoal_core::Query {
            ltime: 7,
            id: 99,
            name: "ask".into(),
            payload: b"x".to_vec(),
            filters: Vec::new(),
            origin: "127.0.0.1:7948".parse().expect("addr"),
            timeout_ms: 500,
            ack: true,
            relay_factor: 0,
        });
        let rec = wire::decode(&event(&q)).expect("msgpack");
        assert_eq!(wire::string(&rec, "Event").as_deref(), Ok("query"));
        assert_eq!(wire::uint(&rec, QUERY_ID), Ok(99));
        assert_eq!(wire::uint(&rec, QUERY_LTIME), Ok(7));
        assert_eq!(wire::uint(&rec, QUERY_TIMEOUT_MS), Ok(500));
    }
}
