//! `shoal monitor [--log-level L] [--format text|json]`: the agent's log from now on, printed
//! as it comes, until Ctrl-C (exit 0) or until the agent ends the stream (exit 2).

use std::io::{ErrorKind, Write};

use shoal_proto::MonitorLevel;
use tokio::signal::unix::{SignalKind, signal};

use super::CliError;
use crate::cli::MonitorArgs;
use crate::logging::LogFormat;

/// Streams `GET /v1/monitor` to stdout.
pub async fn run(args: &MonitorArgs) -> Result<String, CliError> {
    let level = MonitorLevel::from(args.log_level);
    let format = match args.format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    let path = format!("/v1/monitor?level={}&format={format}", level.as_str());
    // Listening before connecting, and with one listener for the whole run: a `ctrl_c()`
    // future made per line would lose a SIGINT that arrives between two lines.
    let mut interrupt = signal(SignalKind::interrupt()).map_err(CliError::Signal)?;
    let mut lines = args.client.client()?.stream(&path).await?;
    let mut out = std::io::stdout();
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line?,
            _ = interrupt.recv() => return Ok(String::new()),
        };
        let Some(line) = line else {
            return Err(CliError::StreamEnded);
        };
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => {}
            // `shoal monitor | head`: the reader is gone, which is a normal end.
            Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(String::new()),
            Err(e) => return Err(CliError::Stdout(e)),
        }
    }
}
