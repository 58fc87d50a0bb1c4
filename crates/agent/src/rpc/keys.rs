//! The key commands (`install-key`, `use-key`, `remove-key`, `list-keys`: `serf keys`).
//!
//! This agent's gossip is not encrypted, so every key command gets the answer a Serf agent
//! without encryption gives: this member reports a failure, `1/1 nodes reported failure`,
//! with Serf's own messages. [`run`] is the one place that answers them: an agent with a key
//! ring answers from it there, and nothing else in the RPC layer changes.

use std::collections::BTreeMap;

use rmpv::Value;

use super::wire::{map, string_map_value};

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

/// Answers a key command for the member `name`.
pub async fn run(op: KeyOp, name: &str) -> KeyAnswer {
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

    #[tokio::test]
    async fn without_encryption_every_key_command_fails_as_on_a_serf_agent_without_one() {
        let list = run(KeyOp::List, "web-1").await;
        assert_eq!(list.error, "1/1 nodes reported failure");
        assert_eq!(
            list.messages.get("web-1").map(String::as_str),
            Some("Keyring is empty (encryption not enabled)")
        );
        assert_eq!(list.keys, Some(BTreeMap::new()));
        let install = run(KeyOp::Install("k".into()), "web-1").await;
        assert_eq!(
            install.messages.get("web-1").map(String::as_str),
            Some("No keyring to modify (encryption not enabled)")
        );
        assert_eq!((install.num_nodes, install.num_err), (1, 1));
        assert_eq!(install.keys, None);
    }
}
