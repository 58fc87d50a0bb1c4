//! `shoal query NAME [PAYLOAD] [--node RE]... [--tag K=RE]... [--timeout D] [--no-ack]
//! [--relay-factor N] [--format text|json]`
//!
//! Prints as the answers arrive (the agent streams them); ends as soon as every member that
//! passes the filters answered, or at the timeout. Text is Serf's (`Query 'NAME' dispatched`,
//! `Ack from 'NAME'`, `Response from 'NAME': TEXT`, the totals); json prints the API's lines.
//! With no member passing the filters nothing is sent: a note on stderr, totals of 0, exit 0
//! (as `serf query`, which waits its timeout to say so).

use std::collections::BTreeMap;
use std::io::Write;

use shoal_proto::{ClientError, QueryLine, QueryRequest};

use super::CliError;
use crate::cli::{QueryArgs, QueryFormat};

/// Sends the query through the agent and prints its lines as they come; returns nothing
/// more to print.
pub async fn run(args: &QueryArgs) -> Result<String, CliError> {
    let req = QueryRequest {
        name: args.name.clone(),
        payload: args.payload.clone(),
        nodes: args.nodes.clone(),
        tags: args.tags.iter().cloned().collect::<BTreeMap<_, _>>(),
        timeout_ms: args.timeout.map(|d| d.as_millis().max(1) as u64),
        ack: !args.no_ack,
        relay_factor: args.relay_factor,
    };
    let mut lines = args.client.client()?.post_lines("/v1/query", &req).await?;
    let mut out = std::io::stdout().lock();
    let mut done = false;
    while let Some(line) = lines.next::<QueryLine>().await? {
        done |= matches!(line, QueryLine::Done { .. });
        let text = match args.format {
            QueryFormat::Json => format!("{}\n", serde_json::to_string(&line)?),
            QueryFormat::Text => text(&line, args),
        };
        // Flushed per line: a script reading the output sees each answer as it arrives.
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
    if !done {
        return Err(CliError::Client(ClientError::Http {
            addr: args.client.control.clone(),
            message: "the agent closed the answer before the query ended".into(),
        }));
    }
    Ok(String::new())
}

/// One line in Serf's words.
fn text(line: &QueryLine, args: &QueryArgs) -> String {
    match line {
        QueryLine::Started { expected, .. } if expected.is_empty() => {
            eprintln!("shoal: no member matches the query's filters; nothing was sent");
            String::new()
        }
        QueryLine::Started { name, .. } => format!("Query '{name}' dispatched\n"),
        QueryLine::Ack { from } => format!("Ack from '{from}'\n"),
        QueryLine::Response { from, payload } => {
            let payload = payload.strip_suffix('\n').unwrap_or(payload);
            format!("Response from '{from}': {payload}\n")
        }
        QueryLine::Done {
            acks, responses, ..
        } => {
            let acks = if args.no_ack {
                String::new()
            } else {
                format!("Total Acks: {acks}\n")
            };
            format!("{acks}Total Responses: {responses}\n")
        }
    }
}
