//! `shoal info`: Serf's sections first, as `serf info` prints them (`agent`, `runtime`,
//! `serf`, `tags`; shoal's own agent fields follow the name), then shoal's: member counts,
//! traffic counters, refused packets, the loaded handlers (`FILTER = SCRIPT`, `*` for every
//! event), the primary group (`--group`: group, priority, state, primary), the health checks
//! (`NAME = STATE (...)`), the event counters and the open streams.

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
    let own = format!(
        "\tversion = {}\n\tbind = {}\n\tadvertise = {}\n\tcontrol = {}\n\t\
         profile = {}\n\ttags = {}\n\tencrypted = {}\n\taccept_plaintext = {}\n\tsend_plaintext = {}\n\tkeys = {}\n\t\
         cluster = {}\n",
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
    );
    let mut text = serf_sections(&i, &own);
    text.push_str(&format!(
        "members:\n\talive = {}\n\tsuspect = {}\n\tleaving = {}\n\t\
         left = {}\n\tfailed = {}\nstats:\n\tpackets_in = {}\n\tpackets_out = {}\n\tbytes_in = {}\n\t\
         bytes_out = {}\n\tpackets_dropped = {}\n\tpush_pulls = {}\n\tmetas_refused = {}\n\tevents_dropped = {}\n\t\
         handler_runs = {}\n\thandler_timeouts = {}\n\ttcp_fallbacks = {}\n\thealth_score = {}\n",
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
    ));
    text.push_str("refused:\n");
    for (reason, n) in &s.refused {
        text.push_str(&format!("\t{reason} = {n}\n"));
    }
    text.push_str("handlers:\n");
    for h in &i.handlers {
        let filter = if h.filter.is_empty() { "*" } else { &h.filter };
        text.push_str(&format!("\t{filter} = {}\n", h.script));
    }
    if let Some(p) = &i.primary {
        text.push_str(&format!(
            "primary:\n\tgroup = {}\n\tpriority = {}\n\tstate = {}\n\tprimary = {}\n",
            p.group,
            p.priority,
            p.state.as_deref().unwrap_or(""),
            p.primary.as_deref().unwrap_or("")
        ));
    }
    text.push_str(&checks_section(&i));
    let (e, st) = (&i.events, &i.streams);
    text.push_str(&format!(
        "events:\n\tmember = {}\n\tuser = {}\n\tuser_handled = {}\nstreams:\n\tevents = {}\n\t\
         monitors = {}\n\tdropped_slow = {}\n",
        e.member, e.user, e.user_handled, st.events, st.monitors, st.dropped_slow
    ));
    Ok(text)
}

/// `checks:`, one line per check: its announced state, then what it runs, and its last run's
/// own result, time, duration and output's first line.
fn checks_section(i: &InfoResponse) -> String {
    let mut text = String::from("checks:\n");
    for c in &i.checks {
        let last = match (&c.last_result, &c.last_run) {
            (Some(result), Some(at)) => {
                let output = c.output.lines().next().unwrap_or("");
                format!("last {result} at {at} in {} ms: {output}", c.duration_ms)
            }
            _ => "not run yet".to_string(),
        };
        text.push_str(&format!(
            "\t{} = {} ({} {}; {})\n",
            c.name, c.state, c.kind, c.target, last
        ));
    }
    text
}

/// Serf's sections of `serf info`, in its order (sections and keys sorted); shoal's own agent
/// fields (`own`) follow the name in the `agent` section.
fn serf_sections(i: &InfoResponse, own: &str) -> String {
    let (r, sf) = (&i.runtime, &i.serf);
    let mut text = format!("agent:\n\tname = {}\n{own}runtime:\n", i.agent.name);
    text.push_str(&format!(
        "\tarch = {}\n\tcpu_count = {}\n\tos = {}\n\tversion = {}\n",
        r.arch, r.cpu_count, r.os, r.version
    ));
    text.push_str(&format!(
        "serf:\n\tencrypted = {}\n\tevent_time = {}\n\tfailed = {}\n\thealth_score = {}\n\t\
         left = {}\n\tmembers = {}\n\tquery_time = {}\n",
        sf.encrypted, sf.event_time, sf.failed, sf.health_score, sf.left, sf.members, sf.query_time
    ));
    text.push_str("tags:\n");
    for (k, v) in &i.agent.tags {
        text.push_str(&format!("\t{k} = {v}\n"));
    }
    text
}
