//! Replay protection: the test stands between the agents as a UDP and TCP relay, records
//! every sealed datagram, and replays them all after the sender left and came back.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{K1, refused};
use crate::harness::{Agent, wait_until};

/// A relay in front of one agent's gossip port: UDP datagrams are recorded and forwarded,
/// TCP connections are piped through.
struct Relay {
    addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    captured: Arc<Mutex<Vec<Vec<u8>>>>,
    out: UdpSocket,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start() -> Relay {
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
            let addr = udp.local_addr().expect("addr");
            if let Ok(tcp) = TcpListener::bind(addr) {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().expect("addr");
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let captured: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let out = UdpSocket::bind("127.0.0.1:0").expect("out");
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let (t, c, s, o) = (
            target.clone(),
            captured.clone(),
            stop.clone(),
            out.try_clone().expect("clone"),
        );
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                let Ok((len, _)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                let to = *t.lock().expect("lock");
                if let Some(to) = to {
                    c.lock().expect("lock").push(buf[..len].to_vec());
                    let _ = o.send_to(&buf[..len], to);
                }
            }
        });
        let (t, s) = (target.clone(), stop.clone());
        tcp.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((conn, _)) = tcp.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let to = *t.lock().expect("lock");
                if let Some(to) = to {
                    std::thread::spawn(move || pipe(conn, to));
                }
            }
        });
        Relay {
            addr,
            target,
            captured,
            out,
            stop,
        }
    }

    fn forward_to(&self, to: SocketAddr) {
        *self.target.lock().expect("lock") = Some(to);
    }

    /// Sends every recorded datagram again; how many.
    fn replay_all(&self) -> usize {
        let to = self.target.lock().expect("lock").expect("target");
        let packets = self.captured.lock().expect("lock").clone();
        for p in &packets {
            self.out.send_to(p, to).expect("send");
        }
        packets.len()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
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
    let relay = Relay::start();
    let advertise = relay.addr.to_string();
    let a = Agent::start("replay-a", &["--encrypt", K1, "--advertise", &advertise]);
    relay.forward_to(a.gossip);
    let mut b = Agent::start("replay-b", &["--encrypt", K1, "--join", &advertise]);
    assert!(wait_until(Duration::from_secs(10), || a.count_alive() == 2
        && b.count_alive() == 2));
    // b leaves gracefully: its leave intent and leave datagrams pass the relay too.
    let b_addr = b.gossip.to_string();
    b.signal(Signal::SIGTERM);
    assert!(b.wait_exit(Duration::from_secs(10)).is_some());
    assert!(wait_until(Duration::from_secs(10), || a
        .status_of("replay-b")
        .as_deref()
        == Some("left")));
    // b comes back at the same address.
    let b = Agent::start(
        "replay-b",
        &["--encrypt", K1, "--join", &advertise, "--bind", &b_addr],
    );
    assert!(wait_until(Duration::from_secs(10), || a
        .status_of("replay-b")
        .as_deref()
        == Some("alive")));

    let before = refused(&a, "replayed") + refused(&a, "stale");
    let sent = relay.replay_all();
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
