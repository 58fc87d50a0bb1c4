//! shoal-proto: the control API's JSON types and a small HTTP client for it.
//!
//! Layout:
//! - [`api`]: request and response bodies, one struct per endpoint, and the error body.
//! - [`client`]: [`Client`], used by the `shoal` CLI; `curl` works just as well.
//! - [`ready`]: [`ReadyLine`], the first line `shoal agent` prints on stdout.
//! - [`stream`]: the lines of the streaming endpoints: [`StreamEvent`] (`/v1/stream`) and the
//!   monitor's [`MonitorLevel`] and [`MonitorFormat`] (`/v1/monitor`).
//!
//! Endpoints (HTTP/1.1, JSON, loopback by default):
//! `GET /v1/members`, `POST /v1/join`, `POST /v1/leave`, `POST /v1/force-leave`, `POST /v1/tags`,
//! `POST /v1/event`, `POST /v1/query` (answers streamed as NDJSON, [`QueryLine`]),
//! `GET /v1/info`, `GET /v1/primary`, and the streams `GET /v1/stream` (events, NDJSON) and `GET /v1/monitor` (the
//! log).
//! Errors are `{"error":{"code":"...","message":"..."}}` with a stable `code`.

pub mod api;
pub mod client;
pub mod ready;
pub mod stream;

pub use api::*;
pub use client::{Client, ClientError, Lines};
pub use ready::{Ready, ReadyLine};
pub use stream::*;

/// The default control address.
pub const DEFAULT_CONTROL: &str = "127.0.0.1:7373";
