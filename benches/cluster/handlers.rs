//! The event handlers the bench gives its agents, and the files they write: one line per
//! member, in `DIR/<agent>.<event>`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The handler every agent runs for member-failed and member-leave: one line per member in
/// `DIR/<self>.<event>`: `<epoch secs at handler start>\t<name>\t<ip>\t<role>\t<tags>`.
pub fn handler_spec(dir: &Path) -> Result<String> {
    let dir = quotable(dir)?;
    Ok(format!(
        "member-failed,member-leave=awk -v ts=\"$(date +%s.%N)\" '{{ print ts \"\\t\" $0 }}' \
         >> '{dir}'/\"$SERF_SELF_NAME.$SERF_EVENT\""
    ))
}

/// The handler of the convergence agents: every member-join and member-failed member as a
/// line (`NAME<TAB>IP<TAB>ROLE<TAB>TAGS`) in `DIR/<self>.<event>`. Only `sh` and `cat`: cheap,
/// as 50 agents run it at once while they converge.
pub fn join_handler_spec(dir: &Path) -> Result<String> {
    let dir = quotable(dir)?;
    Ok(format!(
        "member-join,member-failed=cat >> '{dir}'/\"$SERF_SELF_NAME.$SERF_EVENT\""
    ))
}

/// `dir` as text that can stand between single quotes in a shell command.
pub fn quotable(dir: &Path) -> Result<&str> {
    let dir = dir
        .to_str()
        .context("the temporary directory path is not UTF-8")?;
    if dir.contains('\'') {
        bail!("the temporary directory path {dir:?} contains a quote");
    }
    Ok(dir)
}

/// The file the handlers of `agent` write for `event`.
pub fn handler_file(dir: &Path, agent: &str, event: &str) -> PathBuf {
    dir.join(format!("{agent}.{event}"))
}

/// The handler start time (epoch seconds) of the first handler line naming `member`.
pub fn handler_time(file: &Path, member: &str) -> Option<f64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split('\t');
        let ts = fields.next()?;
        (fields.next()? == member).then(|| ts.parse().ok())?
    })
}

/// Distinct handler runs recorded in a handler file (one timestamp per run).
pub fn handler_runs(file: &Path) -> usize {
    let Ok(text) = std::fs::read_to_string(file) else {
        return 0;
    };
    text.lines()
        .filter_map(|l| l.split('\t').next())
        .collect::<BTreeSet<_>>()
        .len()
}

/// The member names of a handler file's lines.
pub fn handler_names(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .map(|text| {
            text.lines()
                .filter_map(|l| l.split('\t').next())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The handler start time of the first line naming `member` that started after `after`
/// (epoch seconds).
pub fn handler_time_after(file: &Path, member: &str, after: f64) -> Option<f64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split('\t');
        let ts: f64 = fields.next()?.parse().ok()?;
        (fields.next()? == member && ts >= after).then_some(ts)
    })
}

/// Lines (one per member and handler run) in a handler file.
pub fn handler_lines(file: &Path) -> usize {
    std::fs::read_to_string(file).map_or(0, |text| text.lines().count())
}
