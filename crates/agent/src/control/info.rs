//! `GET /v1/info`: the agent, its member counts, counters, handlers and streams.

use std::sync::atomic::{AtomicU64, Ordering};

use shoal_core::Status;
use shoal_proto::{
    AgentInfo, EventCounts, HandlerInfo, InfoResponse, MemberCounts, RuntimeInfo, SerfCounters,
    StatsInfo, StreamCounts,
};

use super::ControlState;

/// The answer of `GET /v1/info`.
pub(crate) fn info(st: &ControlState) -> InfoResponse {
    let snap = st.node.view();
    let s = st.node.stats();
    let c = &st.counters;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    InfoResponse {
        agent: AgentInfo {
            name: st.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            bind: st.node.local_addr().to_string(),
            advertise: st.node.advertise_addr().to_string(),
            control: st.control.clone(),
            profile: st.profile.clone(),
            tags: snap.local.tags.clone(),
            encrypted: st.node.encrypted(),
            accept_plaintext: st.node.accepts_plaintext(),
            send_plaintext: st.node.sends_plaintext(),
            keys: st.node.keys().map_or(0, |k| k.len()),
            cluster: st.node.cluster().to_string(),
        },
        members: MemberCounts {
            alive: snap.count(Status::Alive),
            suspect: snap.count(Status::Suspect),
            leaving: snap.count(Status::Leaving),
            left: snap.count(Status::Left),
            failed: snap.count(Status::Failed),
        },
        stats: StatsInfo {
            packets_in: get(&s.packets_in),
            packets_out: get(&s.packets_out),
            bytes_in: get(&s.bytes_in),
            bytes_out: get(&s.bytes_out),
            packets_dropped: get(&s.packets_dropped),
            push_pulls: get(&s.push_pulls),
            metas_refused: get(&s.metas_refused),
            events_dropped: get(&s.events_dropped) + get(&c.dropped),
            handler_runs: get(&c.runs),
            handler_timeouts: get(&c.timeouts),
            tcp_fallbacks: get(&s.tcp_fallbacks),
            health_score: get(&s.health_score),
            refused: s
                .refused
                .all()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        },
        handlers: st
            .handlers
            .borrow()
            .iter()
            .map(|h| HandlerInfo {
                filter: h.filter_text().to_string(),
                script: h.script.clone(),
            })
            .collect(),
        events: EventCounts {
            member: get(&c.member_events),
            user: get(&c.user_events),
            query: get(&c.query_events),
            user_handled: get(&c.user_handled),
        },
        streams: StreamCounts {
            events: st.events.readers(),
            monitors: st.monitors.readers(),
            dropped_slow: st.events.dropped() + st.monitors.dropped(),
        },
        runtime: RuntimeInfo {
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            cpu_count: std::thread::available_parallelism().map_or(1, |n| n.get()),
            version: format!("shoal {}", env!("CARGO_PKG_VERSION")),
        },
        serf: SerfCounters {
            members: snap.count(Status::Alive)
                + snap.count(Status::Suspect)
                + snap.count(Status::Leaving),
            failed: snap.count(Status::Failed),
            left: snap.count(Status::Left),
            health_score: get(&s.health_score),
            encrypted: st.node.encrypted(),
            event_time: snap.event_ltime.unwrap_or(0),
            query_time: snap.query_ltime.unwrap_or(0),
        },
        primary: super::primary::info(st),
        checks: st.checks.list(),
    }
}
