//! The floating-IP lab (issue 12's seed scenario): two load-balancer nodes `lb1` (priority
//! 150) and `lb2` (priority 100), each a network namespace running HAProxy and a keeper of the
//! floating address (a shoal agent in group `lb`, or Keepalived for the comparison), and a
//! `client` namespace that requests the floating address in a loop ([`Prober`]). All on one
//! Linux bridge in a private `hub` namespace, addresses 10.250.SUBNET.0/24: nothing is created in
//! the root namespace and no packet leaves the lab. Needs root, `ip`, `haproxy` and `arping`;
//! [`FloatingLab::new`] says which is missing.
//!
//! The notify script and the HAProxy configuration are the user-facing ones in
//! `examples/floating-ip/`, so the tests and the benchmark exercise exactly what the demo shows.
//!
//! Layout: this file (the lab and its nodes), [`keepers`] (the shoal and Keepalived command lines
//! and configuration), [`net`] (tools and namespaces), [`probe`] (the client).

pub mod keepers;
pub mod net;
pub mod probe;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;

pub use keepers::Keeper;
use net::{Namespaces, installed, is_root, pids_in, run, signal_all_in};
pub use probe::{Prober, Sample, Switch};

/// Every namespace name starts with this, then the pid.
const PREFIX: &str = "shoal-fip-";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The directory of the user-facing files (`floating-ip.sh`, `haproxy.cfg`).
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/floating-ip")
}

/// One load-balancer node.
pub struct LbNode {
    /// Its name: the shoal node name, the HAProxy answer, Keepalived's router id.
    pub name: String,
    /// Its namespace.
    pub ns: String,
    /// The address of its `eth0`.
    pub ip: Ipv4Addr,
    /// Its priority in group `lb`.
    pub priority: u8,
    haproxy: Option<Child>,
    keeper: Option<Child>,
}

impl LbNode {
    /// Whether its `eth0` holds `addr` now.
    pub fn holds(&self, addr: Ipv4Addr) -> bool {
        run(&[
            "ip", "-n", &self.ns, "-o", "-4", "addr", "show", "dev", "eth0",
        ])
        .is_ok_and(|out| out.contains(&format!(" {addr}/")))
    }
}

/// The lab; everything in it is killed and deleted on drop.
pub struct FloatingLab {
    /// `lb1` (priority 150) and `lb2` (priority 100).
    pub nodes: [LbNode; 2],
    /// The client's namespace.
    pub client_ns: String,
    /// The floating address.
    pub vip: Ipv4Addr,
    subnet: u8,
    shoal: PathBuf,
    /// Appended to every shoal agent's command line (e.g. `--profile local`).
    pub shoal_extra: Vec<String>,
    dir: Option<tempfile::TempDir>,
    // Declared last: dropped after the nodes' children are reaped.
    namespaces: Namespaces,
}

/// Why a lab cannot run here: a test prints it as `SKIP:` and passes.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl FloatingLab {
    /// Builds the network for subnet 10.250.`subnet`.0/24; `shoal` is the agent binary. `Err`
    /// when this machine cannot run the lab (not root, a tool missing, namespaces refused).
    pub fn new(subnet: u8, shoal: &Path) -> Result<FloatingLab, Unavailable> {
        if !is_root() {
            return Err(Unavailable(
                "needs root to create network namespaces".into(),
            ));
        }
        for tool in ["ip", "haproxy", "arping"] {
            if !installed(tool) {
                return Err(Unavailable(format!("`{tool}` is not installed")));
            }
        }
        net::remove_stale(PREFIX);
        let prefix = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut namespaces = Namespaces::default();
        let hub = format!("{prefix}-hub");
        namespaces
            .add(&hub)
            .map_err(|e| Unavailable(format!("cannot create a network namespace: {e}")))?;
        let dir = tempfile::tempdir().map_err(|e| Unavailable(format!("temp dir: {e}")))?;
        let mut lab = FloatingLab {
            nodes: [
                LbNode::new(&prefix, "lb1", Ipv4Addr::new(10, 250, subnet, 1), 150),
                LbNode::new(&prefix, "lb2", Ipv4Addr::new(10, 250, subnet, 2), 100),
            ],
            client_ns: format!("{prefix}-client"),
            vip: Ipv4Addr::new(10, 250, subnet, 50),
            subnet,
            shoal: shoal.to_path_buf(),
            shoal_extra: Vec::new(),
            dir: Some(dir),
            namespaces,
        };
        lab.wire(&hub).map_err(Unavailable)?;
        Ok(lab)
    }

    fn wire(&mut self, hub: &str) -> Result<(), String> {
        run(&["ip", "-n", hub, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", hub, "link", "set", "br0", "up"])?;
        let mut hosts: Vec<(String, Ipv4Addr)> =
            self.nodes.iter().map(|n| (n.ns.clone(), n.ip)).collect();
        hosts.push((
            self.client_ns.clone(),
            Ipv4Addr::new(10, 250, self.subnet, 100),
        ));
        for (k, (ns, ip)) in hosts.iter().enumerate() {
            self.namespaces.add(ns)?;
            let veth = format!("v{k}");
            run(&[
                "ip", "-n", hub, "link", "add", &veth, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ])?;
            run(&["ip", "-n", hub, "link", "set", &veth, "master", "br0", "up"])?;
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ])?;
            run(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// Where the logs go (kept if the lab is dropped during a panic).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("/tmp"), |d| d.path())
    }

    /// The floating address's HTTP port.
    pub fn target(&self) -> SocketAddr {
        SocketAddr::from((self.vip, 80))
    }

    /// Starts the client against the floating address.
    pub fn client(&self) -> Result<Prober, String> {
        Prober::start(&self.client_ns, self.target())
    }

    /// Starts HAProxy on node `i` (in the foreground, `-db`).
    pub fn start_haproxy(&mut self, i: usize) -> Result<(), String> {
        let cfg = examples_dir().join("haproxy.cfg");
        let name = self.nodes[i].name.clone();
        let mut cmd = self.in_node(i, "haproxy", &[tool_str("haproxy").as_str(), "-db", "-f"])?;
        cmd.arg(cfg).env("NODE", &name);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start haproxy on {name}: {e}"))?;
        self.nodes[i].haproxy = Some(child);
        Ok(())
    }

    /// Starts the keeper of the floating address on node `i`.
    pub fn start_keeper(&mut self, i: usize, keeper: Keeper) -> Result<(), String> {
        let argv = match keeper {
            Keeper::Shoal => keepers::shoal_args(self, i),
            Keeper::Keepalived => keepers::keepalived_args(self, i)?,
        };
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut cmd = self.in_node(i, keeper.label(), &argv)?;
        let name = self.nodes[i].name.clone();
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {} on {name}: {e}", keeper.label()))?;
        self.nodes[i].keeper = Some(child);
        Ok(())
    }

    /// Starts HAProxy and the keeper on node `i`, with its `eth0` up and without the floating
    /// address (a node that boots, or a container that starts: a fresh network).
    pub fn start_node(&mut self, i: usize, keeper: Keeper) -> Result<(), String> {
        let ns = self.nodes[i].ns.clone();
        if self.nodes[i].holds(self.vip) {
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "del",
                &format!("{}/24", self.vip),
                "dev",
                "eth0",
            ])?;
        }
        run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
        self.start_haproxy(i)?;
        self.start_keeper(i, keeper)
    }

    /// `docker stop`: SIGTERM to every process of node `i`, SIGKILL to those still running
    /// after 10 s, then its network goes away (`eth0` down).
    pub fn stop_node(&mut self, i: usize) {
        let ns = self.nodes[i].ns.clone();
        signal_all_in(&ns, Signal::SIGTERM);
        if !crate::wait_until(Duration::from_secs(10), || pids_in(&ns).is_empty()) {
            signal_all_in(&ns, Signal::SIGKILL);
        }
        self.reap(i);
        let _ = run(&["ip", "-n", &ns, "link", "set", "eth0", "down"]);
    }

    /// `docker kill`: SIGKILL to every process of node `i` and its network gone (`eth0` down)
    /// at the same moment.
    pub fn kill_node(&mut self, i: usize) {
        let ns = self.nodes[i].ns.clone();
        net::crash(&pids_in(&ns));
        let _ = run(&["ip", "-n", &ns, "link", "set", "eth0", "down"]);
        self.reap(i);
    }

    /// `kill -9` of node `i`'s keeper only (HAProxy and the network stay: a crashed agent).
    pub fn kill_keeper(&mut self, i: usize) {
        // Keepalived forks a VRRP child: a crash kills the whole process family at once.
        let ns = self.nodes[i].ns.clone();
        let haproxy = self.nodes[i].haproxy.as_ref().map(|c| c.id() as i32);
        let family: Vec<i32> = pids_in(&ns)
            .into_iter()
            .filter(|&pid| Some(pid) != haproxy)
            .collect();
        net::crash(&family);
        if let Some(mut child) = self.nodes[i].keeper.take() {
            let _ = child.wait();
        }
    }

    /// `kill -9` of node `i`'s HAProxy.
    pub fn kill_haproxy(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].haproxy.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops whatever runs on both nodes (between the shoal and the Keepalived rounds).
    pub fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i);
        }
    }

    /// The names of the nodes whose `eth0` holds the floating address.
    pub fn holders(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.holds(self.vip))
            .map(|n| n.name.clone())
            .collect()
    }

    /// `Ok` once `lb1` holds the floating address alone, answers the client, and both keepers
    /// agree that it is the primary (shoal: `shoal primary lb` on each node; Keepalived: the
    /// last state each logged is MASTER on `lb1`, BACKUP on `lb2`). `Err` says what is not so.
    pub fn settled(&self, keeper: Keeper, client: &Prober) -> Result<(), String> {
        let primary = self.nodes[0].name.as_str();
        let holders = self.holders();
        if holders != [primary] {
            return Err(format!("the floating address is on {holders:?}"));
        }
        match client.last().map(|s| s.answer) {
            Some(Ok(node)) if node == primary => {}
            other => return Err(format!("the client's last request: {other:?}")),
        }
        for i in 0..self.nodes.len() {
            let seen = match keeper {
                Keeper::Shoal => self.shoal_primary(i)?,
                Keeper::Keepalived => {
                    let log = self.log(i, "keepalived");
                    let state = last_keepalived_state(&log);
                    let want = if i == 0 { "MASTER" } else { "BACKUP" };
                    if state != Some(want) {
                        return Err(format!(
                            "Keepalived on {} is in state {state:?}",
                            self.nodes[i].name
                        ));
                    }
                    primary.to_string()
                }
            };
            if seen != primary {
                return Err(format!("{} sees {seen:?} as primary", self.nodes[i].name));
            }
        }
        Ok(())
    }

    /// Waits at most `limit` for [`Self::settled`].
    pub fn wait_settled(
        &self,
        keeper: Keeper,
        client: &Prober,
        limit: Duration,
    ) -> Result<Duration, String> {
        crate::poll(limit, Duration::from_millis(50), || {
            self.settled(keeper, client)
        })
        .map(|((), took)| took)
        .map_err(|(why, took)| format!("not settled after {took:?}: {why}"))
    }

    /// `shoal primary lb` against node `i`'s agent.
    pub fn shoal_primary(&self, i: usize) -> Result<String, String> {
        let shoal = self.shoal.to_string_lossy();
        run(&[
            "ip",
            "netns",
            "exec",
            &self.nodes[i].ns,
            &shoal,
            "primary",
            "lb",
        ])
        .map(|out| out.trim().to_string())
        .map_err(|e| format!("{}: {e}", self.nodes[i].name))
    }

    /// The log of node `i`'s `what` (`haproxy`, `shoal`, `keepalived`).
    pub fn log(&self, i: usize, what: &str) -> String {
        std::fs::read_to_string(self.log_path(i, what)).unwrap_or_default()
    }

    /// The last `lines` lines of every log of the lab, for a failure message.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        let Ok(entries) = std::fs::read_dir(self.dir()) else {
            return out;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
        {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            out.push_str(&format!("---- {} ----\n", path.display()));
            for line in &all[from..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    fn log_path(&self, i: usize, what: &str) -> PathBuf {
        self.dir()
            .join(format!("{}-{what}.log", self.nodes[i].name))
    }

    /// A command running `argv` in node `i`'s namespace (dying with this process), its stdout
    /// and stderr appended to the node's `what` log.
    fn in_node(&self, i: usize, what: &str, argv: &[&str]) -> Result<Command, String> {
        let path = self.log_path(i, what);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let mut cmd = crate::clean_command(net::tool("ip"));
        cmd.args(["netns", "exec", self.nodes[i].ns.as_str()]);
        // With setpriv, what runs in the node dies with this process even if it is killed
        // before `Drop`.
        if installed("setpriv") {
            cmd.args(["setpriv", "--pdeathsig", "KILL"]);
        }
        cmd.args(argv).stdin(Stdio::null()).stdout(log).stderr(log2);
        Ok(cmd)
    }

    fn reap(&mut self, i: usize) {
        for child in [self.nodes[i].haproxy.take(), self.nodes[i].keeper.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl LbNode {
    fn new(prefix: &str, name: &str, ip: Ipv4Addr, priority: u8) -> LbNode {
        LbNode {
            name: name.to_string(),
            ns: format!("{prefix}-{name}"),
            ip,
            priority,
            haproxy: None,
            keeper: None,
        }
    }
}

/// The state in Keepalived's last `Entering ... STATE` line.
fn last_keepalived_state(log: &str) -> Option<&str> {
    log.lines()
        .rev()
        .find_map(|l| l.split("Entering ").nth(1)?.split(" STATE").next())
}

fn tool_str(name: &str) -> String {
    net::tool(name).to_string_lossy().into_owned()
}

impl Drop for FloatingLab {
    fn drop(&mut self) {
        for node in &self.nodes {
            signal_all_in(&node.ns, Signal::SIGKILL);
        }
        for i in 0..self.nodes.len() {
            self.reap(i);
        }
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!(
                "---- floating-ip lab logs kept in {} ----",
                dir.keep().display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::last_keepalived_state;

    #[test]
    fn the_last_state_keepalived_logged_is_read_from_its_console_log() {
        let log = "Tue Dec  1 14:47:47 2026: (lb) Entering BACKUP STATE (init)\n\
                   Tue Dec  1 14:47:50 2026: (lb) Receive advertisement timeout\n\
                   Tue Dec  1 14:47:50 2026: (lb) Entering MASTER STATE\n\
                   Tue Dec  1 14:47:50 2026: (lb) setting VIPs.\n";
        assert_eq!(last_keepalived_state(log), Some("MASTER"));
        assert_eq!(last_keepalived_state("Starting Keepalived v2.2.7\n"), None);
    }
}
