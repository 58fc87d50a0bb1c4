//! Issue 12's seed scenario end to end: two HAProxy nodes in network namespaces, a shoal agent
//! on each in group `lb` (priorities 150 and 100) with a health check on HAProxy and
//! `examples/floating-ip/floating-ip.sh` as `--on-primary`/`--on-backup`/`--on-fault`, and a
//! client requesting the floating address in a loop (`shoal_testkit::floating`). Needs root,
//! `ip`, `haproxy` and `arping`; skipped with a `SKIP:` line otherwise.

use std::path::Path;
use std::time::{Duration, Instant};

use shoal_testkit::floating::{FloatingLab, Keeper};

use crate::harness::SHOAL;

/// Both nodes started, the client running, `lb1` holding the address and everyone agreeing.
fn started(test: &str, subnet: u8) -> Option<(FloatingLab, shoal_testkit::floating::Prober)> {
    let mut lab = match FloatingLab::new(subnet, Path::new(SHOAL)) {
        Ok(lab) => lab,
        Err(why) => {
            eprintln!("SKIP: {test}: {}", why.0);
            return None;
        }
    };
    for i in 0..2 {
        if let Err(e) = lab.start_node(i, Keeper::Shoal) {
            panic!("{e}");
        }
    }
    let client = lab.client().unwrap_or_else(|e| panic!("client: {e}"));
    if let Err(e) = lab.wait_settled(Keeper::Shoal, &client, Duration::from_secs(15)) {
        panic!(
            "lb1 never became the answering primary: {e}\n{}",
            lab.logs_tail(30)
        );
    }
    Some((lab, client))
}

#[test]
fn the_floating_address_answers_from_the_backup_after_the_primary_is_killed_and_returns_to_it() {
    let test = "the_floating_address_answers_from_the_backup_after_the_primary_is_killed_and_returns_to_it";
    let Some((mut lab, client)) = started(test, 231) else {
        return;
    };
    // `docker kill` of lb1: agent and HAProxy SIGKILLed, its network gone.
    let killed = Instant::now();
    lab.kill_node(0);
    let switch = client
        .wait_for(killed, "lb2", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs_tail(30)));
    eprintln!(
        "floating-ip: after lb1 was killed, lb2 answered {:.3} s later; {} requests failed, {} were answered by lb1 before",
        switch.after.as_secs_f64(),
        switch.failed,
        switch.others
    );
    assert!(
        lab.nodes[1].holds(lab.vip),
        "lb2 answers without holding the address?"
    );
    assert_eq!(
        lab.shoal_primary(1).as_deref(),
        Ok("lb2"),
        "lb2 does not see itself as primary"
    );

    // lb1 comes back (a fresh container): it takes the address back (preempt), lb2 drops it.
    let restarted = Instant::now();
    lab.start_node(0, Keeper::Shoal)
        .unwrap_or_else(|e| panic!("{e}"));
    let back = client
        .wait_for(restarted, "lb1", Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs_tail(30)));
    if let Err(e) = lab.wait_settled(Keeper::Shoal, &client, Duration::from_secs(10)) {
        panic!("after lb1's return: {e}\n{}", lab.logs_tail(30));
    }
    eprintln!(
        "floating-ip: lb1 restarted and answered again {:.3} s later ({} requests failed); lb2 dropped the address",
        back.after.as_secs_f64(),
        back.failed
    );
}

#[test]
fn a_killed_haproxy_moves_the_floating_address_to_the_backup() {
    let test = "a_killed_haproxy_moves_the_floating_address_to_the_backup";
    let Some((mut lab, client)) = started(test, 232) else {
        return;
    };
    let killed = Instant::now();
    lab.kill_haproxy(0);
    let switch = client
        .wait_for(killed, "lb2", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs_tail(30)));
    eprintln!(
        "floating-ip: after lb1's HAProxy was killed, lb2 answered {:.3} s later; {} requests failed",
        switch.after.as_secs_f64(),
        switch.failed
    );
    // lb1's agent ran --on-fault: the address left its interface.
    let dropped = shoal_testkit::wait_until(Duration::from_secs(5), || lab.holders() == ["lb2"]);
    assert!(
        dropped,
        "the address is on {:?}, not on lb2 alone\n{}",
        lab.holders(),
        lab.logs_tail(30)
    );
    // HAProxy back: the check rises, lb1 is primary again.
    let restarted = Instant::now();
    lab.start_haproxy(0).unwrap_or_else(|e| panic!("{e}"));
    client
        .wait_for(restarted, "lb1", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs_tail(30)));
    if let Err(e) = lab.wait_settled(Keeper::Shoal, &client, Duration::from_secs(10)) {
        panic!("after HAProxy's return: {e}\n{}", lab.logs_tail(30));
    }
}
