//! Membership as operators see it: join, failure, graceful leave.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::{Agent, cli, read, scratch, wait_until};

#[test]
fn five_agents_each_joining_a_different_running_agent_all_list_five_alive_within_two_seconds() {
    let mut agents = vec![Agent::start("a0", &[])];
    for i in 1..5 {
        let seed = agents[i - 1].join_arg();
        agents.push(Agent::start(&format!("a{i}"), &["--join", &seed]));
    }
    let started = Instant::now();
    let converged = wait_until(Duration::from_secs(2), || {
        agents.iter().all(|a| a.count_alive() == 5)
    });
    assert!(
        converged,
        "not all agents list 5 alive after {:?}: {:?}",
        started.elapsed(),
        agents
            .iter()
            .map(|a| (a.name.clone(), a.count_alive()))
            .collect::<Vec<_>>()
    );
    let (code, out, _) = cli(&["members", "--control", &agents[0].control.to_string()]);
    assert_eq!(code, Some(0));
    for i in 0..5 {
        assert!(out.contains(&format!("a{i} ")), "table lacks a{i}:\n{out}");
    }
}

#[test]
fn killed_agent_is_listed_failed_and_member_failed_handler_gets_its_line_and_environment() {
    let dir = scratch();
    let d = dir.path().display().to_string();
    let handler = format!(
        "member-failed=cat > {d}/$SERF_SELF_NAME.tmp && env | grep -E '^(SERF|SHOAL)_' | sort > {d}/$SERF_SELF_NAME.env && mv {d}/$SERF_SELF_NAME.tmp {d}/$SERF_SELF_NAME.stdin"
    );
    let a = Agent::start("fa", &["--event-handler", &handler, "--tag", "role=lb"]);
    let b = Agent::start(
        "fb",
        &["--join", &a.join_arg(), "--event-handler", &handler],
    );
    let mut victim = Agent::start(
        "victim",
        &[
            "--join",
            &b.join_arg(),
            "--tag",
            "role=web",
            "--tag",
            "dc=east",
        ],
    );
    assert!(wait_until(Duration::from_secs(5), || a.count_alive() == 3
        && b.count_alive() == 3));

    victim.kill9();
    for agent in [&a, &b] {
        assert!(
            wait_until(Duration::from_secs(10), || agent
                .status_of("victim")
                .as_deref()
                == Some("failed")),
            "{} lists victim as {:?}",
            agent.name,
            agent.status_of("victim")
        );
    }
    for name in ["fa", "fb"] {
        let stdin = dir.path().join(format!("{name}.stdin"));
        assert!(
            wait_until(Duration::from_secs(5), || stdin.exists()),
            "{name}: no member-failed run"
        );
        assert_eq!(
            read(&stdin).as_deref(),
            Some("victim\t127.0.0.1\tweb\tdc=east,role=web\n")
        );
        let env = read(&dir.path().join(format!("{name}.env"))).unwrap_or_default();
        assert!(env.contains("SERF_EVENT=member-failed\n"), "{env}");
        assert!(env.contains("SHOAL_EVENT=member-failed\n"), "{env}");
        assert!(env.contains(&format!("SERF_SELF_NAME={name}\n")), "{env}");
        assert!(env.contains("SHOAL_MEMBERS_FILE="), "{env}");
    }
    let env = read(&dir.path().join("fa.env")).unwrap_or_default();
    assert!(
        env.contains("SERF_SELF_ROLE=lb\n") && env.contains("SERF_TAG_ROLE=lb\n"),
        "{env}"
    );
}

#[test]
fn sigterm_exits_zero_and_the_others_list_it_left_and_run_member_leave_not_failed() {
    let dir = scratch();
    let d = dir.path().display().to_string();
    let handlers = [
        format!(
            "member-leave=cat > {d}/$SERF_SELF_NAME.tmp && mv {d}/$SERF_SELF_NAME.tmp {d}/$SERF_SELF_NAME.leave"
        ),
        format!("member-failed=touch {d}/$SERF_SELF_NAME.failed"),
    ];
    let mut flags: Vec<&str> = Vec::new();
    for h in &handlers {
        flags.extend(["--event-handler", h.as_str()]);
    }
    let a = Agent::start("la", &flags);
    let seed = a.join_arg();
    let mut fb = flags.clone();
    fb.extend(["--join", seed.as_str()]);
    let b = Agent::start("lb", &fb);
    let mut leaver = Agent::start("leaver", &["--join", &b.join_arg()]);
    assert!(wait_until(Duration::from_secs(5), || a.count_alive() == 3
        && b.count_alive() == 3));

    leaver.signal(Signal::SIGTERM);
    let status = leaver
        .wait_exit(Duration::from_secs(10))
        .expect("leaver did not exit");
    assert!(status.success(), "exit status {status:?}");
    for agent in [&a, &b] {
        assert!(
            wait_until(Duration::from_secs(5), || agent
                .status_of("leaver")
                .as_deref()
                == Some("left")),
            "{} lists leaver as {:?}",
            agent.name,
            agent.status_of("leaver")
        );
        let leave = dir.path().join(format!("{}.leave", agent.name));
        assert!(
            wait_until(Duration::from_secs(5), || leave.exists()),
            "{}: no member-leave",
            agent.name
        );
        assert_eq!(read(&leave).as_deref(), Some("leaver\t127.0.0.1\t\t\n"));
    }
    assert!(
        !dir.path().join("la.failed").exists() && !dir.path().join("lb.failed").exists(),
        "member-failed ran for a graceful leave"
    );
}

#[test]
fn leave_and_force_leave_commands_work_through_the_control_api() {
    let a = Agent::start("ca", &[]);
    let mut b = Agent::start("cb", &["--join", &a.join_arg()]);
    let mut c = Agent::start("cc", &["--join", &a.join_arg()]);
    assert!(wait_until(Duration::from_secs(5), || a.count_alive() == 3));

    let (code, out, err) = cli(&["leave", "--control", &b.control.to_string()]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        b.wait_exit(Duration::from_secs(5))
            .is_some_and(|s| s.success())
    );
    assert!(wait_until(Duration::from_secs(5), || a
        .status_of("cb")
        .as_deref()
        == Some("left")));

    let ctl = a.control.to_string();
    let (code, _, err) = cli(&["force-leave", "--control", &ctl, "cc"]);
    assert_ne!(code, Some(0), "force-leave of a live member must fail");
    assert!(err.contains("alive") && err.contains("not failed"), "{err}");
    c.kill9();
    assert!(wait_until(Duration::from_secs(10), || a
        .status_of("cc")
        .as_deref()
        == Some("failed")));
    let (code, _, err) = cli(&["force-leave", "--control", &ctl, "cc"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(a.status_of("cc").as_deref(), Some("left"));
    let (code, _, err) = cli(&["force-leave", "--control", &ctl, "nobody"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("nobody"), "{err}");
}

#[test]
fn members_filters_and_json_follow_serf() {
    let a = Agent::start("web-1", &["--tag", "role=web"]);
    let _b = Agent::start("db-1", &["--join", &a.join_arg(), "--tag", "role=db"]);
    assert!(wait_until(Duration::from_secs(5), || a.count_alive() == 2));
    let ctl = a.control.to_string();
    let (code, out, _) = cli(&[
        "members",
        "--control",
        &ctl,
        "--tag",
        "role=web",
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let ms = v["members"].as_array().expect("members array");
    assert_eq!(ms.len(), 1);
    assert_eq!(ms[0]["name"], "web-1");
    assert_eq!(ms[0]["status"], "alive");
    assert_eq!(ms[0]["addr"], a.gossip.to_string());
    assert_eq!(ms[0]["port"], a.gossip.port());
    assert_eq!(ms[0]["tags"]["role"], "web");
    let (_, out, _) = cli(&["members", "--control", &ctl, "--name", "db"]);
    assert!(
        out.is_empty(),
        "anchored: 'db' must not match 'db-1': {out}"
    );
    let (_, out, _) = cli(&[
        "members",
        "--control",
        &ctl,
        "--name",
        "db-.*",
        "--status",
        "alive",
    ]);
    assert!(out.starts_with("db-1 ") && out.contains("role=db"), "{out}");
}

#[test]
fn info_shows_the_local_health_score_and_the_tcp_fallback_count() {
    let a = Agent::start("lh", &[]);
    let ctl = a.control.to_string();
    let (code, out, err) = cli(&["info", "--control", &ctl]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("\thealth_score = 0\n"), "{out}");
    assert!(out.contains("\ttcp_fallbacks = 0\n"), "{out}");
    let (_, json, _) = cli(&["info", "--format", "json", "--control", &ctl]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["stats"]["health_score"], 0, "{json}");
}
