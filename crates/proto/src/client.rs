//! A minimal HTTP/1.1 client for the control API (one connection per request).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::api::ErrorBody;

/// Why a control request failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Nothing answered at the address.
    #[error(
        "no shoal agent answers at {addr}: {source} (is `shoal agent` running? set --control or SHOAL_CONTROL)"
    )]
    Connect {
        /// The address tried.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The agent answered with an error.
    #[error("{message} ({code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable error code.
        code: String,
        /// Message.
        message: String,
    },
    /// The HTTP exchange failed.
    #[error("control request to {addr} failed: {message}")]
    Http {
        /// The address.
        addr: String,
        /// What failed.
        message: String,
    },
    /// The answer was not the expected JSON.
    #[error("unexpected answer from {addr}: {message}")]
    Decode {
        /// The address.
        addr: String,
        /// What failed.
        message: String,
    },
}

/// A control-API client.
#[derive(Debug, Clone)]
pub struct Client {
    addr: String,
}

impl Client {
    /// A client for the agent at `addr` (`ip:port` or `host:port`).
    pub fn new(addr: impl Into<String>) -> Self {
        Self { addr: addr.into() }
    }

    /// The address this client talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `GET path`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request("GET", path, Bytes::new()).await
    }

    /// `POST path` with a JSON body.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| self.decode(e))?;
        self.request("POST", path, Bytes::from(body)).await
    }

    /// `POST path` with a JSON body, for an answer of JSON lines (NDJSON) read as they come.
    pub async fn post_lines<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Lines, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| self.decode(e))?;
        let (status, incoming, conn) = self.send("POST", path, Bytes::from(body)).await?;
        if status >= 400 {
            return Err(api_error(status, &self.read_all(incoming, conn).await?));
        }
        Ok(Lines {
            client: self.clone(),
            body: incoming,
            buf: Vec::new(),
            _conn: ConnGuard(conn),
        })
    }

    fn http(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Http {
            addr: self.addr.clone(),
            message: e.to_string(),
        }
    }

    fn decode(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Decode {
            addr: self.addr.clone(),
            message: e.to_string(),
        }
    }

    async fn request<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> Result<T, ClientError> {
        let (status, incoming, conn) = self.send(method, path, body).await?;
        let bytes = self.read_all(incoming, conn).await?;
        if status >= 400 {
            return Err(api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| self.decode(e))
    }

    /// The whole body; then the connection is closed.
    async fn read_all(
        &self,
        incoming: Incoming,
        conn: JoinHandle<()>,
    ) -> Result<Bytes, ClientError> {
        let bytes = incoming.collect().await.map_err(|e| self.http(e));
        conn.abort();
        Ok(bytes?.to_bytes())
    }

    /// Sends one request; returns the status, the body still to read and the connection task.
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> Result<(u16, Incoming, JoinHandle<()>), ClientError> {
        let stream = TcpStream::connect(self.addr.as_str())
            .await
            .map_err(|source| ClientError::Connect {
                addr: self.addr.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.http(e))?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.as_str())
            .header("content-type", "application/json");
        let req = req.body(Full::new(body)).map_err(|e| self.http(e))?;
        let resp = sender.send_request(req).await.map_err(|e| self.http(e))?;
        Ok((resp.status().as_u16(), resp.into_body(), conn))
    }
}

/// The error of an answer with status `status` and body `bytes`.
fn api_error(status: u16, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => ClientError::Api {
            status,
            code: body.error.code,
            message: body.error.message,
        },
        Err(_) => ClientError::Api {
            status,
            code: "http".into(),
            message: String::from_utf8_lossy(bytes).into_owned(),
        },
    }
}

/// Stops the connection task when the reader is dropped.
struct ConnGuard(JoinHandle<()>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An answer of JSON lines, read as the agent writes them ([`Client::post_lines`]).
pub struct Lines {
    client: Client,
    body: Incoming,
    buf: Vec<u8>,
    _conn: ConnGuard,
}

impl Lines {
    /// The next line, decoded; `None` at the end of the answer.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ClientError> {
        let mut ended = false;
        loop {
            if let Some(line) = take_line(&mut self.buf, ended) {
                return serde_json::from_slice(&line)
                    .map(Some)
                    .map_err(|e| self.client.decode(e));
            }
            if ended {
                return Ok(None);
            }
            match self.body.frame().await {
                None => ended = true,
                Some(Err(e)) => return Err(self.client.http(e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// The first non-blank line in `buf`, taken out of it; at the end of the body (`ended`) also
/// a last line without its newline.
fn take_line(buf: &mut Vec<u8>, ended: bool) -> Option<Vec<u8>> {
    while let Some(end) = buf.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = buf.drain(..=end).collect();
        if !line.iter().all(u8::is_ascii_whitespace) {
            return Some(line);
        }
    }
    if ended && !buf.iter().all(u8::is_ascii_whitespace) {
        return Some(std::mem::take(buf));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_taken_whole_across_frames_blank_ones_skipped_and_a_last_one_kept() {
        let mut buf = b"{\"a\":1}\n\n{\"b\"".to_vec();
        assert_eq!(take_line(&mut buf, false), Some(b"{\"a\":1}\n".to_vec()));
        assert_eq!(take_line(&mut buf, false), None, "half a line waits");
        buf.extend_from_slice(b":2}\n  \n");
        assert_eq!(take_line(&mut buf, false), Some(b"{\"b\":2}\n".to_vec()));
        assert_eq!(take_line(&mut buf, true), None, "only blanks left");
        buf.extend_from_slice(b"{\"c\":3}");
        assert_eq!(take_line(&mut buf, false), None);
        assert_eq!(take_line(&mut buf, true), Some(b"{\"c\":3}".to_vec()));
    }
}
