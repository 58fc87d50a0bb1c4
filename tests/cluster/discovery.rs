//! No fixed seed: start order, restart from a snapshot, late joiners, name conflicts.
//! (Loopback only; the namespace tests live in `netns.rs`.)

use std::time::{Duration, Instant};

use crate::harness::{Agent, cli, scratch, wait_until};

/// A loopback address no other test binds: every other agent binds 127.0.0.1, so a port
/// reserved here cannot be taken by a parallel test's port-0 bind before the agent that
/// needs it starts (it was, now and then, on 127.0.0.1).
const OWN_IP: &str = "127.0.0.77";

fn free_port() -> u16 {
    std::net::UdpSocket::bind((OWN_IP, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[test]
fn start_order_does_not_matter_the_agent_everyone_names_may_start_last() {
    let port = free_port();
    let seed = format!("{OWN_IP}:{port}");
    let early: Vec<Agent> = (0..3)
        .map(|i| Agent::start(&format!("early{i}"), &["--join", &seed]))
        .collect();
    assert!(
        early.iter().all(|a| a.count_alive() == 1),
        "nobody to join yet, still running"
    );
    let bind = seed.clone();
    let last = Agent::start("named", &["--bind", &bind, "--join", &seed]);
    assert!(
        wait_until(Duration::from_secs(10), || last.count_alive() == 4
            && early.iter().all(|a| a.count_alive() == 4)),
        "cluster did not form: {:?}",
        early.iter().map(|a| a.count_alive()).collect::<Vec<_>>()
    );
}

#[test]
fn a_killed_agent_restarted_with_its_snapshot_and_no_join_is_back_within_a_second() {
    // The default (lan) profile, as a user would run it.
    let dir = scratch();
    let snap = dir.path().join("snap.json").display().to_string();
    let lan = ["--profile", "lan"];
    let a = Agent::start("sa", &lan);
    let b = Agent::start("sb", &[&lan[..], &["--join", &a.join_arg()]].concat());
    let mut c = Agent::start(
        "sc",
        &[&lan[..], &["--join", &b.join_arg(), "--snapshot", &snap]].concat(),
    );
    assert!(wait_until(Duration::from_secs(5), || [&a, &b, &c]
        .iter()
        .all(|x| x.count_alive() == 3)));
    // A quiet cluster: nothing changes for a while before the kill.
    std::thread::sleep(Duration::from_millis(300));
    let port = c.gossip.to_string();
    c.kill9();
    let started = Instant::now();
    let c2 = Agent::start(
        "sc",
        &[&lan[..], &["--bind", &port, "--snapshot", &snap]].concat(),
    );
    let back = || {
        [&a, &b]
            .iter()
            .all(|x| x.status_of("sc").as_deref() == Some("alive"))
            && c2.count_alive() == 3
    };
    assert!(
        wait_until(Duration::from_secs(1), back),
        "not back within 1 s of starting"
    );
    eprintln!("restart to seen-alive-by-all: {:?}", started.elapsed());
    assert!(c2.logged("rejoining members from the snapshot"));
}

#[test]
fn an_agent_that_left_gracefully_does_not_rejoin_from_its_snapshot_unless_told_to() {
    let dir = scratch();
    let snap = dir.path().join("snap.json").display().to_string();
    let a = Agent::start("ga", &[]);
    let mut b = Agent::start("gb", &["--join", &a.join_arg(), "--snapshot", &snap]);
    assert!(wait_until(Duration::from_secs(5), || b.count_alive() == 2));
    b.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        b.wait_exit(Duration::from_secs(5))
            .is_some_and(|s| s.success())
    );
    let text = std::fs::read_to_string(&snap).expect("snapshot written");
    assert!(text.contains("\"left\": true"), "{text}");
    let b2 = Agent::start("gb", &["--snapshot", &snap]);
    std::thread::sleep(Duration::from_millis(500)); // nothing should happen: check it stays alone
    assert_eq!(b2.count_alive(), 1);
    assert!(b2.logged("--rejoin"));
    drop(b2);
    let b3 = Agent::start("gb", &["--snapshot", &snap, "--rejoin"]);
    assert!(wait_until(Duration::from_secs(5), || b3.count_alive() == 2));
}

#[test]
fn a_corrupt_snapshot_is_reported_and_ignored() {
    let dir = scratch();
    let path = dir.path().join("snap.json");
    std::fs::write(&path, "{\"format\":1,\"name\":\"x\",\"le").expect("write");
    let snap = path.display().to_string();
    let a = Agent::start("ca", &["--snapshot", &snap]);
    assert!(a.logged("corrupt or truncated"), "{}", a.log());
    assert_eq!(a.count_alive(), 1);
    // Once it knows a member, a good snapshot replaces the corrupt one.
    let _b = Agent::start("cb", &["--join", &a.join_arg()]);
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.contains("\"name\": \"cb\""))
    }));
}

#[test]
fn a_late_joiner_lists_every_members_tags_as_soon_as_it_lists_them() {
    let first = Agent::start("t0", &["--tag", "role=web", "--tag", "slot=0"]);
    let mut all = vec![first];
    for i in 1..4 {
        let seed = all[i - 1].join_arg();
        let slot = format!("slot={i}");
        all.push(Agent::start(
            &format!("t{i}"),
            &["--join", &seed, "--tag", "role=web", "--tag", &slot],
        ));
    }
    assert!(wait_until(Duration::from_secs(5), || all
        .iter()
        .all(|a| a.count_alive() == 4)));
    let late = Agent::start("late", &["--join", &all[2].join_arg()]);
    assert!(wait_until(Duration::from_secs(5), || late.count_alive() == 5));
    let (_, out, _) = cli(&[
        "members",
        "--control",
        &late.control.to_string(),
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    for m in v["members"].as_array().expect("array") {
        if m["name"] != "late" {
            assert_eq!(m["tags"]["role"], "web", "{m}");
            assert!(m["tags"]["slot"].is_string(), "{m}");
        }
    }
}

#[test]
fn two_live_agents_with_one_name_the_later_one_leaves_and_exits_with_an_error() {
    let first = Agent::start("twin", &[]);
    let mut second = Agent::start("twin", &["--join", &first.join_arg()]);
    let status = second
        .wait_exit(Duration::from_secs(10))
        .expect("the later twin keeps running");
    assert_eq!(status.code(), Some(2));
    assert!(second.logged("name conflict"), "{}", second.log());
    assert!(first.logged("name conflict"), "{}", first.log());
    assert!(wait_until(Duration::from_secs(5), || {
        first.try_members().is_ok_and(|ms| {
            ms.iter()
                .filter(|m| m.name == "twin" && m.status == "alive")
                .count()
                == 1
        })
    }));
}

#[test]
fn a_node_that_left_and_restarts_at_its_address_with_no_join_stays_out_until_rejoin() {
    // Regression (issue 10): foca's periodic announce to down members reached the restarted
    // node at its old address and pulled it back in within a second.
    let dir = scratch();
    let snap = dir.path().join("snap.json").display().to_string();
    let a = Agent::start("oa", &[]);
    let b = Agent::start("ob", &["--join", &a.join_arg()]);
    let port = format!("{OWN_IP}:{}", free_port());
    let mut c = Agent::start(
        "oc",
        &[
            "--join",
            &a.join_arg(),
            "--snapshot",
            &snap,
            "--bind",
            &port,
        ],
    );
    assert!(wait_until(Duration::from_secs(5), || [&a, &b, &c]
        .iter()
        .all(|x| x.count_alive() == 3)));
    c.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        c.wait_exit(Duration::from_secs(5))
            .is_some_and(|s| s.success())
    );
    let left = |x: &Agent| x.status_of("oc").as_deref() == Some("left");
    assert!(wait_until(Duration::from_secs(5), || left(&a) && left(&b)));
    let c2 = Agent::start("oc", &["--bind", &port, "--snapshot", &snap]);
    // Six reconnect intervals of the local profile: it must stay out through all of them.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        assert!(
            left(&a) && left(&b) && c2.count_alive() == 1,
            "pulled back after {:?}: oa lists {:?}, ob lists {:?}, oc lists {} alive",
            started.elapsed(),
            a.status_of("oc"),
            b.status_of("oc"),
            c2.count_alive()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(c2.logged("--rejoin"));
    drop(c2);
    let c3 = Agent::start("oc", &["--bind", &port, "--snapshot", &snap, "--rejoin"]);
    assert!(wait_until(Duration::from_secs(5), || c3.count_alive() == 3
        && a.status_of("oc").as_deref() == Some("alive")));
}
