//! Wire traffic of a cluster, counted the same way for shoal and Serf: iptables counters in
//! a chain of its own that OUTPUT sends every loopback packet to, one rule per protocol and
//! group of the agents' gossip ports (`-m multiport --ports`, source or destination). Every
//! packet between two agents (UDP gossip from the bind port, TCP to or from a bind port) passes
//! OUTPUT once and the first matching rule (`-j RETURN`) counts it, so it is counted once, with its IP header.
//! The control API / RPC ports are not in the rules (and nothing polls them in the window).
//! Needs root (or CAP_NET_ADMIN) and iptables; the chain is deleted on drop.

use std::process::Stdio;

use anyhow::{Context, Result, bail};

use crate::netns::{run_tool, tool};

/// Ports per multiport rule (iptables allows 15).
const PORTS_PER_RULE: usize = 15;

/// The counting chain; removed (with OUTPUT's jump to it) on drop.
pub struct PortCounter {
    chain: String,
}

/// `iptables -w 5 ARGS`: waits for the xtables lock rather than failing.
async fn iptables(args: &[&str]) -> Result<String> {
    let mut all = vec!["-w", "5"];
    all.extend_from_slice(args);
    run_tool("iptables", &all).await
}

impl PortCounter {
    /// Creates the chain for these gossip ports and hooks it into OUTPUT (`-o lo`).
    pub async fn install(tag: &str, ports: &[u16]) -> Result<Self> {
        if ports.is_empty() {
            bail!("no ports to count");
        }
        let chain = format!("shoalbench-{tag}-{}", std::process::id());
        iptables(&["-N", &chain])
            .await
            .context("iptables -N (counting wire traffic needs root and iptables)")?;
        let counter = Self { chain };
        for group in ports.chunks(PORTS_PER_RULE) {
            let list: Vec<String> = group.iter().map(u16::to_string).collect();
            let list = list.join(",");
            for proto in ["udp", "tcp"] {
                let c = &counter.chain;
                let rule = ["-A", c, "-p", proto, "-m", "multiport", "--ports", &list];
                let mut args = rule.to_vec();
                args.extend(["-j", "RETURN"]);
                iptables(&args).await?;
            }
        }
        iptables(&["-I", "OUTPUT", "-o", "lo", "-j", &counter.chain]).await?;
        Ok(counter)
    }

    /// Packets and bytes counted so far.
    pub async fn read(&self) -> Result<(u64, u64)> {
        let out = iptables(&["-L", &self.chain, "-n", "-v", "-x"]).await?;
        let mut total = (0, 0);
        for line in out.lines() {
            let mut f = line.split_whitespace();
            let (Some(p), Some(b)) = (f.next(), f.next()) else {
                continue;
            };
            if let (Ok(p), Ok(b)) = (p.parse::<u64>(), b.parse::<u64>()) {
                total.0 += p;
                total.1 += b;
            }
        }
        Ok(total)
    }
}

impl Drop for PortCounter {
    fn drop(&mut self) {
        let run = |args: &[&str]| {
            let _ = std::process::Command::new(tool("iptables"))
                .args(["-w", "5"])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        run(&["-D", "OUTPUT", "-o", "lo", "-j", &self.chain]);
        run(&["-F", &self.chain]);
        run(&["-X", &self.chain]);
    }
}
