//! `shoal join ADDR...`

use shoal_proto::{JoinRequest, JoinResponse};

use super::CliError;
use crate::cli::JoinArgs;

/// Asks the agent to join; prints how many addresses answered.
pub async fn run(args: &JoinArgs) -> Result<String, CliError> {
    let req = JoinRequest {
        addrs: args.addrs.clone(),
        replay: args.replay,
    };
    let resp: JoinResponse = args.client.client()?.post("/v1/join", &req).await?;
    Ok(format!(
        "Successfully joined cluster by contacting {} nodes.\n",
        resp.joined
    ))
}
