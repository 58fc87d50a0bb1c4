//! The control API's door (issue 10): the token, the Unix socket, the warning for an API open
//! to the network, and the limits on connections, headers and bodies.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::{Agent, SHOAL, cli, post_raw, raw_http, wait_until};
use shoal_testkit::clean_command;

const TOKEN: &str = "0f3c9a7e5b1d4c2a8e6f0b3d5a7c9e1f";

/// Writes `token` to a 0600 file in `dir`.
fn token_file(dir: &Path, token: &str) -> String {
    let path = dir.join("token");
    std::fs::write(&path, format!("{token}\n")).expect("write token");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path.display().to_string()
}

/// Runs the CLI with extra environment variables.
fn cli_env(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = clean_command(SHOAL)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run shoal");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn get(path: &str, auth: Option<&str>) -> String {
    let auth = auth.map_or(String::new(), |a| format!("authorization: {a}\r\n"));
    format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{auth}\r\n")
}

#[test]
fn with_a_token_a_request_without_it_or_with_a_wrong_one_gets_401_and_the_cli_with_it_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = token_file(dir.path(), TOKEN);
    let a = Agent::start("tok", &["--control-token-file", &file]);
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic abc"),
        Some("Bearer "),
    ] {
        let resp = raw_http(a.control, &get("/v1/members", auth));
        assert!(resp.starts_with("HTTP/1.1 401"), "{auth:?}: {resp}");
        assert!(
            resp.contains(r#""code":"unauthorized""#),
            "{auth:?}: {resp}"
        );
        assert!(!resp.contains(TOKEN), "{resp}");
    }
    let resp = post_raw(a.control, "/v1/leave", "{}");
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    for scheme in ["Bearer", "bearer"] {
        let right = format!("{scheme} {TOKEN}");
        let resp = raw_http(a.control, &get("/v1/members", Some(&right)));
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }

    let ctl = a.control.to_string();
    let (code, _, err) = cli(&["members", "--control", &ctl]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("unauthorized") && err.contains("token"),
        "{err}"
    );
    let (code, out, err) = cli(&["members", "--control", &ctl, "--token-file", &file]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("tok"), "{out}");
    let (code, out, err) = cli_env(
        &["members", "--control", &ctl],
        &[("SHOAL_CONTROL_TOKEN", TOKEN)],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("tok"), "{out}");
    let (code, _, err) = cli_env(
        &["info", "--control", &ctl],
        &[("SHOAL_CONTROL_TOKEN_FILE", &file)],
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = cli_env(
        &["members", "--control", &ctl],
        &[("SHOAL_CONTROL_TOKEN", "not-the-token")],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("wrong control token"), "{err}");
    let (code, _, err) = cli(&[
        "members",
        "--control",
        &ctl,
        "--token-file",
        "/nonexistent/t",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/nonexistent/t"), "{err}");
    // The agent serves on, and the harness's own requests carry the token.
    assert_eq!(a.count_alive(), 1);
    assert!(
        a.log()
            .contains("control request refused: no or a wrong token")
    );
    assert!(!a.log().contains(TOKEN), "the token is never logged");
}

#[test]
fn an_empty_or_unreadable_token_file_stops_the_agent_from_starting_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").expect("write");
    let empty = empty.display().to_string();
    for path in [empty.as_str(), "/nonexistent/token"] {
        let (code, _, err) = cli(&["agent", "--control-token-file", path]);
        assert_eq!(code, Some(64), "{err}");
        assert!(
            err.contains("--control-token-file") && err.contains(path),
            "{err}"
        );
    }
}

#[test]
fn a_unix_socket_control_is_mode_0600_serves_the_cli_and_a_stale_one_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("control.sock");
    let addr = format!("unix:{}", sock.display());
    let mut a = Agent::start("ux", &["--control", &addr]);
    assert_eq!(a.control_addr, addr);
    let mode = std::fs::metadata(&sock)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let (code, out, err) = cli(&["members", "--control", &addr]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("ux") && out.contains("alive"), "{out}");
    assert_eq!(a.count_alive(), 1);
    // A second agent on the same live socket is refused, and the first keeps it.
    let (code, _, err) = cli(&["agent", "--bind", "127.0.0.1:0", "--control", &addr]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("another process answers"), "{err}");
    // Killed, it leaves its socket file; the next agent replaces it.
    a.kill9();
    assert!(sock.exists());
    let mut b = Agent::start("ux2", &["--control", &addr]);
    assert_eq!(b.count_alive(), 1);
    // A graceful stop removes it.
    b.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(b.wait_exit(Duration::from_secs(10)).is_some());
    assert!(!sock.exists());
    // A path that is not a socket is never replaced.
    std::fs::write(&sock, "keep me").expect("write");
    let (code, _, err) = cli(&["agent", "--bind", "127.0.0.1:0", "--control", &addr]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&sock).expect("kept"), "keep me");
}

#[test]
fn a_control_api_off_loopback_without_a_token_is_warned_about_loudly() {
    let a = Agent::start("open", &["--control", "0.0.0.0:0"]);
    assert!(wait_until(Duration::from_secs(5), || a
        .log()
        .contains("OPEN TO THE NETWORK WITHOUT A TOKEN")));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = token_file(dir.path(), TOKEN);
    let b = Agent::start(
        "shut",
        &["--control", "0.0.0.0:0", "--control-token-file", &file],
    );
    assert_eq!(b.count_alive(), 1);
    assert!(!b.log().contains("WITHOUT A TOKEN"), "{}", b.log());
    let c = Agent::start("local", &[]);
    assert_eq!(c.count_alive(), 1);
    assert!(!c.log().contains("WITHOUT A TOKEN"));
}

/// Count of the open file descriptors of process `pid`.
fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn half_open_control_connections_are_closed_by_the_header_timeout() {
    let a = Agent::start(
        "slow",
        &[
            "--control-header-timeout",
            "500ms",
            "--control-max-connections",
            "600",
        ],
    );
    let before = fds(a.pid());
    let started = Instant::now();
    let mut conns: Vec<TcpStream> = (0..500)
        .map(|i| {
            let mut s = TcpStream::connect(a.control).expect("connect");
            if i % 2 == 0 {
                // Half of them start a request and never finish its header.
                let _ = s.write_all(b"GET /v1/members HTTP/1.1\r\nhost: x\r\n");
            }
            s
        })
        .collect();
    for (i, s) in conns.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 256];
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("connection {i} is still open after 10 s")
            }
            Err(_) => 0, // reset: closed too
        };
        // Closed, at most with an error answer (hyper sends 408 to a started request).
        assert!(
            n == 0 || buf.starts_with(b"HTTP/1.1 408"),
            "connection {i}: {n} bytes"
        );
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    drop(conns);
    assert_eq!(a.count_alive(), 1);
    assert!(a.logged("--control-header-timeout"), "{}", a.log());
    assert!(
        wait_until(Duration::from_secs(5), || fds(a.pid()) <= before + 4),
        "fds: {} before, {} after",
        before,
        fds(a.pid())
    );
}

#[test]
fn connections_over_the_limit_are_answered_503_naming_the_limit() {
    let a = Agent::start("full", &["--control-max-connections", "3"]);
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(a.control).expect("connect"))
        .collect();
    // The agent takes them in order, so the fourth connection is over the limit.
    let resp = raw_http(a.control, &get("/v1/members", None));
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp:?}");
    assert!(
        resp.contains(r#""code":"too_many_connections""#)
            && resp.contains("--control-max-connections"),
        "{resp}"
    );
    drop(held);
    assert!(wait_until(Duration::from_secs(5), || a.count_alive() == 1));
    assert!(a.logged("--control-max-connections"), "{}", a.log());
}

#[test]
fn a_body_over_the_limit_is_refused_naming_the_limit_before_it_is_read() {
    let a = Agent::start("big", &[]);
    let resp = raw_http(
        a.control,
        "POST /v1/event HTTP/1.1\r\nhost: x\r\ncontent-length: 10000000\r\n\r\n{",
    );
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(
        resp.contains("payload_too_large") && resp.contains("the limit is 65536"),
        "{resp}"
    );
    assert_eq!(a.count_alive(), 1);
}
