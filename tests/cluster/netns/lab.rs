//! A throw-away network for one test: a "hub" namespace holding Linux bridges, and one
//! namespace per host, each wired to a bridge by a veth pair (`eth0` in the host, `vK` in the
//! hub). Nothing is created in the root namespace. Every name carries the pid and a counter,
//! so tests in parallel (and other test processes) never collide; `Drop` kills what runs in
//! the namespaces, deletes them and their `/etc/netns` directories, also when a test panics.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_proto::{MemberInfo, Ready};
use shoal_testkit::floating::net::run;
use shoal_testkit::{
    ReadyReader, clean_command, members_of_all_cli, print_log_tail, spawn_with_ready,
};

use crate::harness::SHOAL;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Every namespace name starts with this, then the pid.
const PREFIX: &str = "shoal-e2e-";

/// Log filter for every agent, passed in the environment so that the command lines stay
/// exactly what the tests say. `SHOAL_NETNS_LOG_LEVEL` overrides it (e.g. add `foca=debug`).
const LOG_LEVEL: &str = "info,shoal=debug";

/// Set `SHOAL_NETNS_KEEP=1` to keep the logs and handler output of passing tests too.
const KEEP: &str = "SHOAL_NETNS_KEEP";

/// Runs a setup command that must succeed.
fn must(args: &[&str]) {
    if let Err(e) = run(args) {
        panic!("network setup: {e}");
    }
}

/// Whether `cmd` is on the PATH.
fn installed(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(cmd).is_file()))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Namespaces left by test processes killed before their `Drop` ran (named `shoal-e2e-PID-...`;
/// their agents died with them, setpriv's parent-death signal): deleted.
fn remove_stale() {
    shoal_testkit::floating::net::remove_stale(PREFIX);
}

/// One host: a namespace with `lo` and `eth0` up.
#[derive(Debug, Clone)]
pub struct Host {
    /// The namespace's name (for `ip netns exec`).
    pub ns: String,
    /// The address of its `eth0`.
    pub ip: Ipv4Addr,
    /// Its hostname, which is also its agent's default node name.
    pub hostname: String,
}

/// The network of one test: the hub namespace, its bridges and the host namespaces.
/// Everything is deleted on drop.
pub struct Lab {
    prefix: String,
    hub: String,
    subnet: u8,
    /// Every namespace created, the hub last.
    namespaces: Vec<String>,
    etc_dirs: Vec<PathBuf>,
    hosts: usize,
    dir: Option<tempfile::TempDir>,
}

impl Lab {
    /// Creates the hub namespace. `None` (after a `SKIP:` line on stderr) when this
    /// environment cannot create namespaces: then the test returns and passes.
    pub fn new(test: &str, subnet: u8) -> Option<Lab> {
        if !is_root() {
            eprintln!("SKIP: {test}: needs root to create network namespaces");
            return None;
        }
        remove_stale();
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() % 100_000)
            .unwrap_or(0);
        let prefix = format!(
            "{PREFIX}{}-{}-{stamp}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let hub = format!("{prefix}-hub");
        if let Err(e) = run(&["ip", "netns", "add", &hub]) {
            eprintln!("SKIP: {test}: cannot create a network namespace: {e}");
            return None;
        }
        let lab = Lab {
            prefix,
            hub: hub.clone(),
            subnet,
            namespaces: vec![hub.clone()],
            etc_dirs: Vec::new(),
            hosts: 0,
            dir: Some(tempfile::tempdir().expect("tempdir")),
        };
        must(&["ip", "-n", &hub, "link", "set", "lo", "up"]);
        Some(lab)
    }

    /// A directory for logs and handler output (kept when the test fails).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("lab dir").path()
    }

    /// A bridge in the hub namespace.
    pub fn bridge(&self, name: &str) {
        let hub = self.hub.as_str();
        must(&["ip", "-n", hub, "link", "add", name, "type", "bridge"]);
        must(&["ip", "-n", hub, "link", "set", name, "up"]);
    }

    /// Joins two bridges with a veth pair named `a_end`/`b_end`; `set_link(a_end, false)`
    /// partitions them.
    pub fn link_bridges(&self, a: &str, a_end: &str, b: &str, b_end: &str) {
        let hub = self.hub.as_str();
        must(&[
            "ip", "-n", hub, "link", "add", a_end, "type", "veth", "peer", "name", b_end,
        ]);
        must(&["ip", "-n", hub, "link", "set", a_end, "master", a, "up"]);
        must(&["ip", "-n", hub, "link", "set", b_end, "master", b, "up"]);
    }

    /// Sets a hub-side link up or down.
    pub fn set_link(&self, link: &str, up: bool) {
        let state = if up { "up" } else { "down" };
        must(&["ip", "-n", self.hub.as_str(), "link", "set", link, state]);
    }

    /// A new host namespace on `bridge`, address 10.201.SUBNET.(K+1)/24 for the K-th host,
    /// with a default route through its `eth0` (it leads only to the hub's bridges), its
    /// own `/etc/netns/NS/hosts` (see [`Self::write_hosts`]) and a `resolv.conf` that points
    /// at its own loopback, where no DNS server runs: names resolve from `hosts` or not at all.
    pub fn host(&mut self, bridge: &str, hostname: &str) -> Host {
        let k = self.hosts;
        self.hosts += 1;
        assert!(k < 250, "too many hosts");
        let ns = format!("{}-n{k}", self.prefix);
        let ip = Ipv4Addr::new(10, 201, self.subnet, (k + 1) as u8);
        must(&["ip", "netns", "add", &ns]);
        self.namespaces
            .insert(self.namespaces.len() - 1, ns.clone());
        let hub = self.hub.as_str();
        let veth = format!("v{k}");
        must(&[
            "ip", "-n", hub, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ]);
        must(&[
            "ip", "-n", hub, "link", "set", &veth, "master", bridge, "up",
        ]);
        let cidr = format!("{ip}/24");
        must(&["ip", "-n", &ns, "addr", "add", &cidr, "dev", "eth0"]);
        must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        must(&["ip", "-n", &ns, "route", "add", "default", "dev", "eth0"]);
        let etc = PathBuf::from("/etc/netns").join(&ns);
        std::fs::create_dir_all(&etc).expect("create /etc/netns/NS");
        // No resolver: `nameserver 127.0.0.1` in a namespace where nothing listens on port 53,
        // so a DNS lookup is refused at once and never reaches the machine's resolver.
        std::fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.1\n")
            .expect("write /etc/netns/NS/resolv.conf");
        self.etc_dirs.push(etc);
        let host = Host {
            ns,
            ip,
            hostname: hostname.to_string(),
        };
        self.write_hosts(&host, "");
        host
    }

    /// Replaces the host's /etc/hosts (as seen under `ip netns exec`): localhost, the host's
    /// own name, and `extra` lines.
    pub fn write_hosts(&self, host: &Host, extra: &str) {
        let text = format!(
            "127.0.0.1\tlocalhost\n{}\t{}\n{extra}",
            host.ip, host.hostname
        );
        let path = PathBuf::from("/etc/netns").join(&host.ns).join("hosts");
        std::fs::write(path, text).expect("write /etc/netns/NS/hosts");
    }

    /// Runs `ip -n NS ARGS...` for a host.
    pub fn host_ip(&self, host: &Host, args: &[&str]) {
        let mut all = vec!["ip", "-n", host.ns.as_str()];
        all.extend_from_slice(args);
        must(&all);
    }

    /// Runs `ARGS...` in the hub namespace (e.g. `iptables` on its FORWARD chain, which
    /// bridged traffic between the hosts crosses once per packet); `Err` carries its stderr.
    pub fn in_hub(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["ip", "netns", "exec", self.hub.as_str()];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Whether `from` reaches `to` with one ping (1 s timeout); `None` without `ping`.
    pub fn ping(&self, from: &Host, to: Ipv4Addr) -> Option<bool> {
        if !installed("ping") {
            return None;
        }
        let to = to.to_string();
        Some(
            run(&[
                "ip", "netns", "exec", &from.ns, "ping", "-c", "1", "-W", "1", "-q", &to,
            ])
            .is_ok(),
        )
    }

    /// Starts `shoal ARGS...` in the host's namespace, in a new UTS namespace whose hostname
    /// is the host's (so the default node name is the hostname). Does not wait.
    pub fn spawn_agent(&self, host: &Host, args: &[&str]) -> NsAgent {
        let log = self.dir().join(format!("{}.log", host.hostname));
        let log_file = std::fs::File::create(&log).expect("create agent log");
        // With setpriv, the agent dies with this process even if it is killed before `Drop`.
        let pdeathsig: &[&str] = if installed("setpriv") {
            &["setpriv", "--pdeathsig", "KILL"]
        } else {
            &[]
        };
        let mut cmd = clean_command("ip");
        cmd.args(["netns", "exec", host.ns.as_str()])
            .args(pdeathsig)
            .args([
                "unshare",
                "--uts",
                "sh",
                "-c",
                "hostname \"$0\" && exec \"$@\"",
            ])
            .arg(&host.hostname)
            .arg(SHOAL)
            .args(args)
            .env(
                "SHOAL_LOG_LEVEL",
                std::env::var("SHOAL_NETNS_LOG_LEVEL").unwrap_or_else(|_| LOG_LEVEL.to_string()),
            )
            .stderr(log_file);
        let (child, ready) = spawn_with_ready(&mut cmd).expect("spawn ip netns exec");
        NsAgent {
            host: host.clone(),
            child,
            log,
            ready,
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Whatever still runs in our namespaces (agents, their handlers) goes first: a
        // namespace with processes in it outlives `ip netns del`.
        for ns in &self.namespaces {
            if let Ok(pids) = run(&["ip", "netns", "pids", ns]) {
                for pid in pids
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        for ns in &self.namespaces {
            if let Err(e) = run(&["ip", "netns", "del", ns]) {
                eprintln!("netns cleanup: {e}");
            }
        }
        for dir in &self.etc_dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        if (std::thread::panicking() || std::env::var_os(KEEP).is_some())
            && let Some(dir) = self.dir.take()
        {
            eprintln!(
                "---- agent logs and handler output kept in {} ----",
                dir.keep().display()
            );
        }
    }
}

/// An agent running in a namespace. Killed on drop; its log tail is printed if the test
/// panics.
pub struct NsAgent {
    /// The host it runs on.
    pub host: Host,
    child: Child,
    log: PathBuf,
    ready: ReadyReader,
}

impl NsAgent {
    /// Waits for the readiness line.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<Ready, String> {
        self.ready.wait(limit).map_err(|e| {
            let status = self.child.try_wait().ok().flatten();
            format!(
                "{}: {e} (exit status {status:?}); log:\n{}",
                self.host.hostname,
                self.log()
            )
        })
    }

    /// `shoal members --format json` against this agent's control API (127.0.0.1:7373 in
    /// its namespace).
    pub fn members_command(&self) -> Command {
        let mut cmd = clean_command("ip");
        cmd.args(["netns", "exec", self.host.ns.as_str(), SHOAL])
            .args(["members", "--format", "json"]);
        cmd
    }

    /// The agent's process id: `ip netns exec`, `setpriv`, `unshare` and `sh -c "... exec"`
    /// each exec the next, so the child is the `shoal` process itself.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's log (its stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits at most `limit` for the agent to exit; its exit code, if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let mut code = None;
        shoal_testkit::wait_until(limit, || match self.child.try_wait() {
            Ok(Some(status)) => {
                code = status.code();
                true
            }
            _ => false,
        });
        code
    }
}

/// Every agent's member list, queried concurrently.
pub fn members_of_all(agents: &[NsAgent]) -> Vec<Result<Vec<MemberInfo>, String>> {
    members_of_all_cli(agents.iter().map(NsAgent::members_command))
}

impl Drop for NsAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let heading = format!("log of agent {} in {}", self.host.hostname, self.host.ns);
            print_log_tail(&heading, &self.log, 80);
        }
    }
}
