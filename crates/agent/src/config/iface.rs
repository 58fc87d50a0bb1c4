//! `--iface NAME` (Serf's `-iface`, the `interface` key): bind to a network interface's address
//! when the address is not known in advance, as Serf does. With an unspecified bind IP
//! (`0.0.0.0`, the default) the interface's first usable address is taken (IPv4 first; link-local
//! addresses are skipped, as Serf skips them); with a bind IP, the interface must hold it. The
//! bound address also picks the interface `--discover` beacons use, as `-iface` does in Serf.

use std::net::{IpAddr, SocketAddr};

use super::{ConfigError, invalid};

/// `bind` on interface `name`: see the module docs.
pub(super) fn bind_on(name: &str, bind: SocketAddr) -> Result<SocketAddr, ConfigError> {
    let addrs = addresses(name).map_err(|e| invalid("--iface", name, e))?;
    if bind.ip().is_unspecified() {
        let ip = addrs
            .iter()
            .find(|ip| ip.is_ipv4())
            .or(addrs.first())
            .ok_or_else(|| invalid("--iface", name, "the interface has no usable address"))?;
        return Ok(SocketAddr::new(*ip, bind.port()));
    }
    match addrs.contains(&bind.ip()) {
        true => Ok(bind),
        false => Err(invalid(
            "--iface",
            name,
            format!("the interface has no address {} (--bind)", bind.ip()),
        )),
    }
}

/// The interface's addresses that are not link-local, in the system's order.
fn addresses(name: &str) -> Result<Vec<IpAddr>, String> {
    let all = nix::ifaddrs::getifaddrs().map_err(|e| format!("cannot list interfaces: {e}"))?;
    let mut known = false;
    let mut addrs = Vec::new();
    for ifa in all.filter(|i| i.interface_name == name) {
        known = true;
        let Some(addr) = ifa.address else { continue };
        let ip = match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
            (Some(v4), _) => IpAddr::V4(v4.ip()),
            (_, Some(v6)) => IpAddr::V6(v6.ip()),
            _ => continue,
        };
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => v6.is_unicast_link_local(),
        };
        if !link_local {
            addrs.push(ip);
        }
    }
    match known {
        true => Ok(addrs),
        false => Err("no network interface has this name (`ip link` lists them)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("addr")
    }

    #[test]
    fn an_interface_gives_its_address_or_must_hold_the_bind_address() {
        assert_eq!(
            bind_on("lo", addr("0.0.0.0:7948")).expect("lo"),
            addr("127.0.0.1:7948")
        );
        assert_eq!(
            bind_on("lo", addr("127.0.0.1:0")).expect("lo"),
            addr("127.0.0.1:0")
        );
        let err = bind_on("lo", addr("192.0.2.1:7948")).expect_err("not on lo");
        assert!(err.to_string().contains("no address 192.0.2.1"), "{err}");
        let err = bind_on("nosuch0", addr("0.0.0.0:7948")).expect_err("unknown");
        assert!(err.to_string().contains("\"nosuch0\""), "{err}");
    }
}
