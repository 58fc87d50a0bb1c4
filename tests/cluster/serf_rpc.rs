//! Serf's RPC protocol spoken directly (msgpack over TCP), for what Serf's CLI never does:
//! a stream client that answers queries with `respond`, `stop`, the protocol's errors, and
//! requests that break it.

use std::time::Duration;

use rmpv::Value;
use shoal::rpc::wire::{self, Frames, map};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

use crate::harness::{Agent, cli, scratch};

/// Longest wait for one answer.
const LIMIT: Duration = Duration::from_secs(10);

struct Client {
    frames: Frames<OwnedReadHalf>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl Client {
    async fn connect(agent: &Agent) -> Client {
        let stream = TcpStream::connect(agent.control).await.expect("connect");
        let (read, write) = stream.into_split();
        Client {
            frames: Frames::new(read),
            write,
        }
    }

    async fn send(&mut self, command: &str, seq: u64, body: Option<Value>) {
        let mut bytes = wire::encode(&map([
            ("Command", Value::from(command)),
            ("Seq", Value::from(seq)),
        ]))
        .to_vec();
        if let Some(body) = body {
            bytes.extend_from_slice(&wire::encode(&body));
        }
        self.write.write_all(&bytes).await.expect("write");
    }

    /// The next value; `None` when the agent closed the connection.
    async fn next(&mut self) -> Option<Value> {
        tokio::time::timeout(LIMIT, self.frames.next())
            .await
            .expect("an answer in time")
            .ok()
            .flatten()
    }

    /// The next header: (Seq, Error).
    async fn header(&mut self) -> (u64, String) {
        let h = self.next().await.expect("a header");
        (
            wire::uint(&h, "Seq").expect("Seq"),
            wire::string(&h, "Error").expect("Error"),
        )
    }

    async fn handshake(&mut self) {
        self.send("handshake", 1, Some(map([("Version", Value::from(1))])))
            .await;
        assert_eq!(self.header().await, (1, String::new()));
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_stream_client_is_handed_queries_and_its_respond_is_the_members_answer() {
    let a = Agent::start("s1", &[]);
    rt().block_on(async {
        let mut c = Client::connect(&a).await;
        c.handshake().await;
        c.send("stream", 2, Some(map([("Type", Value::from("query:ask"))])))
            .await;
        assert_eq!(c.header().await, (2, String::new()));
        let query = map([
            ("Name", Value::from("ask")),
            ("Payload", Value::Binary(b"q?".to_vec())),
            ("RequestAck", Value::from(true)),
            ("Timeout", Value::from(1_500_000_000i64)),
        ]);
        c.send("query", 3, Some(query)).await;
        assert_eq!(c.header().await, (3, String::new()));
        let (mut acks, mut answers, mut done, mut responded) = (0, Vec::new(), false, false);
        while !done {
            let (seq, error) = c.header().await;
            assert_eq!(error, "", "seq {seq}");
            if seq == 4 {
                // `respond` is answered with a bare header.
                continue;
            }
            let record = c.next().await.expect("a record");
            match seq {
                2 => {
                    assert_eq!(wire::string(&record, "Event").as_deref(), Ok("query"));
                    assert_eq!(wire::bytes(&record, "Payload"), Ok(b"q?".to_vec()));
                    assert!(
                        wire::field(&record, "shoal.id").is_nil(),
                        "internal fields removed"
                    );
                    let id = wire::uint(&record, "ID").expect("ID");
                    let body = map([
                        ("ID", Value::from(id)),
                        ("Payload", Value::Binary(b"42".to_vec())),
                    ]);
                    c.send("respond", 4, Some(body)).await;
                    responded = true;
                }
                3 => match wire::string(&record, "Type").expect("Type").as_str() {
                    "ack" => acks += 1,
                    "response" => answers.push(wire::bytes(&record, "Payload").expect("payload")),
                    "done" => done = true,
                    other => panic!("unknown record {other}"),
                },
                other => panic!("a record for seq {other}"),
            }
        }
        assert!(responded);
        assert_eq!((acks, answers), (1, vec![b"42".to_vec()]));
    });
}

#[test]
fn protocol_errors_get_serfs_error_strings_and_bad_requests_never_hang() {
    let a = Agent::start("s1", &[]);
    rt().block_on(async {
        // A command before the handshake: Serf's error, then the connection closes.
        let mut c = Client::connect(&a).await;
        c.send("members", 1, None).await;
        assert_eq!(c.header().await, (1, "Handshake required".to_string()));
        assert!(c.next().await.is_none());

        let mut c = Client::connect(&a).await;
        c.send("handshake", 1, Some(map([("Version", Value::from(2))])))
            .await;
        assert_eq!(c.header().await, (1, "Unsupported IPC version".to_string()));
        c.handshake().await;
        c.send("handshake", 2, Some(map([("Version", Value::from(1))])))
            .await;
        assert_eq!(
            c.header().await,
            (2, "Handshake already performed".to_string())
        );

        // No coordinates: Serf's answer for a node without one.
        c.send(
            "get-coordinate",
            3,
            Some(map([("Node", Value::from("s1"))])),
        )
        .await;
        assert_eq!(c.header().await, (3, String::new()));
        let body = c.next().await.expect("body");
        assert_eq!(wire::boolean(&body, "Ok"), Ok(false));

        c.send("respond", 4, Some(map([("ID", Value::from(99))])))
            .await;
        assert_eq!(
            c.header().await,
            (4, "No pending queries matching ID".to_string())
        );
        c.send("stream", 5, Some(map([("Type", Value::from("nonsense"))])))
            .await;
        assert_eq!(c.header().await, (5, "Invalid event filter".to_string()));
        c.send("monitor", 6, Some(map([("LogLevel", Value::from("info"))])))
            .await;
        assert_eq!(c.header().await, (6, String::new()));
        c.send("monitor", 7, Some(map([("LogLevel", Value::from("info"))])))
            .await;
        // Log lines of the first monitor may come first.
        loop {
            let (seq, error) = c.header().await;
            if seq == 7 {
                assert_eq!(error, "Monitor already exists");
                break;
            }
            assert_eq!(seq, 6);
            let line = c.next().await.expect("log record");
            assert!(wire::string(&line, "Log").is_ok());
        }
        c.send("stop", 8, Some(map([("Stop", Value::from(6))])))
            .await;
        loop {
            let (seq, error) = c.header().await;
            if seq == 8 {
                assert_eq!(error, "");
                break;
            }
            let _ = c.next().await;
        }
        // A bad field is an error naming it, and the connection goes on.
        c.send("event", 9, Some(map([("Name", Value::from(5))])))
            .await;
        let (seq, error) = c.header().await;
        assert_eq!(seq, 9);
        assert!(error.contains("Name must be a string"), "{error}");
        c.send(
            "members-filtered",
            10,
            Some(map([("Name", Value::from("(["))])),
        )
        .await;
        let (seq, error) = c.header().await;
        assert_eq!(seq, 10);
        assert!(error.starts_with("Failed to compile regex"), "{error}");
        let _members = c.next().await.expect("an empty list");
        c.send("members", 11, None).await;
        assert_eq!(c.header().await, (11, String::new()));
        let body = c.next().await.expect("members");
        let members = wire::field(&body, "Members")
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(members.len(), 1);

        // An unknown command: Serf's error, then the connection closes.
        c.send("frobnicate", 12, None).await;
        assert_eq!(c.header().await, (12, "Unsupported command".to_string()));
        assert!(c.next().await.is_none());
    });
    // The agent is still serving, over HTTP as well.
    assert_eq!(a.count_alive(), 1);
}

#[test]
fn rpc_addr_and_rpc_auth_from_a_config_file_open_an_rpc_only_listener_with_that_key() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = scratch();
    let file = dir.path().join("shoal.toml");
    let text = format!("rpc_addr = \"127.0.0.1:{port}\"\nrpc_auth = \"from-file\"\n");
    std::fs::write(&file, text).expect("config");
    let a = Agent::start("s1", &["--config", file.to_str().expect("utf-8")]);
    rt().block_on(async {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (read, write) = stream.into_split();
        let mut c = Client {
            frames: Frames::new(read),
            write,
        };
        c.handshake().await;
        c.send("stats", 2, None).await;
        assert_eq!(c.header().await, (2, "Authentication required".to_string()));
        c.send(
            "auth",
            3,
            Some(map([("AuthKey", Value::from("from-file"))])),
        )
        .await;
        assert_eq!(c.header().await, (3, String::new()));
        c.send("stats", 4, None).await;
        assert_eq!(c.header().await, (4, String::new()));
        let stats = c.next().await.expect("stats");
        let agent = wire::field(&stats, "agent");
        assert_eq!(wire::string(agent, "name").as_deref(), Ok("s1"));
    });
    drop(a);
    let (code, _, err) = cli(&["agent", "--node", "x", "--rpc-addr", "localhost"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("--rpc-addr") && err.contains("localhost"),
        "{err}"
    );
}
