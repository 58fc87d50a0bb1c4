//! `shoal reachability [--verbose]`: Serf's network test. Every live member must ack an
//! internal query (`_serf_ping`, the name Serf uses; no handler answers it, members only ack).
//! Prints Serf's report as it goes; the caller exits 1 when an ack is missing or extra.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Instant;

use shoal_proto::{ClientError, MembersResponse, QueryLine, QueryRequest};

use super::CliError;
use crate::cli::ReachabilityArgs;

/// The internal query's name (Serf's `_serf_` prefix and `ping`).
pub const PING: &str = "_serf_ping";

const TOO_FEW: &str = "This could mean gossip packets are being lost due to a misconfiguration \
                       or network issue.";
const TOO_MANY: &str = "This could mean false failures are being detected due to a \
                        misconfiguration or network issue.";
const TIPS: &str = "
Troubleshooting tips:
* Ensure that the bind addr:port is accessible by all other nodes
* If an advertise address is set, ensure it routes to the bind address
* Check that no nodes are behind a NAT
* If nodes are behind firewalls or iptables, check that shoal traffic is permitted (UDP and TCP)
* Verify networking equipment is functional";

/// Runs the test; `Ok(true)` when exactly the live members acked.
pub async fn run(args: &ReachabilityArgs) -> Result<bool, CliError> {
    let client = args.client.client()?;
    let all: MembersResponse = client.get("/v1/members").await?;
    // Serf's live members: it has no suspect state, its suspects are alive.
    let live: BTreeSet<String> = all
        .members
        .iter()
        .filter(|m| matches!(m.status.as_str(), "alive" | "suspect"))
        .map(|m| m.name.clone())
        .collect();
    let mut out = std::io::stdout().lock();
    let mut say = |text: String| {
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    };
    say(format!(
        "Total members: {}, live members: {}",
        all.members.len(),
        live.len()
    ));
    let req = QueryRequest {
        name: PING.into(),
        payload: String::new(),
        nodes: Vec::new(),
        tags: Default::default(),
        timeout_ms: None,
        ack: true,
        relay_factor: 0,
    };
    let mut lines = client.post_lines("/v1/query", &req).await?;
    say("Starting reachability test...".into());
    let (start, mut last) = (Instant::now(), Instant::now());
    let mut acked = BTreeSet::new();
    let mut done = false;
    while let Some(line) = lines.next::<QueryLine>().await? {
        match line {
            QueryLine::Ack { from } => {
                if args.verbose {
                    say(format!("\tAck from '{from}'"));
                }
                acked.insert(from);
                last = Instant::now();
            }
            QueryLine::Done { .. } => done = true,
            QueryLine::Started { .. } | QueryLine::Response { .. } => {}
        }
    }
    if !done {
        return Err(CliError::Client(ClientError::Http {
            addr: args.client.control.clone(),
            message: "the agent closed the answer before the query ended".into(),
        }));
    }
    if args.verbose {
        say(format!(
            "Query time: {:.2} sec, time to last response: {:.2} sec",
            start.elapsed().as_secs_f64(),
            last.duration_since(start).as_secs_f64()
        ));
    }
    let (lines, ok) = verdict(&live, &acked);
    for line in lines {
        say(line);
    }
    Ok(ok)
}

/// Serf's closing lines for the `live` members and those that `acked`, and whether they
/// are the same.
fn verdict(live: &BTreeSet<String>, acked: &BTreeSet<String>) -> (Vec<String>, bool) {
    let extra: Vec<&String> = acked.difference(live).collect();
    let missing: Vec<&String> = live.difference(acked).collect();
    if missing.is_empty() && extra.is_empty() {
        return (vec!["Successfully contacted all live nodes".into()], true);
    }
    let (heading, names, why) = match extra.is_empty() {
        false => (
            "Received more acks than live nodes! Acks from non-live nodes:",
            extra,
            TOO_MANY,
        ),
        true => (
            "Received less acks than live nodes! Missing acks from:",
            missing,
            TOO_FEW,
        ),
    };
    let mut lines = vec![heading.to_string()];
    lines.extend(names.into_iter().map(|n| format!("\t{n}")));
    lines.push(why.into());
    lines.push(TIPS.into());
    (lines, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_missing_or_an_extra_ack_fails_and_names_the_member_as_serf_does() {
        let (lines, ok) = verdict(&set(&["a", "b"]), &set(&["a", "b"]));
        assert!(ok);
        assert_eq!(lines, vec!["Successfully contacted all live nodes"]);
        let (lines, ok) = verdict(&set(&["a", "b"]), &set(&["a"]));
        assert!(!ok);
        assert_eq!(
            lines[0],
            "Received less acks than live nodes! Missing acks from:"
        );
        assert_eq!(lines[1], "\tb");
        assert!(lines[3].contains("Troubleshooting tips:"));
        let (lines, ok) = verdict(&set(&["a"]), &set(&["a", "z"]));
        assert!(!ok);
        assert_eq!(
            lines[0],
            "Received more acks than live nodes! Acks from non-live nodes:"
        );
        assert_eq!(lines[1], "\tz");
    }
}
