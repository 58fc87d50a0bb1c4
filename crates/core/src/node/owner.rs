//! The owner task: drives the [`Engine`] with real sockets and time.
//!
//! It waits on three inputs: the inbox (commands, push-pull results), the UDP socket and the
//! engine's earliest timer; feeds the input to the engine; then carries out the engine's
//! outbox: datagrams with `try_send_to` (a full socket buffer drops one, which SWIM tolerates),
//! push-pulls and DNS look-ups as tasks, events with `try_send` (dropped and counted if the
//! agent is behind), the view into the `watch`. Nothing here awaits inside a turn.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::icmp;
use super::sealing::Sealer;
use super::tasks;
use crate::engine::{Command, Engine, Outbox};
use crate::membership::Event;
use crate::seal::Channel;
use crate::view::{Stats, View};

enum Input {
    Command(Option<Command>),
    Packet(std::io::Result<(usize, SocketAddr)>),
    /// The socket has ICMP errors queued ([`super::icmp`]).
    SocketError,
    Timer,
}

pub(super) struct Owner {
    pub(super) engine: Engine,
    pub(super) socket: Arc<UdpSocket>,
    /// The gossip socket's IP, the source of push-pulls and TCP pings (asked once: a
    /// `getsockname` per turn was a sixth of an idle agent's system calls).
    pub(super) source: Option<std::net::IpAddr>,
    pub(super) beacon: Option<Arc<UdpSocket>>,
    pub(super) inbox_tx: mpsc::Sender<Command>,
    pub(super) inbox: mpsc::Receiver<Command>,
    pub(super) events: mpsc::Sender<Event>,
    pub(super) view_tx: watch::Sender<Arc<View>>,
    pub(super) stats: Arc<Stats>,
    pub(super) sealer: Arc<Sealer>,
}

impl Owner {
    pub(super) async fn run(
        mut self,
        tasks: Vec<JoinHandle<()>>,
        snapshot_writer: Option<JoinHandle<()>>,
        stopped: watch::Sender<bool>,
    ) {
        let mut recv_buf = vec![0u8; 65536];
        self.engine.start(Instant::now());
        self.flush();
        loop {
            let deadline = self.engine.next_deadline();
            let sleep = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let input = tokio::select! {
                cmd = self.inbox.recv() => Input::Command(cmd),
                res = self.socket.recv_from(&mut recv_buf) => Input::Packet(res),
                // Only ERROR readiness, which `try_io` clears below. (mio also reports the
                // socket write-closed from then on, which tokio never clears: harmless while
                // every send is a `try_send_to`, a spin for any `send_to().await`.)
                Ok(_) = self.socket.ready(Interest::ERROR) => Input::SocketError,
                _ = sleep => Input::Timer,
            };
            let now = Instant::now();
            match input {
                Input::Command(None) | Input::Command(Some(Command::Shutdown)) => break,
                Input::Command(Some(cmd)) => self.engine.handle_command(now, cmd),
                Input::Packet(Ok((len, from))) => {
                    // Refused packets are counted and logged there, and never decoded.
                    if let Some(packet) =
                        self.sealer.open(Channel::Datagram, &recv_buf[..len], from)
                    {
                        self.engine.handle_datagram(now, from, &packet)
                    }
                }
                Input::Packet(Err(error)) => debug!(%error, "udp receive failed"),
                Input::SocketError => {
                    let mut unreachable = Vec::new();
                    let socket = &self.socket;
                    // Ends in WouldBlock, the readiness cleared, unless it stopped at its cap
                    // (then the socket is still ready and the next turn reads on).
                    let _ =
                        socket.try_io(Interest::ERROR, || icmp::drain(socket, &mut unreachable));
                    for addr in unreachable {
                        self.engine
                            .handle_command(now, Command::PortUnreachable { addr });
                    }
                }
                Input::Timer => self.engine.fire_timers(now),
            }
            self.flush();
        }
        for task in tasks {
            task.abort();
        }
        self.engine.stop();
        // Dropping the owner closes the view channel: the snapshot writer writes the final
        // state and ends.
        drop(self);
        if let Some(writer) = snapshot_writer {
            let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
        }
        let _ = stopped.send(true);
        debug!("node owner stopped");
    }

    /// Carries out the engine's outbox.
    fn flush(&mut self) {
        let Outbox {
            datagrams,
            push_pulls,
            resolve,
            tcp_pings,
            beacons,
            events,
            view_changed,
        } = self.engine.take_outbox();
        for (to, packet) in datagrams {
            let packet = self.sealer.seal(Channel::Datagram, &packet);
            // An ICMP error pending on the socket fails the next send once: send again.
            let sent = match self.socket.try_send_to(&packet, to) {
                Err(e) if icmp::is_pending_error(&e) => self.socket.try_send_to(&packet, to),
                sent => sent,
            };
            match sent {
                Ok(n) => {
                    Stats::add(&self.stats.packets_out, 1);
                    Stats::add(&self.stats.bytes_out, n as u64);
                }
                Err(error) => debug!(%to, %error, "udp send failed (dropped)"),
            }
        }
        let limit = self.engine.sync_limit();
        let source = self.source;
        for pp in push_pulls {
            let (inbox, stats, sealer) = (
                self.inbox_tx.clone(),
                self.stats.clone(),
                self.sealer.clone(),
            );
            tasks::spawn_push_pull(pp, source, inbox, stats, limit, sealer);
        }
        for ping in tcp_pings {
            tasks::spawn_tcp_ping(ping, source, self.inbox_tx.clone(), self.sealer.clone());
        }
        for request in resolve {
            tasks::spawn_resolve(request, self.inbox_tx.clone());
        }
        if let Some(socket) = &self.beacon {
            for packet in beacons {
                let packet = self.sealer.seal(Channel::Datagram, &packet);
                if let Err(error) = socket.try_send_to(&packet, crate::discover::group()) {
                    debug!(%error, "beacon send failed");
                }
            }
        }
        for event in events {
            match self.events.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    Stats::add(&self.stats.events_dropped, 1);
                    warn!("event consumer is behind; event dropped");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        if view_changed {
            self.view_tx.send_replace(Arc::new(self.engine.view()));
        }
    }
}
