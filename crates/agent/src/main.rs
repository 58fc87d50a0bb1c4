//! `shoal`: parse the command line, run the subcommand, map errors to exit codes
//! (64: usage or configuration, 2: runtime, 0: success).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use shoal::cli::{Cli, Command};
use shoal::{agent, commands, config, logging};

const USAGE: u8 = 64;
const RUNTIME: u8 = 2;

fn main() -> ExitCode {
    // Serf's spellings (`-node=web-1`, `-rejoin=false`) become clap's before parsing.
    let argv = shoal::goflags::normalize(std::env::args_os().collect());
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let argv: Vec<String> = argv
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            match shoal::cli::single_dash_hint(&argv) {
                Some(hint) if e.kind() == ErrorKind::UnknownArgument => eprintln!("shoal: {hint}"),
                _ => {
                    let _ = e.print();
                }
            }
            return ExitCode::from(USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shoal: cannot start the runtime: {e}");
            return ExitCode::from(RUNTIME);
        }
    };
    let output = match cli.command {
        Command::Agent(args) => return run_agent(*args, &runtime),
        Command::Version => Ok(format!(
            "shoal {}\nAgent Protocol: {} (Understands back to: {})\n",
            env!("CARGO_PKG_VERSION"),
            shoal::view::PROTOCOL.max,
            shoal::view::PROTOCOL.min
        )),
        Command::Members(a) => runtime.block_on(commands::members::run(&a)),
        Command::Join(a) => runtime.block_on(commands::join::run(&a)),
        Command::Leave(a) => runtime.block_on(commands::leave::run(&a)),
        Command::ForceLeave(a) => runtime.block_on(commands::force_leave::run(&a)),
        Command::Tags(a) => runtime.block_on(commands::tags::run(&a)),
        Command::Event(a) => runtime.block_on(commands::event::run(&a)),
        Command::Monitor(a) => runtime.block_on(commands::monitor::run(&a)),
        Command::Query(a) => runtime.block_on(commands::query::run(&a)),
        Command::Info(a) if a.joined => {
            // A health check: Docker reads 1 as unhealthy (2 is reserved).
            return match runtime.block_on(commands::info::run(&a)) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("shoal: {e}");
                    ExitCode::from(1)
                }
            };
        }
        Command::Info(a) => runtime.block_on(commands::info::run(&a)),
        Command::Keygen => Ok(shoal_core::seal::generate() + "\n"),
        Command::Keys(a) => runtime.block_on(commands::keys::run(&a)),
        Command::Primary(a) => {
            // 1: no primary (a script may test it); 2: the agent could not be asked.
            return match runtime.block_on(commands::primary::run(&a)) {
                Ok((text, found)) => {
                    let _ = std::io::stdout().lock().write_all(text.as_bytes());
                    if found {
                        ExitCode::SUCCESS
                    } else {
                        eprintln!("shoal: {}", commands::primary::none_message(&a));
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("shoal: {e}");
                    ExitCode::from(RUNTIME)
                }
            };
        }
        Command::Reachability(a) => {
            // Serf's exit codes: 1 when a live member did not ack (the report says which).
            return match runtime.block_on(commands::reachability::run(&a)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("shoal: {e}");
                    ExitCode::from(RUNTIME)
                }
            };
        }
    };
    match output {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shoal: {e}");
            ExitCode::from(RUNTIME)
        }
    }
}

fn run_agent(args: shoal::cli::AgentArgs, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let cfg = match config::load(&args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("shoal: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let log = match logging::init(&cfg.log_level, cfg.log_format) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("shoal: {e}");
            return ExitCode::from(USAGE);
        }
    };
    match runtime.block_on(agent::run(args, cfg, log)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let message = shoal::report::error_text(&e);
            tracing::error!(error = %message, "agent stopped");
            eprintln!("shoal: {message}");
            ExitCode::from(RUNTIME)
        }
    }
}
