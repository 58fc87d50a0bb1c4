//! `shoal tags --set K=V... --delete K...`

use shoal_proto::{TagsRequest, TagsResponse};

use super::CliError;
use crate::cli::TagsArgs;

/// Asks the agent to change its tags; prints Serf's confirmation.
pub async fn run(args: &TagsArgs) -> Result<String, CliError> {
    let req = TagsRequest {
        set: args.set.iter().cloned().collect(),
        delete: args.delete.clone(),
    };
    let _: TagsResponse = args.client.client()?.post("/v1/tags", &req).await?;
    Ok("Successfully updated agent tags\n".to_string())
}
