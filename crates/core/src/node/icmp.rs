//! ICMP "port unreachable" on the gossip socket: the kernel's word that nothing listens on a
//! member's UDP port any more (its process was killed or crashed, the host is up).
//!
//! With `IP_RECVERR` (`IPV6_RECVERR` for an IPv6 socket) the kernel queues the ICMP errors
//! that answer our datagrams on the socket's error queue, each with the destination of the
//! datagram that caused it. The owner waits for the socket's error readiness, drains the
//! queue with `recvmsg(MSG_ERRQUEUE)` and hands the engine each unreachable address: the
//! probe of a killed member then sends its TCP ping at once instead of after the probe RTT,
//! and the refused connection suspects it. The ICMP itself is not trusted (it is easy to
//! forge, and a firewall's REJECT sends one for a live process). Only `ECONNREFUSED` from an
//! ICMP source counts; host and network unreachable say nothing about the process and are
//! dropped with the rest of the queue. The queue is charged to the socket's receive buffer,
//! so at most [`MAX_PER_DRAIN`] are read per wake-up and the rest wait.
//!
//! A pending error also fails the socket's next `sendto` once (the kernel reports it there);
//! [`is_pending_error`] lets the sender tell that from a real send failure and send again.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use tokio::net::UdpSocket;

/// Most errors read per wake-up, so a flood cannot hold the owner's loop; the rest stay
/// queued and the socket stays error-ready.
const MAX_PER_DRAIN: usize = 64;

/// Asks the kernel to queue ICMP errors for `socket` (on an IPv6 socket also those of
/// IPv4 peers reached through it, which the kernel files under `IP_RECVERR`).
pub(crate) fn enable(socket: &UdpSocket) -> io::Result<()> {
    if socket.local_addr()?.is_ipv6() {
        setsockopt(socket, sockopt::Ipv6RecvErr, &true)?;
        // Refused on a v6-only socket, which has no IPv4 peers.
        let _ = setsockopt(socket, sockopt::Ipv4RecvErr, &true);
    } else {
        setsockopt(socket, sockopt::Ipv4RecvErr, &true)?;
    }
    Ok(())
}

/// Reads the socket's queued errors into `unreachable` (the destinations that answered with
/// port unreachable). Ends with `WouldBlock` once the queue is empty (or cannot be read), so
/// that tokio's `try_io` clears the error readiness; `Ok` when it stopped at
/// [`MAX_PER_DRAIN`].
pub(crate) fn drain(socket: &UdpSocket, unreachable: &mut Vec<SocketAddr>) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    for _ in 0..MAX_PER_DRAIN {
        // The error queue hands back the head of the datagram that failed; its contents are
        // not needed, only the control message and the address.
        let mut head = [0u8; 64];
        let mut iov = [IoSliceMut::new(&mut head)];
        let mut control = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in6);
        let flags = MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT;
        let msg = match recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut control), flags) {
            Ok(msg) => msg,
            Err(Errno::EAGAIN) => return Err(io::ErrorKind::WouldBlock.into()),
            Err(Errno::EINTR) => continue,
            Err(error) => {
                // The readiness is cleared all the same: the loop must not spin on an error
                // queue it cannot read (the next error wakes it again).
                tracing::debug!(%error, "reading the gossip socket's error queue failed");
                return Err(io::ErrorKind::WouldBlock.into());
            }
        };
        let refused = match msg.cmsgs() {
            Ok(mut cmsgs) => cmsgs.any(|c| match c {
                // An IPv4 peer's error on an IPv6 socket comes as an IPv6 message of ICMP
                // (v4) origin.
                ControlMessageOwned::Ipv4RecvErr(e, _) | ControlMessageOwned::Ipv6RecvErr(e, _) => {
                    port_refused(&e)
                }
                _ => false,
            }),
            Err(_) => false,
        };
        if refused && let Some(addr) = msg.address.as_ref().and_then(socket_addr) {
            unreachable.push(addr);
        }
    }
    Ok(())
}

/// Whether a send failed only because an ICMP error was pending on the socket (the kernel
/// reports it on the next send): the datagram was not sent, and sending it again works.
pub(crate) fn is_pending_error(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN)
    )
}

fn port_refused(e: &libc::sock_extended_err) -> bool {
    (e.ee_origin == libc::SO_EE_ORIGIN_ICMP || e.ee_origin == libc::SO_EE_ORIGIN_ICMP6)
        && e.ee_errno == libc::ECONNREFUSED as u32
}

fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(v4.ip(), v4.port())));
    }
    let v6 = addr.as_sockaddr_in6()?;
    // A v4 peer reached through a dual-stack socket is a v4 member.
    let ip = match v6.ip().to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6.ip()),
    };
    match ip {
        IpAddr::V4(ip) => SocketAddr::V4(SocketAddrV4::new(ip, v6.port())),
        IpAddr::V6(ip) => SocketAddr::V6(SocketAddrV6::new(
            ip,
            v6.port(),
            v6.flowinfo(),
            v6.scope_id(),
        )),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A datagram to a closed loopback port comes back as port unreachable, named by the
    /// destination it was sent to, and the send after it works.
    #[tokio::test]
    async fn a_datagram_to_a_closed_port_is_reported_with_its_destination() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        enable(&socket).expect("IP_RECVERR");
        let closed = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.local_addr().expect("addr")
        };
        let open = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        socket.send_to(b"x", closed).await.expect("send");
        let mut found = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while found.is_empty() {
            let ready = tokio::time::timeout_at(deadline, socket.ready(tokio::io::Interest::ERROR))
                .await
                .expect("the error arrives")
                .expect("ready");
            assert!(ready.is_error());
            let _ = socket.try_io(tokio::io::Interest::ERROR, || drain(&socket, &mut found));
        }
        assert_eq!(found, vec![closed]);
        // The pending error may fail one send; the next one goes out.
        let to = open.local_addr().expect("addr");
        if let Err(e) = socket.send_to(b"y", to).await {
            assert!(is_pending_error(&e), "{e}");
            socket.send_to(b"y", to).await.expect("second send");
        }
        let mut buf = [0u8; 4];
        let (n, _) = open.recv_from(&mut buf).await.expect("recv");
        assert_eq!(&buf[..n], b"y");
    }
}
