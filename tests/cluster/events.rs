//! User events: `shoal event` runs every live member's `user` / `user:NAME` handlers exactly
//! once with Serf's environment and the payload on stdin; duplicates, restarts and rejoins
//! never run an event again; `--replay` gives a new member the recent ones.

use std::path::Path;
use std::time::Duration;

use crate::harness::{Agent, cli, post_raw, read, scratch, wait_until};

/// A `user:deploy` handler appending its stdin to `DIR/ran-ID` and its environment to
/// `DIR/env-ID`.
fn deploy_handler(dir: &Path, id: &str) -> String {
    let d = dir.display();
    format!(
        "user:deploy=cat >> {d}/ran-{id}; \
         echo \"$SERF_EVENT $SERF_USER_EVENT $SERF_USER_LTIME $SHOAL_USER_EVENT $SHOAL_USER_LTIME\" >> {d}/env-{id}"
    )
}

fn ran(dir: &Path, id: &str) -> String {
    read(&dir.join(format!("ran-{id}"))).unwrap_or_default()
}

/// What each of the ten agents `0`..`9` ran.
fn runs_of_ten(dir: &Path) -> Vec<String> {
    (0..10).map(|i| ran(dir, &i.to_string())).collect()
}

/// Sends `shoal event ARGS...` through `agent`; asserts it was dispatched.
fn event(agent: &Agent, args: &[&str]) {
    let control = agent.control.to_string();
    let (code, out, err) = cli(&[&["event", "--control", &control][..], args].concat());
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("Event '"), "{out}");
}

#[test]
fn ten_agents_run_an_event_once_each_again_for_a_second_send_and_never_for_re_gossip() {
    let dir = scratch();
    let first = Agent::start("e0", &["--event-handler", &deploy_handler(dir.path(), "0")]);
    let mut agents = vec![first];
    for i in 1..10 {
        let seed = agents[i - 1].join_arg();
        let handler = deploy_handler(dir.path(), &i.to_string());
        agents.push(Agent::start(
            &format!("e{i}"),
            &["--join", &seed, "--event-handler", &handler],
        ));
    }
    let other = format!("user:other=touch {}/other-ran", dir.path().display());
    let extra = Agent::start(
        "e10",
        &["--join", &agents[0].join_arg(), "--event-handler", &other],
    );
    assert!(
        wait_until(Duration::from_secs(15), || agents
            .iter()
            .chain([&extra])
            .all(|a| a.count_alive() == 11)),
        "cluster did not form: {:?}",
        agents.iter().map(Agent::count_alive).collect::<Vec<_>>()
    );

    let control = agents[0].control.to_string();
    let (code, out, err) = cli(&["event", "--control", &control, "deploy", "v42"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "Event 'deploy' dispatched! Coalescing enabled: true\n");
    let all_ran = |want: &str| (0..10).all(|i| ran(dir.path(), &i.to_string()) == want);
    assert!(
        wait_until(Duration::from_secs(10), || all_ran("v42\n")),
        "runs: {:?}",
        runs_of_ten(dir.path())
    );
    let env = read(&dir.path().join("env-7")).unwrap_or_default();
    let fields: Vec<&str> = env.split_whitespace().collect();
    assert_eq!(fields.len(), 5, "{env}");
    assert_eq!(
        (fields[0], fields[1], fields[3]),
        ("user", "deploy", "deploy")
    );
    assert_eq!(fields[2], fields[4], "SERF_USER_LTIME and SHOAL_USER_LTIME");
    assert!(fields[2].parse::<u64>().is_ok(), "{env}");

    // The same name and payload once more is a new event: it runs again, once.
    event(&agents[5], &["deploy", "v42"]);
    assert!(
        wait_until(Duration::from_secs(10), || all_ran("v42\nv42\n")),
        "runs: {:?}",
        runs_of_ten(dir.path())
    );
    // Re-gossip: a replaying join between two members hands both events over once more;
    // they are known, so nothing runs. A third event, which does run, shows the old ones
    // were dealt with first (each handler runs its events in order).
    let (code, _, err) = cli(&[
        "join",
        "--control",
        &agents[3].control.to_string(),
        "--replay",
        &agents[8].join_arg(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    event(&agents[9], &["deploy", "v43"]);
    assert!(
        wait_until(Duration::from_secs(10), || all_ran("v42\nv42\nv43\n")),
        "runs: {:?}",
        runs_of_ten(dir.path())
    );
    assert!(
        !dir.path().join("other-ran").exists(),
        "user:other ran for deploy"
    );
}

#[test]
fn restarts_and_rejoins_never_rerun_an_event_and_only_replay_gives_a_new_member_the_old_ones() {
    let dir = scratch();
    let d = dir.path();
    let a = Agent::start("ra", &["--event-handler", &deploy_handler(d, "a")]);
    let snap_b = d.join("b.json").display().to_string();
    let snap_c = d.join("c.json").display().to_string();
    let flags = |id: &str, snap: &str| -> Vec<String> {
        [
            "--join",
            &a.join_arg(),
            "--snapshot",
            snap,
            "--event-handler",
            &deploy_handler(d, id),
        ]
        .map(String::from)
        .to_vec()
    };
    let fb = flags("b", &snap_b);
    let fc = flags("c", &snap_c);
    let mut b = Agent::start("rb", &fb.iter().map(String::as_str).collect::<Vec<_>>());
    let mut c = Agent::start("rc", &fc.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(wait_until(Duration::from_secs(10), || [&a, &b, &c]
        .iter()
        .all(|x| x.count_alive() == 3)));
    event(&a, &["deploy", "v1"]);
    let ran_v1 = |id: &str| ran(d, id) == "v1\n";
    assert!(wait_until(Duration::from_secs(10), || ["a", "b", "c"]
        .iter()
        .all(|id| ran_v1(id))));
    // Both snapshots remember the event before b is killed and c leaves.
    let remembers =
        |snap: &str| read(Path::new(snap)).is_some_and(|t| t.contains("\"event_ltime\""));
    assert!(wait_until(Duration::from_secs(5), || remembers(&snap_b)
        && remembers(&snap_c)));

    let port_b = b.gossip.to_string();
    b.kill9();
    c.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        c.wait_exit(Duration::from_secs(5))
            .is_some_and(|s| s.success())
    );
    let port_c = c.gossip.to_string();
    let mut fb2 = fb.clone();
    fb2.extend(["--bind".to_string(), port_b]);
    let mut fc2 = fc.clone();
    fc2.extend(["--bind".to_string(), port_c, "--rejoin".to_string()]);
    let b2 = Agent::start("rb", &fb2.iter().map(String::as_str).collect::<Vec<_>>());
    let c2 = Agent::start("rc", &fc2.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(wait_until(Duration::from_secs(10), || [&a, &b2, &c2]
        .iter()
        .all(|x| x.count_alive() == 3)));
    // New members: one replays the cluster's recent events, one does not.
    let replayer = Agent::start(
        "rr",
        &[
            "--join",
            &a.join_arg(),
            "--replay",
            "--event-handler",
            &deploy_handler(d, "r"),
        ],
    );
    let newcomer = Agent::start(
        "rn",
        &[
            "--join",
            &a.join_arg(),
            "--event-handler",
            &deploy_handler(d, "n"),
        ],
    );
    assert!(wait_until(Duration::from_secs(10), || [
        &replayer, &newcomer
    ]
    .iter()
    .all(|x| x.count_alive() == 5)));
    assert!(
        wait_until(Duration::from_secs(5), || ran(d, "r") == "v1\n"),
        "replay: {:?}",
        ran(d, "r")
    );
    // A new event runs everywhere once; v1 ran nowhere a second time (each handler runs its
    // events in order, so a rerun would show before v2).
    event(&b2, &["deploy", "v2"]);
    let want = [
        ("a", "v1\nv2\n"),
        ("b", "v1\nv2\n"),
        ("c", "v1\nv2\n"),
        ("r", "v1\nv2\n"),
        ("n", "v2\n"),
    ];
    assert!(
        wait_until(Duration::from_secs(10), || want
            .iter()
            .all(|(id, runs)| ran(d, id) == *runs)),
        "runs: {:?}",
        want.map(|(id, _)| (id, ran(d, id)))
    );
}

#[test]
fn coalescing_keeps_the_newest_of_a_name_unless_the_event_says_otherwise() {
    let dir = scratch();
    // A long quiet window (held at most 1 s from the first event), and both sends straight
    // to the control API: spawning the CLI twice took over a second at load 40.
    let a = Agent::start(
        "ca",
        &[
            "--coalesce",
            "1s",
            "--event-handler",
            &deploy_handler(dir.path(), "a"),
        ],
    );
    for payload in ["old", "new"] {
        let body = format!(r#"{{"name":"deploy","payload":"{payload}"}}"#);
        let resp = post_raw(a.control, "/v1/event", &body);
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
    assert!(wait_until(Duration::from_secs(5), || ran(dir.path(), "a") == "new\n"));
    event(&a, &["--coalesce=false", "deploy", "one"]);
    event(&a, &["--coalesce=false", "deploy", "two"]);
    assert!(
        wait_until(Duration::from_secs(5), || ran(dir.path(), "a")
            == "new\none\ntwo\n"),
        "{:?}",
        ran(dir.path(), "a")
    );
}

#[test]
fn bad_events_get_usage_errors_or_json_errors_with_the_limit_and_the_agent_keeps_serving() {
    let dir = scratch();
    let a = Agent::start("ba", &["--event-handler", &deploy_handler(dir.path(), "a")]);
    let control = a.control.to_string();
    for args in [
        &["event", "--control", &control][..],
        &["event", "--control", &control, "--bogus", "deploy"][..],
        &["event", "--control", &control, "--coalesce=maybe", "deploy"][..],
    ] {
        let (code, _, err) = cli(args);
        assert_eq!(code, Some(64), "{args:?}: {err}");
    }
    let big = "x".repeat(600);
    let (code, _, err) = cli(&["event", "--control", &control, "deploy", &big]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("user event name and payload take 606 bytes; the limit is 512"),
        "{err}"
    );
    let bodies = [
        "{not json".to_string(),
        r#"{"payload":"x"}"#.to_string(),
        r#"{"name":"deploy","bogus":1}"#.to_string(),
        r#"{"name":"deploy","payload":7}"#.to_string(),
        r#"{"name":""}"#.to_string(),
        format!(r#"{{"name":"deploy","payload":"{big}"}}"#),
    ];
    for body in &bodies {
        let resp = post_raw(a.control, "/v1/event", body);
        assert!(
            resp.starts_with("HTTP/1.1 400") && resp.contains(r#""code":"bad_request""#),
            "{body}: {resp}"
        );
    }
    let resp = post_raw(a.control, "/v1/event", &bodies[5]);
    assert!(resp.contains("the limit is 512"), "{resp}");
    // Nothing ran, and the agent still works.
    let resp = post_raw(
        a.control,
        "/v1/event",
        r#"{"name":"deploy","payload":"ok"}"#,
    );
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.contains(r#""ltime""#),
        "{resp}"
    );
    assert!(wait_until(Duration::from_secs(5), || ran(dir.path(), "a") == "ok\n"));
}
