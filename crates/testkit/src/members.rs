//! Every agent's view at once, so a convergence check sees one moment and not a sweep.

use std::process::{Command, Output};
use std::time::Duration;

use shoal_proto::{Client, InfoResponse, MemberInfo, MembersResponse};
use tokio::task::JoinSet;

/// `GET /v1/members` on one client; `None` if no answer came within `timeout` (or the answer
/// was an error).
pub async fn members_of(client: &Client, timeout: Duration) -> Option<MembersResponse> {
    ask(client, timeout, "/v1/members").await
}

async fn ask<T: serde::de::DeserializeOwned>(
    client: &Client,
    timeout: Duration,
    path: &str,
) -> Option<T> {
    tokio::time::timeout(timeout, client.get::<T>(path))
        .await
        .ok()?
        .ok()
}

/// `GET /v1/members` on every client at once; `None` where no answer came within `timeout`
/// (or the answer was an error). The order is the clients' order.
pub async fn members_of_all(clients: &[Client], timeout: Duration) -> Vec<Option<MembersResponse>> {
    of_all(clients, timeout, "/v1/members").await
}

/// `GET /v1/info` on every client at once, as [`members_of_all`] does.
pub async fn info_of_all(clients: &[Client], timeout: Duration) -> Vec<Option<InfoResponse>> {
    of_all(clients, timeout, "/v1/info").await
}

async fn of_all<T>(clients: &[Client], timeout: Duration, path: &'static str) -> Vec<Option<T>>
where
    T: serde::de::DeserializeOwned + Send + 'static,
{
    let mut set = JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        set.spawn(async move { (i, ask::<T>(&client, timeout, path).await) });
    }
    let mut out: Vec<Option<T>> = (0..clients.len()).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, answer)) = joined {
            out[i] = answer;
        }
    }
    out
}

/// Runs every `shoal members --format json` command at once (each set up by the caller, e.g.
/// under `ip netns exec`) and parses each output; the order is the commands' order.
pub fn members_of_all_cli(
    commands: impl IntoIterator<Item = Command>,
) -> Vec<Result<Vec<MemberInfo>, String>> {
    let children: Vec<_> = commands
        .into_iter()
        .map(|mut cmd| {
            cmd.stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
        })
        .collect();
    children
        .into_iter()
        .map(|c| match c {
            Ok(child) => parse_members_output(child.wait_with_output()),
            Err(e) => Err(e.to_string()),
        })
        .collect()
}

/// The members in the output of `shoal members --format json`, or what went wrong.
pub fn parse_members_output(out: std::io::Result<Output>) -> Result<Vec<MemberInfo>, String> {
    let out = out.map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "shoal members: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice::<MembersResponse>(&out.stdout)
        .map(|r| r.members)
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}
