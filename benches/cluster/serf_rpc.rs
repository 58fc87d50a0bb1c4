//! A minimal client of Serf's RPC protocol (msgpack over TCP): the handshake and the `members`
//! command (statuses and tags), enough to poll a Serf agent's member list as often as the bench polls shoal's
//! `GET /v1/members` (a `serf members` process per poll would cost a Go process start each
//! time). Each call opens a new connection, as the shoal client does.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A decoded msgpack value (only what Serf's answers hold).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bin(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// The value of `key` in a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Why a decode did not produce a value.
#[derive(Debug, PartialEq)]
pub enum DecodeError {
    /// More bytes are needed.
    Incomplete,
    /// Not msgpack this decoder knows.
    Bad(String),
}

/// Decodes one value from the front of `buf`; returns it and the bytes it took.
pub fn decode(buf: &[u8]) -> Result<(Value, usize), DecodeError> {
    let mut pos = 0;
    let v = decode_at(buf, &mut pos, 0)?;
    Ok((v, pos))
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], DecodeError> {
    let end = pos.checked_add(n).ok_or(DecodeError::Incomplete)?;
    let s = buf.get(*pos..end).ok_or(DecodeError::Incomplete)?;
    *pos = end;
    Ok(s)
}

fn uint(buf: &[u8], pos: &mut usize, n: usize) -> Result<u64, DecodeError> {
    Ok(take(buf, pos, n)?
        .iter()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

fn decode_at(buf: &[u8], pos: &mut usize, depth: usize) -> Result<Value, DecodeError> {
    if depth > 32 {
        return Err(DecodeError::Bad("nested too deep".into()));
    }
    let tag = take(buf, pos, 1)?[0];
    let len = |n: usize, pos: &mut usize| uint(buf, pos, n).map(|v| v as usize);
    Ok(match tag {
        0x00..=0x7f => Value::Int(i64::from(tag)),
        0x80..=0x8f => map(buf, pos, usize::from(tag & 0x0f), depth)?,
        0x90..=0x9f => array(buf, pos, usize::from(tag & 0x0f), depth)?,
        0xa0..=0xbf => string(buf, pos, usize::from(tag & 0x1f))?,
        0xc0 => Value::Nil,
        0xc2 => Value::Bool(false),
        0xc3 => Value::Bool(true),
        0xc4..=0xc6 => {
            let n = len(1 << (tag - 0xc4), pos)?;
            Value::Bin(take(buf, pos, n)?.to_vec())
        }
        // ext 8/16/32 and fixext: skipped as binary.
        0xc7..=0xc9 => {
            let n = len(1 << (tag - 0xc7), pos)?;
            Value::Bin(take(buf, pos, n + 1)?.to_vec())
        }
        0xd4..=0xd8 => Value::Bin(take(buf, pos, 1 + (1 << (tag - 0xd4)))?.to_vec()),
        0xca => Value::Float(f64::from(f32::from_bits(uint(buf, pos, 4)? as u32))),
        0xcb => Value::Float(f64::from_bits(uint(buf, pos, 8)?)),
        0xcc..=0xcf => Value::Int(uint(buf, pos, 1 << (tag - 0xcc))? as i64),
        0xd0..=0xd3 => {
            let n = 1usize << (tag - 0xd0);
            let raw = uint(buf, pos, n)?;
            let shift = 64 - 8 * n as u32;
            Value::Int(((raw << shift) as i64) >> shift)
        }
        0xd9..=0xdb => {
            let n = len(1 << (tag - 0xd9), pos)?;
            string(buf, pos, n)?
        }
        0xdc | 0xdd => {
            let n = len(if tag == 0xdc { 2 } else { 4 }, pos)?;
            array(buf, pos, n, depth)?
        }
        0xde | 0xdf => {
            let n = len(if tag == 0xde { 2 } else { 4 }, pos)?;
            map(buf, pos, n, depth)?
        }
        0xe0..=0xff => Value::Int(i64::from(tag as i8)),
        0xc1 => return Err(DecodeError::Bad("reserved byte 0xc1".into())),
    })
}

fn string(buf: &[u8], pos: &mut usize, n: usize) -> Result<Value, DecodeError> {
    let bytes = take(buf, pos, n)?;
    Ok(Value::Str(String::from_utf8_lossy(bytes).into_owned()))
}

fn array(buf: &[u8], pos: &mut usize, n: usize, depth: usize) -> Result<Value, DecodeError> {
    let mut items = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        items.push(decode_at(buf, pos, depth + 1)?);
    }
    Ok(Value::Array(items))
}

fn map(buf: &[u8], pos: &mut usize, n: usize, depth: usize) -> Result<Value, DecodeError> {
    let mut entries = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let k = decode_at(buf, pos, depth + 1)?;
        let v = decode_at(buf, pos, depth + 1)?;
        entries.push((k, v));
    }
    Ok(Value::Map(entries))
}

/// Appends a msgpack string.
fn put_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else {
        out.push(0xd9);
        out.push(n as u8);
    }
    out.extend_from_slice(s.as_bytes());
}

/// A request header `{"Command": command, "Seq": seq}`.
pub fn header(command: &str, seq: u8) -> Vec<u8> {
    let mut out = vec![0x82];
    put_str(&mut out, "Command");
    put_str(&mut out, command);
    put_str(&mut out, "Seq");
    out.push(seq & 0x7f);
    out
}

/// The handshake request: header and body `{"Version": 1}`.
pub fn handshake() -> Vec<u8> {
    let mut out = header("handshake", 0);
    out.push(0x81);
    put_str(&mut out, "Version");
    out.push(1);
    out
}

/// One connection to an agent's RPC address, reading whole values.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn next(&mut self) -> Result<Value, String> {
        loop {
            match decode(&self.buf) {
                Ok((v, used)) => {
                    self.buf.drain(..used);
                    return Ok(v);
                }
                Err(DecodeError::Bad(why)) => return Err(why),
                Err(DecodeError::Incomplete) => {}
            }
            let mut chunk = [0u8; 8192];
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads a response header and fails on a non-empty `Error`.
    async fn response(&mut self) -> Result<(), String> {
        let head = self.next().await?;
        match head.get("Error").and_then(Value::as_str) {
            Some(e) if !e.is_empty() => Err(e.to_string()),
            _ => Ok(()),
        }
    }
}

/// `(name, status)` of every member the agent at `rpc` lists (`alive`, `leaving`, `left`,
/// `failed`); `Err` if it did not answer in full within `timeout`.
pub async fn members(rpc: &str, timeout: Duration) -> Result<Vec<(String, String)>, String> {
    match tokio::time::timeout(timeout, members_inner(rpc)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn members_inner(rpc: &str) -> Result<Vec<(String, String)>, String> {
    let list = member_list(rpc).await?;
    Ok(list
        .iter()
        .filter_map(|m| {
            let name = m.get("Name")?.as_str()?.to_string();
            let status = m.get("Status")?.as_str()?.to_string();
            Some((name, status))
        })
        .collect())
}

/// `(name, tags)` of every member the agent at `rpc` lists; `Err` if it did not answer in
/// full within `timeout`.
pub async fn member_tags(
    rpc: &str,
    timeout: Duration,
) -> Result<Vec<(String, BTreeMap<String, String>)>, String> {
    let list = match tokio::time::timeout(timeout, member_list(rpc)).await {
        Ok(result) => result?,
        Err(_) => return Err(format!("no answer within {timeout:?}")),
    };
    Ok(list
        .iter()
        .filter_map(|m| {
            let name = m.get("Name")?.as_str()?.to_string();
            let tags = match m.get("Tags") {
                Some(Value::Map(entries)) => entries
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                    .collect(),
                _ => BTreeMap::new(),
            };
            Some((name, tags))
        })
        .collect())
}

/// The raw `Members` array of a `members` answer.
async fn member_list(rpc: &str) -> Result<Vec<Value>, String> {
    let stream = TcpStream::connect(rpc).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
    };
    let mut request = handshake();
    request.extend(header("members", 1));
    conn.stream
        .write_all(&request)
        .await
        .map_err(|e| e.to_string())?;
    conn.response().await?;
    conn.response().await?;
    match conn.next().await?.get("Members") {
        Some(Value::Array(list)) => Ok(list.clone()),
        _ => Err("no Members in the answer".into()),
    }
}
