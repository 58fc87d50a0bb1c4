//! `GET /v1/keys` (list every member's keys) and `POST /v1/keys` (install, use or remove a key
//! on every member), through [`crate::keys::cluster_op`].

use hyper::StatusCode;
use shoal_proto::KeysRequest;

use super::{ControlState, Reply, command_error, error, json};
use crate::keys::{self, KeyOp};

/// `GET /v1/keys`.
pub(super) async fn list(st: &ControlState) -> Reply {
    match keys::cluster_op(&st.node, KeyOp::List, None).await {
        Ok(answer) => json(StatusCode::OK, &answer),
        Err(e) => command_error(e),
    }
}

/// `POST /v1/keys` with `{"op": "install"|"use"|"remove"|"list", "key": "..."}`.
pub(super) async fn change(r: KeysRequest, st: &ControlState) -> Reply {
    let Some(op) = KeyOp::parse(&r.op) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("unknown op {:?}: use install, use, remove or list", r.op),
        );
    };
    if op != KeyOp::List && r.key.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("op {:?} needs a key", r.op),
        );
    }
    match keys::cluster_op(&st.node, op, r.key).await {
        Ok(answer) => json(StatusCode::OK, &answer),
        Err(e) => command_error(e),
    }
}
