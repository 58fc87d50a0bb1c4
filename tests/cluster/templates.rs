//! `--template SRC:DEST[:COMMAND]`: rendered from the member view, atomically, only on change.

use std::time::Duration;

use crate::harness::{Agent, read, scratch, wait_until};

#[test]
fn a_template_follows_membership_and_its_command_runs_after_each_change() {
    let dir = scratch();
    let src = dir.path().join("backends.tmpl");
    let dest = dir.path().join("backends.cfg");
    let runs = dir.path().join("runs");
    std::fs::write(
        &src,
        "{% for m in members if m.status == 'alive' and m.tags.role == 'web' %}\nserver {{ m.name }} {{ m.ip }}:{{ m.tags.port | default('80') }}\n{% endfor %}\n",
    )
    .expect("write template");
    let spec = format!(
        "{}:{}:echo ran >> {}",
        src.display(),
        dest.display(),
        runs.display()
    );
    let lb = Agent::start("lb", &["--template", &spec, "--tag", "role=lb"]);
    let web1 = Agent::start(
        "web1",
        &[
            "--join",
            &lb.join_arg(),
            "--tag",
            "role=web",
            "--tag",
            "port=8080",
        ],
    );
    let mut web2 = Agent::start("web2", &["--join", &lb.join_arg(), "--tag", "role=web"]);
    let both = "server web1 127.0.0.1:8080\nserver web2 127.0.0.1:80\n";
    assert!(
        wait_until(Duration::from_secs(5), || read(&dest).as_deref()
            == Some(both)),
        "{:?}",
        read(&dest)
    );
    web2.kill9();
    let one = "server web1 127.0.0.1:8080\n";
    assert!(
        wait_until(Duration::from_secs(10), || read(&dest).as_deref()
            == Some(one)),
        "{:?}",
        read(&dest)
    );
    let count = read(&runs).unwrap_or_default().lines().count();
    assert!(count >= 2, "command ran {count} times");
    drop(web1);
}

#[test]
fn an_unchanged_rendering_is_not_rewritten_and_runs_no_command() {
    let dir = scratch();
    let src = dir.path().join("t.tmpl");
    let dest = dir.path().join("t.out");
    let runs = dir.path().join("runs");
    std::fs::write(&src, "I am {{ local.name }}\n").expect("write");
    let spec = format!(
        "{}:{}:echo ran >> {}",
        src.display(),
        dest.display(),
        runs.display()
    );
    let a = Agent::start("stable", &["--template", &spec]);
    assert!(wait_until(Duration::from_secs(5), || read(&runs).is_some()));
    let _b = Agent::start("other", &["--join", &a.join_arg()]);
    assert!(wait_until(Duration::from_secs(5), || a.count_alive() == 2));
    std::thread::sleep(Duration::from_millis(400)); // past the coalescing window: a render happened
    assert_eq!(read(&dest).as_deref(), Some("I am stable\n"));
    assert_eq!(
        read(&runs).unwrap_or_default().lines().count(),
        1,
        "re-run for identical output"
    );
}

#[test]
fn a_broken_template_is_reported_with_file_and_line_and_the_last_good_file_stays() {
    let dir = scratch();
    let src = dir.path().join("broken.tmpl");
    let dest = dir.path().join("out.cfg");
    std::fs::write(&src, "{% for m in members %}{{ m.name }}\n{% endfor %}").expect("write");
    let spec = format!("{}:{}", src.display(), dest.display());
    let a = Agent::start("ta", &["--template", &spec]);
    assert!(wait_until(Duration::from_secs(5), || read(&dest)
        .as_deref()
        == Some("ta\n")));
    std::fs::write(&src, "fine\n{% for m in members %}\n{{ m.name \n").expect("break it");
    let _b = Agent::start("tb", &["--join", &a.join_arg()]);
    let needle = format!("{}:3", src.display());
    assert!(
        wait_until(Duration::from_secs(5), || a.log().contains(&needle)),
        "log:\n{}",
        a.log()
    );
    assert_eq!(
        read(&dest).as_deref(),
        Some("ta\n"),
        "last good file replaced"
    );
    assert_eq!(a.count_alive(), 2, "agent keeps running");
}
