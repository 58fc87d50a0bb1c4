//! Timing profiles: `lan` (default), `wan` and `local` (sub-second timers for tests on loopback).

use std::num::{NonZeroU8, NonZeroUsize};
use std::str::FromStr;
use std::time::Duration;

use foca::{Config, PeriodicParams};

/// A named set of protocol timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// A data-centre or container network: sub-millisecond RTT, failures found in a few seconds.
    #[default]
    Lan,
    /// Links with RTTs in the hundreds of milliseconds.
    Wan,
    /// Loopback only: everything several times faster, for tests and demos.
    Local,
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "lan" => Ok(Profile::Lan),
            "wan" => Ok(Profile::Wan),
            "local" => Ok(Profile::Local),
            other => Err(format!(
                "unknown profile {other:?}: expected lan, wan or local"
            )),
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Profile::Lan => "lan",
            Profile::Wan => "wan",
            Profile::Local => "local",
        })
    }
}

/// The timings a profile stands for, beyond foca's own [`Config`].
#[derive(Debug, Clone)]
pub struct Timings {
    /// SWIM probe period.
    pub probe_period: Duration,
    /// How long a direct probe waits for its ack before asking others.
    pub probe_rtt: Duration,
    /// Suspicion multiplier: a suspect is declared down after
    /// `multiplier * max(1, log10(n)) * probe_period`.
    pub suspicion_mult: f64,
    /// Never declare a suspect down sooner than this.
    pub suspicion_min: Duration,
    /// How often updates are pushed to a few random members.
    pub gossip_interval: Duration,
    /// How often a digest of the member set is sent to one random member (anti-entropy).
    pub sync_interval: Duration,
    /// The longest a leaving node waits for every live member to acknowledge its intent
    /// (sent again every half gossip interval to those that have not) before it leaves; it
    /// leaves as soon as all have, so this is spent only on a member that never answers.
    pub leave_propagate: Duration,
    /// How often announces go out toward members known as down (partition healing).
    pub reconnect_interval: Duration,
    /// First delay between join attempts while alone; doubles up to `retry_max_interval`.
    pub retry_interval: Duration,
    /// Longest delay between join attempts.
    pub retry_max_interval: Duration,
    /// How long a member whose gossip port refused a probe's TCP ping (its process is gone)
    /// stays suspect before it is declared down, unless it refutes.
    pub refused_down: Duration,
    /// A timer this late means the node itself did not run (stopped, stalled): it refutes.
    pub stall: Duration,
    /// How often housekeeping runs: suspects noted, members whose meta is missing fetched,
    /// name conflicts, reaping, config scaling. Apart from the probe period so that a longer
    /// period (fewer packets) does not slow the repair of a missed meta (a member is listed
    /// only once its meta is known).
    pub housekeeping: Duration,
}

impl Profile {
    /// The timings of this profile.
    pub fn timings(self) -> Timings {
        match self {
            Profile::Lan => Timings {
                probe_period: Duration::from_millis(1000),
                probe_rtt: Duration::from_millis(300),
                suspicion_mult: 3.0,
                suspicion_min: Duration::from_millis(6000),
                gossip_interval: Duration::from_millis(100),
                sync_interval: Duration::from_millis(1000),
                leave_propagate: Duration::from_millis(500),
                reconnect_interval: Duration::from_secs(1),
                retry_interval: Duration::from_millis(250),
                retry_max_interval: Duration::from_secs(2),
                refused_down: Duration::from_millis(300),
                stall: Duration::from_millis(800),
                housekeeping: Duration::from_millis(400),
            },
            Profile::Wan => Timings {
                probe_period: Duration::from_secs(5),
                probe_rtt: Duration::from_secs(2),
                suspicion_mult: 6.0,
                suspicion_min: Duration::from_secs(10),
                gossip_interval: Duration::from_millis(500),
                sync_interval: Duration::from_secs(5),
                leave_propagate: Duration::from_millis(2500),
                reconnect_interval: Duration::from_secs(15),
                retry_interval: Duration::from_secs(2),
                retry_max_interval: Duration::from_secs(30),
                refused_down: Duration::from_secs(5),
                stall: Duration::from_secs(5),
                housekeeping: Duration::from_secs(5),
            },
            Profile::Local => Timings {
                probe_period: Duration::from_millis(200),
                probe_rtt: Duration::from_millis(80),
                suspicion_mult: 3.0,
                suspicion_min: Duration::from_millis(600),
                gossip_interval: Duration::from_millis(50),
                sync_interval: Duration::from_millis(300),
                leave_propagate: Duration::from_millis(250),
                reconnect_interval: Duration::from_millis(500),
                retry_interval: Duration::from_millis(100),
                retry_max_interval: Duration::from_secs(1),
                refused_down: Duration::from_millis(200),
                stall: Duration::from_millis(500),
                housekeeping: Duration::from_millis(200),
            },
        }
    }
}

impl Timings {
    /// foca's configuration for a cluster of `cluster_size` members, with `max_packet_size` the
    /// UDP budget left after the envelope.
    pub fn foca_config(&self, cluster_size: usize, max_packet_size: usize) -> Config {
        let n = cluster_size.max(1);
        let scale = log10(n).max(1.0);
        let suspicion = self.probe_period.mul_f64(self.suspicion_mult * scale);
        // memberlist's retransmit rule: mult * log10(n + 1), with a floor that still reaches
        // everyone in a small cluster.
        let max_tx = ((4.0 * log10(n + 1)).ceil() as u8).clamp(4, 30);
        let fanout = NonZeroUsize::new(3).expect("3 is not zero");
        Config {
            probe_period: self.probe_period,
            probe_rtt: self.probe_rtt,
            num_indirect_probes: fanout,
            max_transmissions: NonZeroU8::new(max_tx).expect("clamped to at least 4"),
            suspect_to_down_after: suspicion.max(self.suspicion_min),
            remove_down_after: Some(Duration::from_secs(24 * 3600)),
            max_packet_size: NonZeroUsize::new(max_packet_size.max(512))
                .expect("at least 512 bytes"),
            notify_down_members: true,
            // No announce to live members: the digest on every SWIM datagram already finds
            // any difference in the member set and repairs it by push-pull, so foca's
            // announce and its feed (two datagrams per node every 30 s, 3% of the idle
            // traffic) found nothing the digest had not.
            periodic_announce: None,
            periodic_announce_to_down_members: Some(PeriodicParams {
                frequency: self.reconnect_interval,
                num_members: NonZeroUsize::new(2).expect("2 is not zero"),
            }),
            periodic_gossip: Some(PeriodicParams {
                frequency: self.gossip_interval,
                num_members: fanout,
            }),
        }
    }
}

/// Serf's `QueryTimeoutMult` is 16 at a 200 ms gossip interval; shoal gossips twice as often,
/// and handler scripts are no faster for it, so it waits 32 gossip intervals per step.
pub const QUERY_TIMEOUT_MULT: u32 = 32;

impl Timings {
    /// The default query timeout for `n` live members (Serf's formula):
    /// `gossip_interval * QUERY_TIMEOUT_MULT * ceil(log10(n + 1))`; lan 3.2 s up to 9 members,
    /// 6.4 s up to 99; wan 16 s, 32 s; local 1.6 s, 3.2 s.
    pub fn query_timeout(&self, n: usize) -> Duration {
        // ceil(log10(n + 1)) is the number of decimal digits of n (at least 1).
        let digits = n.max(1).ilog10() + 1;
        self.gossip_interval * QUERY_TIMEOUT_MULT * digits
    }
}

/// `log10(n)` for a cluster size, accurate to about 1e-9, without calling libm: the only libm
/// symbol shoal needed was `log10`, and not linking libm saves half a MiB of idle RSS per agent.
fn log10(n: usize) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    // n = m * 2^k with m in [1, 2); ln(m) = 2 * atanh((m - 1) / (m + 1)).
    let k = usize::BITS - 1 - n.leading_zeros();
    let m = n as f64 / (1u64 << k) as f64;
    let y = (m - 1.0) / (m + 1.0);
    let (y2, mut term, mut ln_m) = (y * y, y, 0.0);
    for i in 0..12 {
        ln_m += term / f64::from(2 * i + 1);
        term *= y2;
    }
    (f64::from(k) * std::f64::consts::LN_2 + 2.0 * ln_m) / std::f64::consts::LN_10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log10_matches_std_for_cluster_sizes() {
        for n in [
            1usize,
            2,
            3,
            7,
            10,
            20,
            21,
            50,
            99,
            100,
            1000,
            12345,
            1 << 20,
        ] {
            let want = (n as f64).log10();
            assert!(
                (log10(n) - want).abs() < 1e-9,
                "log10({n}) = {} vs {want}",
                log10(n)
            );
        }
    }

    #[test]
    fn lan_suspicion_grows_slowly_with_the_cluster() {
        let t = Profile::Lan.timings();
        let small = t.foca_config(5, 1400).suspect_to_down_after;
        let hundred = t.foca_config(100, 1400).suspect_to_down_after;
        let thousand = t.foca_config(1000, 1400).suspect_to_down_after;
        assert_eq!(small, Duration::from_secs(6));
        assert_eq!(hundred, Duration::from_secs(6));
        assert_eq!(thousand, Duration::from_secs(9));
    }

    #[test]
    fn the_default_query_timeout_scales_with_the_digits_of_the_cluster_size() {
        let lan = Profile::Lan.timings();
        assert_eq!(lan.query_timeout(0), Duration::from_millis(3200));
        assert_eq!(lan.query_timeout(9), Duration::from_millis(3200));
        assert_eq!(lan.query_timeout(10), Duration::from_millis(6400));
        assert_eq!(lan.query_timeout(100), Duration::from_millis(9600));
        let local = Profile::Local.timings();
        assert_eq!(local.query_timeout(3), Duration::from_millis(1600));
    }

    #[test]
    fn profiles_parse_by_name_and_reject_others() {
        assert_eq!("wan".parse::<Profile>(), Ok(Profile::Wan));
        assert!("fast".parse::<Profile>().is_err());
    }
}
