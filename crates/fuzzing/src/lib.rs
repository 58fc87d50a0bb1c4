//! shoal-fuzzing: what each fuzz target does with its input, shared by the cargo-fuzz targets
//! in `fuzz/` (libFuzzer, coverage-guided) and by `tests/corpus.rs`, which replays the
//! checked-in corpus (`fuzz/corpus/<target>/`) in an ordinary `cargo test`, so a regression
//! shows up in the normal tests too. Not published.
//!
//! Layout (one function per target, each taking the raw input and panicking only on a bug):
//! - [`datagram`]: a gossip datagram, through the decoder every received datagram meets
//!   (the envelope, then its kind's payload) and then through a simulated node's engine
//!   (`Sim::inject`: foca's decoder and every rule behind it), as from a stranger and as
//!   from a member's address.
//! - [`push_pull_frame`]: a push-pull stream (length prefix and frame) read by the real
//!   `read_frame`, and a decoded state applied by a simulated node.
//! - [`beacon`]: a `--discover` beacon datagram.
//! - [`control_body`]: a control-API request body (first byte: the endpoint), parsed as the
//!   agent parses it and handed to a simulated node's command.
//! - [`seeds`]: well-formed inputs of each target (the starting corpus) and the malformed
//!   cases the corpus keeps.
//!
//! When sealing lands in front of the envelope decoder, [`datagram`] and [`push_pull_frame`]
//! are the two functions to re-point (their first call is `envelope::open` / `read_frame`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use shoal_core::anti_entropy::{self, Frame};
use shoal_core::envelope::{self, Kind};
use shoal_core::profile::Profile;
use shoal_core::sim::Sim;
use shoal_core::{QueryFilter, QueryParams, discover};

pub mod seeds;
pub use seeds::seeds;

/// One target: what it does with an input.
pub type Target = fn(&[u8]);

/// The four targets, by the name of their `fuzz/fuzz_targets/*.rs` file and corpus folder.
pub const TARGETS: [(&str, Target); 4] = [
    ("datagram", datagram),
    ("push_pull_frame", push_pull_frame),
    ("beacon", beacon),
    ("control_body", control_body),
];

/// A process outside the cluster (the simulated network reaches only its nodes).
pub fn stranger() -> SocketAddr {
    SocketAddr::from(([10, 0, 250, 250], 7948))
}

/// A fresh two-node cluster that has converged: every input starts from the same state, so
/// a crash reproduces from the input alone.
fn cluster() -> Sim {
    let mut sim = Sim::new(7, 2, Profile::Local);
    sim.run_until(Duration::from_millis(1500));
    sim
}

/// Runs the simulation on for a few probe periods after an input.
fn settle(sim: &mut Sim) {
    let until = sim.elapsed() + Duration::from_millis(600);
    sim.run_until(until);
}

/// A gossip datagram: decoded as the node decodes it, then received by a simulated node from
/// a stranger and from its peer's address.
pub fn datagram(data: &[u8]) {
    if let Ok((kind, payload)) = envelope::open(data) {
        match kind {
            Kind::Digest => drop(anti_entropy::decode_digest(payload)),
            Kind::Beacon => drop(discover::decode(data)),
            Kind::PushPull | Kind::Ping => drop(anti_entropy::decode_any(data)),
            _ => {}
        }
    }
    let mut sim = cluster();
    let (a, b) = (Sim::addr(0), Sim::addr(1));
    sim.inject(stranger(), a, data.to_vec());
    sim.inject(b, a, data.to_vec());
    settle(&mut sim);
}

/// A push-pull stream: a big-endian `u32` length and a frame, read by the driver's
/// `read_frame` (limit checked before memory is taken); a state that decodes is applied by a
/// simulated node as a stranger's push-pull.
pub fn push_pull_frame(data: &[u8]) {
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(error) => panic!("no runtime: {error}"),
    };
    let mut stream = data;
    let frame = rt
        .block_on(shoal_core::node::push_pull::read_raw_frame(&mut stream, 0))
        .ok()
        .and_then(|raw| shoal_core::anti_entropy::decode_any(&raw).ok());
    if let Some(Frame::State(state)) = frame {
        let mut sim = cluster();
        sim.inject_state(stranger(), Sim::addr(0), state);
        settle(&mut sim);
    }
}

/// A discovery beacon: decoded, and checked against a source that is and one that is not on
/// the host it names.
pub fn beacon(data: &[u8]) {
    if let Some(b) = discover::decode(data) {
        let _ = discover::validate_cluster(&b.cluster);
        let _ = discover::names_its_source(&b, b.from.addr);
        let _ = discover::names_its_source(&b, stranger());
    }
}

/// A control-API request body: the first byte picks the endpoint (join, event, query, tags,
/// force-leave), the rest is the JSON body, parsed into the request type the agent parses it
/// into; what parses goes to a simulated node's command, which validates it.
pub fn control_body(data: &[u8]) {
    use shoal_proto::{EventRequest, ForceLeaveRequest, JoinRequest, QueryRequest, TagsRequest};
    let Some((endpoint, body)) = data.split_first() else {
        return;
    };
    let mut sim = cluster();
    let at = Sim::addr(0);
    match endpoint % 5 {
        0 => {
            if let Ok(r) = serde_json::from_slice::<JoinRequest>(body) {
                drop(sim.join(at, r.addrs, r.replay));
            }
        }
        1 => {
            if let Ok(r) = serde_json::from_slice::<EventRequest>(body) {
                drop(sim.user_event(at, &r.name, r.payload.as_bytes()));
            }
        }
        2 => {
            if let Ok(r) = serde_json::from_slice::<QueryRequest>(body) {
                drop(sim.query(at, query_params(r)));
            }
        }
        3 => {
            if let Ok(r) = serde_json::from_slice::<TagsRequest>(body) {
                drop(sim.update_tags(at, r.set, r.delete));
            }
        }
        _ => drop(serde_json::from_slice::<ForceLeaveRequest>(body)),
    }
    settle(&mut sim);
}

/// The agent's mapping of a query request to the engine's parameters.
fn query_params(r: shoal_proto::QueryRequest) -> QueryParams {
    let mut filters = Vec::new();
    if !r.nodes.is_empty() {
        filters.push(QueryFilter::Nodes(r.nodes));
    }
    let tags: BTreeMap<String, String> = r.tags;
    filters.extend(
        tags.into_iter()
            .map(|(key, re)| QueryFilter::Tag { key, re }),
    );
    QueryParams {
        name: r.name,
        payload: r.payload.into_bytes(),
        filters,
        timeout_ms: r.timeout_ms,
        ack: r.ack,
        relay_factor: r.relay_factor,
    }
}
