//! Runtime tags: `shoal tags` changes reach every member (with `member-update`), a 4 KiB set
//! arrives intact, an oversized one is refused with the limit, and `--tags-file` keeps them
//! across a restart.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::{Agent, cli, post_raw, read, scratch, tags_of, wait_until};

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_tag_change_reaches_every_member_with_member_update_and_a_4_kib_set_arrives_intact() {
    let dir = scratch();
    let d = dir.path().display().to_string();
    let a = Agent::start("ta", &["--tag", "role=web", "--tag", "old=1"]);
    // Without coalescing each member event is its own run, so the tag change cannot be folded
    // into the join that preceded it.
    let others: Vec<Agent> = (1..4)
        .map(|i| {
            let handler = format!("member-update=cat >> {d}/update-{i}");
            Agent::start(
                &format!("t{i}"),
                &[
                    "--join",
                    &a.join_arg(),
                    "--coalesce",
                    "0",
                    "--event-handler",
                    &handler,
                ],
            )
        })
        .collect();
    assert!(wait_until(Duration::from_secs(10), || others
        .iter()
        .all(|o| o.count_alive() == 4)));
    let control = a.control.to_string();
    let (code, out, err) = cli(&[
        "tags",
        "--control",
        &control,
        "--set",
        "role=db",
        "--set",
        "zone=b",
        "--delete",
        "old",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "Successfully updated agent tags\n");
    let want = tags(&[("role", "db"), ("zone", "b")]);
    for (i, o) in others.iter().enumerate() {
        assert!(
            wait_until(Duration::from_secs(5), || tags_of(o, "ta")
                == Some(want.clone())),
            "{} lists {:?}",
            o.name,
            tags_of(o, "ta")
        );
        let update = dir.path().join(format!("update-{}", i + 1));
        let ran =
            || read(&update).is_some_and(|t| t.contains("ta\t127.0.0.1\tdb\trole=db,zone=b\n"));
        assert!(
            wait_until(Duration::from_secs(5), ran),
            "{}: {:?}",
            o.name,
            read(&update)
        );
    }

    // 4 KiB: more than one datagram can carry; it travels by push-pull.
    let big = "x".repeat(4096 - "big".len());
    let set_big = format!("big={big}");
    let (code, _, err) = cli(&[
        "tags",
        "--control",
        &control,
        "--set",
        &set_big,
        "--delete",
        "role",
        "--delete",
        "zone",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let want = tags(&[("big", &big)]);
    for o in &others {
        assert!(
            wait_until(Duration::from_secs(10), || tags_of(o, "ta")
                == Some(want.clone())),
            "{} lists {:?}",
            o.name,
            tags_of(o, "ta").map(|t| t.values().map(String::len).collect::<Vec<_>>())
        );
    }

    // Over the limit: refused, naming the size and the limit; nothing changed.
    let huge = format!("huge={}", "y".repeat(5000));
    let (code, _, err) = cli(&["tags", "--control", &control, "--set", &huge]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("tags take 9100 bytes; the limit is 4096"),
        "{err}"
    );
    let resp = post_raw(
        a.control,
        "/v1/tags",
        &format!(r#"{{"set":{{"huge":"{}"}}}}"#, "y".repeat(5000)),
    );
    assert!(
        resp.starts_with("HTTP/1.1 400") && resp.contains(r#""code":"bad_request""#),
        "{resp}"
    );
    assert_eq!(tags_of(&a, "ta"), Some(want));
}

#[test]
fn bad_tags_requests_get_usage_errors_or_json_errors_and_the_agent_keeps_its_tags() {
    let a = Agent::start("tb", &["--tag", "role=web"]);
    let control = a.control.to_string();
    for args in [
        &["tags", "--control", &control][..],
        &["tags", "--control", &control, "--set", "novalue"][..],
        &["tags", "--control", &control, "--bogus"][..],
    ] {
        let (code, _, err) = cli(args);
        assert_eq!(code, Some(64), "{args:?}: {err}");
    }
    for body in ["{not json", r#"{"set":{"a":1}}"#, r#"{"sett":{}}"#, "{}"] {
        let resp = post_raw(a.control, "/v1/tags", body);
        assert!(
            resp.starts_with("HTTP/1.1 400") && resp.contains(r#""code":"bad_request""#),
            "{body}: {resp}"
        );
    }
    assert_eq!(tags_of(&a, "tb"), Some(tags(&[("role", "web")])));
}

#[test]
fn a_tags_file_keeps_runtime_tags_across_a_restart_and_wins_over_tag_flags() {
    let dir = scratch();
    let file = dir.path().join("tags.json");
    let f = file.display().to_string();
    let flags = ["--tag", "role=flag", "--tags-file", f.as_str()];
    let mut a = Agent::start("tf", &flags);
    assert_eq!(tags_of(&a, "tf"), Some(tags(&[("role", "flag")])));
    let control = a.control.to_string();
    let (code, _, err) = cli(&["tags", "--control", &control, "--set", "role=runtime"]);
    assert_eq!(code, Some(0), "{err}");
    let kept: BTreeMap<String, String> =
        serde_json::from_str(&read(&file).expect("tags file written")).expect("json");
    assert_eq!(kept, tags(&[("role", "runtime")]));
    a.kill9();
    let b = Agent::start("tf", &flags);
    assert_eq!(tags_of(&b, "tf"), Some(tags(&[("role", "runtime")])));
}

#[test]
fn a_sighup_applies_the_configurations_tag_changes_and_keeps_tags_set_at_runtime() {
    let dir = scratch();
    let cfg = dir.path().join("shoal.toml");
    std::fs::write(&cfg, "[tags]\nrole = \"old\"\ngone = \"x\"\n").expect("write");
    let a = Agent::start("th", &["--config", &cfg.display().to_string()]);
    let control = a.control.to_string();
    let (code, _, err) = cli(&["tags", "--control", &control, "--set", "extra=1"]);
    assert_eq!(code, Some(0), "{err}");
    std::fs::write(&cfg, "[tags]\nrole = \"new\"\n").expect("rewrite");
    a.signal(nix::sys::signal::Signal::SIGHUP);
    let want = tags(&[("role", "new"), ("extra", "1")]);
    assert!(
        wait_until(Duration::from_secs(5), || tags_of(&a, "th")
            == Some(want.clone())),
        "{:?}",
        tags_of(&a, "th")
    );
}
