//! Issue 11, part 5: the operator's bug list, each as the operator met it, through the real
//! binary on loopback.

use std::process::{Child, Stdio};
use std::time::Duration;

use shoal_testkit::clean_command;

use crate::harness::{Agent, SHOAL, cli, scratch, tags_of, wait_until};

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind")
}

/// `shoal agent ARGS` on loopback (port 0, local profile), stderr to a file; killed if it
/// is still running after `limit`. Returns its exit code and its stderr.
fn run_agent_until_exit(args: &[&str], limit: Duration) -> (Option<i32>, String) {
    let dir = scratch();
    let log = dir.path().join("agent.log");
    let log_file = std::fs::File::create(&log).expect("log");
    let bind: &[&str] = if args.contains(&"--bind") {
        &[]
    } else {
        &["--bind", "127.0.0.1:0"]
    };
    let mut child: Child = clean_command(SHOAL)
        .args(["agent", "--node", "op"])
        .args(bind)
        .args(["--control", "127.0.0.1:0", "--profile", "local"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("spawn shoal");
    let mut code = None;
    let exited = wait_until(limit, || match child.try_wait() {
        Ok(Some(status)) => {
            code = status.code();
            true
        }
        _ => false,
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
    (code, std::fs::read_to_string(&log).unwrap_or_default())
}

#[test]
fn serf_log_level_names_work_in_any_case_and_a_typo_exits_64() {
    let seed = format!("127.0.0.1:{}", free_port());
    for level in ["err", "ERR", "Error"] {
        let (code, log) = run_agent_until_exit(
            &["--log-level", level, "--join", &seed, "--retry-max", "1"],
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(1), "{level}: {log}");
        assert!(
            log.contains("ERROR"),
            "{level}: the error line is shown: {log}"
        );
        assert!(!log.contains("INFO"), "{level}: info lines are not: {log}");
    }
    let (code, log) = run_agent_until_exit(
        &[
            "--log-level",
            "warning",
            "--join",
            &seed,
            "--retry-max",
            "1",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("WARN") && !log.contains("INFO"), "{log}");
    for typo in ["inof", "shoal_core", "debug,shoal=loud"] {
        let (code, _, err) = cli(&["agent", "--log-level", typo]);
        assert_eq!(code, Some(64), "{typo}: {err}");
        assert!(err.contains("invalid --log-level"), "{typo}: {err}");
    }
}

#[test]
fn an_agent_alone_after_retry_max_join_attempts_exits_1() {
    let seed = format!("127.0.0.1:{}", free_port());
    let (code, log) = run_agent_until_exit(
        &["--join", &seed, "--retry-max", "2"],
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("giving up joining"), "{log}");
}

#[test]
fn a_tag_flag_keeps_its_commas_and_shoal_tag_is_a_list() {
    let a = Agent::start("commas", &["--tag", "list=a,b", "--tag", "role=web"]);
    let tags = tags_of(&a, "commas").expect("listed");
    assert_eq!(
        tags.get("list").map(String::as_str),
        Some("a,b"),
        "{tags:?}"
    );
    assert_eq!(
        tags.get("role").map(String::as_str),
        Some("web"),
        "{tags:?}"
    );
    let b = Agent::start_env("envtags", &[], &[("SHOAL_TAG", "x=1,y=2")]);
    let tags = tags_of(&b, "envtags").expect("listed");
    assert_eq!(
        (tags.get("x"), tags.get("y")),
        (Some(&"1".to_string()), Some(&"2".to_string())),
        "{tags:?}"
    );
}

#[test]
fn a_bind_error_says_its_cause_once() {
    let a = Agent::start("first", &[]);
    let taken = a.gossip.to_string();
    let (code, log) = run_agent_until_exit(&["--bind", &taken], Duration::from_secs(10));
    assert_eq!(code, Some(2), "{log}");
    let line = log
        .lines()
        .find(|l| l.starts_with("shoal: "))
        .unwrap_or_else(|| panic!("no error line: {log}"));
    assert!(line.contains(&taken), "{line}");
    assert_eq!(line.matches("in use").count(), 1, "{line}");
}

#[test]
fn a_failed_handler_logs_its_exit_code_without_rust_debug_output() {
    let a = Agent::start("fails", &["--event-handler", "member-join=exit 3"]);
    assert!(
        wait_until(Duration::from_secs(10), || a
            .log()
            .contains("handler failed")),
        "{}",
        a.log()
    );
    let log = a.log();
    let line = log
        .lines()
        .find(|l| l.contains("handler failed"))
        .unwrap_or_default();
    assert!(line.contains("code=3"), "{line}");
    assert!(!log.contains("Some("), "{log}");
}

#[test]
fn size_and_file_errors_exit_64_before_start_naming_the_setting() {
    let dir = scratch();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "x").expect("write");
    let big: Vec<String> = (0..5)
        .flat_map(|i| ["--tag".to_string(), format!("k{i}={}", "v".repeat(1000))])
        .collect();
    let mut tag_args = vec!["agent"];
    tag_args.extend(big.iter().map(String::as_str));
    let long_name = "n".repeat(200);
    let bad_snapshot = plain.join("snapshot.json").display().to_string();
    let missing = dir.path().join("missing.tmpl").display().to_string();
    let template = format!("{missing}:{}", dir.path().join("out").display());
    let cases: [(&[&str], &str); 5] = [
        (&tag_args, "4096"),
        (&["agent", "--node", &long_name], "128"),
        (&["agent", "--snapshot", &bad_snapshot], "--snapshot"),
        (&["agent", "--template", &template], "missing.tmpl"),
        (&["agent", "--bind", "127.0.0.1:99999"], "port 99999"),
    ];
    for (args, needle) in cases {
        let (code, out, err) = cli(args);
        assert_eq!(code, Some(64), "{:?}: {err}", &args[..2]);
        assert!(err.contains(needle), "{:?}: {err}", &args[..2]);
        assert!(out.is_empty(), "no readiness line: {out}");
    }
}

/// Issue 11: Serf's spellings (`-node=web-1`, `-bind ADDR`, `-rejoin=false`) start the agent,
/// in Go's syntax and in clap's, mixed; an unknown one is named without clap's `-- -n` advice,
/// which would start `-n` as a supervised app.
#[test]
fn serf_style_single_dash_flags_start_the_agent_in_both_spellings() {
    let dir = scratch();
    let joins = dir.path().join("joins");
    let handler = format!("member-join=echo $SERF_EVENT >> {}", joins.display());
    let a = Agent::try_start_exact(
        &[
            "agent",
            "-node=web-1",
            "-bind=127.0.0.1:0",
            "-control",
            "127.0.0.1:0",
            "-profile=local",
            "-tag",
            "role=web",
            "-tag=list=a,b",
            "-event-handler",
            &handler,
            "-rejoin=false",
            "-replay",
            "-log-level=INFO",
        ],
        &[],
    )
    .expect("Go-style flags start the agent");
    assert_eq!(a.name, "web-1");
    let b = Agent::try_start_exact(
        &[
            "agent",
            "-node",
            "web-2",
            "--bind=0.0.0.0:0",
            "-iface",
            "lo",
            "--control",
            "127.0.0.1:0",
            "--profile",
            "local",
            "-retry-join",
            &a.join_arg(),
            "-role=db",
        ],
        &[],
    )
    .expect("mixed spellings start the agent");
    assert!(
        wait_until(Duration::from_secs(10), || a.count_alive() == 2),
        "web-2 joined through -retry-join"
    );
    let tags = tags_of(&a, "web-1").expect("tags");
    assert_eq!(
        (tags["role"].as_str(), tags["list"].as_str()),
        ("web", "a,b")
    );
    assert_eq!(tags_of(&a, "web-2").expect("tags")["role"], "db");
    assert_eq!(
        b.gossip.ip().to_string(),
        "127.0.0.1",
        "-iface lo gave lo's address"
    );
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(&joins)
            .is_ok_and(|t| t.contains("member-join"))),
        "-event-handler took effect"
    );
    drop(b);
    let (code, _, err) = cli(&["agent", "-nodes=web-1"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("-nodes=web-1") && err.contains("shoal agent --help"),
        "{err}"
    );
    assert!(
        !err.contains("-- -n"),
        "never suggest supervising `-n`: {err}"
    );
}

#[test]
fn after_a_name_conflict_the_winner_lists_the_name_once() {
    let dir = scratch();
    let leaves = dir.path().join("leaves");
    let handler = format!("member-leave=cat >> {}", leaves.display());
    let a = Agent::start("dup", &["--event-handler", &handler]);
    let mut b = Agent::start("dup", &["--join", &a.join_arg()]);
    let status = b.wait_exit(Duration::from_secs(15));
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{}", b.log());
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(&leaves)
            .is_ok_and(|t| t.contains(&b.gossip.ip().to_string()))),
        "the winner saw the loser leave"
    );
    let named: Vec<_> = a
        .try_members()
        .expect("members")
        .into_iter()
        .filter(|m| m.name == "dup")
        .collect();
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(named[0].status, "alive");
    assert_eq!(named[0].addr, a.gossip.to_string());
}

#[test]
fn a_node_that_joins_later_lists_left_members_as_the_older_nodes_do() {
    let a = Agent::start("old-a", &[]);
    let b = Agent::start("old-b", &["--join", &a.join_arg()]);
    let mut gone = Agent::start("gone", &["--join", &a.join_arg()]);
    assert!(wait_until(Duration::from_secs(10), || a.count_alive() == 3
        && b.count_alive() == 3));
    gone.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(gone.wait_exit(Duration::from_secs(10)).is_some());
    assert!(wait_until(Duration::from_secs(10), || {
        a.status_of("gone").as_deref() == Some("left")
            && b.status_of("gone").as_deref() == Some("left")
    }));
    let late = Agent::start("late", &["--join", &a.join_arg()]);
    assert!(
        wait_until(Duration::from_secs(10), || late.count_alive() == 3),
        "late {:?}\n{}",
        late.try_members(),
        late.log()
    );
    let view = |agent: &Agent| -> Vec<(String, String)> {
        agent
            .try_members()
            .unwrap_or_default()
            .into_iter()
            .map(|m| (m.name, m.status))
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(10), || view(&late) == view(&a)
            && view(&a) == view(&b)),
        "late {:?}, a {:?}, b {:?}",
        view(&late),
        view(&a),
        view(&b)
    );
}

/// A file of the repository, by its path from the root.
fn repo_file(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Issue 11: docs/docker.md described a health check (`shoal info` every 30 s) the image did
/// not have.
#[test]
fn the_docker_docs_describe_the_images_health_check_and_tag() {
    let dockerfile = repo_file("docker/Dockerfile");
    let at = dockerfile.find("HEALTHCHECK").expect("a HEALTHCHECK");
    let check: String = dockerfile[at..]
        .lines()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let interval = check
        .split_whitespace()
        .find_map(|w| w.strip_prefix("--interval="))
        .and_then(|v| v.strip_suffix('s'))
        .expect("an interval in seconds");
    assert!(
        check.contains(r#"CMD ["shoal", "info", "--joined"]"#),
        "{check}"
    );
    let docs = repo_file("docs/docker.md");
    let row = docs
        .lines()
        .find(|l| l.starts_with("| health |"))
        .expect("a health row");
    assert!(
        row.contains("`shoal info --joined`") && row.contains(&format!("every {interval} s")),
        "docs/docker.md: {row}\nDockerfile: {check}"
    );
    // The demo builds on shoal:dev: every image the docs build is that tag.
    for line in docs.lines().filter(|l| l.contains("docker build")) {
        assert!(!line.contains("-t shoal "), "{line}");
        assert!(!line.contains("-t shoal\""), "{line}");
    }
}

/// Issue 11: docs/architecture.md's "Not built yet" list must name only what the binary lacks.
#[test]
fn what_the_architecture_lists_as_not_built_is_indeed_missing() {
    let docs = repo_file("docs/architecture.md");
    let section = docs
        .split("## Not built yet")
        .nth(1)
        .expect("the section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    let mut names = Vec::new();
    for item in section.split("\n- ").skip(1) {
        let head = item.split("`: ").next().unwrap_or_default();
        names.extend(head.split('`').skip(1).step_by(2).map(str::to_string));
    }
    assert!(!names.is_empty(), "{names:?}");
    let a = Agent::start("docs", &[]);
    for name in &names {
        if let Some(path) = name.strip_prefix('/') {
            let resp = crate::harness::raw_http(
                a.control,
                &format!("GET /{path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
            );
            assert!(resp.starts_with("HTTP/1.1 404"), "{name} exists: {resp}");
            continue;
        }
        let mut args: Vec<&str> = match name.strip_prefix("shoal ") {
            Some(rest) => rest.split_whitespace().collect(),
            None => vec!["agent", name.as_str()],
        };
        args.push("--help");
        let (code, _, err) = cli(&args);
        assert_eq!(
            code,
            Some(64),
            "{name} is built now: update the list ({err})"
        );
    }
}
