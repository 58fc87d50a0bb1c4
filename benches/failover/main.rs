//! Failover benchmark (issue 12): how long a floating address is lost when its primary fails.
//! Two HAProxy nodes `lb1` (priority 150) and `lb2` (100) in network namespaces, a client that
//! requests the floating address every ~10 ms, and a keeper of the address: shoal (group `lb`,
//! a health check on HAProxy, `examples/floating-ip/floating-ip.sh` as the hooks), then
//! Keepalived (VRRP, `advert_int 1`, a `vrrp_script` on the same health endpoint with the same
//! interval, rise and fall) in the same namespaces, through the same scenarios, in the same run.
//! Each scenario is timed from the failure on `lb1` until the floating address answers from
//! `lb2`; then `lb1` is restarted and the time until it answers again (preemption) is timed too.
//!
//! Run (root): `cargo bench -p shoal --bench failover -- [--runs 10] [--no-keepalived]
//! [--scenarios stop,kill,crash,haproxy] [--shoal-args '--profile local']`. The report goes to stdout, progress to stderr. See
//! docs/benchmarks.md ("Failover of a floating address").

mod report;
mod scenario;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use shoal_testkit::floating::{FloatingLab, Keeper};

use crate::report::{load_average, render};
use crate::scenario::{Scenario, run_keeper};

/// The release `shoal` binary cargo built for this bench.
const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

/// Failover of a floating address: shoal against Keepalived.
#[derive(Debug, Parser)]
#[command(name = "failover")]
struct Args {
    /// Runs of each scenario per keeper.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Scenarios, comma-separated: stop (`docker stop` of lb1), kill (`docker kill`), crash
    /// (`kill -9` of the keeper only; HAProxy and the network stay), haproxy (`kill -9` of
    /// lb1's HAProxy).
    #[arg(long, value_delimiter = ',', default_value = "stop,kill,crash,haproxy")]
    scenarios: Vec<Scenario>,
    /// Measure shoal only.
    #[arg(long)]
    no_keepalived: bool,
    /// Measure Keepalived only.
    #[arg(long)]
    no_shoal: bool,
    /// Extra arguments for every shoal agent, space-separated (e.g. `--profile local` to see
    /// what sub-second suspicion gives; the default is the `lan` profile).
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    shoal_args: Option<String>,
    /// The lab's subnet: 10.250.SUBNET.0/24 inside its own namespaces.
    #[arg(long, default_value_t = 240)]
    subnet: u8,
    /// Cargo passes `--bench` to every bench binary.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.runs == 0 {
        eprintln!("failover bench: --runs must be at least 1");
        return ExitCode::from(64);
    }
    let mut keepers = Vec::new();
    if !args.no_shoal {
        keepers.push(Keeper::Shoal);
    }
    if !args.no_keepalived {
        keepers.push(Keeper::Keepalived);
    }
    if keepers.is_empty() {
        eprintln!("failover bench: --no-shoal and --no-keepalived leave nothing to measure");
        return ExitCode::from(64);
    }
    let mut lab = match FloatingLab::new(args.subnet, Path::new(SHOAL)) {
        Ok(lab) => lab,
        Err(why) => {
            println!("failover bench: SKIPPED: {}", why.0);
            return ExitCode::SUCCESS;
        }
    };
    if let Some(extra) = &args.shoal_args {
        lab.shoal_extra = extra.split_whitespace().map(String::from).collect();
    }
    println!("=== failover of a floating address (cargo bench -p shoal --bench failover) ===");
    println!(
        "date {}, {} runs per scenario, {} CPUs, load average at the start {}",
        report::utc_date(),
        args.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    if !lab.shoal_extra.is_empty() {
        println!("shoal agents run with {}", lab.shoal_extra.join(" "));
    }
    println!(
        "lb1 (priority 150) holds {} at first; the client requests it every ~10 ms (200 ms timeout)",
        lab.vip
    );
    let mut results = Vec::new();
    for keeper in keepers {
        match run_keeper(&mut lab, keeper, &args.scenarios, args.runs) {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("failover bench: {} failed: {e}", keeper.label());
                eprintln!("logs kept in {}", keep_logs(lab));
                return ExitCode::FAILURE;
            }
        }
        lab.stop_all();
    }
    print!("{}", render(&results, &args.scenarios));
    println!("\nload average at the end {}", load_average());
    ExitCode::SUCCESS
}

/// Keeps the lab's logs after a failure (the lab deletes them on drop otherwise).
fn keep_logs(lab: FloatingLab) -> String {
    let dir = std::env::temp_dir().join(format!("shoal-failover-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(entries) = std::fs::read_dir(lab.dir()) {
        for entry in entries.flatten() {
            let _ = std::fs::copy(entry.path(), dir.join(entry.file_name()));
        }
    }
    drop(lab);
    dir.display().to_string()
}
