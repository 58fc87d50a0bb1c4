//! Key rotation across five agents, under traffic, and a restart from the keyring file.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{K1, K2};
use crate::harness::{Agent, cli, scratch, wait_until};

fn keys(agent: &Agent, op: &[&str]) -> (Option<i32>, String, String) {
    let control = agent.control.to_string();
    let mut args = vec!["keys", "--control", &control];
    args.extend_from_slice(op);
    cli(&args)
}

#[test]
fn keys_rotate_on_five_agents_under_traffic_with_no_false_failure_and_a_restart_rejoins() {
    let dir = scratch();
    let ring = |i: usize| {
        dir.path()
            .join(format!("s{i}.keyring"))
            .display()
            .to_string()
    };
    let start = |i: usize, join: Option<String>| {
        let file = ring(i);
        let mut args = vec!["--encrypt", K1, "--keyring-file", file.as_str()];
        let join = join.unwrap_or_default();
        if !join.is_empty() {
            args.extend(["--join", join.as_str()]);
        }
        Agent::start(&format!("r{i}"), &args)
    };
    let mut agents = vec![start(0, None)];
    for i in 1..5 {
        let seed = agents[0].join_arg();
        agents.push(start(i, Some(seed)));
    }
    assert!(wait_until(Duration::from_secs(10), || agents
        .iter()
        .all(|a| a.count_alive() == 5)));
    let file0: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(ring(0)).expect("keyring file"))
            .expect("json");
    assert_eq!(
        file0,
        vec![K1.to_string()],
        "--encrypt created the keyring file"
    );

    // Traffic: user events from every agent while the keys change; a watcher notes any
    // member that is ever not alive.
    let stop = Arc::new(AtomicBool::new(false));
    let controls: Vec<String> = agents.iter().map(|a| a.control.to_string()).collect();
    let traffic = {
        let (stop, controls) = (stop.clone(), controls.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let c = &controls[n % controls.len()];
                cli(&["event", "--control", c, "tick", &n.to_string()]);
                n += 1;
            }
            n
        })
    };
    let mut not_alive = Vec::new();
    let mut check = |agents: &[Agent]| {
        for a in agents {
            for m in a.try_members().unwrap_or_default() {
                if m.status != "alive" {
                    not_alive.push(format!("{} lists {} {}", a.name, m.name, m.status));
                }
            }
        }
    };
    let (code, out, err) = keys(&agents[2], &["--install", K2]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("5 of 5 members answered, 0 failed"), "{out}");
    check(&agents);
    let (code, out, err) = keys(&agents[3], &["--remove", K1]);
    assert_ne!(
        code,
        Some(0),
        "removing the key in use is refused: {out}{err}"
    );
    assert!(err.contains("in use"), "{err}");
    let (code, out, err) = keys(&agents[1], &["--use", K2]);
    assert_eq!(code, Some(0), "{out}{err}");
    check(&agents);
    let (code, out, err) = keys(&agents[4], &["--remove", K1]);
    assert_eq!(code, Some(0), "{out}{err}");
    check(&agents);
    // A few more seconds of traffic on the new key alone.
    wait_until(Duration::from_secs(2), || {
        check(&agents);
        false
    });
    stop.store(true, Ordering::Relaxed);
    let events = traffic.join().expect("traffic thread");
    assert!(events > 3, "too little traffic: {events} events");
    assert!(not_alive.is_empty(), "false failures: {not_alive:?}");

    let (code, out, err) = keys(&agents[0], &["--list", "--format", "json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let list: shoal_proto::KeysResponse = serde_json::from_str(&out).expect("json");
    assert_eq!(list.members, 5);
    assert_eq!(
        list.keys.into_iter().collect::<Vec<_>>(),
        vec![(K2.to_string(), 5)]
    );
    for i in 0..5 {
        let file: Vec<String> =
            serde_json::from_str(&std::fs::read_to_string(ring(i)).expect("read")).expect("json");
        assert_eq!(file, vec![K2.to_string()], "keyring file of r{i}");
    }

    // r3 restarts from its keyring file (the command line still says K1: the file wins).
    agents[3].kill9();
    assert!(wait_until(Duration::from_secs(10), || agents[0]
        .status_of("r3")
        .as_deref()
        == Some("failed")));
    let seed = agents[0].join_arg();
    agents[3] = start(3, Some(seed));
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
    assert_eq!(agents[3].info().agent.keys, 1);
    assert!(agents[3].log().contains("the keyring file wins"));
}
