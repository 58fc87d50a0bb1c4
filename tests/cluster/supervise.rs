//! `shoal agent [flags] -- COMMAND ARGS`: the agent supervises the app.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::{Agent, read, scratch, wait_until};

#[test]
fn when_the_app_exits_the_agent_leaves_and_exits_with_the_apps_code() {
    let a = Agent::start("sa", &[]);
    let seed = a.join_arg();
    let mut b = Agent::start(
        "app-host",
        &["--join", &seed, "--", "sh", "-c", "sleep 1; exit 7"],
    );
    assert!(wait_until(Duration::from_secs(5), || a.count_alive() == 2));
    let status = b
        .wait_exit(Duration::from_secs(10))
        .expect("agent exits with its app");
    assert_eq!(status.code(), Some(7));
    assert!(wait_until(Duration::from_secs(5), || a
        .status_of("app-host")
        .as_deref()
        == Some("left")));
}

#[test]
fn on_sigterm_the_agent_leaves_first_then_stops_the_app_and_forwards_sighup() {
    let dir = scratch();
    let d = dir.path().display().to_string();
    let leave = format!("member-leave=date +%s%N > {d}/left-at");
    let a = Agent::start("sb", &["--event-handler", &leave]);
    let seed = a.join_arg();
    let app = format!(
        "trap 'echo hup >> {d}/hups' HUP; trap 'date +%s%N > {d}/term-at; exit 0' TERM; \
         touch {d}/up; while :; do sleep 0.05; done"
    );
    let mut b = Agent::start(
        "web",
        &[
            "--join",
            &seed,
            "--stop-delay",
            "300ms",
            "--",
            "sh",
            "-c",
            &app,
        ],
    );
    assert!(wait_until(Duration::from_secs(5), || a.count_alive() == 2
        && dir.path().join("up").exists()));
    b.signal(Signal::SIGHUP);
    assert!(wait_until(Duration::from_secs(5), || read(
        &dir.path().join("hups")
    )
    .is_some()));
    b.signal(Signal::SIGTERM);
    let status = b.wait_exit(Duration::from_secs(10)).expect("agent exits");
    assert_eq!(status.code(), Some(0), "exit status is the app's");
    assert_eq!(a.status_of("web").as_deref(), Some("left"));
    let at = |f: &str| -> u128 {
        read(&dir.path().join(f))
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {f}"))
    };
    assert!(wait_until(Duration::from_secs(5), || dir
        .path()
        .join("left-at")
        .exists()));
    assert!(
        at("left-at") < at("term-at"),
        "the app was stopped before the others saw the leave"
    );
}

#[test]
fn as_pid_1_the_agent_reaps_orphaned_processes() {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    });
    if !root {
        eprintln!("SKIP: creating a PID namespace needs root");
        return;
    }
    // The subshell exits at once; its `sleep 0.2` is orphaned, re-parented to PID 1 (the
    // agent) and must be reaped when it exits.
    let app = "for i in 1 2 3; do (sleep 0.2 &); done; exec sleep 30";
    let wrapper = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"];
    let a = Agent::start_wrapped(&wrapper, "init", &["--", "sh", "-c", app]);
    let reaped = || a.log().matches("reaped an orphaned process").count() >= 3;
    assert!(
        wait_until(Duration::from_secs(5), reaped),
        "log:\n{}",
        a.log()
    );
}

#[test]
fn the_health_check_passes_only_while_joined() {
    use crate::harness::cli;
    let a = Agent::start("h1", &[]);
    let ctl = a.control.to_string();
    let (code, _, err) = cli(&["info", "--joined", "--control", &ctl]);
    assert_eq!(
        code,
        Some(1),
        "alone must be unhealthy (Docker reads 1 as unhealthy)"
    );
    assert!(err.contains("not joined"), "{err}");
    let _b = Agent::start("h2", &["--join", &a.join_arg()]);
    assert!(wait_until(Duration::from_secs(5), || cli(&[
        "info",
        "--joined",
        "--control",
        &ctl
    ])
    .0 == Some(0)));
    let (code, _, _) = cli(&["info", "--joined", "--control", "127.0.0.1:1"]);
    assert_eq!(code, Some(1), "no agent answering is unhealthy too");
}
