//! Replay protection: the test stands between the agents as a pair of UDP and TCP relays,
//! records every sealed datagram, and replays them all after the sender left and came back.
//!
//! Each agent advertises its relay's address, so every packet still arrives from the address
//! its sender advertises (the forged-packet rules drop a datagram whose header names another
//! sender, and a leave notice from anywhere but the member's own address): a datagram for `a`
//! arrives at `a`'s relay, and goes on to `a`'s real socket from the relay of the agent that
//! sent it. The replays go out from that same relay, as an attacker on the path would send them.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{K1, refused};
use crate::harness::{Agent, wait_until};

/// One relay: it stands for one agent. Packets for that agent arrive at its address; packets
/// from that agent leave from its UDP socket.
struct Stand {
    addr: SocketAddr,
    udp: UdpSocket,
    /// The agent's own gossip address, once it is known.
    real: Mutex<Option<SocketAddr>>,
    /// The datagrams forwarded to the agent: the index of the relay they left from, the bytes.
    captured: Mutex<Vec<(usize, Vec<u8>)>>,
}

struct Shared {
    stands: Vec<Stand>,
    stop: AtomicBool,
}

impl Shared {
    /// The relay that stands for the agent whose own gossip address is `addr`.
    fn standing_for(&self, addr: SocketAddr) -> Option<usize> {
        self.stands
            .iter()
            .position(|s| *s.real.lock().expect("lock") == Some(addr))
    }

    fn real(&self, i: usize) -> Option<SocketAddr> {
        *self.stands[i].real.lock().expect("lock")
    }
}

/// Relays for some agents, each on a UDP and TCP port of its own. A datagram arriving at
/// relay `i` from agent `j`'s own socket is recorded and sent to agent `i`'s own socket from
/// relay `j`'s; a TCP connection to relay `i` is piped to agent `i`'s own port (the TCP rule
/// checks only the peer's IP, 127.0.0.1 either way).
struct Relays {
    shared: Arc<Shared>,
}

impl Relays {
    fn start(n: usize) -> Relays {
        let mut stands = Vec::new();
        let mut listeners = Vec::new();
        for _ in 0..n {
            let (udp, tcp) = loop {
                let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
                let addr = udp.local_addr().expect("addr");
                if let Ok(tcp) = TcpListener::bind(addr) {
                    break (udp, tcp);
                }
            };
            udp.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            tcp.set_nonblocking(true).expect("nonblocking");
            stands.push(Stand {
                addr: udp.local_addr().expect("addr"),
                udp,
                real: Mutex::new(None),
                captured: Mutex::default(),
            });
            listeners.push(tcp);
        }
        let shared = Arc::new(Shared {
            stands,
            stop: AtomicBool::new(false),
        });
        for (i, tcp) in listeners.into_iter().enumerate() {
            let s = shared.clone();
            std::thread::spawn(move || forward_datagrams(&s, i));
            let s = shared.clone();
            std::thread::spawn(move || forward_streams(&s, i, tcp));
        }
        Relays { shared }
    }

    /// Relay `i`'s address: what agent `i` advertises.
    fn addr(&self, i: usize) -> SocketAddr {
        self.shared.stands[i].addr
    }

    /// Relay `i` stands for the agent whose own gossip address is `real`.
    fn stand_for(&self, i: usize, real: SocketAddr) {
        *self.shared.stands[i].real.lock().expect("lock") = Some(real);
    }

    /// Sends every datagram recorded for agent `i` again, each from the relay it first came
    /// from; how many.
    fn replay_to(&self, i: usize) -> usize {
        let to = self.shared.real(i).expect("target");
        let packets = self.shared.stands[i].captured.lock().expect("lock").clone();
        for (from, p) in &packets {
            self.shared.stands[*from].udp.send_to(p, to).expect("send");
        }
        packets.len()
    }
}

impl Drop for Relays {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// Relay `i`'s UDP side: until stopped, forwards what arrives from an agent the relays know.
fn forward_datagrams(shared: &Shared, i: usize) {
    let mut buf = vec![0u8; 65536];
    let me = &shared.stands[i];
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok((len, src)) = me.udp.recv_from(&mut buf) else {
            continue;
        };
        let (Some(to), Some(from)) = (shared.real(i), shared.standing_for(src)) else {
            continue;
        };
        if from == i {
            continue;
        }
        me.captured
            .lock()
            .expect("lock")
            .push((from, buf[..len].to_vec()));
        let _ = shared.stands[from].udp.send_to(&buf[..len], to);
    }
}

/// Relay `i`'s TCP side: until stopped, pipes every connection to agent `i`'s own port.
fn forward_streams(shared: &Shared, i: usize, tcp: TcpListener) {
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok((conn, _)) = tcp.accept() else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if let (Some(to), Ok(())) = (shared.real(i), conn.set_nonblocking(false)) {
            std::thread::spawn(move || pipe(conn, to));
        }
    }
}

fn pipe(conn: TcpStream, to: SocketAddr) {
    let Ok(upstream) = TcpStream::connect(to) else {
        return;
    };
    let (Ok(mut c2), Ok(mut u2)) = (conn.try_clone(), upstream.try_clone()) else {
        return;
    };
    let (mut c, mut u) = (conn, upstream);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut u, &mut c);
    let _ = c.flush();
    let _ = c.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

#[test]
fn captured_sealed_datagrams_replayed_after_a_leave_and_rejoin_change_nothing() {
    // Relay 0 stands for a, relay 1 for b.
    let relays = Relays::start(2);
    let (a_relay, b_relay) = (relays.addr(0).to_string(), relays.addr(1).to_string());
    let a = Agent::start("replay-a", &["--encrypt", K1, "--advertise", &a_relay]);
    relays.stand_for(0, a.gossip);
    let mut b = Agent::start(
        "replay-b",
        &["--encrypt", K1, "--advertise", &b_relay, "--join", &a_relay],
    );
    relays.stand_for(1, b.gossip);
    assert!(wait_until(Duration::from_secs(10), || a.count_alive() == 2
        && b.count_alive() == 2));
    // b leaves gracefully: its leave intent and leave datagrams pass the relays too.
    let b_addr = b.gossip.to_string();
    b.signal(Signal::SIGTERM);
    assert!(b.wait_exit(Duration::from_secs(10)).is_some());
    assert!(wait_until(Duration::from_secs(10), || a
        .status_of("replay-b")
        .as_deref()
        == Some("left")));
    // b comes back at the same address: relay 1 still stands for it.
    let b = Agent::start(
        "replay-b",
        &[
            "--encrypt",
            K1,
            "--advertise",
            &b_relay,
            "--join",
            &a_relay,
            "--bind",
            &b_addr,
        ],
    );
    assert!(wait_until(Duration::from_secs(10), || a
        .status_of("replay-b")
        .as_deref()
        == Some("alive")));

    let before = refused(&a, "replayed") + refused(&a, "stale");
    let sent = relays.replay_to(0);
    assert!(sent > 3, "only {sent} datagrams captured");
    assert!(
        wait_until(Duration::from_secs(5), || refused(&a, "replayed")
            + refused(&a, "stale")
            >= before + sent as u64),
        "{} of {sent} replays refused",
        refused(&a, "replayed") + refused(&a, "stale") - before
    );
    // Nothing changed: b stays alive on both sides for a while.
    let mut changed = Vec::new();
    wait_until(Duration::from_secs(2), || {
        for agent in [&a, &b] {
            if agent.status_of("replay-b").as_deref() != Some("alive") {
                changed.push(format!(
                    "{} lists replay-b {:?}",
                    agent.name,
                    agent.status_of("replay-b")
                ));
            }
        }
        false
    });
    assert!(changed.is_empty(), "{changed:?}");
    assert_eq!(
        refused(&a, "replayed") + refused(&a, "stale"),
        before + sent as u64
    );
    assert!(a.log().contains("are replays of packets already received"));
}
