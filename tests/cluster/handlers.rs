//! Handler contract: Serf scripts run unchanged; hung handlers are killed without stalling
//! anything else.

use std::time::Duration;

use crate::harness::{Agent, read, scratch, script, wait_until};

#[test]
fn a_bash_handler_written_for_serf_runs_unchanged() {
    let dir = scratch();
    let out = dir.path().join("out");
    // The shape of the handlers in Serf's documentation and in the wild.
    let body = format!(
        r#"#!/bin/bash
if [ "$SERF_EVENT" = "member-join" ]; then
  while read -a values; do
    echo "$SERF_SELF_NAME saw ${{values[0]}} at ${{values[1]}} role=${{values[2]}}" >> {out}
  done
fi
"#,
        out = out.display()
    );
    let handler = script(dir.path(), "handler.sh", &body);
    let h = handler.display().to_string();
    let a = Agent::start("sa", &["--event-handler", &h, "--tag", "role=lb"]);
    let _b = Agent::start("sb", &["--join", &a.join_arg(), "--tag", "role=web"]);
    let saw_b = || read(&out).is_some_and(|t| t.contains("sa saw sb at 127.0.0.1 role=web"));
    assert!(
        wait_until(Duration::from_secs(5), saw_b),
        "handler output: {:?}",
        read(&out)
    );
    assert!(read(&out).is_some_and(|t| t.contains("sa saw sa at 127.0.0.1 role=lb")));
}

#[test]
fn a_hung_handler_is_killed_at_its_timeout_while_membership_converges_and_later_events_run() {
    let dir = scratch();
    let d = dir.path().display().to_string();
    // The first run (the agent's own join) hangs; later runs record their members.
    let body = format!(
        r#"#!/bin/sh
if [ ! -e {d}/hung ]; then touch {d}/hung; exec sleep 1000; fi
cat >> {d}/later
"#
    );
    let h = script(dir.path(), "h.sh", &body).display().to_string();
    let a = Agent::start(
        "ha",
        &[
            "--event-handler",
            &format!("member-join={h}"),
            "--handler-timeout",
            "3s",
        ],
    );
    assert!(wait_until(Duration::from_secs(5), || dir
        .path()
        .join("hung")
        .exists()));
    let b = Agent::start("hb", &["--join", &a.join_arg()]);
    let _c = Agent::start("hc", &["--join", &b.join_arg()]);
    // Gossip does not wait for the hung handler.
    assert!(wait_until(Duration::from_secs(3), || a.count_alive() == 3));
    assert_eq!(
        a.info().stats.handler_timeouts,
        0,
        "converged before the timeout fired"
    );
    // Killed at the timeout; the queued joins then run.
    assert!(wait_until(Duration::from_secs(10), || a
        .info()
        .stats
        .handler_timeouts
        == 1));
    let later = dir.path().join("later");
    let ran = || read(&later).is_some_and(|t| t.contains("hb\t") && t.contains("hc\t"));
    assert!(
        wait_until(Duration::from_secs(5), ran),
        "later runs: {:?}",
        read(&later)
    );
    assert!(a.logged("timed out and was killed"));
}

#[test]
fn handlers_see_the_whole_view_in_the_members_file() {
    let dir = scratch();
    let d = dir.path().display().to_string();
    let handler = format!(
        "member-join=cp \"$SHOAL_MEMBERS_FILE\" {d}/view.tmp && mv {d}/view.tmp {d}/view.json"
    );
    let a = Agent::start("va", &["--event-handler", &handler]);
    let _b = Agent::start("vb", &["--join", &a.join_arg(), "--tag", "role=web"]);
    let view = dir.path().join("view.json");
    let has_both = || {
        read(&view)
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["members"].as_array().map(|ms| ms.len() == 2))
            .unwrap_or(false)
    };
    assert!(
        wait_until(Duration::from_secs(5), has_both),
        "view: {:?}",
        read(&view)
    );
}

#[test]
fn sighup_reloads_handlers_tags_and_log_level_from_the_config_file() {
    let dir = scratch();
    let d = dir.path().display().to_string();
    let cfg = dir.path().join("shoal.toml");
    std::fs::write(&cfg, "log_level = \"info\"\n[tags]\nrole = \"old\"\n").expect("write");
    let c = cfg.display().to_string();
    let a = Agent::start("hup", &["--config", &c]);
    let watcher = format!("member-update=cat > {d}/u.tmp && mv {d}/u.tmp {d}/update");
    let joined = format!("member-join=grep -q '^hup' && touch {d}/hup-joined");
    let b = Agent::start(
        "watcher",
        &[
            "--join",
            &a.join_arg(),
            "--event-handler",
            &watcher,
            "--event-handler",
            &joined,
        ],
    );
    // Wait until the watcher's handlers were told about hup, so the change below is an update
    // (inside the coalescing window it would rightly be folded into the join).
    assert!(wait_until(Duration::from_secs(5), || dir
        .path()
        .join("hup-joined")
        .exists()));

    let new = format!(
        "log_level = \"debug\"\nevent_handlers = [\"member-join=touch {d}/new-handler-ran\"]\n[tags]\nrole = \"new\"\n"
    );
    std::fs::write(&cfg, new).expect("rewrite");
    a.signal(nix::sys::signal::Signal::SIGHUP);
    let update = dir.path().join("update");
    assert!(
        wait_until(Duration::from_secs(5), || update.exists()),
        "no member-update at watcher"
    );
    assert_eq!(
        read(&update).as_deref(),
        Some("hup\t127.0.0.1\tnew\trole=new\n")
    );
    assert!(a.logged("configuration reloaded"));
    // The new handler is live: a third agent's join runs it.
    let _c = Agent::start("late", &["--join", &b.join_arg()]);
    let ran = dir.path().join("new-handler-ran");
    assert!(
        wait_until(Duration::from_secs(5), || ran.exists()),
        "reloaded handler did not run"
    );
}
