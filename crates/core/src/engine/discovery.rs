//! `--discover` in the engine: when to send a beacon (quickly, backing off, while alone; now
//! and then once connected, so clusters that formed apart on one LAN still merge) and which
//! beacons to answer (each address at most once per retry interval).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::backoff::Backoff;
use crate::discover::{self, Beacon};
use crate::identity::Identity;

/// Contacted addresses are forgotten after this many retry intervals.
const FORGET_AFTER: u32 = 20;

/// The discovery state of the local node.
#[derive(Debug)]
pub(crate) struct Discovery {
    /// The cluster name, when discovery is on and the caller can send beacons.
    cluster: Option<String>,
    backoff: Backoff,
    /// When each discovered address was last contacted.
    contacted: BTreeMap<SocketAddr, Instant>,
}

impl Discovery {
    /// Discovery of `cluster` (`None`: off), beacons backing off as `backoff` while alone.
    pub(crate) fn new(cluster: Option<String>, backoff: Backoff) -> Self {
        Self {
            cluster,
            backoff,
            contacted: BTreeMap::new(),
        }
    }

    /// True when beacons are sent.
    pub(crate) fn on(&self) -> bool {
        self.cluster.is_some()
    }

    /// A beacon from `addr` at `now`: contact it, unless it was contacted less than `recent`
    /// ago.
    pub(crate) fn should_contact(
        &mut self,
        addr: SocketAddr,
        now: Instant,
        recent: Duration,
    ) -> bool {
        if self
            .contacted
            .get(&addr)
            .is_some_and(|t| now.duration_since(*t) < recent)
        {
            return false;
        }
        self.contacted.insert(addr, now);
        self.contacted
            .retain(|_, t| now.duration_since(*t) < recent * FORGET_AFTER);
        true
    }

    /// The beacon of `from` (none when discovery is off), and the delay until the next one:
    /// the backoff while `alone`, else `connected_every`.
    pub(crate) fn beacon(
        &mut self,
        from: Identity,
        alone: bool,
        connected_every: Duration,
    ) -> Option<(Result<Vec<u8>, postcard::Error>, Duration)> {
        let cluster = self.cluster.clone()?;
        let packet = discover::encode(&Beacon { cluster, from });
        let next = if alone {
            self.backoff.next()
        } else {
            self.backoff.reset();
            connected_every
        };
        Some((packet, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovery() -> Discovery {
        let ms = Duration::from_millis;
        Discovery::new(Some("prod".into()), Backoff::new(ms(100), ms(400)))
    }

    #[test]
    fn an_address_is_contacted_at_most_once_per_interval() {
        let mut d = discovery();
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let t0 = Instant::now();
        let recent = Duration::from_secs(1);
        assert!(d.should_contact(a, t0, recent));
        assert!(!d.should_contact(a, t0 + recent / 2, recent));
        assert!(d.should_contact(a, t0 + recent, recent));
    }

    #[test]
    fn beacons_back_off_while_alone_and_slow_down_once_connected() {
        let mut d = discovery();
        let me = Identity::new("127.0.0.1:2".parse().expect("addr"));
        let every = Duration::from_secs(10);
        let delays: Vec<_> = (0..4)
            .filter_map(|_| d.beacon(me, true, every).map(|(_, next)| next))
            .collect();
        assert_eq!(delays, [100, 200, 400, 400].map(Duration::from_millis));
        let (packet, next) = d.beacon(me, false, every).expect("on");
        assert_eq!(next, every);
        let beacon = discover::decode(&packet.expect("encode")).expect("beacon");
        assert_eq!((beacon.cluster.as_str(), beacon.from), ("prod", me));
        assert_eq!(
            d.beacon(me, true, every).map(|(_, n)| n),
            Some(Duration::from_millis(100))
        );
    }

    #[test]
    fn discovery_off_sends_nothing() {
        let mut d = Discovery::new(None, Backoff::new(Duration::ZERO, Duration::ZERO));
        let me = Identity::new("127.0.0.1:2".parse().expect("addr"));
        assert!(!d.on());
        assert!(d.beacon(me, true, Duration::ZERO).is_none());
    }
}
