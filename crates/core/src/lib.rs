//! shoal-core: cluster membership on [foca](https://docs.rs/foca) (SWIM).
//!
//! Layout:
//! - [`identity`]: the small `{addr, generation}` identity foca gossips.
//! - [`envelope`]: magic, version, kind and key id around every datagram and stream frame.
//! - [`profile`]: `lan`, `wan`, `local` timings and foca's config for a cluster size.
//! - [`membership`]: the pure member table: notifications and broadcasts in, Serf events out.
//! - [`broadcast`]: the application broadcasts (meta, leave intents) and foca's handler.
//! - [`snapshot`]: the `--snapshot` file: known members, written atomically.
//! - [`discover`]: `--discover`: the multicast beacon that finds members with no address.
//! - [`fs`]: atomic file replacement.
//! - [`anti_entropy`]: anti-entropy: digest datagrams and TCP push-pull of the full state.
//! - [`sim`]: deterministic simulation of whole clusters (virtual time, loss, partitions).
//! - [`timers`]: the one ordered timer queue.
//! - [`node`]: the tokio driver: one task owns foca and the table; a [`NodeHandle`] talks to it.

pub mod anti_entropy;
pub mod broadcast;
pub mod discover;
pub(crate) mod engine;
pub mod envelope;
pub mod fs;
pub mod identity;
pub mod membership;
pub mod node;
pub mod profile;
pub mod sim;
pub mod snapshot;
pub mod timers;

pub use identity::Identity;
pub use membership::{Event, Member, MemberEventKind, Status};
pub use node::{NodeConfig, NodeError, NodeHandle, Snapshot, Stats, start};
pub use profile::Profile;

/// The default gossip port (7946 belongs to Serf and Docker Swarm).
pub const DEFAULT_PORT: u16 = 7948;
