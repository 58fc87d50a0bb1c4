//! Safe names and tags at the door (issue 10): a node name or a tag with a newline or another
//! control character is refused with a clear error at the command line, in a config file, by
//! `shoal tags` and by `POST /v1/tags`; from the network it is dropped and counted (the
//! engine's and the broadcast handler's unit tests show that path).

use crate::harness::{Agent, cli, post_raw, tags_of};

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
