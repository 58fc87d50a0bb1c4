//! What a node needs to start ([`NodeConfig`]) and the address rules every layer shares: the
//! default gossip port and how a join target without a port gets it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::profile::{Profile, Timings};
use crate::role::Role;
use crate::seal::Keyring;

/// The default gossip port (7946 belongs to Serf and Docker Swarm).
pub const DEFAULT_PORT: u16 = 7948;

/// What a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Node name, unique in the cluster.
    pub name: String,
    /// Address to bind UDP and TCP gossip to. Port 0 picks a free port.
    pub bind: SocketAddr,
    /// Address to tell others; default: the bound address, with an unspecified IP replaced by
    /// the one that routes to the first join target (or the default route).
    pub advertise: Option<SocketAddr>,
    /// Initial tags.
    pub tags: BTreeMap<String, String>,
    /// Initial health checks and primary group (see [`crate::role`]).
    pub role: Role,
    /// Timing profile.
    pub profile: Profile,
    /// Timings that replace the profile's (for embedding and for measuring other settings,
    /// as the simulator's trade-off table does); `None`: the profile's.
    pub timings: Option<Timings>,
    /// Join targets (`ip:port` or `name:port`), resolved now and periodically.
    pub join: Vec<String>,
    /// Maximum join attempts while alone; 0 means no limit.
    pub retry_max: u32,
    /// First delay between join attempts while alone (doubles up to the profile's maximum);
    /// `None` takes the profile's.
    pub retry_interval: Option<Duration>,
    /// How long a failed member stays listed before it is reaped.
    pub reconnect_timeout: Duration,
    /// How long a left member stays listed before it is reaped.
    pub tombstone_timeout: Duration,
    /// UDP payload budget in bytes, envelope included (1400 suits Ethernet).
    pub max_packet_size: usize,
    /// Where to keep the snapshot of known members (`--snapshot`); `None`: no snapshot.
    pub snapshot: Option<PathBuf>,
    /// Rejoin the snapshot's members even if this node left gracefully last time.
    pub rejoin: bool,
    /// Cluster name for multicast discovery (`--discover`); `None`: off.
    pub discover: Option<String>,
    /// Run the user events the cluster already had when this node first joins (Serf's
    /// `-replay`); off: only events from the join on run.
    pub replay: bool,
    /// Gossip encryption keys (`--encrypt`, `--keyring-file`), primary first; `None`:
    /// plaintext. Every datagram and stream frame is sealed with the primary.
    pub keyring: Option<Keyring>,
    /// Where the keyring is kept (`--keyring-file`): created at start when missing, rewritten
    /// atomically, mode 0600, after every key change; `None`: changes last until the node
    /// stops.
    pub keyring_file: Option<PathBuf>,
    /// With a keyring, also accept plaintext packets (`--encrypt-accept-plaintext`), for a
    /// rolling upgrade only: anyone can join while it is on.
    pub accept_plaintext: bool,
    /// With a keyring, send plaintext and accept both (`--encrypt-send-plaintext`): the
    /// first step of a rolling upgrade, while some members have no key yet.
    pub send_plaintext: bool,
    /// The cluster label (`--cluster`): authenticated in every packet; packets of another
    /// label are refused. Empty: none.
    pub cluster: String,
}

impl NodeConfig {
    /// A config with Serf-like defaults for `name` bound to `bind`.
    pub fn new(name: impl Into<String>, bind: SocketAddr) -> Self {
        Self {
            name: name.into(),
            bind,
            advertise: None,
            tags: BTreeMap::new(),
            role: Role::default(),
            profile: Profile::Lan,
            timings: None,
            join: Vec::new(),
            retry_max: 0,
            retry_interval: None,
            reconnect_timeout: Duration::from_secs(24 * 3600),
            tombstone_timeout: Duration::from_secs(24 * 3600),
            max_packet_size: 1400,
            snapshot: None,
            rejoin: false,
            discover: None,
            replay: false,
            keyring: None,
            keyring_file: None,
            accept_plaintext: false,
            send_plaintext: false,
            cluster: String::new(),
        }
    }
}

/// `target` with `default_port` added when it names none: `ip:port` and `[v6]:port` stay as
/// they are, a bare IP (v4 or v6) gets the port, `host:port` stays, `host` gets `:port`.
/// The one rule for join targets, `--bind`, `--advertise` and `--control`.
pub fn with_default_port(target: &str, default_port: u16) -> String {
    if target.parse::<SocketAddr>().is_ok() {
        return target.to_string();
    }
    if let Ok(ip) = target.parse::<IpAddr>() {
        return SocketAddr::new(ip, default_port).to_string();
    }
    let has_port = target
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if has_port {
        target.to_string()
    } else {
        format!("{target}:{default_port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_without_a_port_gets_the_default_one() {
        assert_eq!(with_default_port("10.0.0.1:80", 1), "10.0.0.1:80");
        assert_eq!(with_default_port("10.0.0.1", 7948), "10.0.0.1:7948");
        assert_eq!(with_default_port("::1", 7948), "[::1]:7948");
        assert_eq!(with_default_port("[::1]:9", 7948), "[::1]:9");
        assert_eq!(with_default_port("web:9", 7948), "web:9");
        assert_eq!(with_default_port("web", 7948), "web:7948");
        assert_eq!(with_default_port("web:99999", 7948), "web:99999:7948");
    }
}
