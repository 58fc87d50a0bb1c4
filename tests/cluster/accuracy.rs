//! Accuracy with real agents in network namespaces (see `netns/lab.rs`): under packet loss
//! and pauses, no healthy member is ever declared failed. The simulator shows the same
//! (crates/core/src/sim/tests.rs); these tests check it on real sockets, timers and TCP.
//!
//! Loss is made by iptables in the hub namespace: bridged traffic between the hosts crosses
//! its FORWARD chain once per packet (`bridge-nf-call-iptables`), where a `statistic` rule
//! drops each packet of a protocol with probability P, so every datagram and every TCP segment
//! between two hosts is lost with P, in both directions. A test fails when the rules dropped
//! nothing (so it never passes without its fault). Needs root; skipped with a `SKIP:` line
//! otherwise.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shoal_testkit::{members_of_all_cli, poll, wait_until};

use crate::netns::lab::{Host, Lab, NsAgent};
use crate::netns::{PORT, all_alive, check_views, utc_now, wait_ready_all};

/// Agents per cluster.
const N: usize = 10;

/// A cluster of `N` lan agents on one bridge, all joined to the first. Each runs a
/// member-failed handler that appends to `failed-NAME`, and records every event in
/// `events-NAME`, in the lab's directory (kept with the logs when a test fails).
struct Cluster {
    // Dropped before the lab: the agents go first, then their namespaces.
    agents: Vec<NsAgent>,
    hosts: Vec<Host>,
    lab: Lab,
}

impl Cluster {
    /// Starts the cluster and waits until every agent lists all `N` alive; `None` when the lab
    /// cannot be made here (the test is skipped).
    fn start(test: &str, subnet: u8, tag: &str) -> Option<Cluster> {
        let mut lab = Lab::new(test, subnet)?;
        lab.bridge("br0");
        let hosts: Vec<Host> = (0..N)
            .map(|k| lab.host("br0", &format!("{tag}-{k}")))
            .collect();
        let dir = lab.dir().display().to_string();
        let failed = format!("member-failed=cat >> {dir}/failed-$SERF_SELF_NAME");
        let recorder = format!("sed \"s/^/$SERF_EVENT\t/\" >> {dir}/events-$SERF_SELF_NAME");
        let seed = format!("{}:{PORT}", hosts[0].ip);
        let args = [
            "agent",
            "--profile",
            "lan",
            "--join",
            &seed,
            "--event-handler",
            &failed,
            "--event-handler",
            &recorder,
        ];
        let mut agents: Vec<NsAgent> = hosts.iter().map(|h| lab.spawn_agent(h, &args)).collect();
        wait_ready_all(&mut agents);
        match poll(Duration::from_secs(15), Duration::from_millis(100), || {
            check_views(&agents, &hosts, all_alive(&hosts))
        }) {
            Ok(((), took)) => eprintln!("accuracy: {tag}: {N} agents converged in {took:?}"),
            Err((why, took)) => {
                panic!("{tag}: after {took:?} the {N} agents did not converge:\n{why}")
            }
        }
        Some(Cluster { agents, hosts, lab })
    }

    /// Every member-failed handler run so far, as `OBSERVER: LINE`.
    fn failed_runs(&self) -> Vec<String> {
        self.hosts
            .iter()
            .flat_map(|h| {
                let path = self.lab.dir().join(format!("failed-{}", h.hostname));
                let text = std::fs::read_to_string(path).unwrap_or_default();
                text.lines()
                    .map(|l| format!("{}: {}", h.hostname, l.replace('\t', " ")))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Polls until every agent lists all `N` alive, for at most `limit`.
    fn wait_all_alive(&self, limit: Duration) -> Result<Duration, String> {
        poll(limit, Duration::from_millis(200), || {
            check_views(&self.agents, &self.hosts, all_alive(&self.hosts))
        })
        .map(|((), took)| took)
        .map_err(|(why, took)| {
            format!("after {took:?} not every agent lists all {N} alive:\n{why}")
        })
    }
}

impl Cluster {
    /// The check of the check: kills the last agent (SIGKILL) and waits until every other
    /// agent's member-failed handler has run for it, so "no runs" above means no failures and
    /// not a handler that never runs. Returns how long that took.
    fn kill_one_and_see_it_failed(&self) -> Result<Duration, String> {
        let victim = &self.agents[N - 1];
        let name = victim.host.hostname.clone();
        kill(Pid::from_raw(victim.pid() as i32), Signal::SIGKILL).expect("SIGKILL");
        let read = |h: &Host| {
            let path = self.lab.dir().join(format!("failed-{}", h.hostname));
            std::fs::read_to_string(path).unwrap_or_default()
        };
        poll(Duration::from_secs(15), Duration::from_millis(100), || {
            let behind: Vec<&str> = self.hosts[..N - 1]
                .iter()
                .filter(|h| !read(h).lines().any(|l| l.split('\t').next() == Some(&name)))
                .map(|h| h.hostname.as_str())
                .collect();
            if behind.is_empty() {
                Ok(())
            } else {
                Err(format!("no member-failed run for {name} on {behind:?}"))
            }
        })
        .map(|((), took)| took)
        .map_err(|(why, took)| format!("{took:?} after kill -9: {why}"))
    }
}

/// What one look at some agents' views found.
#[derive(Default)]
struct Sightings {
    /// `OBSERVER lists MEMBER failed` (or left), and agents that did not answer.
    wrong: Vec<String>,
    /// (observer, member) pairs listed suspect, summed over the looks.
    suspect: usize,
    looks: usize,
}

impl Sightings {
    /// Looks at the views of `agents` once; `at` labels the moment.
    fn look<'a>(&mut self, agents: impl Iterator<Item = &'a NsAgent> + Clone, at: &str) {
        let views = members_of_all_cli(agents.clone().map(NsAgent::members_command));
        self.looks += 1;
        for (agent, view) in agents.zip(views) {
            let me = &agent.host.hostname;
            match view {
                Ok(members) => {
                    for m in members {
                        match m.status.as_str() {
                            "alive" => {}
                            "suspect" => self.suspect += 1,
                            other => self
                                .wrong
                                .push(format!("{at}: {me} lists {} {other}", m.name)),
                        }
                    }
                }
                Err(e) => self.wrong.push(format!("{at}: {me} did not answer: {e}")),
            }
        }
    }
}

/// One loss scenario: `percent` loss of each protocol in `protocols`, in its own lab.
struct Loss {
    tag: &'static str,
    subnet: u8,
    percent: u32,
    protocols: &'static [&'static str],
}

impl Loss {
    fn label(&self) -> String {
        format!("{}% {} loss", self.percent, self.protocols.join("+"))
    }
}

const LOSSES: [Loss; 4] = [
    Loss {
        tag: "udp10",
        subnet: 11,
        percent: 10,
        protocols: &["udp"],
    },
    Loss {
        tag: "udp20",
        subnet: 12,
        percent: 20,
        protocols: &["udp"],
    },
    Loss {
        tag: "udp40",
        subnet: 13,
        percent: 40,
        protocols: &["udp"],
    },
    Loss {
        tag: "both30",
        subnet: 14,
        percent: 30,
        protocols: &["udp", "tcp"],
    },
];

/// How long each loss lasts: the scenario, not a wait.
const LOSS_WINDOW: Duration = Duration::from_secs(60);

/// The packets of `protocol` the hub's FORWARD chain dropped and let through: the counters of
/// the DROP rule and of the ACCEPT rule after it (see [`run_loss`]).
fn forward_counters(lab: &Lab, protocol: &str) -> (u64, u64) {
    let number = match protocol {
        "udp" => "17",
        "tcp" => "6",
        other => panic!("no protocol number for {other}"),
    };
    let table = lab
        .in_hub(&["iptables", "-L", "FORWARD", "-v", "-n", "-x"])
        .unwrap_or_else(|e| panic!("reading the loss rules' counters: {e}"));
    let (mut dropped, mut passed) = (0, 0);
    // pkts bytes target prot opt in out source destination [match...]
    for line in table.lines().skip(2) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || (f[3] != protocol && f[3] != number) {
            continue;
        }
        let pkts: u64 = f[0].parse().unwrap_or(0);
        match f[2] {
            "DROP" => dropped += pkts,
            "ACCEPT" => passed += pkts,
            _ => {}
        }
    }
    (dropped, passed)
}

/// Runs one loss scenario; panics (keeping the logs) with everything that went wrong.
/// Returns a summary line, or `None` when skipped.
fn run_loss(case: &Loss) -> Option<String> {
    let label = case.label();
    let c = Cluster::start(&format!("accuracy under {label}"), case.subnet, case.tag)?;
    let hub = |args: &[&str]| {
        c.lab
            .in_hub(args)
            .unwrap_or_else(|e| panic!("{label}: setting up the loss: {e}"))
    };
    // Bridged IPv4 goes through iptables (per namespace; the default, but say so).
    hub(&["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1"]);
    let probability = format!("{:.2}", f64::from(case.percent) / 100.0);
    for proto in case.protocols {
        hub(&[
            "iptables",
            "-A",
            "FORWARD",
            "-p",
            proto,
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &probability,
            "-j",
            "DROP",
        ]);
        // Counts what got through.
        hub(&["iptables", "-A", "FORWARD", "-p", proto, "-j", "ACCEPT"]);
    }
    eprintln!(
        "accuracy: {}: {label} from {} (UTC, as in the agents' logs)",
        case.tag,
        utc_now()
    );
    let start = Instant::now();
    let mut seen = Sightings::default();
    while start.elapsed() < LOSS_WINDOW {
        let round = Instant::now();
        seen.look(
            c.agents.iter(),
            &format!("{:.1} s into the loss", start.elapsed().as_secs_f64()),
        );
        let rest = LOSS_WINDOW.saturating_sub(start.elapsed());
        std::thread::sleep(
            Duration::from_secs(1)
                .saturating_sub(round.elapsed())
                .min(rest),
        );
    }
    let counters: Vec<(&str, u64, u64)> = case
        .protocols
        .iter()
        .map(|p| {
            let (dropped, passed) = forward_counters(&c.lab, p);
            (*p, dropped, passed)
        })
        .collect();
    hub(&["iptables", "-F", "FORWARD"]);
    eprintln!("accuracy: {}: loss off at {}", case.tag, utc_now());

    let mut problems = Vec::new();
    let mut drops = Vec::new();
    for &(proto, dropped, passed) in &counters {
        let total = dropped + passed;
        let share = if total == 0 {
            0.0
        } else {
            dropped as f64 / total as f64
        };
        drops.push(format!(
            "{proto} dropped {dropped} of {total} ({:.1}%)",
            share * 100.0
        ));
        // A fault that did not happen proves nothing; a share far from P is not the fault
        // the test names.
        let p = f64::from(case.percent) / 100.0;
        if dropped == 0 || share < p / 2.0 || share > p * 1.5 {
            problems.push(format!(
                "the {proto} loss rule dropped {dropped} of {total} packets, not about {}%",
                case.percent
            ));
        }
    }
    let healed = c.wait_all_alive(Duration::from_secs(10));
    if let Err(why) = &healed {
        problems.push(format!("after the loss: {why}"));
    }
    let runs = c.failed_runs();
    if !runs.is_empty() {
        problems.push(format!(
            "{} member-failed handler runs (false failures: every member was healthy):\n  {}",
            runs.len(),
            runs.join("\n  ")
        ));
    }
    if !seen.wrong.is_empty() {
        problems.push(format!(
            "views during the loss (looked {} times):\n  {}",
            seen.looks,
            seen.wrong.join("\n  ")
        ));
    }
    let control = c.kill_one_and_see_it_failed();
    if let Err(why) = &control {
        problems.push(format!("the member-failed handler does not count: {why}"));
    }
    let summary = format!(
        "{label}: {}; {} member-failed runs; {} suspect sightings in {} looks at all {N} views; \
         all alive {} after the loss; a kill -9 seen failed by all in {}",
        drops.join(", "),
        runs.len(),
        seen.suspect,
        seen.looks,
        healed
            .as_ref()
            .map_or("never".into(), |d| format!("{d:.1?}")),
        control
            .as_ref()
            .map_or("never".into(), |d| format!("{d:.1?}")),
    );
    assert!(problems.is_empty(), "{summary}\n{}", problems.join("\n"));
    Some(summary)
}

/// The four loss scenarios run at once, each in its own lab (subnet), so that they take one
/// minute and a bit, not four.
#[test]
fn ten_agents_under_a_minute_of_10_20_or_40_percent_udp_loss_or_30_percent_udp_and_tcp_loss_never_declare_a_member_failed()
 {
    let runs: Vec<_> = LOSSES
        .iter()
        .map(|case| {
            std::thread::Builder::new()
                .name(case.tag.to_string())
                .spawn(move || run_loss(case))
                .expect("spawn a loss scenario")
        })
        .collect();
    let mut failures = Vec::new();
    for (case, run) in LOSSES.iter().zip(runs) {
        match run.join() {
            Ok(Some(summary)) => eprintln!("accuracy: {summary}"),
            Ok(None) => {}
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{}: {why}", case.label()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "under loss:\n{}",
        failures.join("\n\n")
    );
}

/// How long each pause lasts: the scenario, not a wait.
const PAUSE: Duration = Duration::from_secs(2);
/// How long the views are watched after each pause.
const AFTER_PAUSE: Duration = Duration::from_secs(10);

#[test]
fn an_agent_paused_for_two_seconds_is_never_listed_failed_by_anyone_three_times_over() {
    let test = "an_agent_paused_for_two_seconds_is_never_listed_failed_by_anyone_three_times_over";
    let Some(c) = Cluster::start(test, 15, "pause") else {
        return;
    };
    let mut seen = Sightings::default();
    let mut notes = Vec::new();
    for victim in [3, 6, 9] {
        let name = c.hosts[victim].hostname.clone();
        let pid = c.agents[victim].pid();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_eq!(comm.trim(), "shoal", "pid {pid} is not the agent {name}");
        let pid = Pid::from_raw(pid as i32);
        let others = || c.agents.iter().filter(|a| a.host.hostname != name);
        let suspect_before = seen.suspect;
        kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
        let stopped = Instant::now();
        // The fault happened: the agent is in state T (stopped).
        let state = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) STATE ...
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            after.split_whitespace().next().unwrap_or("?").to_string()
        };
        assert!(
            wait_until(Duration::from_millis(500), || state() == "T"),
            "{name} is not stopped after SIGSTOP (state {})",
            state()
        );
        eprintln!("accuracy: {name} stopped at {} (UTC)", utc_now());
        // SIGCONT on time, whatever the looks at the views take.
        let resume = std::thread::spawn(move || {
            std::thread::sleep(PAUSE);
            kill(pid, Signal::SIGCONT).expect("SIGCONT");
            utc_now()
        });
        while stopped.elapsed() < PAUSE {
            let round = Instant::now();
            let at = format!("{name} stopped {:.1} s", stopped.elapsed().as_secs_f64());
            seen.look(others(), &at);
            std::thread::sleep(Duration::from_millis(250).saturating_sub(round.elapsed()));
        }
        let resumed_at = resume.join().expect("the SIGCONT thread");
        let resumed = Instant::now();
        eprintln!("accuracy: {name} resumed at {resumed_at} (UTC)");
        while resumed.elapsed() < AFTER_PAUSE {
            let round = Instant::now();
            let at = format!(
                "{:.1} s after {name} resumed",
                resumed.elapsed().as_secs_f64()
            );
            seen.look(c.agents.iter(), &at);
            std::thread::sleep(Duration::from_millis(250).saturating_sub(round.elapsed()));
        }
        if let Err(why) = c.wait_all_alive(Duration::from_secs(5)) {
            panic!("{AFTER_PAUSE:?} after {name}'s pause: {why}");
        }
        notes.push(format!(
            "{name}: {} suspect sightings",
            seen.suspect - suspect_before
        ));
    }
    let runs = c.failed_runs();
    let mut problems = Vec::new();
    if !runs.is_empty() {
        problems.push(format!(
            "{} member-failed handler runs:\n  {}",
            runs.len(),
            runs.join("\n  ")
        ));
    }
    if !seen.wrong.is_empty() {
        problems.push(format!(
            "views (looked {} times):\n  {}",
            seen.looks,
            seen.wrong.join("\n  ")
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let took = c
        .kill_one_and_see_it_failed()
        .unwrap_or_else(|why| panic!("the member-failed handler does not count: {why}"));
    eprintln!(
        "accuracy: 3 pauses of {PAUSE:?}: no member-failed, nobody listed failed in {} looks; {}; \
         a kill -9 seen failed by all in {took:.1?}",
        seen.looks,
        notes.join(", ")
    );
}
