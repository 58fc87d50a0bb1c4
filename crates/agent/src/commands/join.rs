//! `shoal join ADDR...`

use shoal_proto::{Client, JoinRequest, JoinResponse};

use crate::cli::JoinArgs;

/// Asks the agent to join; prints how many addresses answered.
pub async fn run(args: &JoinArgs) -> Result<String, String> {
    let req = JoinRequest {
        addrs: args.addrs.clone(),
    };
    let resp: JoinResponse = Client::new(&args.client.control)
        .post("/v1/join", &req)
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "Successfully joined cluster by contacting {} nodes.\n",
        resp.joined
    ))
}
