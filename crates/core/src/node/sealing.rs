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

/// The node's sealing state and its counters.
pub(crate) struct Sealer {
    /// No key and no label (the default): packets pass as they are, without the lock. Fixed
    /// for the node's life (key changes need a keyring to start with).
    passthrough: bool,
    guard: Mutex<Guard>,
    stats: Arc<Stats>,
    logged: Mutex<HashMap<(&'static str, SocketAddr), Instant>>,
    keyring_file: Option<PathBuf>,
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
            logged: Mutex::new(HashMap::new()),
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
        let now = Instant::now();
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        if logged.len() >= LOG_PEERS {
            logged.clear();
        }
        let loud = match logged.get(&(reason, from)) {
            // A peer of another cluster is told about once; the rest every minute.
            Some(_) if reason == "wrong_cluster" => false,
            Some(at) => now.duration_since(*at) >= LOG_EVERY,
            None => true,
        };
        let what = match channel {
            Channel::Datagram => "packets",
            Channel::Stream => "connections",
        };
        if loud {
            logged.insert((reason, from), now);
            warn!(%from, reason, "{what} from {from} {refusal}: dropped");
        } else {
            debug!(%from, reason, len, "{what} from {from} {refusal}: dropped");
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
