//! `shoal members`: the agent's view, filtered by anchored regular expressions.

use regex_lite::Regex;
use shoal_proto::{MemberInfo, MembersResponse};

use crate::cli::{MembersArgs, OutputFormat};
use crate::commands::{CliError, columns};
use crate::view::tags_string;

/// Filters compiled from the flags.
pub struct MemberFilter {
    status: Option<Regex>,
    name: Option<Regex>,
    tags: Vec<(String, Regex)>,
    health: Option<Regex>,
}

fn anchored(flag: &'static str, re: &str) -> Result<Regex, CliError> {
    Regex::new(&format!("^(?:{re})$")).map_err(|source| CliError::Regex {
        flag,
        re: re.to_string(),
        source,
    })
}

impl MemberFilter {
    /// Compiles `--status`, `--name` and `--tag K=RE`.
    pub fn new(args: &MembersArgs) -> Result<Self, CliError> {
        let mut tags = Vec::new();
        for t in &args.tags {
            let (k, re) = t
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| CliError::TagFilter(t.clone()))?;
            tags.push((k.to_string(), anchored("--tag", re)?));
        }
        if let Some(role) = &args.role {
            tags.push(("role".to_string(), anchored("--role", role)?));
        }
        Ok(Self {
            status: args
                .status
                .as_deref()
                .map(|r| anchored("--status", r))
                .transpose()?,
            name: args
                .name
                .as_deref()
                .map(|r| anchored("--name", r))
                .transpose()?,
            tags,
            health: args
                .health
                .as_deref()
                .map(|r| anchored("--health", r))
                .transpose()?,
        })
    }

    /// True when `m` passes every filter.
    pub fn accepts(&self, m: &MemberInfo) -> bool {
        self.status.as_ref().is_none_or(|r| r.is_match(&m.status))
            && self.name.as_ref().is_none_or(|r| r.is_match(&m.name))
            && self
                .tags
                .iter()
                .all(|(k, r)| m.tags.get(k).is_some_and(|v| r.is_match(v)))
            && self
                .health
                .as_ref()
                .is_none_or(|r| r.is_match(health_word(m)))
    }
}

/// A member's aggregate health as the table and `--health` see it: `none` without checks.
fn health_word(m: &MemberInfo) -> &str {
    m.health.as_deref().unwrap_or("none")
}

/// Runs the command; returns what to print.
pub async fn run(args: &MembersArgs) -> Result<String, CliError> {
    let filter = MemberFilter::new(args)?;
    let client = args.client.client()?;
    let all: MembersResponse = client.get("/v1/members").await?;
    let members: Vec<MemberInfo> = all
        .members
        .into_iter()
        .filter(|m| filter.accepts(m))
        .collect();
    Ok(match args.format {
        OutputFormat::Json => {
            let body = MembersResponse { members };
            serde_json::to_string_pretty(&body)? + "\n"
        }
        OutputFormat::Table => {
            // Serf's columns stay as they are for scripts; health is only added to
            // `--detailed`, and only when some member listed runs checks.
            let any_checks = members.iter().any(|m| m.health.is_some());
            let rows: Vec<Vec<String>> = members
                .iter()
                .map(|m| {
                    let mut row = vec![
                        m.name.clone(),
                        m.addr.clone(),
                        m.status.clone(),
                        tags_string(&m.tags),
                    ];
                    if args.detailed {
                        // Serf's `members -detailed` columns.
                        let p = m.protocol;
                        row.push(format!("Protocol Version: {}", p.version));
                        row.push(format!("Available Protocol Range: [{}, {}]", p.min, p.max));
                        if any_checks {
                            row.push(format!("Health: {}", health_word(m)));
                            row.push(format!("Checks: {}", tags_string(&m.checks)));
                        }
                    }
                    row
                })
                .collect();
            columns(&rows)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ClientArgs;

    fn args(status: Option<&str>, name: Option<&str>, tags: &[&str]) -> MembersArgs {
        MembersArgs {
            client: ClientArgs {
                control: String::new(),
                token_file: None,
            },
            status: status.map(Into::into),
            name: name.map(Into::into),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            role: None,
            health: None,
            detailed: false,
            format: OutputFormat::Table,
        }
    }

    fn member(name: &str, status: &str, role: &str) -> MemberInfo {
        MemberInfo {
            name: name.into(),
            addr: "127.0.0.1:7948".into(),
            port: 7948,
            status: status.into(),
            tags: [("role".to_string(), role.to_string())].into(),
            protocol: crate::view::PROTOCOL,
            health: None,
            checks: Default::default(),
        }
    }

    #[test]
    fn the_health_filter_is_anchored_and_a_member_without_checks_is_none() {
        let filter = |re: &str| {
            MemberFilter::new(&MembersArgs {
                health: Some(re.into()),
                ..args(None, None, &[])
            })
            .expect("ok")
        };
        let mut sick = member("db", "alive", "db");
        sick.health = Some("critical".into());
        let plain = member("web", "alive", "web");
        assert!(filter("critical").accepts(&sick));
        assert!(!filter("crit").accepts(&sick));
        assert!(!filter("critical").accepts(&plain));
        assert!(filter("none|passing").accepts(&plain));
        let bad = MemberFilter::new(&MembersArgs {
            health: Some("(".into()),
            ..args(None, None, &[])
        });
        assert!(bad.is_err_and(|e| {
            e.to_string()
                .starts_with("invalid --health regular expression")
        }));
    }

    #[test]
    fn filters_are_anchored_regexes() {
        let f =
            MemberFilter::new(&args(Some("alive|left"), Some("web.*"), &["role=we"])).expect("ok");
        assert!(
            !f.accepts(&member("web-1", "alive", "web")),
            "role=we must not match web"
        );
        let f =
            MemberFilter::new(&args(Some("alive|left"), Some("web.*"), &["role=web"])).expect("ok");
        assert!(f.accepts(&member("web-1", "alive", "web")));
        assert!(!f.accepts(&member("web-1", "failed", "web")));
        assert!(!f.accepts(&member("db-web", "alive", "web")));
    }

    #[test]
    fn bad_filters_are_reported() {
        assert!(MemberFilter::new(&args(Some("("), None, &[])).is_err());
        assert!(MemberFilter::new(&args(None, None, &["role"])).is_err());
    }

    #[test]
    fn filter_errors_name_the_flag_and_the_value() {
        let message = |a: MembersArgs| MemberFilter::new(&a).err().map(|e| e.to_string());
        assert_eq!(
            message(args(None, None, &["role"])).as_deref(),
            Some("invalid --tag \"role\": expected KEY=REGEX")
        );
        let err = message(args(Some("("), None, &[])).unwrap_or_default();
        assert!(
            err.starts_with("invalid --status regular expression \"(\": "),
            "{err}"
        );
    }

    #[test]
    fn table_is_aligned_like_serf() {
        let rows = vec![
            vec!["a".to_string(), "1.2.3.4:1".to_string()],
            vec!["long".to_string(), "x".to_string()],
        ];
        assert_eq!(columns(&rows), "a     1.2.3.4:1\nlong  x\n");
    }
}
