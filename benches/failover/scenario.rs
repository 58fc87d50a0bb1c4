//! One keeper through the scenarios: set up, fail `lb1`, time the switch to `lb2`, restart
//! `lb1`, time its return, wait until everything agrees again, repeat.

use std::str::FromStr;
use std::time::{Duration, Instant};

use shoal_testkit::floating::{FloatingLab, Keeper, Prober, Switch};

/// How `lb1` fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// `docker stop`: SIGTERM to the keeper and HAProxy, then the network goes.
    Stop,
    /// `docker kill`: SIGKILL to everything and the network gone at once.
    Kill,
    /// `kill -9` of the keeper alone: HAProxy keeps serving, the host stays up.
    Crash,
    /// `kill -9` of HAProxy: the health check fails.
    Haproxy,
}

impl Scenario {
    /// The name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Stop => "stop",
            Scenario::Kill => "kill",
            Scenario::Crash => "crash",
            Scenario::Haproxy => "haproxy",
        }
    }

    /// What it does, for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Scenario::Stop => "docker stop of lb1 (SIGTERM to all, then its network goes)",
            Scenario::Kill => "docker kill of lb1 (SIGKILL to all, its network gone)",
            Scenario::Crash => "kill -9 of lb1's keeper only (HAProxy and host stay up)",
            Scenario::Haproxy => "kill -9 of lb1's HAProxy (the health check fails)",
        }
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stop" => Ok(Scenario::Stop),
            "kill" => Ok(Scenario::Kill),
            "crash" => Ok(Scenario::Crash),
            "haproxy" => Ok(Scenario::Haproxy),
            other => Err(format!(
                "unknown scenario {other:?}: expected stop, kill, crash or haproxy"
            )),
        }
    }
}

/// One run: the switch to `lb2` and the return of `lb1`.
#[derive(Debug, Clone)]
pub struct Run {
    /// From the failure until `lb2` answered.
    pub failover: Switch,
    /// From `lb1`'s restart until it answered again.
    pub back: Switch,
}

/// Every run of every scenario of one keeper.
#[derive(Debug)]
pub struct KeeperResult {
    /// The keeper.
    pub keeper: Keeper,
    /// Per scenario, its runs.
    pub runs: Vec<(Scenario, Vec<Run>)>,
}

/// Longest wait for a switch before the run counts as failed.
const SWITCH_LIMIT: Duration = Duration::from_secs(30);

/// Runs `scenarios` `runs` times each with `keeper` on a fresh start of both nodes.
pub fn run_keeper(
    lab: &mut FloatingLab,
    keeper: Keeper,
    scenarios: &[Scenario],
    runs: usize,
) -> Result<KeeperResult, String> {
    let label = keeper.label();
    eprintln!("failover: starting HAProxy and {label} on lb1 and lb2");
    lab.start_node(0, keeper)?;
    lab.start_node(1, keeper)?;
    let client = lab.client()?;
    let took = lab.wait_settled(keeper, &client, SWITCH_LIMIT)?;
    eprintln!("failover: {label}: lb1 is primary and answers ({took:?} after the start)");
    let mut result = KeeperResult {
        keeper,
        runs: Vec::new(),
    };
    for &scenario in scenarios {
        let mut list = Vec::new();
        for k in 0..runs {
            let run = one_run(lab, keeper, scenario, &client)?;
            eprintln!(
                "failover: {label} {} #{}: lb2 answers after {:.3} s ({} failed requests), lb1 back after {:.3} s ({} failed)",
                scenario.name(),
                k + 1,
                run.failover.after.as_secs_f64(),
                run.failover.failed,
                run.back.after.as_secs_f64(),
                run.back.failed,
            );
            list.push(run);
        }
        result.runs.push((scenario, list));
    }
    Ok(result)
}

fn one_run(
    lab: &mut FloatingLab,
    keeper: Keeper,
    scenario: Scenario,
    client: &Prober,
) -> Result<Run, String> {
    let failed_at = Instant::now();
    match scenario {
        Scenario::Stop => lab.stop_node(0),
        Scenario::Kill => lab.kill_node(0),
        Scenario::Crash => lab.kill_keeper(0),
        Scenario::Haproxy => lab.kill_haproxy(0),
    }
    let failover = client
        .wait_for(failed_at, "lb2", SWITCH_LIMIT)
        .map_err(|e| format!("{} after {}: {e}", keeper.label(), scenario.name()))?;
    let restarted_at = Instant::now();
    match scenario {
        Scenario::Stop | Scenario::Kill => lab.start_node(0, keeper)?,
        Scenario::Crash => lab.start_keeper(0, keeper)?,
        Scenario::Haproxy => lab.start_haproxy(0)?,
    }
    let back = client
        .wait_for(restarted_at, "lb1", SWITCH_LIMIT)
        .map_err(|e| format!("{} restart after {}: {e}", keeper.label(), scenario.name()))?;
    lab.wait_settled(keeper, client, SWITCH_LIMIT)?;
    Ok(Run { failover, back })
}
