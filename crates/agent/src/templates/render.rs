//! The template engine side (minijinja, Jinja2 syntax), used by the `shoal-template` binary.
//!
//! The context holds `members` (every member: `name`, `addr` ("ip:port"), `ip`, `port`,
//! `status`, `tags`, `health` (none without checks), `checks`) and `local` (this agent, same
//! fields). Block tags trim their own line
//! (`trim_blocks`, `lstrip_blocks`), as config files want.

use std::path::Path;

use serde::{Deserialize, Serialize};
use shoal_core::{Member, View};
use thiserror::Error;

/// Why a template did not render.
#[derive(Debug, Error)]
pub enum RenderError {
    /// The fixed syntax settings were refused (they are constants: only a minijinja change
    /// could cause this).
    #[error("{0}")]
    Syntax(minijinja::Error),
    /// The template does not compile or render: `FILE[:LINE]: KIND[: DETAIL]`.
    #[error("{file}{}: {}{}", line_of(.source), .source.kind(), detail_of(.source))]
    Template {
        /// The template file, as given.
        file: String,
        /// What minijinja reported.
        source: minijinja::Error,
    },
}

/// `:LINE`, or nothing when minijinja does not know it.
fn line_of(e: &minijinja::Error) -> String {
    e.line().map_or(String::new(), |l| format!(":{l}"))
}

/// `: DETAIL`, or nothing.
fn detail_of(e: &minijinja::Error) -> String {
    e.detail().map_or(String::new(), |d| format!(": {d}"))
}

/// One member as templates see it.
#[derive(Debug, Serialize, Deserialize)]
pub struct TemplateMember {
    /// Node name.
    pub name: String,
    /// `ip:port`.
    pub addr: String,
    /// IP only.
    pub ip: String,
    /// Gossip port.
    pub port: u16,
    /// `alive`, `suspect`, `leaving`, `left` or `failed`.
    pub status: String,
    /// Tags.
    pub tags: std::collections::BTreeMap<String, String>,
    /// Aggregate health (`passing`, `warning`, `critical`); none for a member without checks.
    #[serde(default)]
    pub health: Option<String>,
    /// Each check's state, by check name.
    #[serde(default)]
    pub checks: std::collections::BTreeMap<String, String>,
}

impl From<&Member> for TemplateMember {
    fn from(m: &Member) -> Self {
        Self {
            name: m.name.clone(),
            addr: m.addr.to_string(),
            ip: m.addr.ip().to_string(),
            port: m.addr.port(),
            status: m.status.as_str().to_string(),
            tags: m.tags.clone(),
            health: m.role.health().map(|h| h.to_string()),
            checks: m.role.check_words(),
        }
    }
}

/// What a template is rendered with (also the JSON the agent sends `shoal-template`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Context {
    /// Every member, this one included.
    pub members: Vec<TemplateMember>,
    /// This agent.
    pub local: TemplateMember,
}

impl Context {
    /// The context for a view.
    pub fn of(view: &View) -> Self {
        Self {
            members: view.members.iter().map(TemplateMember::from).collect(),
            local: TemplateMember::from(&view.local),
        }
    }
}

/// Renders `source` (read from `src`) with `ctx`. Errors name the file and line.
pub fn render(src: &Path, source: &str, ctx: &Context) -> Result<String, RenderError> {
    let name = src.display().to_string();
    let mut env = minijinja::Environment::new();
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(true)
        .build()
        .map_err(RenderError::Syntax)?;
    env.set_syntax(syntax);
    let located = |e| RenderError::Template {
        file: name.clone(),
        source: e,
    };
    env.add_template(&name, source).map_err(located)?;
    env.get_template(&name)
        .and_then(|t| t.render(minijinja::value::Value::from(minijinja::value::Serde(ctx))))
        .map_err(located)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::Status;

    fn member(name: &str, port: u16, status: Status, role: &str) -> Member {
        Member {
            name: name.into(),
            addr: ([10, 0, 0, 1], port).into(),
            generation: 1,
            tags: [("role".to_string(), role.to_string())].into(),
            role: Default::default(),
            status,
        }
    }

    fn view() -> View {
        let lb = member("lb", 1, Status::Alive, "lb");
        View {
            local: lb.clone(),
            members: vec![
                lb,
                member("web-1", 2, Status::Alive, "web"),
                member("web-2", 3, Status::Failed, "web"),
            ],
            left: false,
            conflict: None,
            gave_up_joining: false,
            event_ltime: None,
            query_ltime: None,
        }
    }

    #[test]
    fn members_filtered_by_status_and_tag_render() {
        let src = "{% for m in members if m.status == 'alive' and m.tags.role == 'web' %}\
                   server {{ m.name }} {{ m.ip }}:{{ m.tags.http_port | default('80') }}\n{% endfor %}\
                   # on {{ local.name }}\n";
        let out = render(Path::new("t"), src, &Context::of(&view())).expect("render");
        assert_eq!(out, "server web-1 10.0.0.1:80\n# on lb\n");
    }

    #[test]
    fn a_members_health_and_checks_render() {
        let mut v = view();
        v.members[1]
            .role
            .checks
            .insert("http".into(), shoal_core::Health::Critical);
        let src = "{% for m in members %}{{ m.name }}={{ m.health or 'none' }}\
                   {% for c, s in m.checks | items %}({{ c }}:{{ s }}){% endfor %} {% endfor %}";
        let out = render(Path::new("t"), src, &Context::of(&v)).expect("render");
        assert_eq!(out, "lb=none web-1=critical(http:critical) web-2=none ");
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let src = "ok\n{% for m in members %}\n{{ m.name \n";
        let err = render(Path::new("/etc/haproxy.tmpl"), src, &Context::of(&view()))
            .expect_err("broken")
            .to_string();
        assert!(err.starts_with("/etc/haproxy.tmpl:3: "), "{err}");
    }
}
