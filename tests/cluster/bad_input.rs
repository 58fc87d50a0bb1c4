//! Bad input gets a clear error; a running agent keeps running with nothing lost.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use crate::harness::{Agent, cli, raw_http, wait_until};

#[test]
fn unknown_flags_malformed_tags_and_bad_filters_exit_64_naming_the_problem() {
    let cases: [(&[&str], &str); 5] = [
        (&["agent", "--bogus"], "--bogus"),
        (&["agent", "--tag", "novalue"], "--tag"),
        (
            &["agent", "--event-handler", "member-jion=./x.sh"],
            "member-jion",
        ),
        (&["agent", "--profile", "fast"], "fast"),
        (&["agent", "--coalesce", "soon"], "--coalesce"),
    ];
    for (args, needle) in cases {
        let (code, _, err) = cli(args);
        assert_eq!(code, Some(64), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: stderr lacks {needle:?}: {err}"
        );
    }
}

#[test]
fn a_config_file_with_a_typo_is_reported_with_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shoal.toml");
    std::fs::write(&path, "nodee = \"x\"\n").expect("write");
    let (code, _, err) = cli(&["agent", "--config", &path.display().to_string()]);
    assert_eq!(code, Some(64));
    assert!(err.contains("shoal.toml") && err.contains("nodee"), "{err}");
}

#[test]
fn random_bytes_on_the_gossip_port_are_dropped_and_counted() {
    let a = Agent::start("ga", &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..200usize {
        let len = 1 + (i * 37) % 1500;
        let mut buf = Vec::with_capacity(len);
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            buf.push(seed as u8);
        }
        if i % 4 == 0 && len > 5 {
            buf[..5].copy_from_slice(b"SH\x01\x01\x00"); // a valid envelope around garbage
        }
        let _ = sock.send_to(&buf, a.gossip);
        if i % 10 == 9 {
            // Paced, not a burst: 200 datagrams at once can overflow the socket's receive
            // buffer on a loaded machine, and the kernel's drops are not the agent's.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let mut stream = TcpStream::connect(a.gossip).expect("tcp");
    let _ = stream.write_all(b"\x00\x00\x00\x08garbage!");
    drop(stream);
    assert!(wait_until(Duration::from_secs(5), || a
        .info()
        .stats
        .packets_dropped
        >= 120));
    assert!(a.logged("dropped a bad packet"));
    let b = Agent::start("gb", &["--join", &a.join_arg()]);
    assert!(wait_until(Duration::from_secs(5), || a.count_alive() == 2
        && b.count_alive() == 2));
}

#[test]
fn malformed_control_requests_get_json_errors_and_the_agent_keeps_serving() {
    let a = Agent::start("ja", &[]);
    let body = "{not json";
    let resp = raw_http(
        a.control,
        &format!(
            "POST /v1/join HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(
        resp.contains(r#""code":"bad_request""#) && resp.contains("invalid JSON"),
        "{resp}"
    );
    let resp = raw_http(
        a.control,
        "GET /v1/nope HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(
        resp.starts_with("HTTP/1.1 404") && resp.contains(r#""code":"not_found""#),
        "{resp}"
    );
    let resp = raw_http(
        a.control,
        "DELETE /v1/members HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 405"), "{resp}");
    let resp = raw_http(a.control, "garbage\r\n\r\n");
    assert!(!resp.contains("200 OK"), "{resp}");
    assert_eq!(a.count_alive(), 1);
    let (code, _, err) = cli(&["join", "--control", &a.control.to_string(), "127.0.0.1:1"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert_eq!(a.count_alive(), 1);
}

#[test]
fn a_client_command_with_no_agent_names_the_address_it_tried() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let (code, _, err) = cli(&["members", "--control", &addr]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains(&addr) && err.contains("no shoal agent"),
        "{err}"
    );
}

#[test]
fn oversized_datagrams_stalled_frames_and_excess_streams_are_refused_naming_the_limit() {
    let a = Agent::start("la", &[]);
    // A datagram longer than any node sends, in a valid envelope.
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut big = b"SH\x01\x01\x00".to_vec();
    big.resize(3000, 0x41);
    sock.send_to(&big, a.gossip).expect("send");
    assert!(
        wait_until(Duration::from_secs(5), || a
            .log()
            .contains("exceeds the 1404-byte datagram limit")),
        "{}",
        a.log()
    );
    // Frames that declare 4 MiB (the limit) and send nothing, and one over the limit; then
    // more idle streams than the server serves at once: the excess is closed at once.
    let mut held = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(a.gossip).expect("tcp");
        let _ = s.write_all(&(4u32 << 20).to_be_bytes());
        held.push(s);
    }
    assert!(
        wait_until(Duration::from_secs(5), || a
            .log()
            .contains("limit of concurrent inbound streams is reached")),
        "{}",
        a.log()
    );
    let mut over = TcpStream::connect(a.gossip).expect("tcp");
    let _ = over.write_all(&((4u32 << 20) + 1).to_be_bytes());
    drop(held);
    // The agent still serves push-pulls: a new agent joins it.
    let b = Agent::start("lb", &["--join", &a.join_arg()]);
    assert!(wait_until(Duration::from_secs(10), || a.count_alive() == 2
        && b.count_alive() == 2));
}
