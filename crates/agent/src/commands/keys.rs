//! `shoal keys --install KEY | --use KEY | --remove KEY | --list`: a cluster-wide key
//! operation through the agent (`POST /v1/keys`). Prints Serf's summary: members asked,
//! answered, failures with why, and for `--list` each key with how many members hold it.

use shoal_proto::{Client, KeysRequest, KeysResponse};

use super::CliError;
use crate::cli::{KeysArgs, OutputFormat};

/// Runs the operation; fails (exit 2) when any member failed or did not answer.
pub async fn run(args: &KeysArgs) -> Result<String, CliError> {
    let (op, key) = match (&args.install, &args.use_key, &args.remove) {
        (Some(k), _, _) => ("install", Some(k.clone())),
        (_, Some(k), _) => ("use", Some(k.clone())),
        (_, _, Some(k)) => ("remove", Some(k.clone())),
        _ => ("list", None),
    };
    let request = KeysRequest {
        op: op.to_string(),
        key,
    };
    let r: KeysResponse = Client::new(&args.client.control)
        .post("/v1/keys", &request)
        .await?;
    let text = match args.format {
        OutputFormat::Json => serde_json::to_string_pretty(&r)? + "\n",
        OutputFormat::Table => table(&r),
    };
    if r.failed.is_empty() && r.responded == r.members {
        Ok(text)
    } else {
        Err(CliError::KeysFailed(text))
    }
}

fn table(r: &KeysResponse) -> String {
    let mut out = format!(
        "{}: {} of {} members answered, {} failed\n",
        r.op,
        r.responded,
        r.members,
        r.failed.len()
    );
    for (name, why) in &r.failed {
        out.push_str(&format!("  failed: {name}: {why}\n"));
    }
    if r.op == "list" {
        out.push_str("keys:\n");
        for (key, n) in &r.keys {
            let primary = r.primary.get(key).copied().unwrap_or(0);
            out.push_str(&format!(
                "  {key}  [{n}/{}]  primary on {primary}\n",
                r.members
            ));
        }
    }
    out
}
