//! The readiness line: the one JSON line `shoal agent` prints on stdout once it has bound its
//! sockets and started gossiping. Tests, the benchmark and process supervisors start the agent
//! with port 0 and read the real addresses from it.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `{"ready":{...}}`, printed once, as the first line on stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyLine {
    /// What the agent is, and where.
    pub ready: Ready,
}

/// The fields of the readiness line.
///
/// The fields are declared in alphabetical order on purpose: the line used to be printed
/// from a `serde_json::json!` map, which sorts its keys, and its bytes stay the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// The gossip address other members are told to use (`ip:port`).
    pub advertise: SocketAddr,
    /// The bound control-API address as clients pass it to `--control`: `ip:port` (the real
    /// port when started with port 0) or `unix:/path` for a Unix socket.
    pub control: String,
    /// The bound gossip address (`ip:port`; the real port when started with port 0).
    pub gossip: SocketAddr,
    /// The node name.
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readiness_line_keeps_its_bytes_and_parses_back() {
        let line = ReadyLine {
            ready: Ready {
                advertise: "10.0.0.7:7948".parse().expect("addr"),
                control: "127.0.0.1:7373".into(),
                gossip: "0.0.0.0:7948".parse().expect("addr"),
                name: "n1".into(),
            },
        };
        let text = serde_json::to_string(&line).expect("serialize");
        assert_eq!(
            text,
            r#"{"ready":{"advertise":"10.0.0.7:7948","control":"127.0.0.1:7373","gossip":"0.0.0.0:7948","name":"n1"}}"#
        );
        let back: ReadyLine = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, line);
    }

    #[test]
    fn an_ipv6_address_is_written_in_brackets() {
        let addr: SocketAddr = "[::1]:7948".parse().expect("addr");
        let ready = Ready {
            advertise: addr,
            control: addr.to_string(),
            gossip: addr,
            name: "v6".into(),
        };
        let text = serde_json::to_string(&ready).expect("serialize");
        assert!(text.contains(r#""gossip":"[::1]:7948""#), "{text}");
    }
}
