//! Debian's `serf` binary as a client of a shoal agent, over Serf's msgpack RPC protocol (on
//! the control port, sniffed, and on `--rpc-addr`): the same exit codes and output shapes as
//! against a real `serf agent`, which runs beside it on loopback for the comparison. Skipped,
//! with a message saying so, where `/usr/bin/serf` is not installed (`apt-get install serf`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::{Agent, scratch, tags_of, wait_until};

/// Debian's serf (0.8.2-dev), the client under test.
const SERF: &str = "/usr/bin/serf";

/// Longest a `serf` command may run (its own RPC timeout is 10 s).
const SERF_LIMIT: Duration = Duration::from_secs(20);

/// Whether serf is installed; says so when it is not.
fn have_serf(test: &str) -> bool {
    let found = Path::new(SERF).is_file();
    if !found {
        eprintln!("SKIPPED {test}: {SERF} is not installed (apt-get install -y serf)");
    }
    found
}

/// Runs `serf SUBCOMMAND -rpc-addr=ADDR ARGS...`; (exit code, stdout, stdout and stderr:
/// serf writes its errors to either). Killed past [`SERF_LIMIT`] (the exit code is then
/// `None`).
fn serf(sub: &str, addr: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(SERF)
        .arg(sub)
        .arg(format!("-rpc-addr={addr}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run serf");
    let mut status = None;
    wait_until(SERF_LIMIT, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("serf output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (status.and_then(|s| s.code()), stdout, all)
}

/// A real `serf agent` on loopback, killed on drop.
struct SerfAgent {
    rpc: String,
    child: Child,
}

impl SerfAgent {
    fn start(name: &str, tags: &[&str]) -> SerfAgent {
        SerfAgent::start_with(name, tags, &[])
    }

    /// Started with `extra` arguments too (e.g. `-encrypt=KEY`).
    fn start_with(name: &str, tags: &[&str], extra: &[&str]) -> SerfAgent {
        let bind = free_port();
        let rpc = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(SERF);
        cmd.args(["agent", &format!("-node={name}")])
            .arg(format!("-bind=127.0.0.1:{bind}"))
            .arg(format!("-rpc-addr={rpc}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for tag in tags {
            cmd.arg(format!("-tag={tag}"));
        }
        let child = cmd.spawn().expect("start serf agent");
        let agent = SerfAgent { rpc, child };
        assert!(
            wait_until(Duration::from_secs(10), || serf("members", &agent.rpc, &[])
                .0
                == Some(0)),
            "serf agent did not answer"
        );
        agent
    }
}

impl Drop for SerfAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on loopback now (TCP and UDP), for the serf agent, which cannot bind port 0
/// and say which it got.
fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// What a `serf members` table line is made of: name, `ip:port`, status, then the tags.
fn table_shape(out: &str) -> Vec<(usize, String)> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len(), cols.get(2).copied().unwrap_or("").to_string())
        })
        .collect()
}

/// The keys of each member object in `serf members -format=json`, and of its `protocol`.
fn json_shape(out: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let value: serde_json::Value = serde_json::from_str(out).expect("serf prints JSON");
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        k.sort();
        k
    };
    value["members"]
        .as_array()
        .map(|ms| ms.iter().map(|m| (keys(m), keys(&m["protocol"]))).collect())
        .unwrap_or_default()
}

fn addr(agent: &Agent) -> String {
    agent.control.to_string()
}

#[test]
fn serf_members_in_every_format_and_filter_looks_as_against_a_serf_agent() {
    if !have_serf("serf_members_in_every_format_and_filter_looks_as_against_a_serf_agent") {
        return;
    }
    let s1 = Agent::start("s1", &["--tag", "role=web"]);
    let reference = SerfAgent::start("ref1", &["role=web"]);
    for rpc in [addr(&s1), reference.rpc.clone()] {
        let (code, out, err) = serf("members", &rpc, &[]);
        assert_eq!(code, Some(0), "{rpc}: {err}");
        assert_eq!(table_shape(&out), vec![(4, "alive".to_string())], "{out}");
        let (code, out, _) = serf("members", &rpc, &["-format=json"]);
        assert_eq!(code, Some(0));
        let shape = json_shape(&out);
        assert_eq!(
            shape,
            vec![(
                ["addr", "name", "port", "protocol", "status", "tags"]
                    .map(String::from)
                    .to_vec(),
                ["max", "min", "version"].map(String::from).to_vec()
            )],
            "{out}"
        );
        let (code, out, _) = serf("members", &rpc, &["-status=alive", "-tag", "role=w.b"]);
        assert_eq!((code, table_shape(&out).len()), (Some(0), 1), "{out}");
        let (code, out, _) = serf("members", &rpc, &["-tag", "role=db"]);
        assert_eq!((code, out.trim()), (Some(0), ""));
        let (code, out, _) = serf("members", &rpc, &["-status=failed", "-format=json"]);
        assert_eq!(code, Some(0));
        assert!(out.contains("\"members\": null"), "{out}");
        let (code, out, _) = serf("members", &rpc, &["-detailed"]);
        assert_eq!(code, Some(0));
        assert!(
            out.contains("Protocol Version: ") && out.contains("Available Protocol Range: ["),
            "{out}"
        );
    }
    let (_, out, _) = serf("members", &addr(&s1), &["-detailed"]);
    assert!(
        out.contains("Protocol Version: 1  Available Protocol Range: [1, 1]"),
        "{out}"
    );
}

#[test]
fn serf_join_tags_event_query_and_force_leave_act_on_the_shoal_cluster() {
    if !have_serf("serf_join_tags_event_query_and_force_leave_act_on_the_shoal_cluster") {
        return;
    }
    let dir = scratch();
    let seen = dir.path().join("deploy");
    let user = format!("user:deploy=cat > {}", seen.display());
    let s1 = Agent::start(
        "s1",
        &["--event-handler", "query:whoami=echo i-am-$SERF_SELF_NAME"],
    );
    let mut s2 = Agent::start(
        "s2",
        &[
            "--event-handler",
            &user,
            "--event-handler",
            "query:whoami=echo i-am-$SERF_SELF_NAME",
        ],
    );
    let rpc = addr(&s1);

    let (code, out, err) = serf("join", &rpc, &[&s2.join_arg()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.trim(),
        "Successfully joined cluster by contacting 1 nodes."
    );
    assert!(wait_until(Duration::from_secs(10), || s1.count_alive() == 2));
    let (code, _, err) = serf("join", &rpc, &["127.0.0.1:1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("Error joining the cluster: "), "{err}");

    let (code, out, _) = serf("tags", &rpc, &["-set", "role=web", "-set", "dc=east"]);
    assert_eq!(
        (code, out.trim()),
        (Some(0), "Successfully updated agent tags")
    );
    assert!(wait_until(Duration::from_secs(10), || {
        tags_of(&s2, "s1").is_some_and(|t| t.get("role").map(String::as_str) == Some("web"))
    }));
    let (code, _, _) = serf("tags", &rpc, &["-delete", "dc"]);
    assert_eq!(code, Some(0));
    assert!(wait_until(Duration::from_secs(10), || {
        tags_of(&s2, "s1").is_some_and(|t| !t.contains_key("dc"))
    }));

    let (code, out, _) = serf("event", &rpc, &["-coalesce=false", "deploy", "v42"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out.trim(),
        "Event 'deploy' dispatched! Coalescing enabled: false"
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&seen).is_ok_and(|s| s.trim_end() == "v42")
        }),
        "s2's user:deploy handler did not get the payload"
    );

    let (code, out, err) = serf("query", &rpc, &["-timeout=2s", "whoami"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("Query 'whoami' dispatched\n"), "{out}");
    for name in ["s1", "s2"] {
        assert!(out.contains(&format!("Ack from '{name}'")), "{out}");
        assert!(
            out.contains(&format!("Response from '{name}': i-am-{name}")),
            "{out}"
        );
    }
    assert!(
        out.contains("Total Acks: 2") && out.contains("Total Responses: 2"),
        "{out}"
    );
    let (code, out, _) = serf(
        "query",
        &rpc,
        &["-format=json", "-node=s2", "-timeout=2s", "whoami"],
    );
    assert_eq!(code, Some(0));
    let answer: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(answer["Responses"]["s2"], "i-am-s2\n", "{out}");
    assert_eq!(answer["Acks"], serde_json::json!(["s2"]));

    s2.kill9();
    assert!(wait_until(Duration::from_secs(20), || {
        s1.status_of("s2").as_deref() == Some("failed")
    }));
    let (code, out, err) = serf("force-leave", &rpc, &["s2"]);
    assert_eq!((code, out.as_str()), (Some(0), ""), "{err}");
    assert!(wait_until(Duration::from_secs(10), || {
        s1.status_of("s2").as_deref() == Some("left")
    }));
}

#[test]
fn serf_monitor_prints_the_agents_log_and_events_as_they_happen() {
    if !have_serf("serf_monitor_prints_the_agents_log_and_events_as_they_happen") {
        return;
    }
    let s1 = Agent::start("s1", &[]);
    let rpc = addr(&s1);
    let mut monitor = Command::new(SERF)
        .args(["monitor", &format!("-rpc-addr={rpc}"), "-log-level=debug"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serf monitor");
    let stdout = monitor.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    let found = wait_until(Duration::from_secs(15), || {
        // Repeated until the monitor has subscribed: the event is then in the stream.
        let _ = serf("event", &rpc, &["deploy", "v1"]);
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(line);
        }
        let text = lines.join("\n");
        text.contains("user-event") && text.contains("Name: \"deploy\"")
    });
    let _ = monitor.kill();
    let _ = monitor.wait();
    assert!(found, "serf monitor printed:\n{}", lines.join("\n"));
    let (code, _, err) = serf("monitor", &rpc, &["-log-level=bogus"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("Unknown log level: BOGUS"), "{err}");
}

#[test]
fn serf_rpc_auth_is_required_with_a_key_and_refused_with_a_wrong_one() {
    if !have_serf("serf_rpc_auth_is_required_with_a_key_and_refused_with_a_wrong_one") {
        return;
    }
    let rpc_port = free_port().to_string();
    let rpc_addr = format!("127.0.0.1:{rpc_port}");
    let s1 = Agent::start("s1", &["--rpc-auth", "sekrit", "--rpc-addr", &rpc_addr]);
    for rpc in [addr(&s1), rpc_addr.clone()] {
        let (code, _, err) = serf("members", &rpc, &[]);
        assert_eq!(code, Some(1));
        assert!(err.contains("Authentication required"), "{err}");
        let (code, _, err) = serf("members", &rpc, &["-rpc-auth=wrong"]);
        assert_eq!(code, Some(1));
        assert!(err.contains("Invalid authentication token"), "{err}");
        let (code, out, _) = serf("members", &rpc, &["-rpc-auth=sekrit"]);
        assert_eq!((code, table_shape(&out).len()), (Some(0), 1), "{out}");
    }
    // An agent without a key refuses a client that gives one, as Serf does.
    let open = Agent::start("s2", &[]);
    let (code, _, err) = serf("members", &addr(&open), &["-rpc-auth=sekrit"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("Invalid authentication token"), "{err}");
    // With only a control token, the token is the RPC key too.
    let dir = scratch();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-123\n").expect("token");
    let guarded = Agent::start(
        "s3",
        &["--control-token-file", token.to_str().expect("utf-8")],
    );
    let (code, _, _) = serf("members", &addr(&guarded), &[]);
    assert_eq!(code, Some(1));
    let (code, _, _) = serf("members", &addr(&guarded), &["-rpc-auth=tok-123"]);
    assert_eq!(code, Some(0));
}

#[test]
fn what_shoal_lacks_gets_serfs_answer_and_exit_code_never_a_hang() {
    if !have_serf("what_shoal_lacks_gets_serfs_answer_and_exit_code_never_a_hang") {
        return;
    }
    let s1 = Agent::start("s1", &[]);
    let reference = SerfAgent::start("ref1", &[]);
    let (code, out, _) = serf("rtt", &addr(&s1), &["s1"]);
    assert_eq!(code, Some(1));
    assert_eq!(out.trim(), "Could not find a coordinate for node \"s1\"");
    for (rpc, name) in [(addr(&s1), "s1"), (reference.rpc.clone(), "ref1")] {
        let (code, out, err) = serf("keys", &rpc, &["-list"]);
        assert_eq!(code, Some(1), "{rpc}");
        assert!(
            out.contains(&format!(
                "failed:  {name}  Keyring is empty (encryption not enabled)"
            )),
            "{out}"
        );
        assert!(err.contains("1/1 nodes reported failure"), "{err}");
        let key = "5K9OtfP7efFrNKe5WCQvXvnaXJ5cWP0SvXiwe0kkjM4=";
        let (code, out, _) = serf("keys", &rpc, &["-install", key]);
        assert_eq!(code, Some(1));
        assert!(
            out.contains("No keyring to modify (encryption not enabled)"),
            "{out}"
        );
        let (code, out, _) = serf("reachability", &rpc, &[]);
        assert_eq!(code, Some(0), "{out}");
        assert!(
            out.contains("Successfully contacted all live nodes"),
            "{out}"
        );
        let (code, out, _) = serf("info", &rpc, &[]);
        assert_eq!(code, Some(0));
        assert!(out.starts_with("agent:\n\tname = "), "{out}");
    }
}

#[test]
fn serf_leave_makes_the_agent_leave_and_exit_zero() {
    if !have_serf("serf_leave_makes_the_agent_leave_and_exit_zero") {
        return;
    }
    let s1 = Agent::start("s1", &[]);
    let mut s2 = Agent::start("s2", &["--join", &s1.join_arg()]);
    assert!(wait_until(Duration::from_secs(10), || s1.count_alive() == 2));
    let (code, out, err) = serf("leave", &addr(&s2), &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "Graceful leave complete");
    let status = s2.wait_exit(Duration::from_secs(10)).expect("s2 exits");
    assert_eq!(status.code(), Some(0));
    assert!(wait_until(Duration::from_secs(10), || {
        s1.status_of("s2").as_deref() == Some("left")
    }));
    let _ = Signal::SIGTERM;
}

#[test]
fn serf_keys_rotates_a_sealed_shoal_cluster_as_it_does_a_serf_cluster() {
    if !have_serf("serf_keys_rotates_a_sealed_shoal_cluster_as_it_does_a_serf_cluster") {
        return;
    }
    const OLD: &str = "5K9OtfP7efFrNKe5WCQvXvnaXJ5cWP0SvXiwe0kkjM4=";
    const NEW: &str = "HvY8ubRZMgafUOWvrOadwOckVa1wN3QWAo46FVKbVN8=";
    let s1 = Agent::start("s1", &["--encrypt", OLD]);
    let s2 = Agent::start("s2", &["--encrypt", OLD, "--join", &s1.join_arg()]);
    assert!(wait_until(Duration::from_secs(10), || s1.count_alive()
        == 2
        && s2.count_alive() == 2));
    let reference = SerfAgent::start_with("ref1", &[], &[&format!("-encrypt={OLD}")]);
    for rpc in [addr(&s1), reference.rpc.clone()] {
        let (code, out, err) = serf("keys", &rpc, &["-install", NEW]);
        assert_eq!(code, Some(0), "{rpc}: {out}{err}");
        assert!(out.contains("Successfully installed key!"), "{out}");
        let (code, out, _) = serf("keys", &rpc, &["-use", NEW]);
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("Successfully changed primary key!"), "{out}");
        // The key in use cannot go, on shoal as on Serf.
        let (code, _, _) = serf("keys", &rpc, &["-remove", NEW]);
        assert_eq!(code, Some(1));
        let (code, out, _) = serf("keys", &rpc, &["-remove", OLD]);
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("Successfully removed key!"), "{out}");
        let (code, out, _) = serf("keys", &rpc, &["-list"]);
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains(NEW) && !out.contains(OLD), "{out}");
    }
    // Both shoal members hold only the new key; the cluster stayed whole.
    let (_, out, _) = serf("keys", &addr(&s2), &["-list"]);
    let line = out
        .lines()
        .find(|l| l.contains(NEW))
        .unwrap_or_default()
        .to_string();
    assert!(line.contains("[2/2]"), "{out}");
    assert_eq!(s2.count_alive(), 2);
}
