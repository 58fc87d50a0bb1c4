//! The key commands (`install-key`, `use-key`, `remove-key`, `list-keys`: `serf keys`).
//!
//! An agent with a key ring (`--encrypt`, `--keyring-file`) runs each command cluster-wide
//! through [`crate::keys::cluster_op`], the same internal query `shoal keys` and `/v1/keys`
//! use, and answers with Serf's `keyResponse`: per-member messages, key counts and
//! `N/M nodes reported failure`. An agent whose gossip is not sealed gives the answer a Serf
//! agent without encryption gives: this member reports a failure, `1/1 nodes reported
//! failure`, with Serf's own messages.

use std::collections::BTreeMap;

use rmpv::Value;
use shoal_core::NodeHandle;
use shoal_proto::KeysResponse;

use super::wire::{map, string_map_value};
use crate::keys;

/// A key command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOp {
    /// `install-key KEY`.
    Install(String),
    /// `use-key KEY`.
    Use(String),
    /// `remove-key KEY`.
    Remove(String),
    /// `list-keys`.
    List,
}

/// Serf's `keyResponse`: per member, what it said; the keys (for `list-keys`) with how many
/// members hold each; the counts behind the `N/M nodes reported failure` error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyAnswer {
    /// The header's error; empty on success.
    pub error: String,
    /// Member name to its message.
    pub messages: BTreeMap<String, String>,
    /// Key to how many members hold it (`list-keys` only).
    pub keys: Option<BTreeMap<String, u64>>,
    /// Members asked.
    pub num_nodes: u64,
    /// Members that failed.
    pub num_err: u64,
    /// Members that answered.
    pub num_resp: u64,
}

impl KeyAnswer {
    /// The body Serf's clients decode.
    pub fn body(&self) -> Value {
        map([
            ("Messages", string_map_value(&self.messages)),
            (
                "Keys",
                self.keys.as_ref().map_or(Value::Nil, |keys| {
                    Value::Map(
                        keys.iter()
                            .map(|(k, n)| (Value::from(k.as_str()), Value::from(*n)))
                            .collect(),
                    )
                }),
            ),
            ("NumNodes", Value::from(self.num_nodes)),
            ("NumErr", Value::from(self.num_err)),
            ("NumResp", Value::from(self.num_resp)),
        ])
    }
}

/// Answers a key command on the agent `node`, named `name`.
pub async fn run(op: KeyOp, node: &NodeHandle, name: &str) -> KeyAnswer {
    if node.keys().is_none() {
        return not_encrypted(op, name);
    }
    let (word, key) = match op {
        KeyOp::Install(k) => (keys::KeyOp::Install, Some(k)),
        KeyOp::Use(k) => (keys::KeyOp::Use, Some(k)),
        KeyOp::Remove(k) => (keys::KeyOp::Remove, Some(k)),
        KeyOp::List => (keys::KeyOp::List, None),
    };
    match keys::cluster_op(node, word, key).await {
        Ok(out) => from_response(&out, word == keys::KeyOp::List),
        // Refused before anything was sent (a bad key, the primary, a plaintext step): as a
        // Serf agent does, this member reports it.
        Err(e) => KeyAnswer {
            error: "1/1 nodes reported failure".into(),
            messages: [(name.to_string(), e.to_string())].into(),
            keys: (word == keys::KeyOp::List).then(BTreeMap::new),
            num_nodes: 1,
            num_err: 1,
            num_resp: 1,
        },
    }
}

/// Serf's `keyResponse` from the cluster-wide operation's summary.
fn from_response(out: &KeysResponse, list: bool) -> KeyAnswer {
    let num_err = out.failed.len() as u64;
    let num_nodes = out.members as u64;
    KeyAnswer {
        error: if num_err == 0 {
            String::new()
        } else {
            format!("{num_err}/{num_nodes} nodes reported failure")
        },
        messages: out.failed.clone(),
        keys: list.then(|| {
            out.keys
                .iter()
                .map(|(k, n)| (k.clone(), *n as u64))
                .collect()
        }),
        num_nodes,
        num_err,
        num_resp: out.responded as u64,
    }
}

/// What a Serf agent without encryption answers.
fn not_encrypted(op: KeyOp, name: &str) -> KeyAnswer {
    let message = match op {
        KeyOp::List => "Keyring is empty (encryption not enabled)",
        KeyOp::Install(_) | KeyOp::Use(_) | KeyOp::Remove(_) => {
            "No keyring to modify (encryption not enabled)"
        }
    };
    KeyAnswer {
        error: "1/1 nodes reported failure".into(),
        messages: [(name.to_string(), message.to_string())].into(),
        keys: matches!(op, KeyOp::List).then(BTreeMap::new),
        num_nodes: 1,
        num_err: 1,
        num_resp: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_encryption_every_key_command_fails_as_on_a_serf_agent_without_one() {
        let list = not_encrypted(KeyOp::List, "web-1");
        assert_eq!(list.error, "1/1 nodes reported failure");
        assert_eq!(
            list.messages.get("web-1").map(String::as_str),
            Some("Keyring is empty (encryption not enabled)")
        );
        assert_eq!(list.keys, Some(BTreeMap::new()));
        let install = not_encrypted(KeyOp::Install("k".into()), "web-1");
        assert_eq!(
            install.messages.get("web-1").map(String::as_str),
            Some("No keyring to modify (encryption not enabled)")
        );
        assert_eq!((install.num_nodes, install.num_err), (1, 1));
        assert_eq!(install.keys, None);
    }

    #[test]
    fn a_cluster_wide_summary_becomes_serfs_key_response() {
        let out = KeysResponse {
            op: "list".into(),
            members: 3,
            responded: 2,
            failed: [(
                "web-3".to_string(),
                "no answer before the timeout".to_string(),
            )]
            .into(),
            keys: [("a2V5".to_string(), 2)].into(),
            primary: [("a2V5".to_string(), 2)].into(),
        };
        let answer = from_response(&out, true);
        assert_eq!(answer.error, "1/3 nodes reported failure");
        assert_eq!(
            (answer.num_nodes, answer.num_err, answer.num_resp),
            (3, 1, 2)
        );
        assert_eq!(answer.keys, Some([("a2V5".to_string(), 2)].into()));
        assert_eq!(
            answer.messages.get("web-3").map(String::as_str),
            Some("no answer before the timeout")
        );
        let all = KeysResponse {
            failed: BTreeMap::new(),
            ..out
        };
        assert_eq!(from_response(&all, false).error, "");
        assert_eq!(from_response(&all, false).keys, None);
    }
}
