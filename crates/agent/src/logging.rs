//! Log setup: `tracing` to stderr, text or JSON, with a filter that SIGHUP can replace.

use std::str::FromStr;

use clap::ValueEnum;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry, reload};

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

/// Replaces the log filter at run time.
pub struct LogHandle(reload::Handle<Targets, Registry>);

impl LogHandle {
    /// Installs a new level or filter.
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        let filter = parse(level)?;
        self.0.reload(filter).map_err(|e| e.to_string())
    }
}

/// A level (`info`) or a list of `target=level` directives (`info,shoal_core=debug`).
fn parse(level: &str) -> Result<Targets, String> {
    Targets::from_str(level).map_err(|e| {
        format!("invalid --log-level {level:?}: {e} (expected e.g. info, or warn,shoal_core=debug)")
    })
}

/// Installs the global subscriber.
pub fn init(level: &str, format: LogFormat) -> Result<LogHandle, String> {
    let (filter, handle) = reload::Layer::new(parse(level)?);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .map_err(|e| e.to_string())?;
    Ok(LogHandle(handle))
}
