//! `shoal info`: Serf's sections (agent, members, stats), then the loaded handlers (`FILTER =
//! SCRIPT`, `*` for every event), the event counters and the open streams.

use shoal_proto::InfoResponse;

use super::CliError;
use crate::cli::{InfoArgs, OutputFormat};
use crate::view::tags_string;

/// Shows the agent's own state and counters.
pub async fn run(args: &InfoArgs) -> Result<String, CliError> {
    let i: InfoResponse = args.client.client()?.get("/v1/info").await?;
    if args.joined {
        let others = i.members.alive + i.members.suspect + i.members.leaving;
        return match others > 1 {
            true => Ok(format!("joined: {} live members\n", others)),
            false => Err(CliError::NotJoined),
        };
    }
    if args.format == OutputFormat::Json {
        return Ok(serde_json::to_string_pretty(&i)? + "\n");
    }
    let (a, m, s) = (&i.agent, &i.members, &i.stats);
    let mut text = format!(
        "agent:\n\tname = {}\n\tversion = {}\n\tbind = {}\n\tadvertise = {}\n\tcontrol = {}\n\t\
         profile = {}\n\ttags = {}\n\tencrypted = {}\n\taccept_plaintext = {}\n\tsend_plaintext = {}\n\tkeys = {}\n\t\
         cluster = {}\nmembers:\n\talive = {}\n\tsuspect = {}\n\tleaving = {}\n\t\
         left = {}\n\tfailed = {}\nstats:\n\tpackets_in = {}\n\tpackets_out = {}\n\tbytes_in = {}\n\t\
         bytes_out = {}\n\tpackets_dropped = {}\n\tpush_pulls = {}\n\tmetas_refused = {}\n\tevents_dropped = {}\n\t\
         handler_runs = {}\n\thandler_timeouts = {}\n\ttcp_fallbacks = {}\n\thealth_score = {}\n",
        a.name,
        a.version,
        a.bind,
        a.advertise,
        a.control,
        a.profile,
        tags_string(&a.tags),
        a.encrypted,
        a.accept_plaintext,
        a.send_plaintext,
        a.keys,
        a.cluster,
        m.alive,
        m.suspect,
        m.leaving,
        m.left,
        m.failed,
        s.packets_in,
        s.packets_out,
        s.bytes_in,
        s.bytes_out,
        s.packets_dropped,
        s.push_pulls,
        s.metas_refused,
        s.events_dropped,
        s.handler_runs,
        s.handler_timeouts,
        s.tcp_fallbacks,
        s.health_score
    );
    text.push_str("refused:\n");
    for (reason, n) in &s.refused {
        text.push_str(&format!("\t{reason} = {n}\n"));
    }
    text.push_str("handlers:\n");
    for h in &i.handlers {
        let filter = if h.filter.is_empty() { "*" } else { &h.filter };
        text.push_str(&format!("\t{filter} = {}\n", h.script));
    }
    let (e, st) = (&i.events, &i.streams);
    text.push_str(&format!(
        "events:\n\tmember = {}\n\tuser = {}\n\tuser_handled = {}\nstreams:\n\tevents = {}\n\t\
         monitors = {}\n\tdropped_slow = {}\n",
        e.member, e.user, e.user_handled, st.events, st.monitors, st.dropped_slow
    ));
    Ok(text)
}
