//! Cluster-wide key rotation (Serf's `serf keys`): internal queries named with
//! [`PREFIX`], answered by the agent itself, never by handler scripts.
//!
//! The origin sends `_shoal-install-key`, `_shoal-use-key`, `_shoal-remove-key` or
//! `_shoal-list-keys` with the key as payload; every member changes its own keyring (and
//! keyring file) and answers with a [`Answer`]; the origin sums the answers into a
//! [`KeysResponse`]. The queries travel sealed like all gossip, so only key holders can send
//! them; with `--encrypt-accept-plaintext` on, changes are refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_core::query::Query;
use shoal_core::{CommandError, NodeHandle, QueryParams, QueryUpdate};
use shoal_proto::KeysResponse;
use tracing::{info, warn};

/// Query names starting with this are the agent's own; users cannot send them.
pub const PREFIX: &str = "_shoal-";

/// One key operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOp {
    /// Add a key.
    Install,
    /// Make a key primary.
    Use,
    /// Drop a key.
    Remove,
    /// Report the keys.
    List,
}

impl KeyOp {
    /// From the API's `op` word.
    pub fn parse(op: &str) -> Option<Self> {
        Some(match op {
            "install" => KeyOp::Install,
            "use" => KeyOp::Use,
            "remove" => KeyOp::Remove,
            "list" => KeyOp::List,
            _ => return None,
        })
    }

    /// The API's word for it.
    pub fn word(self) -> &'static str {
        match self {
            KeyOp::Install => "install",
            KeyOp::Use => "use",
            KeyOp::Remove => "remove",
            KeyOp::List => "list",
        }
    }

    fn query_name(self) -> String {
        match self {
            KeyOp::List => format!("{PREFIX}list-keys"),
            op => format!("{PREFIX}{}-key", op.word()),
        }
    }

    fn from_query_name(name: &str) -> Option<Self> {
        [KeyOp::Install, KeyOp::Use, KeyOp::Remove, KeyOp::List]
            .into_iter()
            .find(|op| op.query_name() == name)
    }
}

/// A member's answer to a key query.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Answer {
    /// Why it failed; `None`: done.
    #[serde(default)]
    pub error: Option<String>,
    /// Its keys after the operation, primary first.
    #[serde(default)]
    pub keys: Vec<String>,
}

fn apply(node: &NodeHandle, op: KeyOp, key: &str) -> Result<(), CommandError> {
    match op {
        KeyOp::Install => node.install_key(key).map(drop),
        KeyOp::Use => node.use_key(key).map(drop),
        KeyOp::Remove => node.remove_key(key).map(drop),
        KeyOp::List => node.keys().map(drop).ok_or(CommandError::NotEncrypted),
    }
}

/// Answers an internal query (any name with [`PREFIX`]); unknown ones get an error answer.
pub async fn answer(query: Query, node: NodeHandle) {
    let key = String::from_utf8_lossy(&query.payload).into_owned();
    let result = match KeyOp::from_query_name(&query.name) {
        Some(op) => apply(&node, op, &key).map(|()| op),
        None => Err(CommandError::Query(
            shoal_core::query::QueryError::NotAnswering,
        )),
    };
    let answer = match result {
        Ok(op) => {
            if op != KeyOp::List {
                info!(
                    op = op.word(),
                    "keyring changed by a cluster-wide key operation"
                );
            }
            Answer {
                error: None,
                keys: node.keys().unwrap_or_default(),
            }
        }
        Err(e) => Answer {
            error: Some(e.to_string()),
            keys: node.keys().unwrap_or_default(),
        },
    };
    let payload = serde_json::to_vec(&answer).unwrap_or_default();
    if let Err(error) = node.respond_query(query.ltime, query.id, payload).await {
        warn!(name = %query.name, %error, "could not answer a key query");
    }
}

/// Runs `op` on every member through a query; sums up their answers.
pub async fn cluster_op(
    node: &NodeHandle,
    op: KeyOp,
    key: Option<String>,
) -> Result<KeysResponse, CommandError> {
    let Some(own) = node.keys() else {
        return Err(CommandError::NotEncrypted);
    };
    // Refused here too, before anything is sent: with --encrypt-send-plaintext the query, and
    // the new key in it, would go out unsealed.
    if op != KeyOp::List && node.accepts_plaintext() {
        return Err(CommandError::AcceptingPlaintext);
    }
    let key = match (op, key) {
        (KeyOp::List, _) => String::new(),
        (_, None) => return Err(shoal_core::seal::KeyError::Base64("no key given".into()).into()),
        (_, Some(k)) => {
            // The same checks every member makes, first here: nothing is sent for a bad key.
            let parsed = shoal_core::seal::Key::parse(&k)?;
            if op == KeyOp::Remove && own.first() == Some(&parsed.to_base64()) {
                return Err(shoal_core::seal::KeyError::RemovePrimary.into());
            }
            parsed.to_base64()
        }
    };
    let params = QueryParams {
        name: op.query_name(),
        payload: key.into_bytes(),
        ..Default::default()
    };
    let (started, mut updates) = node.query(params).await?;
    let mut out = KeysResponse {
        op: op.word().to_string(),
        members: started.expected.len(),
        ..Default::default()
    };
    let mut answered = BTreeMap::new();
    while let Some(update) = updates.recv().await {
        match update {
            QueryUpdate::Response { from, payload } => {
                answered.insert(from, payload);
            }
            QueryUpdate::Ack { .. } => {}
            QueryUpdate::Done { .. } => break,
        }
    }
    out.responded = answered.len();
    for name in &started.expected {
        if !answered.contains_key(name) {
            out.failed
                .insert(name.clone(), "no answer before the timeout".to_string());
        }
    }
    for (from, payload) in answered {
        let answer: Answer = serde_json::from_slice(&payload).unwrap_or_else(|e| Answer {
            error: Some(format!("unreadable answer: {e}")),
            keys: Vec::new(),
        });
        if let Some(error) = answer.error {
            out.failed.insert(from, error);
        }
        if let Some(primary) = answer.keys.first() {
            *out.primary.entry(primary.clone()).or_default() += 1;
        }
        for k in answer.keys {
            *out.keys.entry(k).or_default() += 1;
        }
    }
    Ok(out)
}
