//! `shoal leave`

use shoal_proto::OkResponse;

use super::CliError;
use crate::cli::ClientArgs;

/// Makes the agent leave gracefully and exit.
pub async fn run(args: &ClientArgs) -> Result<String, CliError> {
    let _: OkResponse = args
        .client()?
        .post("/v1/leave", &serde_json::json!({}))
        .await?;
    Ok("Graceful leave complete\n".to_string())
}
