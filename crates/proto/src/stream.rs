//! The streaming endpoints' lines: `GET /v1/stream` (events as NDJSON, [`StreamEvent`]) and
//! `GET /v1/monitor` (the agent's log, [`MonitorLevel`] and [`MonitorFormat`]).

use serde::{Deserialize, Serialize};

use crate::api::{ErrorDetail, MemberInfo};

/// One line of `GET /v1/stream`: an event as the agent received it, tagged by `type`.
///
/// Events are streamed as they arrive, before the handlers' coalescing: a reader sees every
/// member change and every user event, in the order the agent learnt them. New variants
/// (queries) are added without changing the existing ones; readers should skip a `type` they
/// do not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StreamEvent {
    /// `{"type":"member","event":"member-join","members":[MemberInfo...]}`.
    Member(MemberEvent),
    /// `{"type":"user","event":"user","name":..,"ltime":..,"payload":..,...}`.
    User(UserStreamEvent),
    /// `{"type":"query","event":"query","name":..,"ltime":..,"payload":..,...}`: a query this
    /// member passes the filters of (what its `query` handlers see).
    Query(QueryStreamEvent),
    /// The last line of a stream the agent closed: `{"type":"error","error":{"code",
    /// "message"}}` (`slow_reader`: the reader fell behind and events were dropped for it).
    Error {
        /// Why the stream ended.
        error: ErrorDetail,
    },
}

/// A member event on the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEvent {
    /// Serf's name, as in `SERF_EVENT`: `member-join`, `member-leave`, `member-failed`,
    /// `member-update` or `member-reap`.
    pub event: String,
    /// The members concerned, in the shape of `/v1/members`, as they are after the change.
    /// One member per line today (events are not coalesced on the stream); a list so that
    /// readers of Serf's batched shape work unchanged.
    pub members: Vec<MemberInfo>,
}

/// A user event on the stream (what a `user` handler sees).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStreamEvent {
    /// Always `user` (`SERF_EVENT`).
    pub event: String,
    /// The event's name (`SERF_USER_EVENT`).
    pub name: String,
    /// Its Lamport time (`SERF_USER_LTIME`).
    pub ltime: u64,
    /// The payload: the text itself when it is UTF-8, else its standard base64 (with `=`
    /// padding); `payload_encoding` says which.
    pub payload: String,
    /// `text` or `base64`.
    pub payload_encoding: PayloadEncoding,
    /// Whether handlers may coalesce it (`shoal event --coalesce`).
    pub coalesce: bool,
}

/// A query on the stream (what a `query` handler sees).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryStreamEvent {
    /// Always `query` (`SERF_EVENT`).
    pub event: String,
    /// The query's name (`SERF_QUERY_NAME`).
    pub name: String,
    /// Its Lamport time (`SERF_QUERY_LTIME`).
    pub ltime: u64,
    /// The payload, written as in [`UserStreamEvent::payload`].
    pub payload: String,
    /// `text` or `base64`.
    pub payload_encoding: PayloadEncoding,
    /// The asking member's gossip address.
    pub origin: String,
}

impl QueryStreamEvent {
    /// The stream line of a query.
    pub fn new(name: &str, ltime: u64, payload: &[u8], origin: String) -> Self {
        let (payload, payload_encoding) = encode_payload(payload);
        Self {
            event: "query".to_string(),
            name: name.to_string(),
            ltime,
            payload,
            payload_encoding,
            origin,
        }
    }
}

/// A payload as JSON text: itself when it is UTF-8, else standard base64.
fn encode_payload(payload: &[u8]) -> (String, PayloadEncoding) {
    match std::str::from_utf8(payload) {
        Ok(text) => (text.to_string(), PayloadEncoding::Text),
        Err(_) => (base64(payload), PayloadEncoding::Base64),
    }
}

/// How a payload is written in a JSON string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadEncoding {
    /// The payload is UTF-8 and written as is.
    Text,
    /// The payload is not UTF-8; it is written in standard base64 with padding.
    Base64,
}

impl UserStreamEvent {
    /// The stream line of a user event.
    pub fn new(name: &str, ltime: u64, payload: &[u8], coalesce: bool) -> Self {
        let (payload, payload_encoding) = encode_payload(payload);
        Self {
            event: "user".to_string(),
            name: name.to_string(),
            ltime,
            payload,
            payload_encoding,
            coalesce,
        }
    }
}

/// Standard base64 (RFC 4648, `+/`, `=` padding). A few lines instead of a dependency: only
/// binary payloads on the stream need it, and the agent's binary size is its idle memory.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            let sextet = (n >> (18 - 6 * i)) & 63;
            out.push(match i <= chunk.len() {
                true => char::from(ALPHABET[sextet as usize]),
                false => '=',
            });
        }
    }
    out
}

/// The lowest level `GET /v1/monitor` (`shoal monitor --log-level`) sends: that level and
/// every more severe one. Serf's names; `err` is accepted for `error`, as Serf spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MonitorLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// The default.
    Info,
    /// More detail.
    Debug,
    /// Everything.
    Trace,
}

impl MonitorLevel {
    /// The accepted words, for messages.
    pub const ACCEPTED: &'static str = "trace, debug, info, warn, error";

    /// Parses a level word (any case; `err` and `warning` too).
    pub fn parse(word: &str) -> Option<Self> {
        Some(match word.to_ascii_lowercase().as_str() {
            "error" | "err" => Self::Error,
            "warn" | "warning" => Self::Warn,
            "info" => Self::Info,
            "debug" => Self::Debug,
            "trace" => Self::Trace,
            _ => return None,
        })
    }

    /// The word used in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// How `GET /v1/monitor` writes log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MonitorFormat {
    /// As the agent writes them to stderr with `--log-format text`.
    Text,
    /// One JSON object per line, as with `--log-format json`.
    Json,
}

impl MonitorFormat {
    /// Parses `text` or `json`.
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "text" => Some(Self::Text),
            "json" => Some(Self::Json),
            _ => None,
        }
    }

    /// The word used in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_test_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn a_user_event_payload_is_text_when_it_is_utf8_and_base64_otherwise() {
        let text = UserStreamEvent::new("deploy", 3, "v1 ✓".as_bytes(), true);
        assert_eq!(
            (text.payload.as_str(), text.payload_encoding),
            ("v1 ✓", PayloadEncoding::Text)
        );
        let binary = UserStreamEvent::new("blob", 4, &[0xff, 0x00], false);
        assert_eq!(
            (binary.payload.as_str(), binary.payload_encoding),
            ("/wA=", PayloadEncoding::Base64)
        );
        let line = serde_json::to_string(&StreamEvent::User(text)).expect("json");
        assert_eq!(
            line,
            r#"{"type":"user","event":"user","name":"deploy","ltime":3,"payload":"v1 ✓","payload_encoding":"text","coalesce":true}"#
        );
    }

    #[test]
    fn monitor_levels_take_serf_spellings_and_order_by_verbosity() {
        assert_eq!(MonitorLevel::parse("ERR"), Some(MonitorLevel::Error));
        assert_eq!(MonitorLevel::parse("warning"), Some(MonitorLevel::Warn));
        assert_eq!(MonitorLevel::parse("loud"), None);
        assert!(MonitorLevel::Debug > MonitorLevel::Info);
    }
}
