//! The health checks' settings: `--check NAME=SPEC` flags and `[[check]]` tables, with the
//! `--check-interval`/`-timeout`/`-rise`/`-fall` defaults (flags over the file's
//! `check_interval`, ... keys). A flag check replaces a file check of the same name.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;
use shoal_core::role::MAX_CHECKS;

use super::{ConfigError, invalid};
use crate::checks::args::CheckArgs;
use crate::checks::spec::{self, CheckSpec, Kind, Timing};

/// One `[[check]]` table of a TOML config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckTable {
    name: String,
    script: Option<String>,
    http: Option<String>,
    tcp: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    rise: Option<u32>,
    fall: Option<u32>,
}

/// The file's health-check keys beside the tables.
#[derive(Debug, Clone, Default)]
pub struct FileDefaults {
    /// `check_interval`.
    pub interval: Option<String>,
    /// `check_timeout`.
    pub timeout: Option<String>,
    /// `check_rise`.
    pub rise: Option<u32>,
    /// `check_fall`.
    pub fall: Option<u32>,
}

/// Every check, flags' and file's, validated; names are unique.
pub(super) fn resolve(
    args: &CheckArgs,
    file: FileDefaults,
    tables: &[CheckTable],
) -> Result<Vec<CheckSpec>, ConfigError> {
    let interval_text = args.check_interval.clone().or(file.interval);
    let timeout_text = args.check_timeout.clone().or(file.timeout);
    let defaults = Timing {
        interval: super::duration("--check-interval", interval_text.clone(), "1s")?,
        timeout: super::duration("--check-timeout", timeout_text.clone(), "1s")?,
        rise: args.check_rise.or(file.rise).unwrap_or(1),
        fall: args.check_fall.or(file.fall).unwrap_or(1),
    };
    if let Err((what, reason)) = defaults.validate() {
        let (setting, value) = match what {
            "interval" => ("--check-interval", interval_text.unwrap_or_default()),
            "timeout" => ("--check-timeout", timeout_text.unwrap_or_default()),
            "rise" => ("--check-rise", defaults.rise.to_string()),
            _ => ("--check-fall", defaults.fall.to_string()),
        };
        return Err(invalid(setting, &value, reason));
    }
    let mut flags = Vec::new();
    for text in &args.checks {
        let check = spec::parse_flag(text, defaults).map_err(|e| invalid("--check", text, e))?;
        if flags.iter().any(|c: &CheckSpec| c.name == check.name) {
            return Err(invalid(
                "--check",
                text,
                format!("a check named {:?} is given twice", check.name),
            ));
        }
        flags.push(check);
    }
    let mut checks = Vec::new();
    let mut seen = BTreeSet::new();
    for table in tables {
        let check = from_table(table, defaults)?;
        if !seen.insert(check.name.clone()) {
            return Err(invalid(
                "[[check]]",
                &table.name,
                "a check of this name is defined twice",
            ));
        }
        if !flags.iter().any(|c| c.name == check.name) {
            checks.push(check);
        }
    }
    checks.extend(flags);
    if checks.len() > MAX_CHECKS {
        return Err(invalid(
            "--check",
            &format!("{} checks", checks.len()),
            format!("at most {MAX_CHECKS} checks per member"),
        ));
    }
    Ok(checks)
}

/// What the node announces before any check ran: every check `critical` (Consul's initial
/// state), no group.
pub(super) fn initial_role(checks: &[CheckSpec]) -> shoal_core::Role {
    shoal_core::Role {
        checks: checks
            .iter()
            .map(|c| (c.name.clone(), shoal_core::Health::Critical))
            .collect(),
        group: None,
    }
}

/// One table: a name, exactly one of `script`, `http`, `tcp`, and its own timing (the
/// defaults where it has none).
fn from_table(table: &CheckTable, defaults: Timing) -> Result<CheckSpec, ConfigError> {
    let bad = |reason: String| invalid("[[check]]", &table.name, reason);
    spec::check_name(&table.name).map_err(bad)?;
    let kind = match (&table.script, &table.http, &table.tcp) {
        (Some(cmd), None, None) => Kind::script(cmd),
        (None, Some(url), None) => Kind::http(url),
        (None, None, Some(addr)) => Kind::tcp(addr),
        _ => Err(
            "give exactly one of script = \"CMD\", http = \"URL\" or tcp = \"HOST:PORT\"".into(),
        ),
    }
    .map_err(bad)?;
    let duration = |what: &str, text: &Option<String>, default: Duration| match text {
        None => Ok(default),
        Some(t) if t.trim() == "0" => Ok(Duration::ZERO),
        Some(t) => humantime::parse_duration(t.trim())
            .map_err(|e| bad(format!("{what} {t:?}: {e} (examples: 500ms, 5s)"))),
    };
    let timing = Timing {
        interval: duration("interval", &table.interval, defaults.interval)?,
        timeout: duration("timeout", &table.timeout, defaults.timeout)?,
        rise: table.rise.unwrap_or(defaults.rise),
        fall: table.fall.unwrap_or(defaults.fall),
    };
    timing
        .validate()
        .map_err(|(what, reason)| bad(format!("{what} {reason}")))?;
    Ok(CheckSpec {
        name: table.name.clone(),
        kind,
        timing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, script: Option<&str>, tcp: Option<&str>) -> CheckTable {
        CheckTable {
            name: name.into(),
            script: script.map(Into::into),
            tcp: tcp.map(Into::into),
            ..CheckTable::default()
        }
    }

    fn args(checks: &[&str]) -> CheckArgs {
        CheckArgs {
            checks: checks.iter().map(|c| c.to_string()).collect(),
            ..CheckArgs::default()
        }
    }

    fn error(result: Result<Vec<CheckSpec>, ConfigError>) -> String {
        result.expect_err("refused").to_string()
    }

    #[test]
    fn flags_replace_file_checks_of_the_same_name_and_take_the_defaults() {
        let a = CheckArgs {
            check_fall: Some(3),
            ..args(&["web=script:true"])
        };
        let file = FileDefaults {
            interval: Some("250ms".into()),
            fall: Some(9),
            ..FileDefaults::default()
        };
        let tables = [
            table("web", Some("false"), None),
            CheckTable {
                rise: Some(4),
                ..table("db", None, Some("127.0.0.1:5432"))
            },
        ];
        let checks = resolve(&a, file, &tables).expect("ok");
        let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["db", "web"]);
        assert_eq!(checks[1].kind, Kind::Script("true".into()));
        assert_eq!(checks[0].timing.rise, 4);
        assert_eq!(checks[0].timing.fall, 3);
        assert_eq!(checks[0].timing.interval, Duration::from_millis(250));
        assert_eq!(checks[1].timing.timeout, Duration::from_secs(1));
    }

    #[test]
    fn bad_settings_name_the_flag_or_the_table() {
        let none = FileDefaults::default();
        assert_eq!(
            error(resolve(&args(&["web=ftp:x"]), none.clone(), &[])),
            "invalid --check \"web=ftp:x\": unknown check kind \"ftp\": expected script:CMD, \
             http:URL or tcp:HOST:PORT"
        );
        assert_eq!(
            error(resolve(
                &args(&["a=script:true", "a=script:false"]),
                none.clone(),
                &[]
            )),
            "invalid --check \"a=script:false\": a check named \"a\" is given twice"
        );
        let short = CheckArgs {
            check_timeout: Some("5ms".into()),
            ..args(&[])
        };
        assert_eq!(
            error(resolve(&short, none.clone(), &[])),
            "invalid --check-timeout \"5ms\": must be at least 10ms"
        );
        let both = table("x", Some("true"), Some("h:1"));
        assert!(error(resolve(&args(&[]), none.clone(), &[both])).contains("exactly one of"));
        let slow = CheckTable {
            timeout: Some("1 fortnight".into()),
            ..table("x", Some("true"), None)
        };
        assert!(
            error(resolve(&args(&[]), none.clone(), &[slow]))
                .starts_with("invalid [[check]] \"x\": timeout")
        );
        let twice = [
            table("x", Some("true"), None),
            table("x", Some("true"), None),
        ];
        assert!(error(resolve(&args(&[]), none.clone(), &twice)).contains("defined twice"));
        let many: Vec<String> = (0..33).map(|i| format!("c{i}=script:true")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(error(resolve(&args(&many), none, &[])).contains("at most 32 checks"));
    }
}
