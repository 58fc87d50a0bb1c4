//! Serf's RPC framing: a stream of msgpack values, each request a header map (`Command`,
//! `Seq`) and, for most commands, a body map; each answer a header map (`Seq`, `Error`) and,
//! for some, a body. Values are read untyped ([`rmpv::Value`]) and picked apart by field name,
//! because Serf's Go clients write a field's zero value in several shapes (`nil`, an empty
//! string, `bin` or `str` for bytes).

use bytes::{Bytes, BytesMut};
use rmpv::Value;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest msgpack value a client may send (a request body with its payload). Serf's own
/// limits on payloads are far smaller; past this the connection is closed.
pub const MAX_VALUE: usize = 256 * 1024;

/// Deepest nesting accepted (Serf's requests are two levels deep).
const MAX_DEPTH: usize = 16;

/// Why the connection cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not msgpack.
    #[error("not msgpack: {0}")]
    Invalid(String),
    /// A value over [`MAX_VALUE`].
    #[error("a msgpack value over {MAX_VALUE} bytes")]
    TooLarge,
}

/// Reads one msgpack value after another.
pub struct Frames<R> {
    reader: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> Frames<R> {
    /// Frames read from `reader`.
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            buf: BytesMut::with_capacity(4096),
        }
    }

    /// The next value; `None` at a clean end of the stream (between values).
    pub async fn next(&mut self) -> Result<Option<Value>, WireError> {
        loop {
            if !self.buf.is_empty() {
                let mut rest: &[u8] = &self.buf;
                match rmpv::decode::read_value_with_max_depth(&mut rest, MAX_DEPTH) {
                    Ok(value) => {
                        let used = self.buf.len() - rest.len();
                        let _ = self.buf.split_to(used);
                        return Ok(Some(value));
                    }
                    Err(e) if incomplete(&e) => {}
                    Err(e) => return Err(WireError::Invalid(e.to_string())),
                }
                if self.buf.len() >= MAX_VALUE {
                    return Err(WireError::TooLarge);
                }
            }
            let n = self.reader.read_buf(&mut self.buf).await?;
            if n == 0 {
                return match self.buf.is_empty() {
                    true => Ok(None),
                    false => Err(WireError::Invalid("the stream ended inside a value".into())),
                };
            }
        }
    }
}

fn incomplete(e: &rmpv::decode::Error) -> bool {
    use rmpv::decode::Error;
    match e {
        Error::InvalidMarkerRead(io) | Error::InvalidDataRead(io) => {
            io.kind() == std::io::ErrorKind::UnexpectedEof
        }
        Error::DepthLimitExceeded => false,
    }
}

/// A map's field by name; `Nil` when absent.
pub fn field<'a>(map: &'a Value, name: &str) -> &'a Value {
    const NIL: &Value = &Value::Nil;
    map.as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(name)))
        .map_or(NIL, |(_, v)| v)
}

/// A string field (`str` or `bin` holding UTF-8); `nil` or absent is empty.
pub fn string(map: &Value, name: &str) -> Result<String, String> {
    match field(map, name) {
        Value::Nil => Ok(String::new()),
        Value::String(s) => s
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{name} is not valid UTF-8")),
        Value::Binary(b) => {
            String::from_utf8(b.clone()).map_err(|_| format!("{name} is not valid UTF-8"))
        }
        other => Err(format!("{name} must be a string, not {}", kind(other))),
    }
}

/// A bytes field (`bin` or `str`); `nil` or absent is empty.
pub fn bytes(map: &Value, name: &str) -> Result<Vec<u8>, String> {
    match field(map, name) {
        Value::Nil => Ok(Vec::new()),
        Value::Binary(b) => Ok(b.clone()),
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        other => Err(format!("{name} must be bytes, not {}", kind(other))),
    }
}

/// A boolean field; absent is false.
pub fn boolean(map: &Value, name: &str) -> Result<bool, String> {
    match field(map, name) {
        Value::Nil => Ok(false),
        Value::Boolean(b) => Ok(*b),
        other => Err(format!("{name} must be a boolean, not {}", kind(other))),
    }
}

/// A signed integer field; absent is 0.
pub fn int(map: &Value, name: &str) -> Result<i64, String> {
    match field(map, name) {
        Value::Nil => Ok(0),
        Value::Integer(i) => i.as_i64().ok_or_else(|| format!("{name} is out of range")),
        other => Err(format!("{name} must be an integer, not {}", kind(other))),
    }
}

/// An unsigned integer field; absent is 0.
pub fn uint(map: &Value, name: &str) -> Result<u64, String> {
    match field(map, name) {
        Value::Nil => Ok(0),
        Value::Integer(i) => i.as_u64().ok_or_else(|| format!("{name} is out of range")),
        other => Err(format!("{name} must be an integer, not {}", kind(other))),
    }
}

/// A list of strings; `nil` or absent is empty.
pub fn strings(map: &Value, name: &str) -> Result<Vec<String>, String> {
    match field(map, name) {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.as_str().map(str::to_string),
                Value::Binary(b) => String::from_utf8(b.clone()).ok(),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("{name} must hold only strings")),
        other => Err(format!("{name} must be a list, not {}", kind(other))),
    }
}

/// A string-to-string map; `nil` or absent is empty.
pub fn string_map(
    map: &Value,
    name: &str,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    match field(map, name) {
        Value::Nil => Ok(Default::default()),
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| {
                let text = |v: &Value| match v {
                    Value::String(s) => s.as_str().map(str::to_string),
                    Value::Binary(b) => String::from_utf8(b.clone()).ok(),
                    _ => None,
                };
                Some((text(k)?, text(v)?))
            })
            .collect::<Option<_>>()
            .ok_or_else(|| format!("{name} must map strings to strings")),
        other => Err(format!("{name} must be a map, not {}", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "a boolean",
        Value::Integer(_) => "an integer",
        Value::F32(_) | Value::F64(_) => "a float",
        Value::String(_) => "a string",
        Value::Binary(_) => "bytes",
        Value::Array(_) => "a list",
        Value::Map(_) => "a map",
        Value::Ext(..) => "an extension value",
    }
}

/// A map from `(name, value)` pairs.
pub fn map<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Map(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

/// A string-to-string map value.
pub fn string_map_value<'a>(entries: impl IntoIterator<Item = (&'a String, &'a String)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k.as_str()), Value::from(v.as_str())))
            .collect(),
    )
}

/// One answer: the header `{Seq, Error}` and, if given, the body, encoded back to back.
pub fn answer(seq: u64, error: &str, body: Option<&Value>) -> Bytes {
    let mut out = Vec::with_capacity(64);
    let header = map([("Seq", Value::from(seq)), ("Error", Value::from(error))]);
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, &header);
    if let Some(body) = body {
        let _ = rmpv::encode::write_value(&mut out, body);
    }
    Bytes::from(out)
}

/// One value, encoded.
pub fn encode(value: &Value) -> Bytes {
    let mut out = Vec::with_capacity(128);
    let _ = rmpv::encode::write_value(&mut out, value);
    Bytes::from(out)
}

/// Decodes one whole value.
pub fn decode(bytes: &[u8]) -> Option<Value> {
    let mut rest = bytes;
    rmpv::decode::read_value_with_max_depth(&mut rest, MAX_DEPTH).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn values_split_across_reads_are_put_back_together() {
        let a = encode(&map([
            ("Command", "handshake".into()),
            ("Seq", 1u64.into()),
        ]));
        let b = encode(&map([("Version", 1i64.into())]));
        let mut all = a.to_vec();
        all.extend_from_slice(&b);
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut frames = Frames::new(rx);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for byte in all {
                let _ = tx.write_all(&[byte]).await;
            }
        });
        let header = frames.next().await.expect("read").expect("header");
        assert_eq!(string(&header, "Command").as_deref(), Ok("handshake"));
        assert_eq!(uint(&header, "Seq"), Ok(1));
        let body = frames.next().await.expect("read").expect("body");
        assert_eq!(int(&body, "Version"), Ok(1));
        assert!(frames.next().await.expect("clean end").is_none());
    }

    #[tokio::test]
    async fn garbage_and_oversized_values_end_the_connection_with_an_error() {
        let nested = [0x91u8; 40];
        let mut frames = Frames::new(&nested[..]);
        assert!(matches!(frames.next().await, Err(WireError::Invalid(_))));
        let mut frames = Frames::new(&[0x82u8, 0xa1, b'a'][..]);
        assert!(matches!(frames.next().await, Err(WireError::Invalid(_))));
        let mut huge = vec![0xc6u8];
        huge.extend_from_slice(&(u32::MAX).to_be_bytes());
        huge.resize(MAX_VALUE + 10, 0);
        let mut frames = Frames::new(&huge[..]);
        assert!(matches!(frames.next().await, Err(WireError::TooLarge)));
    }

    #[test]
    fn fields_accept_the_shapes_go_clients_write() {
        let body = map([
            ("Payload", Value::Nil),
            ("Name", Value::Binary(b"deploy".to_vec())),
            ("FilterNodes", Value::Nil),
            ("Tags", map([("role", "web".into())])),
        ]);
        assert_eq!(bytes(&body, "Payload"), Ok(Vec::new()));
        assert_eq!(string(&body, "Name").as_deref(), Ok("deploy"));
        assert_eq!(strings(&body, "FilterNodes"), Ok(Vec::new()));
        assert_eq!(string_map(&body, "Tags").expect("map").len(), 1);
        assert!(boolean(&body, "Name").is_err());
        assert_eq!(boolean(&body, "Absent"), Ok(false));
    }
}
