//! Log setup: `tracing` to stderr, text or JSON, with a filter that SIGHUP can replace; and
//! beside it the layers of `shoal monitor` ([`Monitors`]), each behind its own filter so that
//! neither changes what the other writes.

use std::sync::Arc;

use clap::ValueEnum;
use thiserror::Error;
use tracing_subscriber::filter::{LevelFilter, Targets};
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
        "invalid --log-level {level:?}: {reason} (expected trace, debug, info, warn or error \
         (Serf's err and warning too, any case), or directives like warn,shoal_core=debug)"
    )]
    Level {
        /// The value given.
        level: String,
        /// Why it does not parse.
        reason: String,
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

/// A level (`info`) or a list of `[target=]level` directives (`info,shoal_core=debug`).
/// Levels are Serf's (`TRACE`, `DEBUG`, `INFO`, `WARN`, `ERR`) and tracing's (`warning`,
/// `error`, `off`), in any case. Anything else is refused: tracing's own parser reads a bare
/// word such as `err` or a typo as a target name, which turns every line off.
fn parse(text: &str) -> Result<Targets, LogError> {
    let bad = |reason: String| LogError::Level {
        level: text.to_string(),
        reason,
    };
    let mut targets = Targets::new();
    let mut any = false;
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        any = true;
        match directive.split_once('=') {
            None => {
                let level =
                    level(directive).ok_or_else(|| bad(format!("{directive:?} is not a level")))?;
                targets = targets.with_default(level);
            }
            Some((target, word)) => {
                let target = target.trim();
                if target.is_empty()
                    || !target
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                {
                    return Err(bad(format!("{target:?} is not a module path")));
                }
                let level = level(word.trim()).ok_or_else(|| {
                    bad(format!("{:?} (for {target}) is not a level", word.trim()))
                })?;
                targets = targets.with_target(target, level);
            }
        }
    }
    if !any {
        return Err(bad("no level given".into()));
    }
    Ok(targets)
}

/// A level name, Serf's or tracing's, any case.
fn level(word: &str) -> Option<LevelFilter> {
    Some(match word.to_ascii_lowercase().as_str() {
        "trace" => LevelFilter::TRACE,
        "debug" => LevelFilter::DEBUG,
        "info" => LevelFilter::INFO,
        "warn" | "warning" => LevelFilter::WARN,
        "err" | "error" => LevelFilter::ERROR,
        "off" => LevelFilter::OFF,
        _ => return None,
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
                && err.contains("warn,shoal_core=debug"),
            "{err}"
        );
        assert!(parse("warn,shoal_core=debug").is_ok());
    }

    /// Issue 11: `err`, `ERR` and `warning` parsed as target names and turned logging off.
    #[test]
    fn serf_and_tracing_level_names_are_read_in_any_case_and_typos_refused() {
        for (text, want) in [
            ("err", LevelFilter::ERROR),
            ("ERR", LevelFilter::ERROR),
            ("Error", LevelFilter::ERROR),
            ("warning", LevelFilter::WARN),
            ("WARN", LevelFilter::WARN),
            ("INFO", LevelFilter::INFO),
            ("debug", LevelFilter::DEBUG),
            ("TRACE", LevelFilter::TRACE),
            ("off", LevelFilter::OFF),
        ] {
            let targets = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(targets.default_level(), Some(want), "{text}");
        }
        let t = parse("ERR,shoal_core=DEBUG").expect("directives");
        assert!(t.would_enable("shoal_core::engine", &tracing::Level::DEBUG));
        assert!(!t.would_enable("shoal", &tracing::Level::WARN));
        for typo in [
            "inof",
            "shoal_core",
            "",
            " , ",
            "shoal core=info",
            "=info",
            "a=b=c",
        ] {
            let err = parse(typo).expect_err(typo).to_string();
            assert!(err.contains("invalid --log-level"), "{typo}: {err}");
        }
    }
}
