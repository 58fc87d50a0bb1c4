//! A minimal HTTP/1.1 client for the control API (one connection per request), and
//! [`Lines`], the reader of the streaming endpoints.
//!
//! The address is `ip:port`, `host:port` or `unix:/path/to/socket` (the agent's
//! `--control unix:/path`). With a token ([`Client::with_token`]) every request carries
//! `Authorization: Bearer TOKEN`; an agent started with `--control-token-file` answers 401
//! `unauthorized` to a request without it.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

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

/// The prefix of a Unix-socket control address: `unix:/run/shoal.sock`.
pub const UNIX_PREFIX: &str = "unix:";

/// A control-API client.
#[derive(Clone)]
pub struct Client {
    addr: String,
    token: Option<String>,
}

/// The token is a secret: it never appears in debug output.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Either kind of connection to the agent.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

impl Client {
    /// A client for the agent at `addr` (`ip:port`, `host:port` or `unix:/path`), with no
    /// token.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            token: None,
        }
    }

    /// The same client, sending `token` (the agent's `--control-token-file` content) with
    /// every request; `None` sends none.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
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

    /// `GET path` of a streaming endpoint (`/v1/stream`, `/v1/monitor`): the lines as they
    /// come. An error answer (status 400 and up) is returned as [`ClientError::Api`].
    pub async fn stream(&self, path: &str) -> Result<Lines, ClientError> {
        let (status, body, conn) = self.send("GET", path, Bytes::new()).await?;
        if status >= 400 {
            let bytes = collect(body).await.map_err(|e| self.http(e))?;
            conn.abort();
            return Err(api_error(status, &bytes));
        }
        Ok(Lines {
            body,
            pending: Vec::new(),
            conn,
            addr: self.addr.clone(),
        })
    }

    /// `POST path` with a JSON body, for an answer of JSON lines (NDJSON, `POST /v1/query`)
    /// read as they come with [`Lines::next`].
    pub async fn post_lines<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Lines, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| self.decode(e))?;
        let (status, incoming, conn) = self.send("POST", path, Bytes::from(body)).await?;
        if status >= 400 {
            let bytes = collect(incoming).await.map_err(|e| self.http(e))?;
            conn.abort();
            return Err(api_error(status, &bytes));
        }
        Ok(Lines {
            body: incoming,
            pending: Vec::new(),
            conn,
            addr: self.addr.clone(),
        })
    }

    /// Sends one request on a new connection; the status, the body still to read, and the
    /// task driving the connection (to abort once the body is read).
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> Result<(u16, Incoming, tokio::task::JoinHandle<hyper::Result<()>>), ClientError> {
        let stream = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.http(e))?;
        let conn = tokio::spawn(conn);
        let host = match self.unix_path() {
            Some(_) => "localhost",
            None => self.addr.as_str(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
            .header("content-type", "application/json");
        if let Some(token) = &self.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req.body(Full::new(body)).map_err(|e| self.http(e))?;
        let resp = sender.send_request(req).await.map_err(|e| self.http(e))?;
        Ok((resp.status().as_u16(), resp.into_body(), conn))
    }

    /// The socket path of a `unix:` address.
    fn unix_path(&self) -> Option<&str> {
        self.addr.strip_prefix(UNIX_PREFIX)
    }

    /// A new connection to the agent: TCP, or the Unix socket of a `unix:` address.
    async fn connect(&self) -> Result<Box<dyn Io>, ClientError> {
        let refused = |source| ClientError::Connect {
            addr: self.addr.clone(),
            source,
        };
        match self.unix_path() {
            Some(path) => Ok(Box::new(UnixStream::connect(path).await.map_err(refused)?)),
            None => {
                let stream = TcpStream::connect(self.addr.as_str())
                    .await
                    .map_err(refused)?;
                let _ = stream.set_nodelay(true);
                Ok(Box::new(stream))
            }
        }
    }

    async fn request<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> Result<T, ClientError> {
        let (status, body, conn) = self.send(method, path, body).await?;
        let bytes = collect(body).await.map_err(|e| self.http(e))?;
        conn.abort();
        if status >= 400 {
            return Err(api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| self.decode(e))
    }
}

async fn collect(body: Incoming) -> hyper::Result<Bytes> {
    Ok(body.collect().await?.to_bytes())
}

/// An error answer: its JSON error body, or the text when it is not one.
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

/// The lines of a streaming answer, read as they arrive. Dropping it closes the connection,
/// which is how a reader stops a stream.
pub struct Lines {
    body: Incoming,
    /// Bytes received after the last complete line.
    pending: Vec<u8>,
    conn: tokio::task::JoinHandle<hyper::Result<()>>,
    addr: String,
}

impl Lines {
    /// The next line without its newline; `None` once the agent ended the stream.
    pub async fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        loop {
            if let Some(at) = self.pending.iter().position(|&b| b == b'\n') {
                let rest = self.pending.split_off(at + 1);
                let mut line = std::mem::replace(&mut self.pending, rest);
                line.pop();
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.pending.extend_from_slice(data);
                    }
                }
                Some(Err(e)) => {
                    return Err(ClientError::Http {
                        addr: self.addr.clone(),
                        message: e.to_string(),
                    });
                }
                None if self.pending.is_empty() => return Ok(None),
                None => {
                    let line = std::mem::take(&mut self.pending);
                    return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
                }
            }
        }
    }
}

impl Lines {
    /// The next non-blank line decoded as JSON; `None` once the agent ended the answer.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ClientError> {
        while let Some(line) = self.next_line().await? {
            if line.trim().is_empty() {
                continue;
            }
            return serde_json::from_str(&line)
                .map(Some)
                .map_err(|e| ClientError::Decode {
                    addr: self.addr.clone(),
                    message: e.to_string(),
                });
        }
        Ok(None)
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.conn.abort();
    }
}
