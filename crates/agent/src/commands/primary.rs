//! `shoal primary [GROUP]`: the primary of a group as the agent sees it (`GET /v1/primary`),
//! its name on a line, or the whole answer with `--format json`. No primary: exit 1 (the JSON
//! is still printed), so a script can test it.

use shoal_proto::PrimaryResponse;

use super::CliError;
use crate::cli::{OutputFormat, PrimaryCmdArgs};

/// What to print, and whether the group has a primary (exit 1 when it has not).
pub async fn run(args: &PrimaryCmdArgs) -> Result<(String, bool), CliError> {
    let path = match &args.group {
        Some(group) => {
            if !shoal_core::role::safe_name(group) {
                return Err(CliError::Group(group.clone()));
            }
            format!("/v1/primary?group={group}")
        }
        None => "/v1/primary".to_string(),
    };
    let answer: PrimaryResponse = args.client.client()?.get(&path).await?;
    let found = answer.primary.is_some();
    let text = match (args.format, &answer.primary) {
        (OutputFormat::Json, _) => serde_json::to_string_pretty(&answer)? + "\n",
        (OutputFormat::Table, Some(name)) => format!("{name}\n"),
        (OutputFormat::Table, None) => String::new(),
    };
    Ok((text, found))
}

/// The message for a group without a primary.
pub fn none_message(args: &PrimaryCmdArgs) -> String {
    match &args.group {
        Some(group) => format!(
            "no primary in group {group:?} as this agent sees it (no alive, passing member of it, or too few in sight for the quorum)"
        ),
        None => "no primary in this agent's group as it sees it (no alive, passing member of it, or too few in sight for --group-quorum)".to_string(),
    }
}
