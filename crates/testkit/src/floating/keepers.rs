//! The two keepers of the floating address, set up alike: priorities 150 and 100, preemption,
//! a health check of HAProxy every second that fails after one bad result and recovers after
//! one good one (shoal's `--check-interval 1s --check-fall 1 --check-rise 1`, Keepalived's
//! `vrrp_script` `interval 1 fall 1 rise 1`), and the floating address added on the primary
//! (MASTER) and removed elsewhere.

use std::fmt::Write as _;

use super::{FloatingLab, examples_dir, net};

/// The health endpoint of HAProxy (`examples/floating-ip/haproxy.cfg`).
pub const HEALTH_URL: &str = "http://127.0.0.1:8404/health";

/// Who moves the floating address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keeper {
    /// A shoal agent per node in group `lb`, with `examples/floating-ip/floating-ip.sh` as its
    /// `--on-primary`, `--on-backup` and `--on-fault`.
    Shoal,
    /// Keepalived (VRRP, `advert_int 1`, its own `virtual_ipaddress` and gratuitous ARPs).
    Keepalived,
}

impl Keeper {
    /// `shoal` or `keepalived`: the log's name.
    pub fn label(self) -> &'static str {
        match self {
            Keeper::Shoal => "shoal",
            Keeper::Keepalived => "keepalived",
        }
    }
}

/// The shoal agent's command line on node `i` (default `lan` profile and ports).
pub fn shoal_args(lab: &FloatingLab, i: usize) -> Vec<String> {
    let node = &lab.nodes[i];
    let other = &lab.nodes[1 - i];
    let script = examples_dir().join("floating-ip.sh");
    let hook = format!("{} {}/24 eth0", script.display(), lab.vip);
    let mut args: Vec<String> = vec![lab.shoal.to_string_lossy().into_owned(), "agent".into()];
    for (flag, value) in [
        ("--node", node.name.clone()),
        ("--bind", format!("{}:7946", node.ip)),
        ("--join", format!("{}:7946", other.ip)),
        ("--group", "lb".into()),
        ("--priority", node.priority.to_string()),
        ("--check", format!("haproxy=http:{HEALTH_URL}")),
        ("--check-interval", "1s".into()),
        ("--check-timeout", "1s".into()),
        ("--check-fall", "1".into()),
        ("--check-rise", "1".into()),
        ("--on-primary", hook.clone()),
        ("--on-backup", hook.clone()),
        ("--on-fault", hook),
    ] {
        args.push(flag.into());
        args.push(value);
    }
    args.extend(lab.shoal_extra.iter().cloned());
    args
}

/// Keepalived's command line on node `i`, after writing its configuration to the lab's
/// directory. `Err` if Keepalived or curl (its check) is not installed.
pub fn keepalived_args(lab: &FloatingLab, i: usize) -> Result<Vec<String>, String> {
    for tool in ["keepalived", "curl"] {
        if !net::installed(tool) {
            return Err(format!("`{tool}` is not installed"));
        }
    }
    let node = &lab.nodes[i];
    let dir = lab.dir();
    let cfg = dir.join(format!("{}-keepalived.conf", node.name));
    std::fs::write(&cfg, keepalived_conf(lab, i))
        .map_err(|e| format!("cannot write {}: {e}", cfg.display()))?;
    let file = |suffix: &str| {
        dir.join(format!("{}-keepalived{suffix}", node.name))
            .to_string_lossy()
            .into_owned()
    };
    // A pid file naming a process that is still a zombie (or whose pid was reused) makes
    // Keepalived refuse to start ("daemon is already running"): the previous run is gone.
    for suffix in [".pid", "-vrrp.pid"] {
        let _ = std::fs::remove_file(file(suffix));
    }
    Ok(vec![
        net::tool("keepalived").to_string_lossy().into_owned(),
        "--dont-fork".into(),
        "--log-console".into(),
        "--log-detail".into(),
        "--vrrp".into(),
        "--use-file".into(),
        cfg.to_string_lossy().into_owned(),
        "--pid".into(),
        file(".pid"),
        "--vrrp_pid".into(),
        file("-vrrp.pid"),
    ])
}

/// Keepalived's configuration on node `i`: the usual HAProxy pair.
pub fn keepalived_conf(lab: &FloatingLab, i: usize) -> String {
    let node = &lab.nodes[i];
    let curl = net::tool("curl");
    let mut c = String::new();
    let _ = writeln!(c, "global_defs {{");
    let _ = writeln!(c, "    router_id {}", node.name);
    let _ = writeln!(c, "    script_user root");
    let _ = writeln!(c, "    enable_script_security");
    let _ = writeln!(c, "}}");
    let _ = writeln!(c, "vrrp_script haproxy {{");
    let _ = writeln!(
        c,
        "    script \"{} -fsS -m 1 -o /dev/null {HEALTH_URL}\"",
        curl.display()
    );
    let _ = writeln!(c, "    interval 1");
    let _ = writeln!(c, "    timeout 1");
    let _ = writeln!(c, "    fall 1");
    let _ = writeln!(c, "    rise 1");
    let _ = writeln!(c, "}}");
    let _ = writeln!(c, "vrrp_instance lb {{");
    let _ = writeln!(c, "    state BACKUP");
    let _ = writeln!(c, "    interface eth0");
    let _ = writeln!(c, "    virtual_router_id 51");
    let _ = writeln!(c, "    priority {}", node.priority);
    let _ = writeln!(c, "    advert_int 1");
    let _ = writeln!(c, "    virtual_ipaddress {{");
    let _ = writeln!(c, "        {}/24 dev eth0", lab.vip);
    let _ = writeln!(c, "    }}");
    let _ = writeln!(c, "    track_script {{");
    let _ = writeln!(c, "        haproxy");
    let _ = writeln!(c, "    }}");
    let _ = writeln!(c, "}}");
    c
}
