//! Sealed gossip (issue 10): encryption, key rotation, the cluster label, replay protection,
//! and a member that left staying out.

mod relay;
mod rotation;

use std::time::Duration;

use crate::harness::{Agent, cli, wait_until};

/// Two keys as `shoal keygen` prints them.
pub const K1: &str = "HvY8ubRZMgafUOWvrOadwOckVa1wN3QWAo46FVKbVN8=";
pub const K2: &str = "5K9OtfP7efFrNKe5WCQvXvnaXJ5cWP0SvXiwe0kkjM4=";

/// `agent`'s count of packets refused for `reason`.
pub fn refused(agent: &Agent, reason: &str) -> u64 {
    agent.info().stats.refused.get(reason).copied().unwrap_or(0)
}

/// The names `agent` lists, in any status.
pub fn names(agent: &Agent) -> Vec<String> {
    agent
        .try_members()
        .map(|ms| ms.into_iter().map(|m| m.name).collect())
        .unwrap_or_default()
}

#[test]
fn an_encrypted_cluster_converges_and_wrong_key_and_plaintext_agents_never_get_in() {
    let mut agents = vec![Agent::start("s0", &["--encrypt", K1])];
    for i in 1..5 {
        let seed = agents[i - 1].join_arg();
        agents.push(Agent::start(
            &format!("s{i}"),
            &["--encrypt", K1, "--join", &seed],
        ));
    }
    assert!(
        wait_until(Duration::from_secs(10), || agents
            .iter()
            .all(|a| a.count_alive() == 5)),
        "{:?}",
        agents
            .iter()
            .map(|a| (a.name.clone(), a.count_alive()))
            .collect::<Vec<_>>()
    );
    assert!(agents[0].info().agent.encrypted);
    let seed = agents[0].join_arg();
    let wrong = Agent::start("wrong-key", &["--encrypt", K2, "--join", &seed]);
    let plain = Agent::start("plain", &["--join", &seed]);
    let mut intruder_seen = false;
    let counted = wait_until(Duration::from_secs(10), || {
        intruder_seen |= agents.iter().any(|a| {
            let n = names(a);
            n.contains(&"wrong-key".to_string()) || n.contains(&"plain".to_string())
        });
        refused(&agents[0], "unknown_key") > 0 && refused(&agents[0], "plaintext") > 0
    });
    assert!(
        counted,
        "refusals not counted: {:?}",
        agents[0].info().stats.refused
    );
    // Both keep trying to join for a while; nobody ever lists them.
    wait_until(Duration::from_secs(2), || {
        intruder_seen |= agents
            .iter()
            .any(|a| names(a).iter().any(|n| n == "wrong-key" || n == "plain"));
        false
    });
    assert!(!intruder_seen, "an intruder was listed");
    assert_eq!(names(&wrong), vec!["wrong-key".to_string()]);
    assert_eq!(names(&plain), vec!["plain".to_string()]);
    assert!(agents.iter().all(|a| a.count_alive() == 5));
    let log = agents[0].log();
    assert!(log.contains("sealed with an unknown key"), "{log}");
    assert!(
        log.contains("are plaintext, but this agent only accepts sealed"),
        "{log}"
    );
    assert!(agents[0].info().stats.packets_dropped > 0);
}

#[test]
fn agents_of_two_cluster_labels_never_merge_even_at_a_reused_address() {
    for sealed in [false, true] {
        let key: &[&str] = if sealed { &["--encrypt", K1] } else { &[] };
        let args = |label: &str, join: Option<String>| {
            let mut v: Vec<String> = key.iter().map(|s| s.to_string()).collect();
            v.extend(["--cluster".to_string(), label.to_string()]);
            if let Some(j) = join {
                v.extend(["--join".to_string(), j]);
            }
            v
        };
        let start = |name: &str, a: Vec<String>| {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            Agent::start(name, &a)
        };
        let b0 = start("blue-0", args("blue", None));
        let mut b1 = start("blue-1", args("blue", Some(b0.join_arg())));
        assert!(wait_until(Duration::from_secs(5), || b0.count_alive() == 2));
        let r0 = start("red-0", args("red", Some(b0.join_arg())));
        let reason = if sealed { "tampered" } else { "wrong_cluster" };
        assert!(
            wait_until(Duration::from_secs(10), || refused(&b0, reason) > 0),
            "sealed={sealed}: {:?}",
            b0.info().stats.refused
        );
        // blue-1 dies; red-1 starts at its address: blue-0 keeps calling it, and never merges.
        let reused = b1.gossip.to_string();
        b1.kill9();
        let mut red1_args = args("red", Some(r0.join_arg()));
        red1_args.extend(["--bind".to_string(), reused]);
        let r1 = start("red-1", red1_args);
        assert!(wait_until(Duration::from_secs(10), || r0.count_alive() == 2));
        assert!(wait_until(Duration::from_secs(10), || b0
            .status_of("blue-1")
            .as_deref()
            == Some("failed")));
        for a in [&b0, &r0, &r1] {
            let n = names(a);
            let blue = n.iter().any(|x| x.starts_with("blue"));
            let red = n.iter().any(|x| x.starts_with("red"));
            assert!(!(blue && red), "sealed={sealed}: {} lists {n:?}", a.name);
        }
        if !sealed {
            let log = b0.log();
            let lines = log
                .matches("belong to cluster \"red\", not \"blue\"")
                .count();
            assert!(lines >= 1, "{log}");
        }
    }
}

#[test]
fn a_plaintext_cluster_is_sealed_by_rolling_restarts_in_three_steps_without_a_split() {
    let mut agents = vec![Agent::start("u0", &[])];
    for i in 1..3 {
        let seed = agents[0].join_arg();
        agents.push(Agent::start(&format!("u{i}"), &["--join", &seed]));
    }
    assert!(wait_until(Duration::from_secs(5), || agents
        .iter()
        .all(|a| a.count_alive() == 3)));
    let steps: [&[&str]; 3] = [
        &["--encrypt", K1, "--encrypt-send-plaintext"],
        &["--encrypt", K1, "--encrypt-accept-plaintext"],
        &["--encrypt", K1],
    ];
    for (n, step) in steps.into_iter().enumerate() {
        for i in 0..3 {
            let (addr, seed) = (agents[i].gossip.to_string(), agents[(i + 1) % 3].join_arg());
            agents[i].signal(nix::sys::signal::Signal::SIGTERM);
            assert!(agents[i].wait_exit(Duration::from_secs(10)).is_some());
            let mut args = step.to_vec();
            args.extend(["--bind", addr.as_str(), "--join", seed.as_str()]);
            agents[i] = Agent::start(&format!("u{i}"), &args);
            assert!(
                wait_until(Duration::from_secs(10), || agents
                    .iter()
                    .all(|a| a.count_alive() == 3)),
                "{step:?}, u{i} restarted: {:?}",
                agents
                    .iter()
                    .map(|a| (a.name.clone(), a.count_alive()))
                    .collect::<Vec<_>>()
            );
        }
        if n == 0 {
            // A new key would travel unsealed now: refused before anything is sent.
            let control = agents[1].control.to_string();
            let (code, _, err) = cli(&["keys", "--control", &control, "--install", K2]);
            assert_eq!(code, Some(2), "{err}");
            assert!(err.contains("key changes are refused while"), "{err}");
            assert!(agents[1].logged("NOT SEALED"));
        }
    }
    let info = agents[0].info().agent;
    assert!(info.encrypted && !info.accept_plaintext && !info.send_plaintext);
    // Sealed now: a plaintext newcomer stays out.
    let late = Agent::start("late-plain", &["--join", &agents[0].join_arg()]);
    assert!(wait_until(Duration::from_secs(10), || refused(
        &agents[0],
        "plaintext"
    ) > 0));
    assert_eq!(names(&late), vec!["late-plain".to_string()]);
    assert!(agents.iter().all(|a| a.count_alive() == 3));
}

#[test]
fn a_member_that_left_and_restarts_with_no_join_stays_out() {
    let a = Agent::start("stay-a", &[]);
    let mut b = Agent::start("stay-b", &["--join", &a.join_arg()]);
    assert!(wait_until(Duration::from_secs(5), || a.count_alive() == 2));
    let addr = b.gossip.to_string();
    b.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(b.wait_exit(Duration::from_secs(10)).is_some());
    assert!(wait_until(Duration::from_secs(5), || a
        .status_of("stay-b")
        .as_deref()
        == Some("left")));
    let b = Agent::start("stay-b", &["--bind", &addr]);
    let mut pulled_back = false;
    wait_until(Duration::from_secs(3), || {
        pulled_back |= b.count_alive() > 1 || a.status_of("stay-b").as_deref() == Some("alive");
        pulled_back
    });
    assert!(
        !pulled_back,
        "a: {:?}, b lists {:?}",
        a.status_of("stay-b"),
        names(&b)
    );
}
