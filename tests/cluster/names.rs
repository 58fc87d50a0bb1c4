//! Safe names and tags at the door (issue 10): a node name or a tag with a newline or another
//! control character is refused with a clear error at the command line, in a config file, by
//! `shoal tags` and by `POST /v1/tags`; from the network it is dropped and counted, and the
//! member is never listed nor rendered into a template.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use shoal_core::Identity;
use shoal_core::anti_entropy::{self, SyncState};
use shoal_core::membership::Meta;

use crate::harness::{Agent, cli, post_raw, read, scratch, tags_of, wait_until};

/// The README's HAProxy template attack.
const ATTACK: &str = "web-9\n    server evil 6.6.6.6:80 check\n#";

#[test]
fn an_unsafe_node_name_or_tag_on_the_command_line_or_in_a_config_file_exits_64_naming_it() {
    let tag = "http_port=80\n    server evil 6.6.6.6:80 check";
    let cases: [(&[&str], &str); 5] = [
        (&["agent", "--node", ATTACK], "--node"),
        (&["agent", "--node", "a b"], "--node"),
        (
            &["agent", "--node", "ok", "--tag", tag],
            "control character",
        ),
        (&["agent", "--node", "ok", "--tag", "bad key=v"], "tag key"),
        (
            &["agent", "--node", "ok", "--tag", "k=\u{1b}[2J"],
            "control character",
        ),
    ];
    for (args, needle) in cases {
        let (code, _, err) = cli(args);
        assert_eq!(code, Some(64), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: stderr lacks {needle:?}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shoal.toml");
    std::fs::write(&path, "node = \"web-9\\n    server evil\"\n").expect("write");
    let (code, _, err) = cli(&["agent", "--config", &path.display().to_string()]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--node") && err.contains("'\\n'"), "{err}");
    std::fs::write(&path, "node = \"ok\"\n[tags]\nrole = \"web\\r\"\n").expect("write");
    let (code, _, err) = cli(&["agent", "--config", &path.display().to_string()]);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("role") && err.contains("control character"),
        "{err}"
    );
}

#[test]
fn shoal_tags_and_the_tags_endpoint_refuse_a_control_character_and_change_nothing() {
    let a = Agent::start("tg", &["--tag", "role=web"]);
    let ctl = a.control.to_string();
    let (code, _, err) = cli(&[
        "tags",
        "--control",
        &ctl,
        "--set",
        "http_port=80\n    server evil 6.6.6.6:80 check",
    ]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("control character"), "{err}");
    let (code, _, err) = cli(&["tags", "--control", &ctl, "--set", "a/b=1"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("tag key"), "{err}");
    for body in [
        r#"{"set":{"http_port":"80\n    server evil 6.6.6.6:80 check"}}"#,
        r#"{"set":{"bad key":"v"}}"#,
        r#"{"set":{"k":"\u0000"}}"#,
        r#"{"set":{"k":"\u2028"}}"#,
    ] {
        let resp = post_raw(a.control, "/v1/tags", body);
        assert!(resp.starts_with("HTTP/1.1 400"), "{body}: {resp}");
        assert!(resp.contains(r#""code":"bad_request""#), "{body}: {resp}");
    }
    let resp = post_raw(
        a.control,
        "/v1/tags",
        r#"{"set":{"http_port":"80\n    server evil"}}"#,
    );
    assert!(resp.contains("control character"), "{resp}");
    let (code, _, err) = cli(&["tags", "--control", &ctl, "--set", "zone=eu-1 (west)"]);
    assert_eq!(code, Some(0), "printable values are fine: {err}");
    let tags = tags_of(&a, "tg").expect("listed");
    assert_eq!(tags.len(), 2, "{tags:?}");
    assert_eq!(tags["zone"], "eu-1 (west)");
}

/// Sends `state` as a push-pull to the agent at `gossip` (plaintext, as any process on the
/// network could) and reads its answer, so the agent has applied it.
fn push_pull(gossip: std::net::SocketAddr, state: &SyncState) {
    let body = anti_entropy::encode_frame(state).expect("encode");
    let mut stream = TcpStream::connect(gossip).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(&(body.len() as u32).to_be_bytes())
        .expect("write");
    stream.write_all(&body).expect("write");
    let mut len = [0u8; 4];
    let _ = stream.read_exact(&mut len);
}

/// A member announced by a stranger's push-pull with `name` and `tags`, at `addr`.
fn announce(addr: std::net::SocketAddr, name: &str, tags: &[(&str, &str)]) -> SyncState {
    let id = Identity::new(addr);
    SyncState {
        from: Some(id),
        members: vec![foca::Member::alive(id)],
        metas: vec![Meta {
            id,
            version: 0,
            name: name.into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            role: Default::default(),
        }],
        ..SyncState::default()
    }
}

#[test]
fn a_member_announcing_an_unsafe_name_or_tag_from_the_network_is_never_listed_nor_rendered() {
    let dir = scratch();
    let src = dir.path().join("haproxy.tmpl");
    let dest = dir.path().join("haproxy.cfg");
    std::fs::write(
        &src,
        "{% for m in members %}    server {{ m.name }} {{ m.ip }}:{{ m.tags.http_port | default('80') }} check\n{% endfor %}",
    )
    .expect("template");
    let lb = Agent::start(
        "lb",
        &[
            "--template",
            &format!("{}:{}", src.display(), dest.display()),
        ],
    );
    // Addresses of our own that nothing answers on: the forged members' gossip addresses.
    let holes: Vec<UdpSocket> = (0..3)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let at = |i: usize| holes[i].local_addr().expect("addr");
    push_pull(lb.gossip, &announce(at(0), ATTACK, &[]));
    push_pull(
        lb.gossip,
        &announce(
            at(1),
            "web-8",
            &[("http_port", "80 check\n    server evil 6.6.6.6:80")],
        ),
    );
    // The same forged kind of member with a safe name and tags is listed: the refusal is
    // the rules', not the forgery's.
    push_pull(
        lb.gossip,
        &announce(at(2), "web-7", &[("http_port", "8080")]),
    );
    assert!(
        wait_until(Duration::from_secs(5), || lb.info().stats.metas_refused
            >= 2
            && read(&dest).is_some_and(|t| t.contains("web-7"))),
        "refused {}, {:?}",
        lb.info().stats.metas_refused,
        read(&dest)
    );
    let names: Vec<String> = lb
        .try_members()
        .expect("members")
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("web-9") || n == "web-8"),
        "{names:?}"
    );
    let rendered = read(&dest).unwrap_or_default();
    assert!(!rendered.contains("evil"), "{rendered}");
    assert!(lb.logged("refused a member's name or tags"), "{}", lb.log());
}
