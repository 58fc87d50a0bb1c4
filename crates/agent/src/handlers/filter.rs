//! Serf's handler spec: `[FILTER=]SCRIPT`, where FILTER is a comma-separated list of
//! `member-join`, `member-leave`, `member-failed`, `member-update`, `member-reap`, `user`,
//! `user:NAME`, `query`, `query:NAME` or `*`. No filter means every event.

use shoal_core::MemberEventKind;
use thiserror::Error;

/// A malformed handler spec.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    /// The script part is empty.
    #[error("the script is empty")]
    EmptyScript,
    /// A filter word Serf does not know.
    #[error(
        "unknown event filter {0:?} (expected member-join, member-leave, member-failed, \
         member-update, member-reap, user, user:NAME, query, query:NAME or *)"
    )]
    UnknownFilter(String),
}

/// One filter term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// Every event.
    All,
    /// One member event kind.
    Member(MemberEventKind),
    /// User events, optionally only those with this name.
    User(Option<String>),
    /// Queries, optionally only those with this name.
    Query(Option<String>),
}

impl Filter {
    /// One word of a filter list.
    pub fn parse(word: &str) -> Result<Self, ParseError> {
        let member = |k| Ok(Filter::Member(k));
        match word {
            "*" => Ok(Filter::All),
            "member-join" => member(MemberEventKind::Join),
            "member-leave" => member(MemberEventKind::Leave),
            "member-failed" => member(MemberEventKind::Failed),
            "member-update" => member(MemberEventKind::Update),
            "member-reap" => member(MemberEventKind::Reap),
            "user" => Ok(Filter::User(None)),
            "query" => Ok(Filter::Query(None)),
            w => match w.split_once(':') {
                Some(("user", name)) if !name.is_empty() => Ok(Filter::User(Some(name.into()))),
                Some(("query", name)) if !name.is_empty() => Ok(Filter::Query(Some(name.into()))),
                _ => Err(ParseError::UnknownFilter(w.to_string())),
            },
        }
    }
}

/// A parsed `--event-handler`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerSpec {
    /// What it runs for; empty means everything.
    pub filters: Vec<Filter>,
    /// The script, run as `sh -c SCRIPT`.
    pub script: String,
    /// The spec as written (for logs).
    pub raw: String,
}

impl HandlerSpec {
    /// Parses `[FILTER=]SCRIPT`.
    ///
    /// Like Serf, the text before the first `=` is the filter, unless it cannot be one (it holds
    /// a space, `/`, `.` or a quote), in which case the whole text is the script: so
    /// `./notify.sh --level=2` runs for every event instead of failing.
    pub fn parse(spec: &str) -> Result<Self, ParseError> {
        let (filter, script) = match spec.split_once('=') {
            Some((f, s)) if !f.contains([' ', '/', '.', '"', '\'', '$']) => (f, s),
            _ => ("", spec),
        };
        if script.trim().is_empty() {
            return Err(ParseError::EmptyScript);
        }
        let filters = filter
            .split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(Filter::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            filters,
            script: script.to_string(),
            raw: spec.to_string(),
        })
    }

    /// True when this handler runs for user event `name` (`user`, `user:NAME`, `*`).
    pub fn wants_user(&self, name: &str) -> bool {
        wants_user(&self.filters, name)
    }

    /// True when this handler runs for query `name` (`query`, `query:NAME`, `*`).
    pub fn wants_query(&self, name: &str) -> bool {
        self.filters.is_empty()
            || self.filters.iter().any(|f| match f {
                Filter::All | Filter::Query(None) => true,
                Filter::Query(Some(wanted)) => wanted == name,
                Filter::Member(_) | Filter::User(_) => false,
            })
    }

    /// True when this handler runs for a member event of `kind`.
    pub fn wants_member(&self, kind: MemberEventKind) -> bool {
        wants_member(&self.filters, kind)
    }

    /// The filter part as written (empty: every event).
    pub fn filter_text(&self) -> &str {
        self.raw
            .strip_suffix(self.script.as_str())
            .and_then(|f| f.strip_suffix('='))
            .unwrap_or("")
    }
}

/// True when the filter list wants user event `name` (`user`, `user:NAME`, `*`; an empty
/// list wants everything). Handlers and `/v1/stream` share it.
pub fn wants_user(filters: &[Filter], name: &str) -> bool {
    filters.is_empty()
        || filters.iter().any(|f| match f {
            Filter::All | Filter::User(None) => true,
            Filter::User(Some(wanted)) => wanted == name,
            Filter::Member(_) | Filter::Query(_) => false,
        })
}

/// True when the filter list wants query `name` (`query`, `query:NAME`, `*`; an empty list
/// wants everything). `/v1/stream` uses it.
pub fn wants_query(filters: &[Filter], name: &str) -> bool {
    filters.is_empty()
        || filters.iter().any(|f| match f {
            Filter::All | Filter::Query(None) => true,
            Filter::Query(Some(wanted)) => wanted == name,
            Filter::Member(_) | Filter::User(_) => false,
        })
}

/// True when the filter list wants a member event of `kind` (an empty list wants everything).
pub fn wants_member(filters: &[Filter], kind: MemberEventKind) -> bool {
    filters.is_empty()
        || filters
            .iter()
            .any(|f| matches!(f, Filter::All) || *f == Filter::Member(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_filter_means_every_event() {
        let spec = HandlerSpec::parse("./handler.sh").expect("valid");
        assert!(spec.filters.is_empty());
        assert!(spec.wants_member(MemberEventKind::Reap));
    }

    #[test]
    fn serf_filter_lists_parse() {
        let spec = HandlerSpec::parse("member-join,member-leave,user:deploy=echo hi").expect("ok");
        assert_eq!(spec.script, "echo hi");
        assert_eq!(
            spec.filters,
            vec![
                Filter::Member(MemberEventKind::Join),
                Filter::Member(MemberEventKind::Leave),
                Filter::User(Some("deploy".into()))
            ]
        );
        assert!(spec.wants_member(MemberEventKind::Join));
        assert!(!spec.wants_member(MemberEventKind::Failed));
        assert!(
            HandlerSpec::parse("*=x")
                .expect("ok")
                .wants_member(MemberEventKind::Update)
        );
        assert_eq!(
            HandlerSpec::parse("query=x").expect("ok").filters,
            vec![Filter::Query(None)]
        );
    }

    #[test]
    fn user_filters_match_every_user_event_or_one_name() {
        let named = HandlerSpec::parse("user:deploy=x").expect("ok");
        assert!(named.wants_user("deploy") && !named.wants_user("restart"));
        assert!(!named.wants_member(MemberEventKind::Join));
        assert!(HandlerSpec::parse("user=x").expect("ok").wants_user("any"));
        assert!(HandlerSpec::parse("x").expect("ok").wants_user("any"));
        assert!(
            !HandlerSpec::parse("member-join,query=x")
                .expect("ok")
                .wants_user("any")
        );
    }

    #[test]
    fn query_filters_match_every_query_or_one_name() {
        let named = HandlerSpec::parse("query:swarm-token=x").expect("ok");
        assert!(named.wants_query("swarm-token") && !named.wants_query("load"));
        assert!(!named.wants_user("swarm-token"));
        assert!(
            HandlerSpec::parse("query=x")
                .expect("ok")
                .wants_query("any")
        );
        assert!(HandlerSpec::parse("x").expect("ok").wants_query("any"));
        assert!(!HandlerSpec::parse("user=x").expect("ok").wants_query("any"));
    }

    #[test]
    fn a_script_with_an_equals_sign_is_not_a_filter() {
        let spec = HandlerSpec::parse("./notify.sh --level=2").expect("ok");
        assert!(spec.filters.is_empty());
        assert_eq!(spec.script, "./notify.sh --level=2");
        assert_eq!(spec.filter_text(), "");
        let spec = HandlerSpec::parse("member-join=FOO=1 ./x.sh").expect("ok");
        assert_eq!(spec.script, "FOO=1 ./x.sh");
        assert_eq!(spec.filter_text(), "member-join");
    }

    #[test]
    fn bad_filters_and_empty_scripts_are_errors() {
        assert_eq!(
            HandlerSpec::parse("member-jion=./x.sh"),
            Err(ParseError::UnknownFilter("member-jion".into()))
        );
        assert_eq!(
            HandlerSpec::parse("user:=./x.sh"),
            Err(ParseError::UnknownFilter("user:".into()))
        );
        assert_eq!(
            HandlerSpec::parse("member-join="),
            Err(ParseError::EmptyScript)
        );
        assert_eq!(HandlerSpec::parse(""), Err(ParseError::EmptyScript));
    }
}
