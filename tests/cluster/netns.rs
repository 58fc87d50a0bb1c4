//! End-to-end tests in network namespaces: every agent has its own network stack (and
//! hostname), on Linux bridges in a private "hub" namespace, with the default gossip and
//! control ports. Needs root; skipped with a `SKIP:` line otherwise.

pub(crate) mod lab;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lab::{Host, Lab, NsAgent, members_of_all};
use shoal_testkit::poll;

pub(crate) const PORT: u16 = 7948;

/// Checks that every agent lists exactly `expected` (name, status), each at its host's
/// address; `Err` describes every difference.
pub(crate) fn check_views(
    agents: &[NsAgent],
    hosts: &[Host],
    expected: impl Fn(&NsAgent) -> Vec<(String, &'static str)>,
) -> Result<(), String> {
    let mut problems = Vec::new();
    for (agent, view) in agents.iter().zip(members_of_all(agents)) {
        let me = &agent.host.hostname;
        let view = match view {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("{me}: {e}"));
                continue;
            }
        };
        let want: BTreeSet<(String, &str)> = expected(agent).into_iter().collect();
        let got: BTreeSet<(String, &str)> = view
            .iter()
            .map(|m| (m.name.clone(), m.status.as_str()))
            .collect();
        if want != got {
            let wrong: Vec<String> = got
                .difference(&want)
                .map(|(n, s)| format!("{n}={s}"))
                .collect();
            let missing: Vec<String> = want
                .difference(&got)
                .map(|(n, s)| format!("{n}={s}"))
                .collect();
            problems.push(format!(
                "{me}: lists {} members, unexpected {wrong:?}, missing {missing:?}",
                view.len()
            ));
            continue;
        }
        for m in &view {
            if let Some(h) = hosts.iter().find(|h| h.hostname == m.name) {
                let addr = format!("{}:{PORT}", h.ip);
                if m.addr != addr {
                    problems.push(format!("{me}: lists {} at {}, not {addr}", m.name, m.addr));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

pub(crate) fn all_alive(hosts: &[Host]) -> impl Fn(&NsAgent) -> Vec<(String, &'static str)> + '_ {
    |_| {
        hosts
            .iter()
            .map(|h| (h.hostname.clone(), "alive"))
            .collect()
    }
}

/// The time of day, UTC, as `HH:MM:SS.mmm`, to find a moment in the agents' logs.
pub(crate) fn utc_now() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
        % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

pub(crate) fn wait_ready_all(agents: &mut [NsAgent]) {
    for a in agents.iter_mut() {
        let ready = a
            .wait_ready(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ready.name, a.host.hostname, "the node name is the hostname");
        eprintln!(
            "netns: {} ready, advertising {}",
            ready.name, ready.advertise
        );
    }
}

#[test]
fn ten_agents_started_at_once_with_identical_arguments_form_one_cluster() {
    let Some(mut lab) = Lab::new(
        "ten_agents_started_at_once_with_identical_arguments_form_one_cluster",
        1,
    ) else {
        return;
    };
    lab.bridge("br0");
    let hosts: Vec<Host> = (0..10)
        .map(|k| lab.host("br0", &format!("node{k}")))
        .collect();
    // One name, ten addresses: the usual DNS setup for "the peers", here in /etc/hosts.
    let peers: String = hosts.iter().map(|h| format!("{}\tpeers\n", h.ip)).collect();
    for h in &hosts {
        lab.write_hosts(h, &peers);
    }
    assert_ne!(
        lab.ping(&hosts[0], hosts[9].ip),
        Some(false),
        "node0 cannot ping node9"
    );

    let started = Instant::now();
    let args = ["agent", "--join", "peers:7948", "--profile", "lan"];
    let mut agents: Vec<NsAgent> = hosts.iter().map(|h| lab.spawn_agent(h, &args)).collect();
    wait_ready_all(&mut agents);
    let ready = started.elapsed();

    let limit = Duration::from_secs(10).saturating_sub(started.elapsed());
    let formed = poll(limit, Duration::from_millis(100), || {
        check_views(&agents, &hosts, all_alive(&hosts))
    });
    match formed {
        Ok(((), _)) => eprintln!(
            "netns: all 10 agents list 10 alive {:?} after the start (all ready after {ready:?})",
            started.elapsed()
        ),
        Err((why, _)) => panic!(
            "after {:?} not every agent lists the 10 alive:\n{why}",
            started.elapsed()
        ),
    }
}

#[test]
fn a_partition_heals_within_three_seconds_and_member_join_runs_for_the_returning_side() {
    let Some(mut lab) = Lab::new(
        "a_partition_heals_within_three_seconds_and_member_join_runs_for_the_returning_side",
        2,
    ) else {
        return;
    };
    lab.bridge("br-a");
    lab.bridge("br-b");
    // The only path between the two groups: cut = set `xa` down.
    lab.link_bridges("br-a", "xa", "br-b", "xb");
    let side_a: Vec<Host> = (0..3).map(|k| lab.host("br-a", &format!("a{k}"))).collect();
    let side_b: Vec<Host> = (0..3).map(|k| lab.host("br-b", &format!("b{k}"))).collect();
    let hosts: Vec<Host> = side_a.iter().chain(&side_b).cloned().collect();
    assert_ne!(
        lab.ping(&side_a[0], side_b[2].ip),
        Some(false),
        "a0 cannot ping b2"
    );

    let dir = lab.dir().display().to_string();
    let handler = format!("member-join=cat >> {dir}/joins-$SERF_SELF_NAME");
    // Every event, for the record (kept with the logs when the test fails).
    let recorder = format!("sed \"s/^/$SERF_EVENT\t/\" >> {dir}/events-$SERF_SELF_NAME");
    let seed_a = format!("{}:{PORT}", side_a[0].ip);
    let seed_b = format!("{}:{PORT}", side_b[0].ip);
    let args = [
        "agent",
        "--profile",
        "lan",
        "--join",
        &seed_a,
        "--join",
        &seed_b,
        "--event-handler",
        &handler,
        "--event-handler",
        &recorder,
    ];
    let mut agents: Vec<NsAgent> = hosts.iter().map(|h| lab.spawn_agent(h, &args)).collect();
    wait_ready_all(&mut agents);
    let formed = poll(Duration::from_secs(10), Duration::from_millis(100), || {
        check_views(&agents, &hosts, all_alive(&hosts))
    });
    match formed {
        Ok(((), took)) => eprintln!("netns: 6 agents converged in {took:?}"),
        Err((why, took)) => panic!("after {took:?} the 6 agents did not converge:\n{why}"),
    }

    // Cut: each side must see the other side failed, and its own side alive.
    let is_a = |name: &str| side_a.iter().any(|h| h.hostname == name);
    let split = |agent: &NsAgent| -> Vec<(String, &'static str)> {
        let mine = is_a(&agent.host.hostname);
        hosts
            .iter()
            .map(|h| {
                let status = if is_a(&h.hostname) == mine {
                    "alive"
                } else {
                    "failed"
                };
                (h.hostname.clone(), status)
            })
            .collect()
    };
    // The startup member-join runs are done, in both handlers (they must not be mistaken for
    // later ones).
    let joins = |h: &Host| lab.dir().join(format!("joins-{}", h.hostname));
    let events = |h: &Host| lab.dir().join(format!("events-{}", h.hostname));
    let joined_in = |h: &Host| -> (BTreeSet<String>, BTreeSet<String>) {
        let read = |p| std::fs::read_to_string(p).unwrap_or_default();
        let handler = read(joins(h))
            .lines()
            .filter_map(|l| l.split('\t').next().map(str::to_string))
            .collect();
        let recorder = read(events(h))
            .lines()
            .filter_map(|l| l.strip_prefix("member-join\t"))
            .filter_map(|l| l.split('\t').next().map(str::to_string))
            .collect();
        (handler, recorder)
    };
    let everyone: BTreeSet<String> = hosts.iter().map(|h| h.hostname.clone()).collect();
    let startup_joins = poll(Duration::from_secs(5), Duration::from_millis(100), || {
        let behind: Vec<String> = hosts
            .iter()
            .map(|h| (h, joined_in(h)))
            .filter(|(_, (handler, recorder))| *handler != everyone || *recorder != everyone)
            .map(|(h, got)| format!("{}: {got:?}", h.hostname))
            .collect();
        if behind.is_empty() {
            Ok(())
        } else {
            Err(behind.join("\n"))
        }
    });
    if let Err((why, _)) = startup_joins {
        panic!("member-join did not run for all 6 at startup (handler, recorder):\n{why}");
    }
    let events_at_cut: Vec<usize> = hosts
        .iter()
        .map(|h| std::fs::read_to_string(events(h)).map_or(0, |t| t.len()))
        .collect();
    const CUT: Duration = Duration::from_secs(20);
    lab.set_link("xa", false);
    eprintln!("netns: cut at {} (UTC, as in the agents' logs)", utc_now());
    let cut_at = Instant::now();
    match poll(CUT, Duration::from_millis(200), || {
        check_views(&agents, &hosts, split)
    }) {
        Ok(((), took)) => {
            eprintln!("netns: both sides list the other as failed {took:?} after the cut")
        }
        Err((why, took)) => {
            panic!("{took:?} after the cut, the sides do not list each other failed:\n{why}")
        }
    }
    std::thread::sleep(CUT.saturating_sub(cut_at.elapsed()));
    // Still split at the end (a short poll: a member of one's own side may be suspect for a
    // moment on a loaded machine).
    if let Err((why, _)) = poll(Duration::from_secs(2), Duration::from_millis(100), || {
        check_views(&agents, &hosts, split)
    }) {
        panic!("at the end of the {CUT:?} cut, the views are not split:\n{why}");
    }
    let before: Vec<usize> = hosts
        .iter()
        .map(|h| std::fs::read_to_string(joins(h)).map_or(0, |t| t.len()))
        .collect();

    // Heal.
    lab.set_link("xa", true);
    eprintln!("netns: healed at {} (UTC)", utc_now());
    let healed = poll(Duration::from_secs(10), Duration::from_millis(50), || {
        check_views(&agents, &hosts, all_alive(&hosts))
    });
    let took = match healed {
        Ok(((), took)) => took,
        Err((why, took)) => {
            panic!("{took:?} after the heal, not every agent lists 6 alive:\n{why}")
        }
    };
    eprintln!("netns: every agent lists all 6 alive {took:?} after the heal");
    assert!(
        took <= Duration::from_secs(3),
        "the partition took {took:?} to heal (limit 3 s)"
    );

    // Every agent ran member-join for the three that came back, once each.
    let joined_since_heal = |i: usize| -> Vec<String> {
        let text = std::fs::read_to_string(joins(&hosts[i])).unwrap_or_default();
        text.get(before[i]..)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split('\t').next().map(str::to_string))
            .collect()
    };
    let returning = |h: &Host| -> Vec<String> {
        hosts
            .iter()
            .filter(|o| is_a(&o.hostname) != is_a(&h.hostname))
            .map(|o| o.hostname.clone())
            .collect()
    };
    let handlers_ran = poll(Duration::from_secs(5), Duration::from_millis(100), || {
        let mut problems = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            let got = joined_since_heal(i);
            let missing: Vec<String> = returning(h)
                .into_iter()
                .filter(|r| !got.contains(r))
                .collect();
            if !missing.is_empty() {
                problems.push(format!(
                    "{}: no member-join since the heal for {missing:?} (ran for {got:?})",
                    h.hostname
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    });
    if let Err((why, _)) = handlers_ran {
        panic!("member-join handlers after the heal:\n{why}");
    }
    // Let late (duplicate) events show up, then count.
    std::thread::sleep(Duration::from_secs(1));
    for (i, h) in hosts.iter().enumerate() {
        let got = joined_since_heal(i);
        for r in returning(h) {
            let runs = got.iter().filter(|g| **g == r).count();
            assert_eq!(
                runs, 1,
                "{}: member-join ran {runs} times for {r} after the heal: {got:?}",
                h.hostname
            );
        }
    }
    // Not asserted: events beyond "the other side failed, then joined" (see the report).
    for (i, h) in hosts.iter().enumerate() {
        let text = std::fs::read_to_string(events(h)).unwrap_or_default();
        let mut expected: Vec<String> = returning(h)
            .iter()
            .flat_map(|r| [format!("member-failed {r}"), format!("member-join {r}")])
            .collect();
        let mut extra = Vec::new();
        for line in text.get(events_at_cut[i]..).unwrap_or_default().lines() {
            let mut fields = line.split('\t');
            let event = format!(
                "{} {}",
                fields.next().unwrap_or_default(),
                fields.next().unwrap_or_default()
            );
            match expected.iter().position(|e| *e == event) {
                Some(at) => {
                    expected.swap_remove(at);
                }
                None => extra.push(event),
            }
        }
        if !extra.is_empty() {
            eprintln!(
                "netns: NOTE {}: events beyond the partition's own since the cut: {extra:?}",
                h.hostname
            );
        }
    }
}

#[test]
fn five_agents_in_separate_namespaces_find_each_other_with_discover_and_no_addresses() {
    let Some(mut lab) = Lab::new(
        "five_agents_in_separate_namespaces_find_each_other_with_discover_and_no_addresses",
        3,
    ) else {
        return;
    };
    lab.bridge("br0");
    let hosts: Vec<Host> = (0..5)
        .map(|k| lab.host("br0", &format!("disc{k}")))
        .collect();
    let stranger = lab.host("br0", "stranger");
    for h in hosts.iter().chain([&stranger]) {
        lab.host_ip(h, &["route", "add", "224.0.0.0/4", "dev", "eth0"]);
    }
    assert_ne!(
        lab.ping(&hosts[0], stranger.ip),
        Some(false),
        "disc0 cannot ping stranger"
    );

    let started = Instant::now();
    let args = ["agent", "--discover", "testnet", "--profile", "lan"];
    let mut agents: Vec<NsAgent> = hosts.iter().map(|h| lab.spawn_agent(h, &args)).collect();
    let other = ["agent", "--discover", "othernet", "--profile", "lan"];
    let mut outsider = vec![lab.spawn_agent(&stranger, &other)];
    wait_ready_all(&mut agents);
    wait_ready_all(&mut outsider);

    let limit = Duration::from_secs(10).saturating_sub(started.elapsed());
    let found = poll(limit, Duration::from_millis(100), || {
        check_views(&agents, &hosts, all_alive(&hosts))
    });
    let took = match found {
        Ok(((), _)) => started.elapsed(),
        Err((why, _)) => panic!(
            "after {:?} the 5 agents with --discover testnet do not list each other (only):\n{why}",
            started.elapsed()
        ),
    };
    eprintln!("netns: 5 agents found each other by discovery {took:?} after the start");

    // The agent of another cluster stays out, and alone, for a while longer.
    let alone = |_: &NsAgent| vec![(stranger.hostname.clone(), "alive")];
    let hold = took.max(Duration::from_secs(3));
    let until = Instant::now() + hold;
    while Instant::now() < until {
        if let Err(why) = check_views(&agents, &hosts, all_alive(&hosts)) {
            panic!("an agent of cluster othernet got into testnet's views:\n{why}");
        }
        if let Err(why) = check_views(&outsider, std::slice::from_ref(&stranger), alone) {
            panic!("the agent of cluster othernet does not list only itself:\n{why}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How many members `agent` lists alive (0 if it does not answer).
fn count_alive(agent: &NsAgent) -> usize {
    members_of_all(std::slice::from_ref(agent))
        .pop()
        .and_then(Result::ok)
        .map_or(0, |ms| ms.iter().filter(|m| m.status == "alive").count())
}

/// In a lab host, where no DNS server is reachable (see [`Lab::host`]), so the lookup fails
/// at once and the test never asks the machine's resolver.
#[test]
fn a_join_name_that_does_not_resolve_is_retried_with_a_warning() {
    let Some(mut lab) = Lab::new(
        "a_join_name_that_does_not_resolve_is_retried_with_a_warning",
        4,
    ) else {
        return;
    };
    lab.bridge("br0");
    let host_a = lab.host("br0", "ra");
    let host_b = lab.host("br0", "rb");
    let args = [
        "agent",
        "--profile",
        "local",
        "--join",
        "no-such-host.invalid:7948",
    ];
    let mut a = vec![lab.spawn_agent(&host_a, &args)];
    wait_ready_all(&mut a);
    let warned = poll(Duration::from_secs(10), Duration::from_millis(20), || {
        let warnings = a[0].log().matches("does not resolve").count();
        if warnings >= 2 {
            Ok(())
        } else {
            Err(format!("{warnings} warnings"))
        }
    });
    if let Err((why, _)) = warned {
        panic!("{why}; log:\n{}", a[0].log());
    }
    assert_eq!(count_alive(&a[0]), 1, "still running and answering");
    // It can still be joined by others.
    let seed = format!("{}:{PORT}", host_a.ip);
    let mut b = vec![lab.spawn_agent(&host_b, &["agent", "--profile", "local", "--join", &seed])];
    wait_ready_all(&mut b);
    let joined = poll(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || match (count_alive(&a[0]), count_alive(&b[0])) {
            (2, 2) => Ok(()),
            (x, y) => Err(format!("ra lists {x} alive, rb {y}")),
        },
    );
    if let Err((why, _)) = joined {
        panic!("rb did not join ra: {why}");
    }
}

/// Issue 11: an unresolvable `--join` name was re-resolved every retry interval forever.
/// Now each failed resolution counts against `--retry-max` (and waits the doubling delay);
/// when they are used up the agent exits 1, as Serf does, so a supervisor sees it.
#[test]
fn a_join_name_that_never_resolves_uses_up_retry_max_and_the_agent_exits_1() {
    let Some(mut lab) = Lab::new(
        "a_join_name_that_never_resolves_uses_up_retry_max_and_the_agent_exits_1",
        5,
    ) else {
        return;
    };
    lab.bridge("br0");
    let host = lab.host("br0", "rx");
    let args = [
        "agent",
        "--profile",
        "local",
        "--join",
        "no-such-host.invalid:7948",
        "--retry-max",
        "3",
    ];
    let mut a = vec![lab.spawn_agent(&host, &args)];
    wait_ready_all(&mut a);
    let code = a[0].wait_exit(Duration::from_secs(20));
    let log = a[0].log();
    assert_eq!(code, Some(1), "log:\n{log}");
    // Three attempts, then the resolution that finds the limit reached: no more.
    assert_eq!(log.matches("does not resolve").count(), 4, "log:\n{log}");
    assert!(log.contains("giving up joining"), "log:\n{log}");
}
