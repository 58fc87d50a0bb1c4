//! `shoal event NAME [PAYLOAD] [--coalesce=false]`

use shoal_proto::{EventRequest, EventResponse};

use super::CliError;
use crate::cli::EventArgs;

/// Sends a user event through the agent; prints Serf's confirmation.
pub async fn run(args: &EventArgs) -> Result<String, CliError> {
    let req = EventRequest {
        name: args.name.clone(),
        payload: args.payload.clone(),
        coalesce: args.coalesce,
    };
    let _: EventResponse = args.client.client()?.post("/v1/event", &req).await?;
    Ok(format!(
        "Event '{}' dispatched! Coalescing enabled: {}\n",
        args.name, args.coalesce
    ))
}
