//! Health checks (`--check`): a failing script check makes the member critical in every
//! member's view and fires `member-update` with `SHOAL_HEALTH`; rise/fall holds a flapping
//! check; a hung script is killed with its process group at the timeout; http and tcp checks
//! against servers the test runs on loopback; bad specs are refused at start.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

use shoal_proto::{CheckInfo, MemberInfo};
use shoal_testkit::parse_members_output;

use crate::harness::{Agent, SHOAL, cli, read, scratch, wait_until};

/// `shoal members --format json` on `agent`, through the CLI.
fn members_cli(agent: &Agent, extra: &[&str]) -> Vec<MemberInfo> {
    let out = shoal_testkit::clean_command(SHOAL)
        .args([
            "members",
            "--control",
            &agent.control_addr,
            "--format",
            "json",
        ])
        .args(extra)
        .output();
    parse_members_output(out).unwrap_or_default()
}

/// The members of a `{"members":[...]}` text (the members file), if it parses.
fn parse_members_output_text(text: String) -> Option<Vec<MemberInfo>> {
    serde_json::from_str::<shoal_proto::MembersResponse>(&text)
        .ok()
        .map(|r| r.members)
}

/// The health `agent` lists for member `name` (`None`: no checks or not listed).
fn health_of(agent: &Agent, name: &str) -> Option<String> {
    members_cli(agent, &[])
        .into_iter()
        .find(|m| m.name == name)
        .and_then(|m| m.health)
}

/// This agent's own check `name`, from `/v1/info`.
fn check_of(agent: &Agent, name: &str) -> Option<CheckInfo> {
    agent.info().checks.into_iter().find(|c| c.name == name)
}

#[test]
fn a_failing_script_check_makes_the_member_critical_everywhere_and_fires_member_update() {
    let dir = scratch();
    let d = dir.path().display().to_string();
    std::fs::write(dir.path().join("ok"), "").expect("flag file");
    let check = format!("web=script:test -e {d}/ok || {{ echo 'web is down'; exit 2; }}");
    let a = Agent::start("ha", &["--check", &check, "--check-interval", "100ms"]);
    let others: Vec<Agent> = ["hb", "hc"]
        .iter()
        .map(|name| {
            let handler = format!(
                "member-update=echo \"$SHOAL_HEALTH|$SHOAL_MEMBER_HEALTH|$SHOAL_SELF_HEALTH\" >> {d}/update-{name}; \
                 cp \"$SHOAL_MEMBERS_FILE\" {d}/members-{name}.json"
            );
            Agent::start(
                name,
                &["--join", &a.join_arg(), "--coalesce", "0", "--event-handler", &handler],
            )
        })
        .collect();
    let all = [&a, &others[0], &others[1]];
    assert!(
        wait_until(Duration::from_secs(10), || all
            .iter()
            .all(
                |x| x.count_alive() == 3 && health_of(x, "ha").as_deref() == Some("passing")
            )),
        "not every member lists ha passing"
    );
    // The others run no checks: null health, no checks, in the JSON.
    let plain = members_cli(&a, &[]).into_iter().find(|m| m.name == "hb");
    assert_eq!(plain.map(|m| (m.health, m.checks.len())), Some((None, 0)));

    std::fs::remove_file(dir.path().join("ok")).expect("remove flag");
    for x in all {
        assert!(
            wait_until(Duration::from_secs(5), || {
                let m = members_cli(x, &[]).into_iter().find(|m| m.name == "ha");
                m.is_some_and(|m| {
                    m.health.as_deref() == Some("critical")
                        && m.checks.get("web").map(String::as_str) == Some("critical")
                })
            }),
            "{} does not list ha critical",
            x.name
        );
    }
    for o in &others {
        let file = dir.path().join(format!("update-{}", o.name));
        assert!(
            wait_until(Duration::from_secs(5), || read(&file)
                .is_some_and(|t| t.contains("critical|ha=critical|\n"))),
            "{}'s handler: {:?}",
            o.name,
            read(&file)
        );
    }
    // The members file the handler saw lists ha's health and checks.
    let seen = dir.path().join("members-hb.json");
    let lists_ha_critical = || {
        parse_members_output_text(read(&seen).unwrap_or_default()).is_some_and(|ms| {
            ms.iter().any(|m| {
                m.name == "ha"
                    && m.health.as_deref() == Some("critical")
                    && m.checks.get("web").map(String::as_str) == Some("critical")
            })
        })
    };
    assert!(
        wait_until(Duration::from_secs(5), lists_ha_critical),
        "{:?}",
        read(&seen)
    );
    // The filter and the detailed table.
    let critical = members_cli(&others[0], &["--health", "critical"]);
    assert_eq!(
        critical.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["ha"]
    );
    let none = members_cli(&others[0], &["--health", "none"]);
    assert_eq!(none.len(), 2);
    let (code, table, err) = cli(&[
        "members",
        "--control",
        &others[0].control_addr,
        "--detailed",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        table.contains("Health: critical  Checks: web=critical"),
        "{table}"
    );
    assert!(table.contains("Health: none"), "{table}");
    let (_, plain_table, _) = cli(&["members", "--control", &others[0].control_addr]);
    assert!(!plain_table.contains("Health"), "{plain_table}");
    // The agent's own view of its check, and its log line for the change.
    let web = check_of(&a, "web").expect("check listed");
    assert_eq!(
        (web.kind.as_str(), web.state.as_str()),
        ("script", "critical")
    );
    assert_eq!(web.output, "exit 2: web is down");
    assert!(web.last_run.is_some() && web.runs >= 2);
    assert!(
        a.logged("check web: passing -> critical") && a.log().contains("web is down"),
        "{}",
        a.log()
    );
    let (code, info, _) = cli(&["info", "--control", &a.control_addr]);
    assert_eq!(code, Some(0));
    assert!(info.contains("web") && info.contains("critical"), "{info}");

    // And back.
    std::fs::write(dir.path().join("ok"), "").expect("flag file");
    assert!(wait_until(Duration::from_secs(5), || health_of(
        &others[1], "ha"
    )
    .as_deref()
        == Some("passing")));
}

#[test]
fn a_check_flapping_every_run_with_fall_3_never_turns_critical() {
    let dir = scratch();
    let n = dir.path().join("n");
    // Odd runs pass, even runs fail: never three failures in a row.
    let check = format!(
        "flap=script:n=$(($(cat {0} 2>/dev/null || echo 0) + 1)); echo $n > {0}; [ $((n % 2)) -eq 1 ]",
        n.display()
    );
    let a = Agent::start(
        "hf",
        &[
            "--check",
            &check,
            "--check-interval",
            "30ms",
            "--check-fall",
            "3",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(10), || check_of(&a, "flap")
            .is_some_and(|c| c.runs >= 16)),
        "{:?}",
        check_of(&a, "flap")
    );
    let flap = check_of(&a, "flap").expect("listed");
    assert_eq!(flap.state, "passing");
    assert_eq!(health_of(&a, "hf").as_deref(), Some("passing"));
    let log = a.log();
    assert_eq!(log.matches("check flap: ").count(), 1, "{log}");
    assert!(log.contains("check flap: not run -> passing"), "{log}");
}

/// A process is gone (or a zombie no one has reaped yet: it runs no more).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn a_hung_check_is_killed_at_its_timeout_with_the_child_it_left_behind() {
    let dir = scratch();
    let pids = dir.path().join("pids");
    let check = format!(
        "hung=script:echo $$ >> {0}; sleep 30 & echo $! >> {0}; echo waiting; wait",
        pids.display()
    );
    let a = Agent::start(
        "hh",
        &[
            "--check",
            &check,
            "--check-timeout",
            "300ms",
            "--check-interval",
            "5s",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(5), || check_of(&a, "hung")
            .is_some_and(|c| c.runs >= 1)),
        "{:?}",
        check_of(&a, "hung")
    );
    let hung = check_of(&a, "hung").expect("listed");
    assert_eq!(hung.state, "critical");
    assert_eq!(hung.output, "timed out after 300ms and killed: waiting");
    assert!(
        hung.duration_ms >= 300 && hung.duration_ms < 3000,
        "{hung:?}"
    );
    let listed: Vec<i32> = read(&pids)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        wait_until(Duration::from_secs(3), || listed.iter().all(|p| gone(*p))),
        "still running: {listed:?}"
    );
}

/// A tiny HTTP server on 127.0.0.1: answers every request with the status in `status`.
/// Stops when `stop` is set or after 60 s.
fn http_server(status: Arc<AtomicU16>, stop: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            let Ok((mut conn, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let _ = conn.set_nonblocking(false);
            let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
            let mut buf = [0u8; 2048];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let code = status.load(Ordering::Relaxed);
            let body = format!("status {code}\n");
            let _ = write!(
                conn,
                "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn an_http_check_is_passing_on_2xx_warning_on_429_and_critical_on_500() {
    let status = Arc::new(AtomicU16::new(200));
    let stop = Arc::new(AtomicBool::new(false));
    let port = http_server(status.clone(), stop.clone());
    let check = format!("api=http:http://127.0.0.1:{port}/health");
    let a = Agent::start("hw", &["--check", &check, "--check-interval", "50ms"]);
    for (code, want) in [
        (200, "passing"),
        (429, "warning"),
        (500, "critical"),
        (204, "passing"),
    ] {
        status.store(code, Ordering::Relaxed);
        assert!(
            wait_until(Duration::from_secs(5), || health_of(&a, "hw").as_deref()
                == Some(want)),
            "HTTP {code}: {:?}",
            check_of(&a, "api")
        );
        let api = check_of(&a, "api").expect("listed");
        assert!(api.output.starts_with(&format!("HTTP {code}")), "{api:?}");
    }
    stop.store(true, Ordering::Relaxed);
    assert!(
        wait_until(Duration::from_secs(5), || health_of(&a, "hw").as_deref()
            == Some("critical")),
        "a server that is gone: {:?}",
        check_of(&a, "api")
    );
}

#[test]
fn a_tcp_check_passes_on_an_open_port_and_is_critical_on_a_closed_one() {
    let open = TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let up = format!(
        "up=tcp:127.0.0.1:{}",
        open.local_addr().expect("addr").port()
    );
    let down = format!("down=tcp:127.0.0.1:{closed_port}");
    let a = Agent::start(
        "ht",
        &[
            "--check",
            &up,
            "--check",
            &down,
            "--check-interval",
            "100ms",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(5), || {
            let me = members_cli(&a, &[]).into_iter().find(|m| m.name == "ht");
            me.is_some_and(|m| {
                m.checks.get("up").map(String::as_str) == Some("passing")
                    && m.checks.get("down").map(String::as_str) == Some("critical")
                    && m.health.as_deref() == Some("critical")
            })
        }),
        "{:?}",
        a.info().checks
    );
    let down = check_of(&a, "down").expect("listed");
    assert!(
        down.output.contains("cannot connect to 127.0.0.1"),
        "{down:?}"
    );
}

#[test]
fn bad_check_specs_are_refused_at_start_naming_the_flag_and_the_problem() {
    let cases: [(&[&str], &str); 7] = [
        (
            &["--check", "web=ftp:x"],
            "invalid --check \"web=ftp:x\": unknown check kind \"ftp\"",
        ),
        (
            &["--check", "web=http:https://127.0.0.1/"],
            "https is not supported",
        ),
        (&["--check", "db=tcp:127.0.0.1"], "missing port"),
        (&["--check", "script:true"], "expected NAME=SPEC"),
        (&["--check", "a b=script:true"], "check name \"a b\""),
        (
            &["--check", "x=script:true", "--check-timeout", "1ms"],
            "invalid --check-timeout \"1ms\"",
        ),
        (
            &["--check", "x=script:true", "--check-fall", "0"],
            "invalid --check-fall \"0\"",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec![
            "agent",
            "--node",
            "bad",
            "--bind",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
        ];
        all.extend_from_slice(args);
        let (code, _, err) = cli(&all);
        assert_eq!(code, Some(64), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: stderr lacks {needle:?}: {err}"
        );
    }
    let dir = scratch();
    let file = dir.path().join("checks.toml");
    write_file(
        &file,
        "[[check]]\nname = \"web\"\nscript = \"true\"\ntcp = \"127.0.0.1:80\"\n",
    );
    let (code, _, err) = cli(&[
        "agent",
        "--node",
        "bad",
        "--config",
        &file.display().to_string(),
    ]);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("invalid [[check]] \"web\": give exactly one of"),
        "{err}"
    );
}

#[test]
fn checks_from_a_config_file_run_with_their_own_timing() {
    let dir = scratch();
    let file = dir.path().join("checks.toml");
    let open = TcpListener::bind("127.0.0.1:0").expect("bind");
    write_file(
        &file,
        &format!(
            "check_interval = \"50ms\"\n\
             [[check]]\nname = \"port\"\ntcp = \"127.0.0.1:{}\"\nrise = 2\n\
             [[check]]\nname = \"warn\"\nscript = \"exit 1\"\ninterval = \"70ms\"\ntimeout = \"500ms\"\n",
            open.local_addr().expect("addr").port()
        ),
    );
    let a = Agent::start("hcfg", &["--config", &file.display().to_string()]);
    assert!(
        wait_until(Duration::from_secs(5), || health_of(&a, "hcfg").as_deref()
            == Some("warning")),
        "{:?}",
        a.info().checks
    );
    let checks = a.info().checks;
    let port = checks.iter().find(|c| c.name == "port").expect("port");
    assert_eq!(
        (port.interval_ms, port.rise, port.state.as_str()),
        (50, 2, "passing")
    );
    let warn = checks.iter().find(|c| c.name == "warn").expect("warn");
    assert_eq!((warn.interval_ms, warn.timeout_ms), (70, 500));
}

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

#[test]
fn sighup_applies_the_config_files_new_checks_and_keeps_the_unchanged_ones_running() {
    let dir = scratch();
    let file = dir.path().join("checks.toml");
    let table = |name: &str, script: &str| {
        format!("[[check]]\nname = \"{name}\"\nscript = \"{script}\"\ninterval = \"50ms\"\n")
    };
    write_file(&file, &(table("same", "exit 0") + &table("gone", "exit 2")));
    let a = Agent::start("hup", &["--config", &file.display().to_string()]);
    let checks_are = |want: &[(&str, &str)]| {
        members_cli(&a, &[])
            .into_iter()
            .find(|m| m.name == "hup")
            .is_some_and(|m| {
                m.checks
                    == want
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
            })
    };
    assert!(
        wait_until(Duration::from_secs(5), || checks_are(&[
            ("same", "passing"),
            ("gone", "critical")
        ])),
        "{:?}",
        a.info().checks
    );
    write_file(&file, &(table("same", "exit 0") + &table("new", "exit 1")));
    a.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(5), || checks_are(&[
            ("same", "passing"),
            ("new", "warning")
        ])),
        "{:?}",
        a.info().checks
    );
    assert_eq!(health_of(&a, "hup").as_deref(), Some("warning"));
    let names: Vec<String> = a.info().checks.into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["new", "same"]);
    // The unchanged check ran on: it never went back to critical.
    let log = a.log();
    assert_eq!(log.matches("check same: ").count(), 1, "{log}");
    assert!(log.contains("SIGHUP: health checks reloaded"), "{log}");
}

#[test]
fn a_template_renders_each_members_health_and_follows_its_changes() {
    let dir = scratch();
    let src = dir.path().join("backends.tmpl");
    let dest = dir.path().join("backends.txt");
    write_file(
        &src,
        "{% for m in members %}{{ m.name }} {{ m.health or 'none' }}\
         {% for c, s in m.checks | items %} {{ c }}={{ s }}{% endfor %}\n{% endfor %}",
    );
    std::fs::write(dir.path().join("ok"), "").expect("flag file");
    let check = format!("web=script:test -e {}/ok || exit 2", dir.path().display());
    let spec = format!("{}:{}", src.display(), dest.display());
    let _a = Agent::start(
        "htpl",
        &[
            "--check",
            &check,
            "--check-interval",
            "50ms",
            "--template",
            &spec,
        ],
    );
    assert!(
        wait_until(Duration::from_secs(5), || read(&dest)
            .is_some_and(|t| t.trim_end() == "htpl passing web=passing")),
        "{:?}",
        read(&dest)
    );
    std::fs::remove_file(dir.path().join("ok")).expect("remove flag");
    assert!(
        wait_until(Duration::from_secs(5), || read(&dest)
            .is_some_and(|t| t.trim_end() == "htpl critical web=critical")),
        "{:?}",
        read(&dest)
    );
}
