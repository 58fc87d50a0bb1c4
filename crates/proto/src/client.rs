//! A minimal HTTP/1.1 client for the control API (one connection per request).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::net::TcpStream;

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
        let conn = tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.as_str())
            .header("content-type", "application/json");
        let req = req.body(Full::new(body)).map_err(|e| self.http(e))?;
        let resp = sender.send_request(req).await.map_err(|e| self.http(e))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.http(e))?
            .to_bytes();
        conn.abort();
        if status >= 400 {
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => ClientError::Api {
                    status,
                    code: body.error.code,
                    message: body.error.message,
                },
                Err(_) => ClientError::Api {
                    status,
                    code: "http".into(),
                    message: String::from_utf8_lossy(&bytes).into_owned(),
                },
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| self.decode(e))
    }
}
