//! Cluster benchmark: starts real `shoal agent` processes on loopback (lan profile) and measures
//! idle cost (RSS, CPU, gossip bytes), failure and leave propagation (to the member lists and to
//! the event handlers), `shoal members` latency, false failures under 10% packet loss (in a
//! private network namespace), and convergence: N agents started at once with identical
//! arguments, N agents joined at random, and the heal of a half/half partition (in a private
//! network and mount namespace), and user events, queries and tag changes beside Serf.
//!
//! Run: `cargo bench -p shoal --bench cluster -- [--quick] [--nodes 5,20,50] [--idle-secs 60]
//! [--kills 10] [--leaves 3] [--loss 0.1 | --no-loss] [--convergence-runs 3] [--partition-secs 20
//! | --no-convergence] [--messaging-runs 20 | --no-messaging] [--encrypt]`, or only the scale
//! scenario: `cargo bench -p shoal --bench cluster -- --scale 200 [--idle-secs 60] [--kills 10]`.
//! The report goes to stdout, progress to stderr. See docs/benchmarks.md
//! for what each number means.

mod agents;
mod compare;
mod convergence;
mod depart;
mod handlers;
mod idle;
mod lister;
mod loss;
mod messaging;
mod netns;
mod pause;
mod procfs;
mod report;
mod scale;
mod serf;
mod serf_rpc;
mod settings;
mod size;
mod targets;
mod traffic;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

use crate::compare::{LossCase, render_comparison, render_ratio_targets};
use crate::convergence::{convergence_section, inner_convergence_run};
use crate::loss::{inner_loss_run, loss_scenario, outer_loss_run, render_loss};
use crate::messaging::report::render_messaging;
use crate::messaging::{serf_messaging, shoal_messaging};
use crate::procfs::clock_ticks;
use crate::report::{Rng, load_average, print_header, progress};
use crate::serf::loss::serf_loss_scenario;
use crate::serf::size::bench_serf_size;
use crate::settings::{Args, SerfChoice, Settings};
use crate::size::{SizeReport, bench_size};
use crate::targets::render_targets;

/// The release `shoal` binary cargo built for this bench.
const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cluster bench: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(guarded(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the bench until it ends or a SIGINT/SIGTERM arrives. Either way the bench future is
/// dropped before we return, and with it every agent (they are spawned with kill-on-drop).
async fn guarded(args: Args) -> Result<()> {
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    tokio::select! {
        result = run(args) => result,
        _ = term.recv() => bail!("SIGTERM: stopped, agents killed"),
        _ = int.recv() => bail!("SIGINT: stopped, agents killed"),
    }
}

async fn run(args: Args) -> Result<()> {
    let settings = Settings::from_args(&args)?;
    let mut rng = Rng::new(settings.seed);
    if let Some(parent_ns) = &args.in_netns {
        return match &settings.loss_serf {
            Some(serf) => {
                let scenario = serf_loss_scenario(&settings, serf, &mut rng);
                inner_loss_run(&settings, parent_ns, scenario).await
            }
            None => {
                let scenario = loss_scenario(&settings, &mut rng);
                inner_loss_run(&settings, parent_ns, scenario).await
            }
        };
    }
    if let Some(parent_ns) = &args.in_netns_convergence {
        return inner_convergence_run(&settings, parent_ns, args.parent_mntns.as_deref()).await;
    }
    if args.encrypt {
        let _ = crate::agents::ENCRYPT_KEY.set(shoal_core::seal::generate());
        println!("sealed gossip: shoal --encrypt, Serf -encrypt (one random 32-byte key)");
    }
    let clk_tck = clock_ticks().await;
    print_header(&settings, clk_tck).await;
    if let Some(n) = settings.scale {
        let report = scale::bench_scale(n, &settings, &mut rng).await?;
        print!("{}", report.render());
        progress("done");
        return Ok(());
    }
    let serf = settings.serf.path().cloned();

    let mut reports = Vec::new();
    let mut serf_reports: Vec<SizeReport> = Vec::new();
    for &n in &settings.nodes {
        let report = bench_size(n, &settings, &mut rng, clk_tck).await?;
        print!("{}", report.render());
        println!("(load average after shoal at N = {n}: {})", load_average());
        reports.push(report);
        if let Some(serf) = &serf {
            let report = bench_serf_size(n, &settings, serf, &mut rng, clk_tck).await?;
            print!("{}", report.render());
            println!("(load average after Serf at N = {n}: {})", load_average());
            serf_reports.push(report);
        }
    }
    messaging_section(&settings, serf.as_deref(), &mut rng).await?;
    let cases = loss_cases(&settings, serf.as_deref()).await;
    let loss = cases.first().map(|c| &c.shoal);
    let convergence = match settings.convergence {
        Some(c) => {
            let report = convergence_section(&settings, c, &mut rng).await?;
            print!("{}", report.render());
            Some(report)
        }
        None => {
            println!("\n=== convergence ===\nskipped (--no-convergence)");
            None
        }
    };
    if serf.is_some() {
        print!("{}", render_comparison(&reports, &serf_reports, &cases));
    }
    print!("{}", render_targets(&reports, loss, convergence.as_ref()));
    match &settings.serf {
        SerfChoice::Found(_) => {
            print!("{}", render_ratio_targets(&reports, &serf_reports, &cases));
        }
        SerfChoice::Missing(why) => println!("\n=== targets against Serf ===\nSKIPPED: {why}"),
        SerfChoice::Off => println!("\n=== targets against Serf ===\nskipped (--no-serf)"),
    }
    println!("\nload average at the end {}", load_average());
    progress("done");
    Ok(())
}

/// The messaging section: shoal, then Serf if it runs, then the table.
async fn messaging_section(
    s: &Settings,
    serf: Option<&std::path::Path>,
    rng: &mut Rng,
) -> Result<()> {
    let Some(m) = s.messaging else {
        println!("\n=== events, queries and tags ===\nskipped (--no-messaging)");
        return Ok(());
    };
    let shoal = shoal_messaging(s, m, rng).await?;
    let serf = match serf {
        Some(serf) => Some(serf_messaging(s, m, serf, rng).await?),
        None => None,
    };
    print!("{}", render_messaging(&shoal, serf.as_ref()));
    Ok(())
}

/// The loss runs: `--loss` from the start, then `--heavy-loss` once converged; each with
/// shoal, then Serf if it runs. Each case is printed as it ends.
async fn loss_cases(s: &Settings, serf: Option<&std::path::Path>) -> Vec<LossCase> {
    let Some(p) = s.loss else {
        println!("\n=== loss run ===\nskipped (--quick or --no-loss)");
        return Vec::new();
    };
    let mut cases = Vec::new();
    let heavy = s.heavy_loss.map(|h| (h, true));
    for (p, late) in std::iter::once((p, false)).chain(heavy) {
        let shoal = outer_loss_run(s, p, late, None).await;
        print!("{}", render_loss(&shoal));
        let serf = match serf {
            Some(serf) => {
                let outcome = outer_loss_run(s, p, late, Some(serf)).await;
                print!("{}", render_loss(&outcome));
                Some(outcome)
            }
            None => None,
        };
        cases.push(LossCase {
            p,
            late,
            shoal,
            serf,
        });
    }
    cases
}
