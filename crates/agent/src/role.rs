//! The one place the agent changes what it announces as its [`Role`]: the check runner sets
//! the checks' states, the primary-group settings set the group, and each change goes to the
//! node as the whole role (so neither overwrites the other's half).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use shoal_core::{CommandError, Group, Health, NodeHandle, Role};

/// Shared by the check runner and the group settings; cheap to clone.
#[derive(Clone)]
pub struct RoleCell {
    node: NodeHandle,
    role: Arc<Mutex<Role>>,
    /// Serialises announcements, so two changes reach the node in the order they were made.
    send: Arc<tokio::sync::Mutex<()>>,
}

impl RoleCell {
    /// `initial` is what the node started with (`NodeConfig::role`).
    pub fn new(node: NodeHandle, initial: Role) -> Self {
        Self {
            node,
            role: Arc::new(Mutex::new(initial)),
            send: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// What this member announces now.
    pub fn get(&self) -> Role {
        self.lock().clone()
    }

    /// Sets one check's state; announces it if it changed.
    pub async fn set_check(&self, name: &str, state: Health) -> Result<(), CommandError> {
        self.change(|role| {
            role.checks.insert(name.to_string(), state);
        })
        .await
    }

    /// Replaces every check's state; announces them if they changed.
    pub async fn set_checks(&self, checks: BTreeMap<String, Health>) -> Result<(), CommandError> {
        self.change(|role| role.checks = checks).await
    }

    /// Sets or clears the primary group; announces it if it changed.
    pub async fn set_group(&self, group: Option<Group>) -> Result<(), CommandError> {
        self.change(|role| role.group = group).await
    }

    async fn change(&self, edit: impl FnOnce(&mut Role)) -> Result<(), CommandError> {
        let _order = self.send.lock().await;
        let next = {
            let mut role = self.lock().clone();
            edit(&mut role);
            role
        };
        if next == self.get() {
            return Ok(());
        }
        self.node.update_role(next.clone()).await?;
        *self.lock() = next;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Role> {
        self.role.lock().unwrap_or_else(|e| e.into_inner())
    }
}
