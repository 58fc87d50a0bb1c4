//! Primary selection (`--group`), end to end: real agents on loopback; each group script
//! appends a line (`STATE previous=NAME`) to a file named after the agent, so a test counts
//! how often each one ran.

use std::path::Path;
use std::time::Duration;

use crate::harness::{Agent, cli, raw_http, read, scratch, wait_until};

/// The scripts for an agent of group `lb`, recording into `dir/NAME`.
fn group_args(dir: &Path, priority: u32, extra: &[&str]) -> Vec<String> {
    let record = |state: &str| {
        format!(
            "echo \"{state} previous=$SHOAL_PREVIOUS_PRIMARY primary=$SHOAL_PRIMARY group=$SHOAL_GROUP\" >> {}/$SERF_SELF_NAME",
            dir.display()
        )
    };
    let mut args: Vec<String> = [
        "--group",
        "lb",
        "--priority",
        &priority.to_string(),
        "--on-primary",
        &record("primary"),
        "--on-backup",
        &record("backup"),
        "--on-fault",
        &record("fault"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn start(dir: &Path, name: &str, priority: u32, extra: &[&str]) -> Agent {
    let args = group_args(dir, priority, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Agent::start(name, &args)
}

/// How many lines of `dir/name` start with `state`.
fn runs(dir: &Path, name: &str, state: &str) -> usize {
    read(&dir.join(name)).map_or(0, |t| {
        t.lines()
            .filter(|l| l.split(' ').next() == Some(state))
            .count()
    })
}

/// Whether `agent` takes `expected` for its group's primary.
fn sees(agent: &Agent, expected: &str) -> bool {
    agent
        .primary()
        .is_some_and(|p| p.primary.as_deref() == Some(expected))
}

/// `shoal primary` against `agent`: (exit code, stdout).
fn shoal_primary(agent: &Agent) -> (Option<i32>, String) {
    let (code, out, _) = cli(&["primary", "--control", &agent.control_addr]);
    (code, out)
}

fn all_see(agents: &[&Agent], expected: &str) -> bool {
    wait_until(Duration::from_secs(10), || {
        agents.iter().all(|a| sees(a, expected))
    })
}

#[test]
fn exactly_one_of_three_runs_on_primary_and_a_killed_primary_is_replaced_by_the_next_then_takes_the_role_back()
 {
    let dir = scratch();
    let d = dir.path();
    let a = start(d, "pa", 150, &[]);
    let join = a.join_arg();
    let b = start(d, "pb", 100, &["--join", &join]);
    let c = start(d, "pc", 50, &["--join", &join]);
    assert!(all_see(&[&a, &b, &c], "pa"), "not all see pa as primary");
    assert_eq!(shoal_primary(&b), (Some(0), "pa\n".to_string()));
    assert!(wait_until(Duration::from_secs(5), || runs(
        d, "pa", "primary"
    ) == 1));
    assert!(wait_until(Duration::from_secs(5), || {
        runs(d, "pb", "backup") == 1 && runs(d, "pc", "backup") == 1
    }));
    assert_eq!((runs(d, "pb", "primary"), runs(d, "pc", "primary")), (0, 0));
    let info = b.info().primary.expect("info shows the group");
    assert_eq!(
        (
            info.group.as_str(),
            info.priority,
            info.state.as_deref(),
            info.primary.as_deref()
        ),
        ("lb", 100, Some("backup"), Some("pa"))
    );

    let mut a = a;
    a.kill9();
    assert!(all_see(&[&b, &c], "pb"), "the survivors did not move to pb");
    assert_eq!(shoal_primary(&b), (Some(0), "pb\n".to_string()));
    assert_eq!(shoal_primary(&c), (Some(0), "pb\n".to_string()));
    assert!(wait_until(Duration::from_secs(5), || runs(
        d, "pb", "primary"
    ) == 1));
    let line = read(&d.join("pb")).unwrap_or_default();
    assert!(
        line.contains("primary previous=pa primary=pb group=lb"),
        "{line}"
    );
    assert_eq!(runs(d, "pc", "primary"), 0);

    // Back, with preemption on: it takes the role back; pb runs on-backup.
    let a = start(d, "pa", 150, &["--join", &b.join_arg()]);
    assert!(
        all_see(&[&a, &b, &c], "pa"),
        "pa did not take the role back"
    );
    assert!(wait_until(Duration::from_secs(5), || {
        runs(d, "pa", "primary") == 2 && runs(d, "pb", "backup") == 2
    }));
    assert_eq!(runs(d, "pb", "primary"), 1, "pb's on-primary ran once");
    assert_eq!(runs(d, "pc", "primary"), 0);
}

#[test]
fn with_preempt_false_a_returning_higher_priority_member_leaves_the_working_primary_alone() {
    let dir = scratch();
    let d = dir.path();
    let off = ["--preempt=false"];
    let mut a = start(d, "na", 150, &off);
    let b = start(d, "nb", 100, &["--preempt=false", "--join", &a.join_arg()]);
    assert!(all_see(&[&a, &b], "na"));
    a.kill9();
    assert!(all_see(&[&b], "nb"));
    let a = start(d, "na", 150, &["--preempt=false", "--join", &b.join_arg()]);
    // The newcomer sees nb's claim: it is a backup, and both agree on nb.
    assert!(wait_until(Duration::from_secs(10), || {
        a.primary().is_some_and(|p| {
            p.primary.as_deref() == Some("nb") && p.state.as_deref() == Some("backup")
        })
    }));
    assert!(sees(&b, "nb"));
    assert_eq!(shoal_primary(&a), (Some(0), "nb\n".to_string()));
    assert_eq!(
        runs(d, "na", "primary"),
        1,
        "only its first life ran on-primary"
    );
    assert_eq!(runs(d, "nb", "primary"), 1);
    let answer = a.primary().expect("answer");
    let claims: Vec<_> = answer
        .eligible
        .iter()
        .map(|m| (m.name.as_str(), m.claims))
        .collect();
    assert_eq!(claims, [("na", false), ("nb", true)]);
}

#[test]
fn a_primary_stopped_with_sigterm_runs_on_backup_before_it_leaves_and_the_next_takes_over() {
    let dir = scratch();
    let d = dir.path();
    let mut a = start(d, "ta", 150, &[]);
    let b = start(d, "tb", 100, &["--join", &a.join_arg()]);
    assert!(all_see(&[&a, &b], "ta"));
    a.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        a.wait_exit(Duration::from_secs(10)).is_some(),
        "ta did not exit"
    );
    // The first member, with no one to join, was primary from the start: its one on-backup
    // ran before it left.
    assert_eq!(runs(d, "ta", "backup"), 1, "on-backup before leaving");
    assert_eq!(runs(d, "ta", "primary"), 1);
    assert!(all_see(&[&b], "tb"));
    assert!(wait_until(Duration::from_secs(5), || runs(
        d, "tb", "primary"
    ) == 1));
}

#[test]
fn shoal_primary_exits_1_without_a_primary_and_refuses_bad_groups() {
    let a = Agent::start("qa", &["--group", "lb"]);
    assert!(wait_until(Duration::from_secs(5), || sees(&a, "qa")));
    let (code, out, err) = cli(&["primary", "--control", &a.control_addr, "db"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("no primary in group \"db\""), "{err}");
    let (code, out, _) = cli(&["primary", "--control", &a.control_addr, "--format", "json"]);
    assert_eq!(code, Some(0));
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(json["group"], "lb");
    assert_eq!(json["primary"], "qa");
    assert_eq!(json["state"], "primary");
    assert_eq!(json["eligible"][0]["name"], "qa");
    let get = |path: &str| {
        raw_http(
            a.control,
            &format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
        )
    };
    let bad = get("/v1/primary?group=bad%20group");
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    assert!(
        bad.contains("bad_request") && bad.contains("must be 1 to 128"),
        "{bad}"
    );
    let typo = get("/v1/primary?grup=lb");
    assert!(
        typo.starts_with("HTTP/1.1 400") && typo.contains("unknown parameter"),
        "{typo}"
    );
    let (code, _, err) = cli(&["primary", "--control", &a.control_addr, "bad group"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("invalid group"), "{err}");
    // Another group, seen from outside: computed from the view.
    let (code, out, _) = cli(&["primary", "--control", &a.control_addr, "lb"]);
    assert_eq!((code, out.as_str()), (Some(0), "qa\n"));
    let plain = Agent::start("qb", &["--join", &a.join_arg()]);
    assert!(wait_until(Duration::from_secs(5), || plain.count_alive() == 2));
    let (code, _, err) = cli(&["primary", "--control", &plain.control_addr]);
    assert_eq!(code, Some(2));
    assert!(err.contains("in no group"), "{err}");
    let (code, out, _) = cli(&["primary", "--control", &plain.control_addr, "lb"]);
    assert_eq!((code, out.as_str()), (Some(0), "qa\n"));
}

#[test]
fn a_failing_check_demotes_the_primary_after_its_fall_count_and_rise_brings_it_back() {
    let dir = scratch();
    let d = dir.path();
    let (down, fails, passes) = (d.join("fa-down"), d.join("fails"), d.join("passes"));
    // Critical (exit 2) while `fa-down` exists; each run leaves a line saying which it was.
    let check = format!(
        "web=script:if [ -e {down} ]; then echo x >> {fails}; exit 2; else echo x >> {passes}; fi",
        down = down.display(),
        fails = fails.display(),
        passes = passes.display()
    );
    // fa's scripts note how many failing (or passing) runs they came after.
    let record = |state: &str, counted: &Path| {
        format!(
            "echo \"{state} $(cat {} 2>/dev/null | wc -l)\" >> {}/fa",
            counted.display(),
            d.display()
        )
    };
    let timing = [
        "--check-interval",
        "100ms",
        "--check-fall",
        "3",
        "--check-rise",
        "2",
    ];
    let mut args: Vec<String> = [
        "--group",
        "lb",
        "--priority",
        "150",
        "--check",
        &check,
        "--on-fault",
        &record("fault", &fails),
        "--on-primary",
        &record("primary", &passes),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(timing.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = Agent::start("fa", &args);
    let b = start(
        d,
        "fb",
        100,
        &["--join", &a.join_arg(), "--check", "web=script:true"],
    );
    assert!(all_see(&[&a, &b], "fa"));
    let faults_before = runs(d, "fa", "fault");
    assert!(wait_until(Duration::from_secs(5), || runs(
        d, "fa", "primary"
    ) == 1));

    std::fs::write(&down, "").expect("fail the check");
    assert!(
        all_see(&[&a, &b], "fb"),
        "fb did not take over from the failing fa"
    );
    assert!(wait_until(Duration::from_secs(5), || {
        runs(d, "fa", "fault") == faults_before + 1 && runs(d, "fb", "primary") == 1
    }));
    let text = read(&d.join("fa")).unwrap_or_default();
    let failing_runs: usize = text
        .lines()
        .rfind(|l| l.starts_with("fault "))
        .and_then(|l| l["fault ".len()..].trim().parse().ok())
        .unwrap_or(0);
    assert!(
        failing_runs >= 3,
        "on-fault ran after {failing_runs} failing runs: {text}"
    );
    let state = a.primary().and_then(|p| p.state);
    assert_eq!(state.as_deref(), Some("fault"));

    // Passing again (two runs for rise 2): fa takes the role back; fb steps down.
    let passes_before = read(&passes).map_or(0, |t| t.lines().count());
    std::fs::remove_file(&down).expect("heal the check");
    assert!(all_see(&[&a, &b], "fa"), "fa did not come back");
    assert!(wait_until(Duration::from_secs(5), || {
        runs(d, "fa", "primary") == 2 && runs(d, "fb", "backup") == 2
    }));
    let text = read(&d.join("fa")).unwrap_or_default();
    let passing_runs: usize = text
        .lines()
        .rfind(|l| l.starts_with("primary "))
        .and_then(|l| l["primary ".len()..].trim().parse().ok())
        .unwrap_or(0);
    assert!(
        passing_runs >= passes_before + 2,
        "on-primary ran after {} passing runs: {text}",
        passing_runs.saturating_sub(passes_before)
    );
}

#[test]
fn a_primary_that_leaves_with_shoal_leave_runs_on_backup() {
    let dir = scratch();
    let d = dir.path();
    let mut a = start(d, "la", 100, &[]);
    assert!(wait_until(Duration::from_secs(5), || runs(
        d, "la", "primary"
    ) == 1));
    let (code, out, err) = cli(&["leave", "--control", &a.control_addr]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        a.wait_exit(Duration::from_secs(10)).is_some(),
        "la did not exit"
    );
    assert_eq!(
        runs(d, "la", "backup"),
        1,
        "{:?}; log:\n{}",
        read(&d.join("la")),
        a.log()
    );
    let line = read(&d.join("la")).unwrap_or_default();
    assert!(
        line.contains("backup previous=la primary= group=lb"),
        "{line}"
    );
}
