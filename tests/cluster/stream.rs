//! The streams: `GET /v1/stream` gives every reader the same events in order, a reader that
//! vanishes or stops reading costs the agent nothing, `shoal monitor` shows the log at its own
//! level without changing stderr, and bad requests and a 33rd stream get JSON errors.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_proto::Client;
use shoal_testkit::clean_command;

use crate::harness::{Agent, SHOAL, cli, post_raw, raw_http, read, scratch, tags_of, wait_until};

/// One `/v1/stream` or `/v1/monitor` reader on its own thread; dropping it closes the
/// connection.
struct Reader {
    lines: mpsc::Receiver<String>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Reader {
    /// Opens `path` on `agent`; returns once the agent answered (the reader is subscribed).
    fn open(agent: &Agent, path: &str) -> Reader {
        let (opened_tx, opened) = mpsc::channel();
        let (lines_tx, lines) = mpsc::channel();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let client = Client::new(agent.control.to_string());
        let wanted = path.to_string();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut stream = match client.stream(&wanted).await {
                    Ok(stream) => stream,
                    Err(e) => return opened_tx.send(Err(e.to_string())).unwrap_or(()),
                };
                let _ = opened_tx.send(Ok(()));
                loop {
                    tokio::select! {
                        line = stream.next_line() => match line {
                            Ok(Some(line)) => {
                                if lines_tx.send(line).is_err() {
                                    return;
                                }
                            }
                            _ => return,
                        },
                        _ = &mut stopped => return,
                    }
                }
            });
        });
        match opened.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Reader { lines, _stop: stop },
            other => panic!("{path} did not open: {other:?}"),
        }
    }

    /// Lines until `done` holds for the last one, at most `limit`; all of them.
    fn until(&self, limit: Duration, mut done: impl FnMut(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let last = done(&line);
                    got.push(line);
                    if last {
                        return got;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line ended the wait within {limit:?}; got {got:#?}");
    }
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// `(event, name)` of a stream line: the member's name, or the user event's.
fn summary(line: &str) -> (String, String) {
    let v = json(line);
    let name = match v["type"].as_str() {
        Some("member") => v["members"][0]["name"].clone(),
        _ => v["name"].clone(),
    };
    (
        v["event"].as_str().unwrap_or("?").to_string(),
        name.as_str().unwrap_or("?").to_string(),
    )
}

fn control(agent: &Agent) -> String {
    agent.control.to_string()
}

#[test]
fn two_readers_see_the_same_member_user_and_query_events_in_the_same_order() {
    let a = Agent::start("sa", &[]);
    let all = Reader::open(&a, "/v1/stream");
    let chosen = Reader::open(&a, "/v1/stream?types=member,user,query");
    let users_only = Reader::open(&a, "/v1/stream?types=user");
    let b = Agent::start("sb", &["--join", &a.join_arg()]);
    assert!(wait_until(Duration::from_secs(10), || a.count_alive() == 2));
    let (code, _, err) = cli(&["tags", "--control", &control(&b), "--set", "role=web"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(wait_until(Duration::from_secs(10), || {
        tags_of(&a, "sb").is_some_and(|t| t.get("role").map(String::as_str) == Some("web"))
    }));
    let (code, _, err) = cli(&["event", "--control", &control(&a), "deploy", "v1"]);
    assert_eq!(code, Some(0), "{err}");
    let query = [
        "query",
        "--control",
        &control(&b),
        "--timeout",
        "300ms",
        "uptime",
        "now",
    ];
    let (code, _, err) = cli(&query);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = cli(&["leave", "--control", &control(&b)]);
    assert_eq!(code, Some(0), "{err}");

    let left = |line: &str| summary(line) == ("member-leave".into(), "sb".into());
    let seen_all = all.until(Duration::from_secs(10), left);
    let seen_chosen = chosen.until(Duration::from_secs(10), left);
    assert_eq!(seen_all, seen_chosen, "both readers get the same lines");
    let summaries: Vec<(String, String)> = seen_all.iter().map(|l| summary(l)).collect();
    let expected = [
        ("member-join", "sb"),
        ("member-update", "sb"),
        ("user", "deploy"),
        ("query", "uptime"),
        ("member-leave", "sb"),
    ]
    .map(|(e, n)| (e.to_string(), n.to_string()));
    assert_eq!(summaries, expected, "{seen_all:#?}");

    let join = json(&seen_all[0]);
    assert_eq!(join["type"], "member");
    let member = &join["members"][0];
    assert_eq!(member["addr"], b.gossip.to_string());
    assert_eq!(member["port"], b.gossip.port());
    assert_eq!(member["status"], "alive");
    assert_eq!(json(&seen_all[1])["members"][0]["tags"]["role"], "web");
    assert_eq!(json(&seen_all[4])["members"][0]["status"], "left");
    let query = json(&seen_all[3]);
    assert_eq!(
        (&query["type"], &query["payload"], &query["origin"]),
        (&"query".into(), &"now".into(), &b.gossip.to_string().into())
    );
    let user = json(&seen_all[2]);
    assert_eq!(
        (&user["type"], &user["payload"], &user["payload_encoding"]),
        (&"user".into(), &"v1".into(), &"text".into())
    );
    assert!(user["ltime"].is_u64() && user["coalesce"] == true, "{user}");
    let only = users_only.until(Duration::from_secs(5), |_| true);
    assert_eq!(
        only,
        vec![seen_all[2].clone()],
        "types=user gets only the user event"
    );
}

/// Sends user event `name` with `payload` through the control API (no process per event).
fn send_event(agent: &Agent, name: &str, payload: &str) {
    let body = format!(r#"{{"name":"{name}","payload":"{payload}"}}"#);
    let answer = post_raw(agent.control, "/v1/event", &body);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A connection that asks for `path` and then never reads, with a small receive buffer so
/// that the agent's side fills up soon.
fn stalled_reader(addr: SocketAddr, path: &str) -> std::net::TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        socket.connect(addr).await.expect("connect")
    });
    let mut stream = stream.into_std().expect("std stream");
    stream.set_nonblocking(false).expect("blocking");
    write!(stream, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").expect("write");
    stream
}

#[test]
fn a_reader_that_vanishes_or_stops_reading_leaves_gossip_handlers_and_the_next_reader_working() {
    let dir = scratch();
    let d = dir.path().display().to_string();
    let handler = format!("user:ping=cat >> {d}/pings");
    let a = Agent::start("va", &["--event-handler", &handler]);
    let b = Agent::start("vb", &["--join", &a.join_arg()]);
    assert!(wait_until(Duration::from_secs(10), || a.count_alive() == 2));

    // A reader that reads one line and hangs up mid-stream.
    let vanishing = Reader::open(&a, "/v1/stream");
    send_event(&a, "ping", "first");
    vanishing.until(Duration::from_secs(5), |l| summary(l).1 == "ping");
    drop(vanishing);
    assert!(
        wait_until(Duration::from_secs(5), || a.info().streams.events == 0),
        "a closed connection unsubscribes"
    );

    // A reader that never reads while many events flow: it is dropped, not waited for.
    let stalled = stalled_reader(a.control, "/v1/stream?types=user:load");
    assert!(wait_until(Duration::from_secs(5), || a
        .info()
        .streams
        .events
        == 1));
    let payload = "x".repeat(480);
    let mut sent = 0;
    while a.info().streams.dropped_slow == 0 {
        assert!(sent < 3000, "the stalled reader was never dropped");
        for _ in 0..50 {
            send_event(&a, "load", &payload);
        }
        sent += 50;
    }
    assert_eq!(
        a.info().streams.events,
        0,
        "the stalled reader is out of the fan-out"
    );
    assert!(a.logged("a /v1/stream reader fell behind"));

    // The agent is fine: gossip, members, handlers, and a new reader.
    send_event(&a, "ping", "after");
    assert!(
        wait_until(Duration::from_secs(10), || read(&dir.path().join("pings"))
            .is_some_and(|p| p.contains("after"))),
        "the handler still runs"
    );
    assert_eq!(a.try_members().expect("members answers").len(), 2);
    assert_eq!(b.count_alive(), 2, "gossip went on");
    let next = Reader::open(&a, "/v1/stream?types=user:ping");
    send_event(&a, "ping", "next");
    let got = next.until(Duration::from_secs(5), |_| true);
    assert_eq!(json(&got[0])["payload"], "next");
    drop(stalled);
}

/// `shoal monitor ARGS` against `agent`, its stdout lines collected by a thread.
struct Monitor {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Monitor {
    fn start(agent: &Agent, args: &[&str]) -> Monitor {
        let mut child = clean_command(SHOAL)
            .args(["monitor", "--control", &control(agent)])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start shoal monitor");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Monitor {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// True once a line so far contains `text` (waiting at most `limit`).
    fn shows(&mut self, limit: Duration, text: &str) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.seen.iter().any(|l| l.contains(text)) {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => return false,
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn shoal_monitor_shows_the_member_join_line_and_debug_shows_more_without_changing_stderr() {
    let a = Agent::start("ma", &[]);
    let mut info = Monitor::start(&a, &[]);
    let mut debug = Monitor::start(&a, &["--log-level", "debug"]);
    let mut json_lines = Monitor::start(&a, &["--log-level", "info", "--format", "json"]);
    assert!(
        wait_until(Duration::from_secs(10), || a.info().streams.monitors == 3),
        "three monitors connected"
    );
    let _b = Agent::start("mb", &["--join", &a.join_arg()]);
    assert!(
        info.shows(Duration::from_secs(10), "member-join member=mb addr="),
        "{:#?}",
        info.seen
    );
    assert!(json_lines.shows(Duration::from_secs(10), r#""member":"mb""#));
    let joined = json_lines
        .seen
        .iter()
        .map(|l| json(l))
        .find(|v| v["fields"]["member"] == "mb")
        .expect("the join line");
    assert_eq!(
        (&joined["level"], &joined["fields"]["message"]),
        (&"INFO".into(), &"member-join".into())
    );
    // foca's probe lines are at debug under target `foca`; the agent logs `info,shoal=debug`.
    assert!(
        debug.shows(Duration::from_secs(10), " DEBUG "),
        "{:#?}",
        debug.seen
    );
    assert!(debug.shows(Duration::from_secs(10), "Probe start"));
    assert!(debug.shows(Duration::from_secs(10), "member-join member=mb"));
    assert!(
        !info.seen.iter().any(|l| l.contains(" DEBUG ")),
        "{:#?}",
        info.seen
    );
    assert!(
        !a.log().contains("Probe start"),
        "stderr keeps the agent's own level"
    );

    // Ctrl-C ends a monitor normally; its place is freed.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(debug.child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let mut status = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            status = debug.child.try_wait().expect("try_wait");
            status.is_some()
        }),
        "shoal monitor did not stop on SIGINT"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    assert!(wait_until(Duration::from_secs(5), || a
        .info()
        .streams
        .monitors
        == 2));
}

#[test]
fn a_bad_monitor_level_is_a_usage_error_naming_the_accepted_levels() {
    let (code, _, err) = cli(&["monitor", "--log-level", "loud"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("loud") && err.contains("trace, debug, info, warn, error"),
        "{err}"
    );
}

fn get(addr: SocketAddr, path: &str) -> String {
    raw_http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
    )
}

/// Opens `path` and reads the answer's head; the connection stays open.
fn open_raw(addr: SocketAddr, path: &str) -> (std::net::TcpStream, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

#[test]
fn bad_stream_requests_are_400_json_errors_and_a_33rd_stream_is_503() {
    let a = Agent::start("ba", &[]);
    let answer = get(a.control, "/v1/stream?types=member,bogus");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains(r#""code":"bad_request""#) && answer.contains(r#"\"bogus\""#),
        "{answer}"
    );
    for path in [
        "/v1/stream?type=user",
        "/v1/monitor?level=loud",
        "/v1/monitor?format=xml",
    ] {
        let answer = get(a.control, path);
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains(r#""code":"bad_request""#), "{answer}");
    }
    let answer = post_raw(a.control, "/v1/stream", "");
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");

    let mut open: Vec<std::net::TcpStream> = (0..32)
        .map(|i| {
            let path = if i % 2 == 0 {
                "/v1/stream"
            } else {
                "/v1/monitor"
            };
            let (s, head) = open_raw(a.control, path);
            assert!(head.starts_with("HTTP/1.1 200"), "stream {i}: {head}");
            assert!(head.contains("transfer-encoding: chunked"), "{head}");
            s
        })
        .collect();
    for path in ["/v1/stream", "/v1/monitor"] {
        let answer = get(a.control, path);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains(r#""code":"too_many_streams""#), "{answer}");
    }
    assert_eq!(a.try_members().expect("members still answers").len(), 1);
    open.pop();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let info = a.info().streams;
            info.events + info.monitors == 31
        }),
        "a closed stream frees its place"
    );
    let (_s, head) = open_raw(a.control, "/v1/stream");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[test]
fn member_join_update_leave_failure_and_reap_are_info_lines_in_the_log() {
    let a = Agent::start("la", &["--reconnect-timeout", "1s"]);
    let b = Agent::start("lb", &["--join", &a.join_arg()]);
    let mut c = Agent::start("lc", &["--join", &a.join_arg()]);
    assert!(wait_until(Duration::from_secs(10), || a.count_alive() == 3));
    let (code, _, err) = cli(&["tags", "--control", &control(&b), "--set", "k=v"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = cli(&["leave", "--control", &control(&b)]);
    assert_eq!(code, Some(0), "{err}");
    c.kill9();
    let lines = [
        format!("INFO member-join member=lb addr={}", b.gossip),
        format!("INFO member-update member=lb addr={}", b.gossip),
        format!("INFO member-leave member=lb addr={} status=left", b.gossip),
        format!(
            "INFO member-failed member=lc addr={} status=failed",
            c.gossip
        ),
        format!("INFO member-reap member=lc addr={}", c.gossip),
    ];
    assert!(
        wait_until(Duration::from_secs(15), || {
            let log = a.log();
            lines.iter().all(|l| log.contains(l.as_str()))
        }),
        "expected {lines:#?} in the log:\n{}",
        a.log()
    );
    let log = a.log();
    assert_eq!(
        log.matches("member-join member=lb").count(),
        1,
        "logged once"
    );
}

#[test]
fn shoal_info_lists_the_loaded_handlers_and_the_event_counters() {
    let dir = scratch();
    let d = dir.path().display().to_string();
    let deploy = format!("user:deploy=cat >> {d}/deploys");
    let a = Agent::start(
        "ia",
        &["--event-handler", &deploy, "--event-handler", "echo any"],
    );
    let (code, _, err) = cli(&["event", "--control", &control(&a), "deploy", "v1"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(wait_until(Duration::from_secs(10), || read(
        &dir.path().join("deploys")
    )
    .is_some()));
    let (code, out, err) = cli(&["info", "--control", &control(&a)]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&format!(
            "handlers:\n\tuser:deploy = cat >> {d}/deploys\n\t* = echo any\n"
        )),
        "{out}"
    );
    assert!(
        out.contains("events:\n\tmember = 1\n\tuser = 1\n\tuser_handled = 1\n"),
        "{out}"
    );
    assert!(
        out.contains("streams:\n\tevents = 0\n\tmonitors = 0\n"),
        "{out}"
    );
    let info = a.info();
    assert_eq!(info.handlers.len(), 2);
    assert_eq!(info.handlers[0].filter, "user:deploy");
    assert_eq!(info.handlers[1].filter, "");
}
