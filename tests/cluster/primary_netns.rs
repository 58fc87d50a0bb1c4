//! Primary selection across a partition, in network namespaces (needs root; skipped with a
//! `SKIP:` line otherwise): with `--group-quorum 2`, the single node of a 2-vs-1 split never
//! takes the role. The measurements behind docs/primary.md's honest part are in
//! `primary_partition.rs`.

use std::path::Path;
use std::time::Duration;

use shoal_proto::PrimaryResponse;
use shoal_testkit::{clean_command, poll};

use crate::harness::SHOAL;
use crate::netns::lab::{Host, Lab, NsAgent};
use crate::netns::{PORT, all_alive, check_views, utc_now, wait_ready_all};

/// `shoal primary --format json` in the agent's namespace: the answer, if it gave one.
pub(crate) fn ns_primary(agent: &NsAgent) -> Option<PrimaryResponse> {
    let out = clean_command("ip")
        .args(["netns", "exec", agent.host.ns.as_str(), SHOAL])
        .args(["primary", "--format", "json"])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// The agent arguments of a member of group `lb` whose scripts append `STATE UNIXTIME` lines
/// to `dir/NAME`.
pub(crate) fn group_agent_args(
    dir: &Path,
    joins: &[&Host],
    priority: u32,
    extra: &[&str],
) -> Vec<String> {
    let record = |state: &str| {
        format!(
            "echo \"{state} $(date +%s.%N)\" >> {}/$SERF_SELF_NAME",
            dir.display()
        )
    };
    let mut args: Vec<String> = ["agent", "--profile", "lan", "--group", "lb"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for h in joins {
        args.push("--join".into());
        args.push(format!("{}:{PORT}", h.ip));
    }
    for (flag, value) in [
        ("--priority", priority.to_string()),
        ("--on-primary", record("primary")),
        ("--on-backup", record("backup")),
        ("--on-fault", record("fault")),
    ] {
        args.push(flag.into());
        args.push(value);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// How many times `name`'s on-STATE script ran.
fn runs(dir: &Path, name: &str, state: &str) -> usize {
    std::fs::read_to_string(dir.join(name)).map_or(0, |t| {
        t.lines()
            .filter(|l| l.split(' ').next() == Some(state))
            .count()
    })
}

/// Waits until every agent's answer satisfies `ok`; panics with what each said otherwise.
pub(crate) fn wait_primaries(
    agents: &[NsAgent],
    limit: Duration,
    what: &str,
    ok: impl Fn(&NsAgent, &PrimaryResponse) -> bool,
) {
    let result = poll(limit, Duration::from_millis(100), || {
        let answers: Vec<_> = agents.iter().map(|a| (a, ns_primary(a))).collect();
        if answers
            .iter()
            .all(|(a, p)| p.as_ref().is_some_and(|p| ok(a, p)))
        {
            return Ok(());
        }
        let said: Vec<String> = answers
            .iter()
            .map(|(a, p)| {
                let p = p.as_ref();
                format!(
                    "{}: primary {:?} state {:?}",
                    a.host.hostname,
                    p.and_then(|p| p.primary.clone()),
                    p.and_then(|p| p.state.clone())
                )
            })
            .collect();
        Err(said.join("; "))
    });
    if let Err((why, took)) = result {
        panic!("after {took:?}, not {what}: {why}");
    }
}

#[test]
fn in_a_two_against_one_partition_with_group_quorum_2_the_single_node_never_runs_on_primary() {
    let test =
        "in_a_two_against_one_partition_with_group_quorum_2_the_single_node_never_runs_on_primary";
    let Some(mut lab) = Lab::new(test, 12) else {
        return;
    };
    lab.bridge("br-a");
    lab.bridge("br-b");
    lab.link_bridges("br-a", "xa", "br-b", "xb");
    let a0 = lab.host("br-a", "a0");
    let a1 = lab.host("br-a", "a1");
    let b0 = lab.host("br-b", "b0");
    let hosts = [a0.clone(), a1.clone(), b0.clone()];
    let dir = lab.dir().to_path_buf();
    let quorum = ["--group-quorum", "2"];
    let mut agents: Vec<NsAgent> = [(&a0, 150), (&a1, 100), (&b0, 50)]
        .into_iter()
        .map(|(h, priority)| {
            let args = group_agent_args(&dir, &[&a0, &b0], priority, &quorum);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            lab.spawn_agent(h, &args)
        })
        .collect();
    wait_ready_all(&mut agents);
    if let Err((why, took)) = poll(Duration::from_secs(10), Duration::from_millis(100), || {
        check_views(&agents, &hosts, all_alive(&hosts))
    }) {
        panic!("after {took:?} the 3 agents did not converge:\n{why}");
    }
    wait_primaries(&agents, Duration::from_secs(10), "all on a0", |_, p| {
        p.primary.as_deref() == Some("a0")
    });

    lab.set_link("xa", false);
    eprintln!("netns: cut at {} (UTC)", utc_now());
    // b0 alone: it sees both others failed, and no primary; a0 stays primary on its side.
    let split = |agent: &NsAgent| -> Vec<(String, &'static str)> {
        let alone = agent.host.hostname == "b0";
        hosts
            .iter()
            .map(|h| {
                let same_side = (h.hostname == "b0") == alone;
                (
                    h.hostname.clone(),
                    if same_side { "alive" } else { "failed" },
                )
            })
            .collect()
    };
    if let Err((why, took)) = poll(Duration::from_secs(20), Duration::from_millis(200), || {
        check_views(&agents, &hosts, split)
    }) {
        panic!("{took:?} after the cut, the sides do not list each other failed:\n{why}");
    }
    wait_primaries(
        &agents,
        Duration::from_secs(5),
        "split as expected",
        |a, p| match a.host.hostname.as_str() {
            "b0" => p.primary.is_none() && p.state.as_deref() == Some("backup"),
            _ => p.primary.as_deref() == Some("a0"),
        },
    );
    assert_eq!(
        runs(&dir, "b0", "primary"),
        0,
        "b0 ran on-primary while alone"
    );

    lab.set_link("xa", true);
    if let Err((why, took)) = poll(Duration::from_secs(15), Duration::from_millis(100), || {
        check_views(&agents, &hosts, all_alive(&hosts))
    }) {
        panic!("after {took:?} the partition did not heal:\n{why}");
    }
    wait_primaries(
        &agents,
        Duration::from_secs(10),
        "all on a0 again",
        |_, p| p.primary.as_deref() == Some("a0"),
    );
    assert_eq!(runs(&dir, "b0", "primary"), 0, "b0 ran on-primary");
    // (a0 may have stepped down and back meanwhile: on a loaded machine a member of its own
    // side can be declared failed for a moment, which takes it below the quorum.)
}
