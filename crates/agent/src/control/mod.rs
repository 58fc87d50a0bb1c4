//! The control API: HTTP/1.1 + JSON, loopback by default. The CLI is a client of it.
//!
//! - this file: the server, the routes, the JSON helpers and the request/response endpoints
//!   (`POST /v1/query` answers with a stream of JSON lines, [`QueryLine`], as acks and answers
//!   arrive);
//! - [`streams`]: `GET /v1/stream` and `GET /v1/monitor`, answered with a streamed body;
//! - [`info`]: `GET /v1/info`;
//! - [`keys`]: `GET` and `POST /v1/keys`, cluster-wide key rotation;
//! - [`primary`]: `GET /v1/primary`, a group's primary as this agent sees it;
//! - [`server`]: the listener (TCP or a Unix socket) and the connection limits.
//!
//! With a token (`--control-token-file`) every request must carry `Authorization: Bearer
//! TOKEN`; one without it, or with another, is answered 401 `unauthorized` before its body is
//! read, and its connection is closed.

pub(crate) mod info;
mod keys;
pub(crate) mod primary;
pub mod server;
mod streams;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_core::{CommandError, NodeHandle, QueryFilter, QueryParams, QueryUpdate};
use shoal_proto::{
    ErrorBody, EventRequest, EventResponse, ForceLeaveRequest, JoinRequest, JoinResponse,
    KeysRequest, OkResponse, QueryLine, QueryRequest, TagsRequest, TagsResponse,
};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{debug, warn};

use crate::handlers::dispatch::Counters;
use crate::handlers::filter::HandlerSpec;
use crate::stream::events::EventStreams;
use crate::stream::monitor::Monitors;
use crate::view;

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

/// What the handlers of the API need.
pub struct ControlState {
    /// The node.
    pub node: NodeHandle,
    /// Static facts for `/v1/info`.
    pub name: String,
    /// Profile name.
    pub profile: String,
    /// Control address actually bound.
    pub control: String,
    /// Handler counters.
    pub counters: Arc<Counters>,
    /// Told when `/v1/leave` completed, so the agent exits.
    pub stopped: mpsc::Sender<()>,
    /// Where `/v1/tags` changes are kept (`--tags-file`).
    pub tags_file: Option<std::path::PathBuf>,
    /// The handlers loaded now (`/v1/info`); SIGHUP replaces them.
    pub handlers: watch::Receiver<Arc<Vec<HandlerSpec>>>,
    /// `/v1/stream` readers; the dispatcher publishes to them.
    pub events: Arc<EventStreams>,
    /// `/v1/monitor` readers; the log publishes to them.
    pub monitors: Arc<Monitors>,
    /// Places for open streams of both kinds ([`MAX_STREAMS`]); each stream holds one.
    pub stream_slots: Arc<Semaphore>,
    /// The token every request must carry (`--control-token-file`); `None`: no check.
    pub token: Option<String>,
    /// The door's throttled warnings (refused, timed out, unauthorized).
    pub warnings: server::Warnings,
    /// What this member announces as its health and primary group.
    pub role: crate::role::RoleCell,
    /// The primary-group driver (`--group`), if any.
    pub primary: Option<crate::primary::Handle>,
    /// This agent's health checks and their last runs (`/v1/info`).
    pub checks: crate::checks::Board,
}

/// Most streams (`/v1/stream` and `/v1/monitor` together) open at once; one more is answered
/// 503 `too_many_streams`. Each costs a connection, a task and up to
/// [`crate::stream::fanout::CAPACITY`] queued lines.
pub const MAX_STREAMS: usize = 32;

/// An answer: a whole JSON body, or a stream.
type Reply = Response<BoxBody<Bytes, Infallible>>;

/// How many lines of a query's answer may wait for the HTTP connection; the writer task waits
/// when it is full (the engine does not: its own stream to the task is bounded and lossy).
const QUERY_LINES: usize = 64;

fn json<T: Serialize>(status: StatusCode, body: &T) -> Reply {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(bytes)).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Reply {
    json(status, &ErrorBody::new(code, message))
}

fn command_error(e: CommandError) -> Reply {
    let (status, code) = match &e {
        CommandError::UnknownMember(_) => (StatusCode::NOT_FOUND, "not_found"),
        CommandError::NotFailed { .. } => (StatusCode::CONFLICT, "conflict"),
        CommandError::Meta(_) | CommandError::UserEvent(_) | CommandError::Query(_) => {
            (StatusCode::BAD_REQUEST, "bad_request")
        }
        CommandError::Gossip => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        CommandError::JoinFailed(_) => (StatusCode::BAD_GATEWAY, "join_failed"),
        CommandError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        CommandError::NotEncrypted | CommandError::AcceptingPlaintext => {
            (StatusCode::CONFLICT, "conflict")
        }
        CommandError::Key(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        CommandError::KeyringFile { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    error(status, code, e.to_string())
}

async fn body<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Reply> {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|&len| len > MAX_BODY as u64) {
        return Err(too_large(format!(
            "request body is {len} bytes; the limit is {MAX_BODY}"
        )));
    }
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large(format!(
                    "request body is over the limit of {MAX_BODY} bytes"
                ))
            } else {
                error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("request body unreadable: {e}"),
                )
            }
        })?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("invalid JSON body: {e}"),
        )
    })
}

fn too_large(message: String) -> Reply {
    let mut reply = error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message);
    close_after(&mut reply);
    reply
}

/// Marks an answer as the connection's last (hyper closes it once sent).
fn close_after(reply: &mut Reply) {
    reply.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
}

/// Whether the request carries the token (`Authorization: Bearer TOKEN`; the scheme's case
/// does not matter, RFC 9110), compared in constant time.
fn authorized(req: &Request<Incoming>, expected: &str) -> bool {
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(|v| v.split_at_checked(7))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
        .is_some_and(|(_, given)| crate::token::matches(given, expected.as_bytes()))
}

/// 401 `unauthorized`, then the connection closes.
fn unauthorized(req: &Request<Incoming>) -> Reply {
    let message = if req.headers().contains_key(hyper::header::AUTHORIZATION) {
        "wrong control token"
    } else {
        "this agent's control API needs a token: send Authorization: Bearer TOKEN \
         (shoal commands: --token-file PATH or SHOAL_CONTROL_TOKEN)"
    };
    let mut reply = error(StatusCode::UNAUTHORIZED, "unauthorized", message);
    reply.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Bearer"),
    );
    close_after(&mut reply);
    reply
}

pub(super) async fn route(req: Request<Incoming>, st: &ControlState) -> Reply {
    if let Some(token) = &st.token
        && !authorized(&req, token)
    {
        if st.warnings.unauthorized.allow() {
            warn!(path = %req.uri().path(),
                "control request refused: no or a wrong token (further ones for 5 s at debug level)");
        } else {
            debug!(path = %req.uri().path(), "control request without the right token");
        }
        return unauthorized(&req);
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::GET, "/v1/members") => json(StatusCode::OK, &view::members(&st.node.view())),
        (Method::POST, "/v1/join") => match body::<JoinRequest>(req).await {
            Err(reply) => reply,
            Ok(r) if r.addrs.is_empty() => {
                error(StatusCode::BAD_REQUEST, "bad_request", "addrs is empty")
            }
            Ok(r) => match st.node.join(r.addrs, r.replay).await {
                Ok(joined) => json(StatusCode::OK, &JoinResponse { joined }),
                Err(e) => command_error(e),
            },
        },
        (Method::POST, "/v1/leave") => match st.node.leave().await {
            Ok(()) => {
                let _ = st.stopped.try_send(());
                json(StatusCode::OK, &OkResponse { ok: true })
            }
            Err(e) => command_error(e),
        },
        (Method::POST, "/v1/force-leave") => match body::<ForceLeaveRequest>(req).await {
            Err(reply) => reply,
            Ok(r) => match st.node.force_leave(r.node).await {
                Ok(()) => json(StatusCode::OK, &OkResponse { ok: true }),
                Err(e) => command_error(e),
            },
        },
        (Method::POST, "/v1/tags") => match body::<TagsRequest>(req).await {
            Err(reply) => reply,
            Ok(r) => update_tags(r, st).await,
        },
        (Method::POST, "/v1/event") => match body::<EventRequest>(req).await {
            Err(reply) => reply,
            Ok(r) => match st
                .node
                .user_event(r.name, r.payload.into_bytes(), r.coalesce)
                .await
            {
                Ok(ltime) => json(StatusCode::OK, &EventResponse { ltime }),
                Err(e) => command_error(e),
            },
        },
        (Method::POST, "/v1/query") => match body::<QueryRequest>(req).await {
            Err(reply) => reply,
            Ok(r) if r.name.starts_with(crate::keys::PREFIX) => error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "query names starting with {:?} are reserved",
                    crate::keys::PREFIX
                ),
            ),
            Ok(r) => query(r, &st.node).await,
        },
        (Method::GET, "/v1/keys") => keys::list(st).await,
        (Method::POST, "/v1/keys") => match body::<KeysRequest>(req).await {
            Err(reply) => reply,
            Ok(r) => keys::change(r, st).await,
        },
        (Method::GET, "/v1/info") => json(StatusCode::OK, &info::info(st)),
        (Method::GET, "/v1/primary") => primary::answer_reply(req.uri().query(), st),
        (Method::GET, "/v1/stream") => streams::events(req.uri().query(), st),
        (Method::GET, "/v1/monitor") => streams::monitor(req.uri().query(), st),
        (
            _,
            "/v1/members" | "/v1/join" | "/v1/leave" | "/v1/force-leave" | "/v1/tags" | "/v1/event"
            | "/v1/query" | "/v1/info" | "/v1/stream" | "/v1/monitor" | "/v1/keys" | "/v1/primary",
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} does not accept {}", path, req.method()),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no endpoint {path}"),
        ),
    }
}

/// `POST /v1/query`: sends the query, then streams its lines as NDJSON.
async fn query(r: QueryRequest, node: &NodeHandle) -> Reply {
    let name = r.name.clone();
    let (started, mut updates) = match node.query(query_params(r)).await {
        Ok(sent) => sent,
        Err(e) => return command_error(e),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(QUERY_LINES);
    tokio::spawn(async move {
        let (mut acks, mut responses, mut timed_out) = (0, 0, false);
        let first = QueryLine::Started {
            name,
            ltime: started.ltime,
            timeout_ms: started.timeout_ms,
            expected: started.expected,
        };
        if tx.send(line(&first)).await.is_err() {
            return;
        }
        while let Some(update) = updates.recv().await {
            let next = match update {
                QueryUpdate::Ack { from } => {
                    acks += 1;
                    QueryLine::Ack { from }
                }
                QueryUpdate::Response { from, payload } => {
                    responses += 1;
                    let payload = String::from_utf8_lossy(&payload).into_owned();
                    QueryLine::Response { from, payload }
                }
                QueryUpdate::Done { timed_out: t } => {
                    timed_out = t;
                    break;
                }
            };
            if tx.send(line(&next)).await.is_err() {
                return;
            }
        }
        let done = QueryLine::Done {
            acks,
            responses,
            timed_out,
        };
        let _ = tx.send(line(&done)).await;
    });
    let mut resp = Response::new(BodyExt::boxed(LineBody(rx)));
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/x-ndjson"),
    );
    resp
}

/// The engine's query from the request (checked there: regexes, sizes, limits).
fn query_params(r: QueryRequest) -> QueryParams {
    let mut filters = Vec::new();
    if !r.nodes.is_empty() {
        filters.push(QueryFilter::Nodes(r.nodes));
    }
    filters.extend(
        r.tags
            .into_iter()
            .map(|(key, re)| QueryFilter::Tag { key, re }),
    );
    QueryParams {
        name: r.name,
        payload: r.payload.into_bytes(),
        filters,
        timeout_ms: r.timeout_ms,
        ack: r.ack,
        relay_factor: r.relay_factor,
    }
}

fn line(value: &QueryLine) -> Bytes {
    let mut bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// A response body of the lines a task sends; it ends when the task drops its sender.
struct LineBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for LineBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|line| line.map(|b| Ok(Frame::data(b))))
    }
}

/// `POST /v1/tags`: changes the tags in the cluster, then in the tags file.
async fn update_tags(r: TagsRequest, st: &ControlState) -> Reply {
    match change_tags(st, r.set, r.delete).await {
        Ok(tags) => json(StatusCode::OK, &TagsResponse { tags }),
        Err(TagsError::Bad(message)) => error(StatusCode::BAD_REQUEST, "bad_request", message),
        Err(TagsError::Command(e)) => command_error(e),
        Err(TagsError::NotSaved(message)) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
        }
    }
}

/// Why [`change_tags`] failed.
pub(crate) enum TagsError {
    /// The request itself is wrong (nothing to change, an empty key). Nothing changed.
    Bad(String),
    /// The node refused (sizes, stopped). Nothing changed.
    Command(CommandError),
    /// The cluster has the new tags but the tags file could not be written.
    NotSaved(String),
}

/// Changes the tags in the cluster, then in the tags file: what `POST /v1/tags` and the RPC
/// `tags` command do.
pub(crate) async fn change_tags(
    st: &ControlState,
    set: std::collections::BTreeMap<String, String>,
    delete: Vec<String>,
) -> Result<std::collections::BTreeMap<String, String>, TagsError> {
    if set.is_empty() && delete.is_empty() {
        return Err(TagsError::Bad(
            "nothing to change: give tags to set or delete".into(),
        ));
    }
    if set.keys().any(String::is_empty) {
        return Err(TagsError::Bad("tag keys must not be empty".into()));
    }
    let tags = st
        .node
        .update_tags(set, delete)
        .await
        .map_err(TagsError::Command)?;
    if let Some(path) = &st.tags_file
        && let Err(e) = crate::tags_file::save(path, &tags).await
    {
        warn!(error = %e, "tags changed but not persisted");
        return Err(TagsError::NotSaved(format!(
            "tags changed in the cluster, but {e}"
        )));
    }
    Ok(tags)
}
