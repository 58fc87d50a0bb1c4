//! Log setup: `tracing` to stderr, text or JSON, with a filter that SIGHUP can replace; and
//! beside it the layers of `shoal monitor` ([`Monitors`]), each behind its own filter so that
//! neither changes what the other writes.

use std::str::FromStr;
use std::sync::Arc;

use clap::ValueEnum;
use thiserror::Error;
use tracing_subscriber::filter::{ParseError, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry, reload};

use crate::stream::monitor::Monitors;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Why logging could not be set up or changed.
#[derive(Debug, Error)]
pub enum LogError {
    /// The level or filter does not parse. Nothing was installed or changed.
    #[error(
        "invalid --log-level {level:?}: {source} (expected e.g. info, or warn,shoal_core=debug)"
    )]
    Level {
        /// The value given.
        level: String,
        /// Why it does not parse.
        source: ParseError,
    },
    /// The new filter could not be swapped in (the subscriber is gone). The old one stays.
    #[error("{0}")]
    Reload(#[from] reload::Error),
    /// Another global subscriber is already installed. Nothing was installed.
    #[error("{0}")]
    Init(#[from] tracing_subscriber::util::TryInitError),
}

/// Replaces the log filter at run time; reaches the monitors.
pub struct LogHandle {
    stderr: reload::Handle<Targets, Registry>,
    monitors: Arc<Monitors>,
}

impl LogHandle {
    /// Installs a new level or filter for stderr (the monitors keep theirs).
    pub fn set_level(&self, level: &str) -> Result<(), LogError> {
        let filter = parse(level)?;
        Ok(self.stderr.reload(filter)?)
    }

    /// The `shoal monitor` readers.
    pub fn monitors(&self) -> Arc<Monitors> {
        self.monitors.clone()
    }
}

/// A level (`info`) or a list of `target=level` directives (`info,shoal_core=debug`).
fn parse(level: &str) -> Result<Targets, LogError> {
    Targets::from_str(level).map_err(|source| LogError::Level {
        level: level.to_string(),
        source,
    })
}

/// Installs the global subscriber: stderr with its (reloadable) filter, and the monitors'
/// layers, which let nothing through while no monitor is connected.
pub fn init(level: &str, format: LogFormat) -> Result<LogHandle, LogError> {
    let (filter, handle) = reload::Layer::new(parse(level)?);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let monitors = Monitors::new();
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(monitors.layers())
        .try_init()?;
    Ok(LogHandle {
        stderr: handle,
        monitors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_level_names_the_flag_and_gives_examples() {
        let err = parse("shoal_core=loud").expect_err("bad level").to_string();
        assert!(
            err.starts_with("invalid --log-level \"shoal_core=loud\": ")
                && err.ends_with(" (expected e.g. info, or warn,shoal_core=debug)"),
            "{err}"
        );
        assert!(parse("warn,shoal_core=debug").is_ok());
    }
}
