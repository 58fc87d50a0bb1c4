//! The driver's network set-up: binding the gossip pair, guessing the advertise address,
//! resolving join targets, and the discovery group's socket.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdpSocket};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};

use crate::config::{DEFAULT_PORT, with_default_port};
use crate::discover::{DiscoverError, GROUP, PORT};
use crate::error::StartError;

/// Binds UDP, then TCP on the same port. With port 0, retries when the TCP side of the port the
/// kernel picked for UDP is taken.
pub(crate) async fn bind_pair(bind: SocketAddr) -> Result<(UdpSocket, TcpListener), StartError> {
    let err = |source| StartError::Bind { addr: bind, source };
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(bind).await.map_err(err)?;
        let addr = udp.local_addr().map_err(err)?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if bind.port() == 0 => last = Some(e),
            Err(e) => return Err(err(e)),
        }
    }
    Err(err(
        last.unwrap_or_else(|| std::io::Error::other("no free port"))
    ))
}

/// For an unspecified bind IP: the local IP that routes toward a join target (a UDP `connect`
/// sends nothing), else toward a documentation address (the default route), else the first
/// IPv4 address of an interface that is up and not loopback (Serf's choice), else loopback.
pub(crate) fn guess_advertise(local: SocketAddr, join: &[SocketAddr]) -> SocketAddr {
    if !local.ip().is_unspecified() {
        return local;
    }
    let probes = join
        .iter()
        .copied()
        .filter(|a| !a.ip().is_loopback())
        .chain([SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 9)]);
    for target in probes {
        let routed = StdUdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .and_then(|s| s.connect(target).map(|_| s))
            .and_then(|s| s.local_addr());
        if let Ok(addr) = routed
            && !addr.ip().is_unspecified()
        {
            return SocketAddr::new(addr.ip(), local.port());
        }
    }
    let interface_ip = nix::ifaddrs::getifaddrs().ok().and_then(|mut addrs| {
        addrs.find_map(|ifa| {
            let up = ifa.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
            let ip = ifa.address?.as_sockaddr_in()?.ip();
            (up && !ip.is_loopback()).then_some(IpAddr::V4(ip))
        })
    });
    let ip = interface_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    SocketAddr::new(ip, local.port())
}

/// Resolves join targets (a missing port is [`DEFAULT_PORT`]); returns the addresses and the
/// targets that failed with their error.
pub(crate) async fn resolve_targets(
    targets: &[String],
) -> (Vec<SocketAddr>, Vec<(String, String)>) {
    let mut addrs = Vec::new();
    let mut failed = Vec::new();
    for target in targets {
        let with_port = with_default_port(target, DEFAULT_PORT);
        match tokio::net::lookup_host(with_port.as_str()).await {
            Ok(found) => {
                let mut any = false;
                for a in found {
                    any = true;
                    if !addrs.contains(&a) {
                        addrs.push(a);
                    }
                }
                if !any {
                    failed.push((target.clone(), "resolved to no address".to_string()));
                }
            }
            Err(e) => failed.push((target.clone(), e.to_string())),
        }
    }
    (addrs, failed)
}

/// The beacon socket: bound to the group port with address reuse (several agents on one host
/// all hear every beacon), member of the group on the interface of `local_ip` (or the one the
/// routing table picks when that is unspecified), multicast loop on so agents on one host hear
/// each other, TTL 1.
pub(crate) fn beacon_socket(local_ip: IpAddr) -> Result<UdpSocket, DiscoverError> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT)).into())?;
    let iface = match local_ip {
        IpAddr::V4(ip) if !ip.is_loopback() => ip,
        _ => Ipv4Addr::UNSPECIFIED,
    };
    sock.join_multicast_v4(&GROUP, &iface)?;
    if !iface.is_unspecified() {
        sock.set_multicast_if_v4(&iface)?;
    }
    sock.set_multicast_loop_v4(true)?;
    sock.set_multicast_ttl_v4(1)?;
    Ok(UdpSocket::from_std(sock.into())?)
}
