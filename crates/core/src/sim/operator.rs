//! The operator's commands at a simulated node (`shoal event`, `tags`, `query`, ...) and the
//! agent's role announcements, each answered on a receiver as the real node answers its
//! handle.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::sync::{mpsc, oneshot};

use super::Sim;
use crate::engine::Command;
use crate::error::CommandError;
use crate::query::{QueryParams, QueryStarted, QueryUpdate};

impl Sim {
    /// An operator's `shoal event NAME PAYLOAD` at the node at `at`; the answer (the event's
    /// Lamport time) is on the receiver at once.
    pub fn user_event(
        &mut self,
        at: SocketAddr,
        name: &str,
        payload: &[u8],
    ) -> oneshot::Receiver<Result<u64, CommandError>> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::UserEvent {
            name: name.to_string(),
            payload: payload.to_vec(),
            coalesce: true,
            reply,
        };
        self.command_now(at, cmd);
        rx
    }

    /// An operator's `shoal tags --set ... --delete ...` at the node at `at`; the answer (the
    /// tags now in effect) is on the receiver at once.
    pub fn update_tags(
        &mut self,
        at: SocketAddr,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> oneshot::Receiver<Result<BTreeMap<String, String>, CommandError>> {
        let (reply, rx) = oneshot::channel();
        self.command_now(at, Command::UpdateTags { set, delete, reply });
        rx
    }

    /// The agent's check runner or group setting at the node at `at` announces a new role;
    /// the answer is on the receiver at once.
    pub fn update_role(
        &mut self,
        at: SocketAddr,
        role: crate::role::Role,
    ) -> oneshot::Receiver<Result<(), CommandError>> {
        let (reply, rx) = oneshot::channel();
        self.command_now(at, Command::UpdateRole { role, reply });
        rx
    }

    /// An operator's `shoal query` at the node at `at`: the answer (whom it expects) is on
    /// the first receiver at once; acks and answers arrive on the second as the simulation
    /// runs.
    pub fn query(
        &mut self,
        at: SocketAddr,
        params: QueryParams,
    ) -> (
        oneshot::Receiver<Result<QueryStarted, CommandError>>,
        mpsc::Receiver<QueryUpdate>,
    ) {
        let (reply, rx) = oneshot::channel();
        let (updates, stream) = mpsc::channel(1024);
        let cmd = Command::Query {
            params,
            updates,
            reply,
        };
        self.command_now(at, cmd);
        (rx, stream)
    }

    /// The node at `at` answers query `(ltime, id)` as its handler would.
    pub fn respond_query(
        &mut self,
        at: SocketAddr,
        (ltime, id): (u64, u64),
        payload: &[u8],
    ) -> oneshot::Receiver<Result<(), CommandError>> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::RespondQuery {
            ltime,
            id,
            payload: payload.to_vec(),
            reply,
        };
        self.command_now(at, cmd);
        rx
    }
}
