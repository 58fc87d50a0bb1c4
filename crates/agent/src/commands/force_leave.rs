//! `shoal force-leave NODE`

use shoal_proto::{ForceLeaveRequest, OkResponse};

use super::CliError;
use crate::cli::ForceLeaveArgs;

/// Marks a failed member as left.
pub async fn run(args: &ForceLeaveArgs) -> Result<String, CliError> {
    let req = ForceLeaveRequest {
        node: args.node.clone(),
    };
    let _: OkResponse = args.client.client()?.post("/v1/force-leave", &req).await?;
    Ok(String::new())
}
