//! Queries: `shoal query` asks only the members that pass its filters, prints their acks and
//! answers (their `query:NAME` handlers' stdout), ends as soon as all of them answered, and
//! at its timeout when one does not (a failing, hung or too talkative handler); bad input
//! gets a clear error and never a hang.

use std::time::{Duration, Instant};

use crate::harness::{Agent, cli, post_raw, wait_until};

/// Serf's worked example: managers print the swarm token (here with what the run saw:
/// `token-of-NAME|SERF_EVENT|SERF_QUERY_NAME|SHOAL_QUERY_LTIME|stdin`).
const TOKEN_HANDLER: &str = "query:swarm-token=echo \"token-of-$SERF_SELF_NAME|$SERF_EVENT|$SERF_QUERY_NAME|$SHOAL_QUERY_LTIME|$(cat)\"";

/// Starts `names` (the first is the seed); each gets `--tag role=ROLE` and `handler`.
fn cluster(members: &[(&str, &str, &str)]) -> Vec<Agent> {
    let mut agents: Vec<Agent> = Vec::new();
    for (name, role, handler) in members {
        let tag = format!("role={role}");
        let mut args = vec!["--tag", &tag, "--event-handler", handler];
        let seed = agents.first().map(Agent::join_arg);
        if let Some(seed) = &seed {
            args.extend(["--join", seed]);
        }
        agents.push(Agent::start(name, &args));
    }
    let n = agents.len();
    assert!(
        wait_until(Duration::from_secs(15), || agents
            .iter()
            .all(|a| a.count_alive() == n)),
        "cluster did not form"
    );
    agents
}

/// Runs `shoal query` through `agent`; returns (exit code, stdout, stderr, how long it took).
fn query(agent: &Agent, args: &[&str]) -> (Option<i32>, String, String, Duration) {
    let control = agent.control.to_string();
    let started = Instant::now();
    let (code, out, err) = cli(&[&["query", "--control", &control][..], args].concat());
    (code, out, err, started.elapsed())
}

fn sorted_lines(out: &str, prefix: &str) -> Vec<String> {
    let mut lines: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[test]
fn a_tag_filter_gets_exactly_the_managers_answers_well_before_the_timeout() {
    let agents = cluster(&[
        ("m1", "manager", TOKEN_HANDLER),
        ("w1", "worker", TOKEN_HANDLER),
        ("m2", "manager", TOKEN_HANDLER),
        ("w2", "worker", TOKEN_HANDLER),
    ]);
    let timeout = Duration::from_secs(8);
    let (code, out, err, took) = query(
        &agents[3],
        &[
            "--tag",
            "role=manager",
            "--timeout",
            "8s",
            "--relay-factor",
            "2",
            "swarm-token",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(took < timeout / 2, "took {took:?}: {out}");
    assert!(out.starts_with("Query 'swarm-token' dispatched\n"), "{out}");
    assert_eq!(
        sorted_lines(&out, "Ack from"),
        vec!["Ack from 'm1'", "Ack from 'm2'"],
        "{out}"
    );
    let responses = sorted_lines(&out, "Response from");
    assert_eq!(
        responses.len(),
        2,
        "one answer per manager despite relays: {out}"
    );
    for (line, name) in responses.iter().zip(["m1", "m2"]) {
        let fields: Vec<&str> = line.split('|').collect();
        let head = format!("Response from '{name}': token-of-{name}");
        assert_eq!(
            fields[..3],
            [head.as_str(), "query", "swarm-token"],
            "{out}"
        );
        assert!(fields[3].parse::<u64>().is_ok(), "SHOAL_QUERY_LTIME: {out}");
        assert_eq!(fields[4], "", "no payload: {out}");
    }
    assert!(
        out.ends_with("Total Acks: 2\nTotal Responses: 2\n"),
        "{out}"
    );

    // --node restricts by name; json prints one object per line, done last.
    let (code, out, err, took) = query(
        &agents[0],
        &[
            "--node",
            "w.*",
            "--tag",
            "role=worker",
            "--no-ack",
            "--format",
            "json",
            "--timeout",
            "8s",
            "swarm-token",
            "who",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(took < timeout / 2, "took {took:?}: {out}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines[0]["type"], "started", "{out}");
    assert_eq!(
        lines[0]["expected"],
        serde_json::json!(["w1", "w2"]),
        "{out}"
    );
    let mut from: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "response")
        .filter_map(|l| l["from"].as_str())
        .collect();
    from.sort();
    assert_eq!(from, vec!["w1", "w2"], "{out}");
    assert!(lines.iter().all(|l| l["type"] != "ack"), "--no-ack: {out}");
    let payload = lines
        .iter()
        .find(|l| l["type"] == "response")
        .and_then(|l| l["payload"].as_str())
        .unwrap_or_default();
    assert!(payload.ends_with("|who\n"), "the payload on stdin: {out}");
    let done = lines.last().expect("lines");
    assert_eq!(
        (
            done["type"].as_str(),
            done["responses"].as_u64(),
            done["timed_out"].as_bool()
        ),
        (Some("done"), Some(2), Some(false)),
        "{out}"
    );

    // The same through the API, as curl would send it.
    let resp = post_raw(
        agents[1].control,
        "/v1/query",
        r#"{"name":"swarm-token","nodes":["m2"],"timeout_ms":8000}"#,
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("application/x-ndjson"), "{resp}");
    assert!(
        resp.contains(r#""type":"response","from":"m2","payload":"token-of-m2|query|swarm-token|"#),
        "{resp}"
    );
    assert!(
        resp.contains(r#""type":"done","acks":1,"responses":1,"timed_out":false"#),
        "{resp}"
    );
}

#[test]
fn failing_hung_and_too_talkative_handlers_give_no_answer_and_the_query_ends_at_its_timeout() {
    let agents = cluster(&[
        ("f1", "x", "query:check=exit 3"),
        ("h1", "x", "query:check=sleep 30"),
        (
            "t1",
            "x",
            "query:check=head -c 5000 /dev/zero | tr '\\000' x",
        ),
    ]);
    let timeout = Duration::from_millis(1500);
    let (code, out, err, took) = query(&agents[0], &["--timeout", "1500ms", "check"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        took >= timeout && took < timeout + Duration::from_millis(1200),
        "took {took:?}: {out}"
    );
    assert_eq!(sorted_lines(&out, "Ack from").len(), 3, "{out}");
    assert!(
        out.ends_with("Total Acks: 3\nTotal Responses: 0\n"),
        "{out}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || agents[2].log().contains(
            "the handler printed 5000 bytes; an answer may take 1024"
        )),
        "the refusal is logged with the limit"
    );
    // The hung handler was killed at the query's time, not the 30 s handler timeout.
    assert!(
        wait_until(Duration::from_secs(5), || agents[1]
            .log()
            .contains("timed out and was killed")),
        "hung handler killed"
    );
}

#[test]
fn bad_queries_get_clear_errors_and_a_query_nobody_matches_ends_at_once() {
    let agents = cluster(&[
        ("b1", "worker", TOKEN_HANDLER),
        ("b2", "worker", TOKEN_HANDLER),
    ]);
    let a = &agents[0];
    let (code, _, err, _) = query(a, &["--node", "(", "swarm-token"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("invalid node regular expression \"(\""),
        "{err}"
    );
    assert!(err.contains("(bad_request)"), "{err}");

    let (code, out, err, took) = query(
        a,
        &["--tag", "role=manager", "--timeout", "30s", "swarm-token"],
    );
    assert_eq!(code, Some(0), "as serf query: {err}");
    assert!(took < Duration::from_secs(5), "no hang: {took:?}");
    assert!(
        err.contains("no member matches the query's filters; nothing was sent"),
        "{err}"
    );
    assert_eq!(out, "Total Acks: 0\nTotal Responses: 0\n");

    let big = "x".repeat(2000);
    let (code, _, err, _) = query(a, &["swarm-token", &big]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("query name, payload and filters take 2011 bytes; the limit is 1024"),
        "{err}"
    );
    for args in [
        &["swarm-token", "--relay-factor", "6"][..],
        &["swarm-token", "--timeout", "soon"][..],
        &["swarm-token", "--timeout", "0s"][..],
        &["swarm-token", "--tag", "role"][..],
        &["swarm-token", "--format", "yaml"][..],
        &[][..],
    ] {
        let (code, _, err, _) = query(a, args);
        assert_eq!(code, Some(64), "{args:?}: {err}");
    }
    let bodies = [
        "{not json",
        r#"{"payload":"x"}"#,
        r#"{"name":"swarm-token","bogus":1}"#,
        r#"{"name":"swarm-token","nodes":"b1"}"#,
        r#"{"name":""}"#,
        r#"{"name":"swarm-token","tags":{"role":"("}}"#,
        r#"{"name":"swarm-token","relay_factor":9}"#,
        r#"{"name":"swarm-token","timeout_ms":0}"#,
    ];
    for body in bodies {
        let resp = post_raw(a.control, "/v1/query", body);
        assert!(
            resp.starts_with("HTTP/1.1 400") && resp.contains(r#""code":"bad_request""#),
            "{body}: {resp}"
        );
    }
    // The agent still answers.
    let (code, out, err, _) = query(a, &["--node", "b2", "swarm-token"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Response from 'b2': token-of-b2"), "{out}");
}

/// The Lamport time `agent`'s own answer reports (`SHOAL_QUERY_LTIME`).
fn answered_ltime(agent: &Agent) -> u64 {
    let (code, out, err, _) = query(agent, &["--node", &agent.name, "swarm-token"]);
    assert_eq!(code, Some(0), "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("Response from"))
        .unwrap_or_else(|| panic!("no answer: {out}"));
    line.split('|')
        .nth(3)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{out}"))
}

#[test]
fn the_query_clock_survives_a_restart_through_the_snapshot() {
    let dir = crate::harness::scratch();
    let snap = dir.path().join("snap.json");
    let snap_arg = snap.display().to_string();
    let args = ["--snapshot", &snap_arg, "--event-handler", TOKEN_HANDLER];
    let mut a = Agent::start("s1", &args);
    // A node alone writes no snapshot: give it a peer.
    let peer = Agent::start("s2", &["--join", &a.join_arg()]);
    assert!(wait_until(Duration::from_secs(10), || a.count_alive() == 2
        && peer.count_alive() == 2));
    let first = answered_ltime(&a);
    let second = answered_ltime(&a);
    assert!(second > first, "{first} then {second}");
    let kept = format!("\"query_ltime\": {second}");
    assert!(
        wait_until(Duration::from_secs(5), || crate::harness::read(&snap)
            .is_some_and(|s| s.contains(&kept))),
        "snapshot keeps the query clock: {:?}",
        crate::harness::read(&snap)
    );
    // A graceful leave: the restart does not rejoin, so no peer's clock can help it.
    a.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(a.wait_exit(Duration::from_secs(10)).is_some(), "stopped");
    let b = Agent::start("s1", &args);
    let third = answered_ltime(&b);
    assert!(
        third > second,
        "a restart stamps later queries: {second} then {third}"
    );
    assert_eq!(
        b.count_alive(),
        1,
        "alone: the clock came from the snapshot"
    );
}

#[test]
fn a_query_cut_off_by_the_agent_dying_is_an_error_not_a_success() {
    let dir = crate::harness::scratch();
    let started = dir.path().join("started");
    let handler = format!("query:slow=touch {}; sleep 30", started.display());
    let mut a = Agent::start("k1", &["--event-handler", &handler]);
    let control = a.control.to_string();
    std::thread::scope(|s| {
        let asked = s.spawn(|| cli(&["query", "--control", &control, "--timeout", "20s", "slow"]));
        assert!(
            wait_until(Duration::from_secs(10), || started.exists()),
            "the handler ran"
        );
        a.kill9();
        let (code, out, err) = asked.join().expect("cli thread");
        assert_eq!(code, Some(2), "{out}{err}");
        assert!(out.starts_with("Query 'slow' dispatched"), "{out}");
        assert!(!out.contains("Total"), "{out}");
        // A killed agent leaves the chunked body broken (hyper's error); one that ends the
        // body early without a done line gets the client's own message.
        assert!(
            err.contains("error reading a body from connection")
                || err.contains("the agent closed the answer before the query ended"),
            "{err}"
        );
    });
}
