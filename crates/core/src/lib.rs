//! shoal-core: cluster membership on [foca](https://docs.rs/foca) (SWIM).
//!
//! # Layout
//!
//! Three layers, each importing only from the ones above it in this list, plus a simulator:
//!
//! **Vocabulary** shared by every layer:
//! - [`config`]: [`NodeConfig`], the default port and the default-port rule.
//! - [`error`]: [`StartError`], [`CommandError`] and why a datagram was dropped.
//! - [`view`]: the published member [`View`] and the [`Stats`] counters.
//!
//! **Rules**: wire formats and pure state; no tokio, no sockets, no clock (time comes in as
//! an `Instant` argument):
//! - [`identity`]: the small `{addr, generation}` identity foca gossips.
//! - [`envelope`]: magic, version, kind and key id around every datagram and stream frame.
//! - [`profile`]: `lan`, `wan`, `local` timings and foca's config for a cluster size.
//! - [`timers`]: the one ordered timer queue.
//! - [`accusation`]: independent suspicions (Lifeguard): who confirms a suspicion, and the
//!   timeout that shrinks as they do.
//! - [`broadcast`]: the application broadcasts (meta, leave intents, user events) and foca's
//!   handler.
//! - [`lamport`]: the Lamport clock and the buffer of recent items user events and queries keep.
//! - [`user_event`]: user events: the Lamport event clock and the buffer that drops duplicates.
//! - [`query`]: queries: the query clock, filters, the answer datagram and the buffer of ids.
//! - [`membership`]: the pure member table: notifications and broadcasts in, Serf events out.
//! - [`anti_entropy`]: the digest datagram and the push-pull frame.
//! - [`discover`]: the `--discover` beacon's format.
//! - [`seal`]: sealed gossip (AES-GCM, the keyring), the cluster label and replay protection.
//! - [`snapshot`]: the `--snapshot` file: known members, written atomically.
//! - [`fs`]: atomic file replacement; `fnv`: the hash digests use, and the one of maps by
//!   address.
//!
//! **Engine** (`engine.rs`, `engine/`, crate-private): one node's protocol, sans I/O. Inputs
//! (commands, datagrams, timers, each with the current `Instant`) go in; an outbox of
//! datagrams, push-pulls, look-ups, beacons, events and views comes out. It imports nothing
//! from the driver.
//!
//! **Driver** ([`node`]): the tokio loop that owns an engine and carries out its outbox with
//! real sockets and time; a [`NodeHandle`] talks to it.
//!
//! **Simulation** ([`sim`]): many engines on virtual time and a simulated network (latency,
//! loss, partitions, crashes), all from one seed. It imports nothing from the driver.
//!
//! `.ci/structure.py` checks these rules on every CI run.

pub mod accusation;
pub mod anti_entropy;
pub mod broadcast;
pub mod config;
pub mod discover;
pub(crate) mod engine;
pub mod envelope;
pub mod error;
pub(crate) mod fnv;
pub mod fs;
pub mod identity;
pub mod lamport;
pub mod membership;
pub mod node;
pub mod profile;
pub mod query;
pub mod role;
pub mod seal;
pub mod sim;
pub mod snapshot;
pub mod timers;
pub mod user_event;
pub mod view;

pub use config::{DEFAULT_PORT, NodeConfig};
pub use error::{CommandError, StartError};
pub use identity::Identity;
pub use membership::{Event, Member, MemberEventKind, Status};
pub use node::{NodeHandle, start};
pub use profile::Profile;
pub use query::{Query, QueryFilter, QueryParams, QueryStarted, QueryUpdate};
pub use role::{Group, Health, Role};
pub use user_event::UserEvent;
pub use view::{Stats, View};
