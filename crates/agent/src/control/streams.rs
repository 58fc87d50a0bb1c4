//! `GET /v1/stream?types=...` (events, NDJSON) and `GET /v1/monitor?level=..&format=..` (the
//! log): a 200 with a chunked body that lasts until the reader closes the connection (or
//! falls behind, see [`crate::stream::fanout`]). Bad parameters are 400 `bad_request`; past
//! [`super::MAX_STREAMS`] open streams, 503 `too_many_streams`.

use std::borrow::Cow;

use http_body_util::BodyExt;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use shoal_proto::{MonitorFormat, MonitorLevel};
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use super::{ControlState, MAX_STREAMS, Reply, error};
use crate::handlers::filter::ParseError;
use crate::stream::events::{StreamFilter, TYPES};
use crate::stream::fanout::LineStream;
use crate::stream::monitor::MonitorKey;

/// Why a stream was not opened: the error answer's parts.
#[derive(Debug)]
pub(super) struct Refused {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
}

pub(super) fn bad_request(message: String) -> Refused {
    Refused {
        status: StatusCode::BAD_REQUEST,
        code: "bad_request",
        message,
    }
}

pub(super) fn answer(opened: Result<Reply, Refused>) -> Reply {
    opened.unwrap_or_else(|r| error(r.status, r.code, r.message))
}

/// `GET /v1/stream`.
pub(super) fn events(query: Option<&str>, st: &ControlState) -> Reply {
    answer(open_events(query, st))
}

fn open_events(query: Option<&str>, st: &ControlState) -> Result<Reply, Refused> {
    let params = params(query, &["types"])?;
    let types = joined(&params, "types");
    let filter = StreamFilter::parse(types.as_deref()).map_err(|e| {
        bad_request(match e {
            ParseError::UnknownFilter(word) => {
                format!("unknown stream type {word:?}; expected {TYPES}")
            }
            e => e.to_string(),
        })
    })?;
    let permit = slot(st)?;
    debug!(
        types = types.as_deref().unwrap_or("*"),
        "event stream opened"
    );
    Ok(streamed(
        st.events.subscribe(filter, permit),
        "application/x-ndjson",
    ))
}

/// `GET /v1/monitor`.
pub(super) fn monitor(query: Option<&str>, st: &ControlState) -> Reply {
    answer(open_monitor(query, st))
}

fn open_monitor(query: Option<&str>, st: &ControlState) -> Result<Reply, Refused> {
    let params = params(query, &["level", "format"])?;
    let level = match last(&params, "level") {
        None => MonitorLevel::Info,
        Some(word) => MonitorLevel::parse(word).ok_or_else(|| {
            bad_request(format!(
                "invalid level {word:?}: expected one of {}",
                MonitorLevel::ACCEPTED
            ))
        })?,
    };
    let format = match last(&params, "format") {
        None => MonitorFormat::Text,
        Some(word) => MonitorFormat::parse(word).ok_or_else(|| {
            bad_request(format!("invalid format {word:?}: expected text or json"))
        })?,
    };
    let permit = slot(st)?;
    let content_type = match format {
        MonitorFormat::Text => "text/plain; charset=utf-8",
        MonitorFormat::Json => "application/x-ndjson",
    };
    let stream = st.monitors.subscribe(MonitorKey { format, level }, permit);
    debug!(
        level = level.as_str(),
        format = format.as_str(),
        "monitor opened"
    );
    Ok(streamed(stream, content_type))
}

/// A place under the cap, or the 503.
fn slot(st: &ControlState) -> Result<OwnedSemaphorePermit, Refused> {
    st.stream_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| Refused {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "too_many_streams",
            message: format!(
                "{MAX_STREAMS} streams (stream and monitor together) are open; close one first"
            ),
        })
}

fn streamed(stream: LineStream, content_type: &'static str) -> Reply {
    let mut resp = Response::new(stream.boxed());
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// The query's `key=value` pairs, percent-decoded; a key not in `known` is a 400 (a typo such
/// as `type=` would otherwise silently stream everything).
pub(super) fn params(
    query: Option<&str>,
    known: &[&str],
) -> Result<Vec<(String, String)>, Refused> {
    let mut out = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (decode(key), decode(value));
        if !known.contains(&key.as_ref()) {
            let message = format!("unknown parameter {key:?}; expected {}", known.join(" or "));
            return Err(bad_request(message));
        }
        out.push((key.into_owned(), value.into_owned()));
    }
    Ok(out)
}

/// Every value of `key`, joined with commas (`types=member&types=user` = `types=member,user`).
fn joined(params: &[(String, String)], key: &str) -> Option<String> {
    let values: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// The last value of `key`.
pub(super) fn last<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `%XX` escapes and `+` decoded; a malformed escape is kept as written.
fn decode(text: &str) -> Cow<'_, str> {
    if !text.contains(['%', '+']) {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded_and_repeated_keys_join() {
        assert_eq!(decode("member%2Cuser%3Adeploy"), "member,user:deploy");
        assert_eq!(decode("a+b%zz"), "a b%zz");
        let p = params(Some("types=member&types=user%3Adeploy"), &["types"]).expect("known");
        assert_eq!(joined(&p, "types").as_deref(), Some("member,user:deploy"));
        assert_eq!(joined(&p, "level"), None);
        assert!(params(Some("type=member"), &["types"]).is_err());
    }
}
