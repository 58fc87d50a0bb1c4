//! The driver's side of [`crate::seal`]: one [`Guard`] per node behind a lock, shared by the
//! owner (datagrams), the push-pull tasks (frames) and the beacon listener; refusals counted
//! by reason and logged once per reason and peer a minute (a wrong cluster once per peer).

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, warn};

use crate::error::CommandError;
use crate::seal::{Channel, Guard, Key, Keyring, Refusal};
use crate::view::Stats;

/// How long after a refusal's log line the same reason from the same peer logs at debug only.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Peers remembered by the log limiter; past this it starts over.
const LOG_PEERS: usize = 1024;
/// Warning lines about refused packets per [`LOG_EVERY`], all peers together: a flood from
/// many (spoofed) sources logs at debug level past this.
const LOG_BUDGET: u32 = 30;

/// The node's sealing state and its counters.
pub(crate) struct Sealer {
    /// No key and no label (the default): packets pass as they are, without the lock. Fixed
    /// for the node's life (key changes need a keyring to start with).
    passthrough: bool,
    guard: Mutex<Guard>,
    stats: Arc<Stats>,
    logged: Mutex<Logged>,
    keyring_file: Option<PathBuf>,
}

/// The log limiter: when each (reason, peer) last logged, and the budget of this minute.
#[derive(Default)]
struct Logged {
    peers: HashMap<(&'static str, SocketAddr), Instant>,
    budget_since: Option<Instant>,
    spent: u32,
}

impl Logged {
    /// Whether this refusal gets a warning line (and records it if so).
    fn loud(&mut self, reason: &'static str, from: SocketAddr, now: Instant) -> bool {
        if self.peers.len() >= LOG_PEERS {
            self.peers.clear();
        }
        let due = match self.peers.get(&(reason, from)) {
            // A peer of another cluster is told about once; the rest every minute.
            Some(_) if reason == "wrong_cluster" => false,
            Some(at) => now.duration_since(*at) >= LOG_EVERY,
            None => true,
        };
        if !due {
            return false;
        }
        match self.budget_since {
            Some(since) if now.duration_since(since) < LOG_EVERY => {}
            _ => {
                self.budget_since = Some(now);
                self.spent = 0;
            }
        }
        if self.spent >= LOG_BUDGET {
            return false;
        }
        self.spent += 1;
        self.peers.insert((reason, from), now);
        true
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Sealer {
    pub(crate) fn new(guard: Guard, stats: Arc<Stats>, keyring_file: Option<PathBuf>) -> Self {
        Self {
            passthrough: guard.keyring().is_none() && guard.overhead() == 0,
            guard: Mutex::new(guard),
            stats,
            logged: Mutex::new(Logged::default()),
            keyring_file,
        }
    }

    fn guard(&self) -> MutexGuard<'_, Guard> {
        // A panic while holding the lock cannot leave the guard half-changed in a way that
        // matters (its counters only grow), so a poisoned lock is used as it is.
        self.guard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes sealing (or the plaintext label) adds to every packet.
    pub(crate) fn overhead(&self) -> usize {
        self.guard().overhead()
    }

    /// `packet` (a plaintext envelope) as it goes on the wire.
    pub(crate) fn seal<'a>(&self, channel: Channel, packet: &'a [u8]) -> Cow<'a, [u8]> {
        if self.passthrough {
            return Cow::Borrowed(packet);
        }
        self.guard().seal(channel, packet, unix_now())
    }

    /// The plaintext envelope of `packet` from `from`, or `None` when it was refused (then
    /// counted and logged).
    pub(crate) fn open<'a>(
        &self,
        channel: Channel,
        packet: &'a [u8],
        from: SocketAddr,
    ) -> Option<Cow<'a, [u8]>> {
        if self.passthrough {
            return Some(Cow::Borrowed(packet));
        }
        let opened = self.guard().open(channel, packet, unix_now());
        match opened {
            Ok(p) => Some(p),
            Err(refusal) => {
                self.refused(channel, &refusal, from, packet.len());
                None
            }
        }
    }

    fn refused(&self, channel: Channel, refusal: &Refusal, from: SocketAddr, len: usize) {
        let reason = refusal.reason();
        if let Some(counter) = self.stats.refused.counter(reason) {
            Stats::add(counter, 1);
        }
        if channel == Channel::Datagram {
            Stats::add(&self.stats.packets_in, 1);
            Stats::add(&self.stats.bytes_in, len as u64);
            Stats::add(&self.stats.packets_dropped, 1);
        }
        let loud = self.logged.lock().unwrap_or_else(|p| p.into_inner()).loud(
            reason,
            from,
            Instant::now(),
        );
        // Stream peers are named by IP: their port is an ephemeral one.
        let (what, peer) = match channel {
            Channel::Datagram => ("packets", from.to_string()),
            Channel::Stream => ("connections", from.ip().to_string()),
        };
        if loud {
            warn!(from = %peer, reason, "{what} from {peer} {refusal}: dropped");
        } else {
            debug!(from = %peer, reason, len, "{what} from {peer} {refusal}: dropped");
        }
    }

    /// Whether plaintext is accepted beside sealed packets.
    pub(crate) fn accepts_plaintext(&self) -> bool {
        let guard = self.guard();
        guard.keyring().is_some() && guard.accepts_plaintext()
    }

    /// Whether packets go out plaintext although a keyring is loaded.
    pub(crate) fn sends_plaintext(&self) -> bool {
        self.guard().sends_plaintext()
    }

    /// Whether gossip is sealed.
    pub(crate) fn encrypted(&self) -> bool {
        self.guard().keyring().is_some()
    }

    /// The ring's keys as base64, primary first; `None` when gossip is plaintext.
    pub(crate) fn keys(&self) -> Option<Vec<String>> {
        self.guard()
            .keyring()
            .map(|r| r.keys().iter().map(Key::to_base64).collect())
    }

    /// Applies `change` to the ring and, when it changed, writes the keyring file. True when
    /// the ring changed.
    pub(crate) fn change_keys(
        &self,
        change: impl FnOnce(&mut Keyring) -> Result<bool, crate::seal::KeyError>,
    ) -> Result<bool, CommandError> {
        let mut guard = self.guard();
        if guard.keyring().is_some() && guard.accepts_plaintext() {
            return Err(CommandError::AcceptingPlaintext);
        }
        let ring = guard.keyring_mut().ok_or(CommandError::NotEncrypted)?;
        let changed = change(ring)?;
        let saved = ring.clone();
        // Written outside the lock: the owner seals every datagram through it.
        drop(guard);
        if let (true, Some(path)) = (changed, &self.keyring_file) {
            saved.save(path).map_err(|e| CommandError::KeyringFile {
                path: path.display().to_string(),
                error: e.to_string(),
            })?;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_log_once_a_minute_per_reason_and_peer_within_a_global_budget() {
        let mut logged = Logged::default();
        let t0 = Instant::now();
        let peer = |i: u16| SocketAddr::from(([10, 0, 0, 7], 7000 + i));
        assert!(logged.loud("unknown_key", peer(0), t0));
        assert!(!logged.loud("unknown_key", peer(0), t0 + Duration::from_secs(59)));
        assert!(logged.loud("tampered", peer(0), t0));
        assert!(logged.loud("unknown_key", peer(0), t0 + Duration::from_secs(61)));
        assert!(logged.loud("wrong_cluster", peer(1), t0));
        assert!(!logged.loud("wrong_cluster", peer(1), t0 + Duration::from_secs(600)));
        let loud = (2..200)
            .filter(|i| logged.loud("plaintext", peer(*i), t0 + Duration::from_secs(62)))
            .count();
        assert!(
            loud < LOG_BUDGET as usize,
            "a flood from many ports is capped: {loud}"
        );
    }
}
