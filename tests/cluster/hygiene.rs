//! Handler and file hygiene (issue 10): a handler's background child holds neither its queue
//! nor the agent's file descriptors; a template writes through a symlinked DEST and keeps
//! its mode; a members-file directory left by a crashed agent is removed at the next start.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::harness::{Agent, cli, read, scratch, wait_until};

/// Count of the open file descriptors of process `pid`.
fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The descriptor count once it stopped changing (the same three reads in a row, 50 ms
/// apart; at most 3 s): a run that just ended may still hold its pipes for a moment.
fn settled_fds(pid: i32) -> usize {
    let mut last = (fds(pid), 0);
    wait_until(Duration::from_secs(3), || {
        std::thread::sleep(Duration::from_millis(50));
        let now = fds(pid);
        last = if now == last.0 {
            (now, last.1 + 1)
        } else {
            (now, 0)
        };
        last.1 >= 2
    });
    last.0
}

/// Kills the pids listed in `file` (the background children the handlers started).
fn kill_listed(file: &Path) {
    for pid in read(file).unwrap_or_default().split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn a_handler_that_leaves_a_background_child_does_not_hold_its_queue_or_leak_descriptors() {
    let dir = scratch();
    let pids = dir.path().join("pids");
    let runs = dir.path().join("runs");
    let handler = format!(
        "user=sleep 30 & echo $! >> {}; echo ran >> {}",
        pids.display(),
        runs.display()
    );
    let a = Agent::start("bg", &["--event-handler", &handler]);
    let ctl = a.control.to_string();
    let (code, _, err) = cli(&["event", "--control", &ctl, "first"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(wait_until(Duration::from_secs(5), || read(&runs).is_some()));
    let before = settled_fds(a.pid());
    for i in 1..6 {
        let n = i.to_string();
        let (code, _, err) = cli(&["event", "--control", &ctl, "--coalesce=false", "deploy", &n]);
        assert_eq!(code, Some(0), "{err}");
    }
    // Each run used to wait 2 s for pipes the sleep held: 10 s for these five.
    let ran = wait_until(Duration::from_secs(5), || {
        read(&runs).unwrap_or_default().lines().count() == 6
    });
    // Before the fix each run kept two pipes open as long as its sleep ran: ten more, for
    // 30 s. Now the last run's close within its 100 ms grace (later on a loaded machine).
    let closed = wait_until(Duration::from_secs(5), || fds(a.pid()) <= before + 1);
    let after = fds(a.pid());
    kill_listed(&pids);
    assert!(ran, "runs: {:?}", read(&runs));
    assert!(
        closed,
        "{before} descriptors before the runs, {after} after"
    );
}

#[test]
fn a_template_writes_through_a_symlinked_dest_and_keeps_its_mode() {
    let dir = scratch();
    let src = dir.path().join("t.tmpl");
    std::fs::write(
        &src,
        "{% for m in members %}server {{ m.name }}\n{% endfor %}",
    )
    .expect("src");
    let real = dir.path().join("real.cfg");
    std::fs::write(&real, "old\n").expect("real");
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let link = dir.path().join("haproxy.cfg");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let fresh = dir.path().join("new.cfg");
    let a = Agent::start(
        "tw",
        &[
            "--template",
            &format!("{}:{}", src.display(), link.display()),
            "--template",
            &format!("{}:{}", src.display(), fresh.display()),
        ],
    );
    assert!(
        wait_until(Duration::from_secs(5), || read(&real).as_deref()
            == Some("server tw\n")),
        "{:?}",
        read(&real)
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .expect("link")
            .file_type()
            .is_symlink(),
        "the link stays a link"
    );
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&real), 0o640);
    assert!(wait_until(Duration::from_secs(5), || fresh.exists()));
    assert_eq!(
        mode(&fresh),
        0o644,
        "a new DEST is 0644, not a temporary file's 0600"
    );
    assert_eq!(a.count_alive(), 1);
}

/// The members-file directories in `tmp`.
fn members_dirs(tmp: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(tmp)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("shoal-members-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_members_file_directory_left_by_a_killed_agent_is_removed_at_the_next_start() {
    let tmp = scratch();
    let tmpdir = tmp.path().display().to_string();
    let env = [("TMPDIR", tmpdir.as_str())];
    let mut first = Agent::start_env("crash", &[], &env);
    assert!(wait_until(Duration::from_secs(5), || members_dirs(
        tmp.path()
    )
    .first()
    .is_some_and(|d| tmp.path().join(d).join("lock").exists())));
    let left = members_dirs(tmp.path());
    first.kill9();
    assert_eq!(
        members_dirs(tmp.path()),
        left,
        "a killed agent cannot clean up"
    );
    let live = Agent::start_env("next", &[], &env);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let now = members_dirs(tmp.path());
            now.len() == 1 && now != left
        }),
        "{:?}",
        members_dirs(tmp.path())
    );
    assert!(
        live.logged("removed members-file directories"),
        "{}",
        live.log()
    );
    // A running agent's directory is never taken for a stale one.
    let other = Agent::start_env("other", &[], &env);
    assert!(wait_until(Duration::from_secs(5), || members_dirs(
        tmp.path()
    )
    .len()
        == 2));
    assert!(
        !other.log().contains("removed members-file"),
        "{}",
        other.log()
    );
    assert_eq!(live.count_alive(), 1);
}
