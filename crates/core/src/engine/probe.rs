//! The fallback probe (memberlist's TCP ping). foca probes one member per period: a UDP ping,
//! then, when no ack came within the probe RTT, indirect pings through other members. Under
//! heavy UDP loss all of those can be lost and a healthy member turns suspect. The watch sees
//! foca's probe go out (it decodes the header of foca's outgoing ping), sees the acks come in,
//! and when none came within the probe RTT asks the driver for a TCP ping as well. When the
//! member answers over TCP in time, the engine hands foca the ack the UDP path lost, so the
//! probe succeeds as it would have with a lossless network.

use foca::{Codec, Header, Message, PostcardCodec, ProbeNumber};

use crate::identity::Identity;

/// The probe foca has under way, as far as the fallback is concerned.
#[derive(Debug, Clone, Copy)]
struct Watched {
    target: Identity,
    number: ProbeNumber,
    acked: bool,
    asked: bool,
    refused: bool,
}

/// foca's current probe.
#[derive(Debug, Default)]
pub(crate) struct ProbeWatch {
    current: Option<Watched>,
}

/// How the probe before the one just sent ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// An ack came (direct, forwarded, or the TCP ping's).
    Acked,
    /// The member's port refused the TCP ping: it is gone (not our fault).
    Refused,
    /// Nothing answered: the member is unreachable, or this node is slow.
    Unanswered,
}

/// The header of foca's message `data`, if it decodes.
pub(crate) fn header(data: &[u8]) -> Option<Header<Identity>> {
    let mut buf = data;
    PostcardCodec.decode_header(&mut buf).ok()
}

impl ProbeWatch {
    /// foca sends a message with header `h`: when it is a probe's ping, the watch follows
    /// that probe (foca runs one at a time) and returns its number, for a check at the probe
    /// RTT.
    pub(crate) fn sent(&mut self, h: &Header<Identity>) -> Option<(ProbeNumber, Option<Outcome>)> {
        let Message::Ping(number) = h.message else {
            return None;
        };
        let previous = self.current.replace(Watched {
            target: h.dst,
            number,
            acked: false,
            asked: false,
            refused: false,
        });
        let outcome = previous.map(|w| match (w.acked, w.refused) {
            (true, _) => Outcome::Acked,
            (false, true) => Outcome::Refused,
            (false, false) => Outcome::Unanswered,
        });
        Some((number, outcome))
    }

    /// foca receives a message with header `h`: a direct or forwarded ack of the watched
    /// probe ends the watch.
    pub(crate) fn received(&mut self, h: &Header<Identity>) {
        let Some(w) = self.current.as_mut() else {
            return;
        };
        let acked = match &h.message {
            Message::Ack(n) => *n == w.number && h.src == w.target,
            Message::ForwardedAck {
                origin,
                probe_number,
            } => *probe_number == w.number && *origin == w.target,
            _ => false,
        };
        w.acked |= acked;
    }

    /// The probe RTT of probe `number` is over: the member to ping over TCP, when no ack came
    /// and it was not asked yet.
    pub(crate) fn fallback_due(&mut self, number: ProbeNumber) -> Option<Identity> {
        let w = self.current.as_mut()?;
        if w.number != number || w.acked || w.asked {
            return None;
        }
        w.asked = true;
        Some(w.target)
    }

    /// `target` refused the TCP connection of probe `number` (nothing listens on its port:
    /// its process is gone): true when no ack came for that probe either.
    pub(crate) fn tcp_refused(&mut self, target: Identity, number: ProbeNumber) -> bool {
        let Some(w) = self.current.as_mut() else {
            return false;
        };
        if w.number != number || w.target != target || w.acked {
            return false;
        }
        w.refused = true;
        true
    }

    /// A datagram to `addr` came back as ICMP port unreachable: when `addr` is the watched
    /// probe's target, no ack came and no TCP ping was asked yet, the probe to ping over
    /// TCP now. Addresses compare by IP and port (a kernel's IPv6 address may carry a scope
    /// or flow the member's does not).
    pub(crate) fn port_unreachable(
        &mut self,
        addr: std::net::SocketAddr,
    ) -> Option<(Identity, ProbeNumber)> {
        let w = self.current.as_mut()?;
        let same = w.target.addr.ip().to_canonical() == addr.ip().to_canonical()
            && w.target.addr.port() == addr.port();
        if !same || w.acked || w.asked {
            return None;
        }
        w.asked = true;
        Some((w.target, w.number))
    }

    /// `target` answered the TCP ping of probe `number`: true when foca still waits for that
    /// ack (then the caller hands foca [`synthetic_ack`]).
    pub(crate) fn tcp_answered(&mut self, target: Identity, number: ProbeNumber) -> bool {
        let Some(w) = self.current.as_mut() else {
            return false;
        };
        if w.number != number || w.target != target || w.acked {
            return false;
        }
        w.acked = true;
        true
    }
}

/// The foca message `from` would have sent to `to` to ack probe `number`: what the TCP
/// answer stands for. `incarnation` is the one foca knows for `from`, so nothing but the
/// probe changes.
pub(crate) fn synthetic_ack(
    from: Identity,
    incarnation: foca::Incarnation,
    to: Identity,
    number: ProbeNumber,
) -> Option<Vec<u8>> {
    let header = Header {
        src: from,
        src_incarnation: incarnation,
        dst: to,
        message: Message::Ack(number),
    };
    let mut buf = Vec::new();
    PostcardCodec.encode_header(&header, &mut buf).ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(port: u16) -> Identity {
        Identity::new(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn message(src: Identity, dst: Identity, message: Message<Identity>) -> Vec<u8> {
        let header = Header {
            src,
            src_incarnation: 0,
            dst,
            message,
        };
        let mut buf = Vec::new();
        PostcardCodec
            .encode_header(&header, &mut buf)
            .expect("encode");
        buf
    }

    #[test]
    fn an_unanswered_ping_asks_for_one_tcp_ping() {
        let (me, b) = (id(1), id(2));
        let mut w = ProbeWatch::default();
        assert_eq!(
            w.sent(&header(&message(me, b, Message::Ping(7))).expect("h")),
            Some((7, None))
        );
        assert_eq!(w.fallback_due(7), Some(b));
        assert_eq!(w.fallback_due(7), None, "once");
        assert!(w.tcp_answered(b, 7));
        assert!(!w.tcp_answered(b, 7), "the ack is handed over once");
        let next = w.sent(&header(&message(me, b, Message::Ping(8))).expect("h"));
        assert_eq!(next, Some((8, Some(Outcome::Acked))));
        let after = w.sent(&header(&message(me, b, Message::Ping(9))).expect("h"));
        assert_eq!(after, Some((9, Some(Outcome::Unanswered))));
        assert!(w.tcp_refused(b, 9));
        let last = w.sent(&header(&message(me, b, Message::Ping(10))).expect("h"));
        assert_eq!(last, Some((10, Some(Outcome::Refused))));
    }

    #[test]
    fn an_ack_or_a_forwarded_ack_means_no_tcp_ping() {
        let (me, b, c) = (id(1), id(2), id(3));
        let mut w = ProbeWatch::default();
        w.sent(&header(&message(me, b, Message::Ping(1))).expect("h"));
        w.received(&header(&message(b, me, Message::Ack(1))).expect("h"));
        assert_eq!(w.fallback_due(1), None);
        w.sent(&header(&message(me, b, Message::Ping(2))).expect("h"));
        let forwarded = Message::ForwardedAck {
            origin: b,
            probe_number: 2,
        };
        w.received(&header(&message(c, me, forwarded)).expect("h"));
        assert_eq!(w.fallback_due(2), None);
    }

    #[test]
    fn a_late_answer_for_an_older_probe_is_ignored() {
        let (me, b, c) = (id(1), id(2), id(3));
        let mut w = ProbeWatch::default();
        w.sent(&header(&message(me, b, Message::Ping(1))).expect("h"));
        assert_eq!(w.fallback_due(1), Some(b));
        w.sent(&header(&message(me, c, Message::Ping(2))).expect("h"));
        assert!(!w.tcp_answered(b, 1));
        assert!(w.received_nothing_for(c));
    }

    #[test]
    fn the_synthetic_ack_decodes_as_the_members_ack() {
        let (me, b) = (id(1), id(2));
        let ack = synthetic_ack(b, 3, me, 9).expect("encode");
        let h = header(&ack).expect("decode");
        assert_eq!((h.src, h.src_incarnation, h.dst), (b, 3, me));
        assert_eq!(h.message, Message::Ack(9));
    }

    impl ProbeWatch {
        fn received_nothing_for(&self, target: Identity) -> bool {
            self.current.is_some_and(|w| w.target == target && !w.acked)
        }
    }
}
