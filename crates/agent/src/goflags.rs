//! Go's flag syntax, as Serf's command lines and systemd units spell it: `-node=web-1`,
//! `-node web-1`, `-rejoin`, `-replay=false`, one dash or two. [`normalize`] rewrites such words
//! into clap's `--node=web-1` before parsing, so `serf agent ...` runs as `shoal agent ...`.
//!
//! Only a word naming a long flag (or alias) of the command being parsed is rewritten, and only
//! where a flag may stand: before `--` (after it comes the supervised app, untouched), not in
//! the value of the flag before it, and not after the first positional argument (where Go's
//! flag package stops too). So `-h` and `-V` keep their meaning, and `shoal event deploy -1`
//! keeps `-1` as the payload.

use std::ffi::OsString;

use clap::{Arg, ArgAction, Command, CommandFactory};

use crate::cli::Cli;

/// `args` (the program name first) with Go-style flags spelled as clap reads them.
pub fn normalize(args: Vec<OsString>) -> Vec<OsString> {
    let mut root = Cli::command();
    root.build();
    let mut out = Vec::with_capacity(args.len());
    let mut words = args.into_iter();
    out.extend(words.next());
    let mut cmd = &root;
    let mut value_next = false;
    let mut positional = false;
    for word in words.by_ref() {
        if value_next {
            value_next = false;
            out.push(word);
            continue;
        }
        let Some(text) = word.to_str() else {
            out.push(word);
            continue;
        };
        if text == "--" {
            out.push(word);
            break;
        }
        let flag = match text.strip_prefix("--") {
            Some(rest) => Some(rest),
            None => text
                .strip_prefix('-')
                .filter(|rest| !positional && go_style(rest)),
        };
        if let Some(rest) = flag {
            let (name, value) = match rest.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (rest, None),
            };
            match long_arg(cmd, name) {
                Some(arg) => {
                    let takes_value =
                        arg.get_action().takes_values() && !arg.is_require_equals_set();
                    value_next = takes_value && value.is_none();
                    if let Some(word) = spelled(arg, name, value) {
                        out.push(word.into());
                    }
                }
                None => out.push(word),
            }
            continue;
        }
        if !text.starts_with('-') {
            match cmd.find_subcommand(text) {
                Some(sub) if !positional => cmd = sub,
                _ => positional = true,
            }
        }
        out.push(word);
    }
    out.extend(words);
    out
}

/// `rest` (after one dash) looks like a Go flag name: two or more characters, a letter first.
fn go_style(rest: &str) -> bool {
    let name = rest.split_once('=').map_or(rest, |(n, _)| n);
    name.len() > 1
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// The argument of `cmd` whose long name or alias is `name`.
fn long_arg<'a>(cmd: &'a Command, name: &str) -> Option<&'a Arg> {
    cmd.get_arguments().find(|a| {
        a.get_long() == Some(name)
            || a.get_all_aliases()
                .is_some_and(|aliases| aliases.contains(&name))
    })
}

/// The word clap reads: `--name[=value]`. A switch given Go's `=true` is just the switch; with
/// `=false` (Go's way to turn one off) it is dropped, since a switch is off unless given.
fn spelled(arg: &Arg, name: &str, value: Option<&str>) -> Option<String> {
    let switch = matches!(arg.get_action(), ArgAction::SetTrue);
    match value {
        Some(v) if switch => match go_bool(v) {
            Some(true) => Some(format!("--{name}")),
            Some(false) => None,
            None => Some(format!("--{name}={v}")),
        },
        Some(v) => Some(format!("--{name}={v}")),
        None => Some(format!("--{name}")),
    }
}

/// Go's `strconv.ParseBool`.
fn go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(words: &[&str]) -> Vec<String> {
        let args = std::iter::once("shoal")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect();
        normalize(args)
            .into_iter()
            .skip(1)
            .map(|w| w.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn serf_style_agent_flags_become_two_dash_flags() {
        assert_eq!(
            norm(&[
                "agent",
                "-node=web-1",
                "-bind",
                "0.0.0.0:7946",
                "-tag",
                "role=web",
                "-config-dir=/etc/serf/",
                "-retry-join",
                "10.0.0.1",
                "-rejoin",
            ]),
            [
                "agent",
                "--node=web-1",
                "--bind",
                "0.0.0.0:7946",
                "--tag",
                "role=web",
                "--config-dir=/etc/serf/",
                "--retry-join",
                "10.0.0.1",
                "--rejoin",
            ]
        );
    }

    #[test]
    fn go_booleans_turn_switches_on_or_leave_them_off() {
        assert_eq!(
            norm(&["agent", "-replay=true", "-rejoin=false", "--rejoin=1"]),
            ["agent", "--replay", "--rejoin"]
        );
    }

    #[test]
    fn values_apps_payloads_and_short_flags_are_left_alone() {
        assert_eq!(
            norm(&["agent", "-node", "-weird", "--", "app", "-node=x"]),
            ["agent", "--node", "-weird", "--", "app", "-node=x"]
        );
        assert_eq!(norm(&["event", "deploy", "-1"]), ["event", "deploy", "-1"]);
        assert_eq!(
            norm(&["event", "deploy", "-coalesce"]),
            ["event", "deploy", "-coalesce"]
        );
        assert_eq!(norm(&["agent", "-h"]), ["agent", "-h"]);
        assert_eq!(norm(&["-version"]), ["--version"]);
        assert_eq!(norm(&["agent", "-bogus"]), ["agent", "-bogus"]);
        assert_eq!(
            norm(&["members", "-status=alive", "-detailed"]),
            ["members", "--status=alive", "--detailed"]
        );
    }
}
