//! Issue 11, parts 2 and 3: Serf's config files, config dirs and command lines start a shoal
//! agent unchanged.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::{Agent, cli, read, scratch, script, wait_until};

/// ExecStart of Debian's `serf` package unit (/lib/systemd/system/serf.service).
const DEBIAN_EXEC_START: &str = "/usr/bin/serf agent -config-dir=/etc/serf/";

/// A handler that appends `$SERF_EVENT` (and `$SERF_USER_EVENT`) to `out`.
fn recorder(dir: &Path, name: &str, out: &Path) -> String {
    script(
        dir,
        name,
        &format!(
            "#!/bin/sh\necho \"$SERF_EVENT $SERF_USER_EVENT\" >> {}\n",
            out.display()
        ),
    )
    .display()
    .to_string()
}

fn json_list(items: &[&str]) -> String {
    serde_json::to_string(items).expect("json")
}

/// The control port on port 0: the only setting a Serf file cannot carry (Serf has none).
const CONTROL: (&str, &str) = ("SHOAL_CONTROL", "127.0.0.1:0");

/// The tags and handlers of Serf's documented example file ("Configuration Files"), the
/// handlers pointed at scripts in a temp dir, plus a node name and a join target.
#[test]
fn a_serf_json_config_file_gives_the_agent_its_name_tags_handlers_and_joins() {
    let dir = scratch();
    let seed = Agent::start("seed", &[]);
    let all = dir.path().join("all");
    let deploys = dir.path().join("deploys");
    let handle = recorder(dir.path(), "handle.sh", &all);
    let deploy = recorder(dir.path(), "deploy.sh", &deploys);
    let file = dir.path().join("serf.json");
    let text = format!(
        r#"{{
  "node_name": "lb-1",
  "bind": "127.0.0.1:0",
  "profile": "local",
  "start_join": {join},
  "tags": {{
    "role": "load-balancer",
    "datacenter": "east"
  }},
  "event_handlers": [
    "{handle}",
    "user:deploy={deploy}"
  ]
}}"#,
        join = json_list(&[&seed.join_arg()]),
    );
    std::fs::write(&file, text).expect("write");
    let path = file.display().to_string();
    let lb = Agent::try_start_exact(&["agent", "-config-file", &path], &[CONTROL])
        .expect("agent starts from a Serf file");
    assert_eq!(lb.name, "lb-1");
    assert!(
        wait_until(Duration::from_secs(10), || seed
            .status_of("lb-1")
            .as_deref()
            == Some("alive")),
        "the seed sees lb-1 joined through start_join"
    );
    let tags = crate::harness::tags_of(&seed, "lb-1").expect("tags");
    assert_eq!(tags["role"], "load-balancer");
    assert_eq!(tags["datacenter"], "east");
    assert!(
        wait_until(Duration::from_secs(10), || read(&all)
            .is_some_and(|t| t.contains("member-join"))),
        "handle.sh ran for every event"
    );
    let (code, _, err) = cli(&["event", "--control", &seed.control_addr, "deploy", "v1"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        wait_until(Duration::from_secs(10), || read(&deploys)
            .is_some_and(|t| t.contains("user deploy"))),
        "user:deploy=deploy.sh ran"
    );
}

/// Debian's unit, `serf` replaced by `shoal` and /etc/serf/ by a temp dir holding the same
/// settings split over files as a config-management tool writes them; stopped with the
/// unit's KillSignal=SIGINT, the agent leaves the cluster and exits 0.
#[test]
fn debians_serf_unit_command_line_runs_with_only_the_binary_name_changed() {
    if let Ok(unit) = std::fs::read_to_string("/lib/systemd/system/serf.service") {
        assert!(
            unit.lines()
                .any(|l| l == format!("ExecStart={DEBIAN_EXEC_START}")),
            "the unit's ExecStart changed: {unit}"
        );
    }
    let dir = scratch();
    let seed = Agent::start("seed", &[]);
    let etc = dir.path().join("etc/serf");
    std::fs::create_dir_all(&etc).expect("mkdir");
    let joins = dir.path().join("joins");
    let handler = recorder(dir.path(), "joined.sh", &joins);
    let files = [
        (
            "00-agent.json",
            r#"{"node_name": "debian-1", "bind": "127.0.0.1:0", "profile": "local",
                "rpc_addr": "127.0.0.1:0"}"#
                .to_string(),
        ),
        ("10-tags.json", r#"{"tags": {"role": "web"}}"#.to_string()),
        (
            "20-handlers.json",
            format!(
                r#"{{"event_handlers": {}}}"#,
                json_list(&[&format!("member-join={handler}")])
            ),
        ),
        (
            "30-join.json",
            format!(r#"{{"retry_join": {}}}"#, json_list(&[&seed.join_arg()])),
        ),
        ("40-zone.toml", "[tags]\nzone = \"a\"\n".to_string()),
        (
            "README",
            "{ not a config file, skipped as Serf skips it".to_string(),
        ),
    ];
    for (name, text) in &files {
        std::fs::write(etc.join(name), text).expect("write");
    }
    let etc_arg = format!("{}/", etc.display());
    let words: Vec<String> = DEBIAN_EXEC_START
        .split_whitespace()
        .skip(1)
        .map(|w| w.replace("/etc/serf/", &etc_arg))
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let mut agent = Agent::try_start_exact(&words, &[CONTROL]).expect("the unit's command runs");
    assert_eq!(agent.name, "debian-1");
    assert!(
        wait_until(Duration::from_secs(10), || seed
            .status_of("debian-1")
            .as_deref()
            == Some("alive")),
        "joined through retry_join"
    );
    let tags = crate::harness::tags_of(&seed, "debian-1").expect("tags");
    assert_eq!((tags["role"].as_str(), tags["zone"].as_str()), ("web", "a"));
    assert!(
        wait_until(Duration::from_secs(10), || read(&joins)
            .is_some_and(|t| t.contains("member-join"))),
        "the member-join handler from 20-handlers.json ran"
    );
    agent.signal(Signal::SIGINT);
    let status = agent.wait_exit(Duration::from_secs(15));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", agent.log());
    assert!(
        wait_until(Duration::from_secs(10), || seed
            .status_of("debian-1")
            .as_deref()
            == Some("left")),
        "SIGINT left the cluster gracefully"
    );
}

#[test]
fn an_unknown_key_in_a_config_dir_names_the_file_and_the_key_and_exits_64() {
    let dir = scratch();
    std::fs::write(dir.path().join("00-ok.json"), r#"{"node_name": "x"}"#).expect("write");
    let bad = dir.path().join("10-bad.json");
    std::fs::write(&bad, r#"{"node_name": "x", "tagz": {"role": "web"}}"#).expect("write");
    let arg = format!("-config-dir={}", dir.path().display());
    let (code, _, err) = cli(&["agent", &arg]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains(&bad.display().to_string()), "{err}");
    assert!(err.contains("\"tagz\""), "{err}");
}

/// Serf's `skip_leave_on_interrupt` and `leave_on_terminate = false`: the agent exits without
/// leaving, so the others see it fail; without them, shoal leaves on both signals.
#[test]
fn skip_leave_on_interrupt_and_leave_on_terminate_false_exit_without_leaving() {
    let dir = scratch();
    let seed = Agent::start("seed", &[]);
    let json = dir.path().join("skip.json");
    std::fs::write(&json, r#"{"skip_leave_on_interrupt": true}"#).expect("write");
    let toml = dir.path().join("term.toml");
    std::fs::write(&toml, "leave_on_terminate = false\n").expect("write");
    let join = seed.join_arg();
    let json = json.display().to_string();
    let toml = toml.display().to_string();
    let mut int = Agent::start("int", &["--join", &join, "--config-file", &json]);
    let mut term = Agent::start("term", &["--join", &join, "--config", &toml]);
    let mut plain = Agent::start("plain", &["--join", &join]);
    assert!(
        wait_until(Duration::from_secs(10), || seed.count_alive() == 4),
        "all joined"
    );
    int.signal(Signal::SIGINT);
    term.signal(Signal::SIGTERM);
    plain.signal(Signal::SIGTERM);
    for agent in [&mut int, &mut term, &mut plain] {
        let status = agent.wait_exit(Duration::from_secs(15));
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", agent.log());
    }
    assert!(
        wait_until(Duration::from_secs(15), || {
            seed.status_of("int").as_deref() == Some("failed")
                && seed.status_of("term").as_deref() == Some("failed")
                && seed.status_of("plain").as_deref() == Some("left")
        }),
        "int {:?}, term {:?}, plain {:?}",
        seed.status_of("int"),
        seed.status_of("term"),
        seed.status_of("plain")
    );
}

/// As in Serf, `leave_on_terminate` can be changed by a reload.
#[test]
fn a_reload_can_turn_off_the_leave_on_sigterm() {
    let dir = scratch();
    let seed = Agent::start("seed", &[]);
    let file = dir.path().join("agent.json");
    std::fs::write(&file, r#"{"tags": {"role": "web"}}"#).expect("write");
    let path = file.display().to_string();
    let mut agent = Agent::start("hup", &["--join", &seed.join_arg(), "-config-file", &path]);
    assert!(
        wait_until(Duration::from_secs(10), || seed.count_alive() == 2),
        "joined"
    );
    std::fs::write(
        &file,
        r#"{"tags": {"role": "web"}, "leave_on_terminate": false}"#,
    )
    .expect("write");
    agent.signal(Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || agent
            .log()
            .contains("SIGHUP: configuration reloaded")),
        "reloaded"
    );
    agent.signal(Signal::SIGTERM);
    let status = agent.wait_exit(Duration::from_secs(15));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", agent.log());
    assert!(
        wait_until(Duration::from_secs(15), || seed.status_of("hup").as_deref()
            == Some("failed")),
        "exited without leaving: {:?}",
        seed.status_of("hup")
    );
}
