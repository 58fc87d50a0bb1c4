//! What a handler sees: Serf's environment (each `SERF_*` also as `SHOAL_*`) and stdin lines.

use std::path::Path;

use shoal_core::{Health, Member, MemberEventKind, Query, UserEvent};

use crate::view::tags_string;

/// Serf's `eventClean`: tabs and newlines escaped so a line stays a line.
fn clean(v: &str) -> String {
    v.replace('\t', "\\t").replace('\n', "\\n")
}

/// Serf's tag variable name: upper-cased, anything but `[A-Z0-9_]` becomes `_`.
pub fn tag_var(key: &str) -> String {
    key.to_uppercase()
        .chars()
        .map(|c| {
            if c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Pushes `SERF_{name}` and its `SHOAL_{name}` twin.
fn both(env: &mut Vec<(String, String)>, name: &str, value: String) {
    env.push((format!("SERF_{name}"), value.clone()));
    env.push((format!("SHOAL_{name}"), value));
}

/// The environment for a member event: `SERF_EVENT`, `SERF_SELF_NAME`, `SERF_SELF_ROLE`,
/// `SERF_TAG_<KEY>` (the local node's tags), their `SHOAL_*` twins and `SHOAL_MEMBERS_FILE`;
/// and the health of the event's `members` (the stdin lines): `SHOAL_HEALTH`, the worst
/// aggregate among those that run checks (for the usual one-member event, that member's
/// health; empty when none runs checks), and `SHOAL_MEMBER_HEALTH`, `NAME=HEALTH` for each of
/// them that runs checks, space-separated, in stdin order.
pub fn member_event_env(
    kind: MemberEventKind,
    local: &Member,
    members: &[Member],
    members_file: Option<&Path>,
) -> Vec<(String, String)> {
    let mut env = event_env(kind.as_str(), local, members_file);
    let each: Vec<(&str, Health)> = members
        .iter()
        .filter_map(|m| Some((m.name.as_str(), m.role.health()?)))
        .collect();
    let worst = Health::worst(each.iter().map(|(_, h)| *h));
    env.push((
        "SHOAL_HEALTH".into(),
        worst.map_or("", Health::as_str).into(),
    ));
    let list: Vec<String> = each.iter().map(|(n, h)| format!("{n}={h}")).collect();
    env.push(("SHOAL_MEMBER_HEALTH".into(), list.join(" ")));
    env
}

/// The environment for a user event: that of a member event with `SERF_EVENT=user`, plus
/// `SERF_USER_EVENT` (its name) and `SERF_USER_LTIME` (its Lamport time), with twins.
pub fn user_event_env(
    event: &UserEvent,
    local: &Member,
    members_file: Option<&Path>,
) -> Vec<(String, String)> {
    let mut env = event_env("user", local, members_file);
    both(&mut env, "USER_EVENT", event.name.clone());
    both(&mut env, "USER_LTIME", event.ltime.to_string());
    env
}

/// Stdin for a user event: its payload, with a newline added if it lacks one (as Serf does).
pub fn user_event_stdin(event: &UserEvent) -> Vec<u8> {
    payload_stdin(&event.payload)
}

/// A payload with a newline added if it lacks one (Serf's stdin for user events and queries).
pub fn payload_stdin(payload: &[u8]) -> Vec<u8> {
    let mut stdin = payload.to_vec();
    if stdin.last().is_some_and(|b| *b != b'\n') {
        stdin.push(b'\n');
    }
    stdin
}

/// The environment for a query: that of a member event with `SERF_EVENT=query`, plus
/// `SERF_QUERY_NAME` and `SERF_QUERY_LTIME` (its Lamport time), with twins.
pub fn query_env(
    query: &Query,
    local: &Member,
    members_file: Option<&Path>,
) -> Vec<(String, String)> {
    let mut env = event_env("query", local, members_file);
    both(&mut env, "QUERY_NAME", query.name.clone());
    both(&mut env, "QUERY_LTIME", query.ltime.to_string());
    env
}

/// What every event's environment holds: the event name and the local node's name, role
/// and tags (with twins), and the members file.
fn event_env(event: &str, local: &Member, members_file: Option<&Path>) -> Vec<(String, String)> {
    let mut env = Vec::new();
    both(&mut env, "EVENT", event.to_string());
    both(&mut env, "SELF_NAME", local.name.clone());
    let role = local.tags.get("role").cloned().unwrap_or_default();
    both(&mut env, "SELF_ROLE", role);
    for (k, v) in &local.tags {
        both(&mut env, &format!("TAG_{}", tag_var(k)), v.clone());
    }
    if let Some(path) = members_file {
        env.push(("SHOAL_MEMBERS_FILE".into(), path.display().to_string()));
    }
    let own = local.role.health().map_or("", Health::as_str);
    env.push(("SHOAL_SELF_HEALTH".into(), own.to_string()));
    env
}

/// Stdin for a member event: one `NAME<TAB>IP<TAB>ROLE<TAB>TAGS` line per member (Serf's).
pub fn member_event_stdin(members: &[Member]) -> String {
    let mut out = String::new();
    for m in members {
        let role = m.tags.get("role").map(String::as_str).unwrap_or("");
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\n",
            clean(&m.name),
            m.addr.ip(),
            clean(role),
            clean(&tags_string(&m.tags))
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::Status;

    fn member(name: &str, tags: &[(&str, &str)]) -> Member {
        Member {
            name: name.into(),
            addr: "10.0.0.7:7948".parse().expect("addr"),
            generation: 1,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            role: Default::default(),
            status: Status::Alive,
        }
    }

    #[test]
    fn stdin_lines_match_serf() {
        let m = member("web\t1", &[("role", "web"), ("dc", "east")]);
        assert_eq!(
            member_event_stdin(&[m]),
            "web\\t1\t10.0.0.7\tweb\tdc=east,role=web\n"
        );
        assert_eq!(
            member_event_stdin(&[member("db", &[])]),
            "db\t10.0.0.7\t\t\n"
        );
    }

    #[test]
    fn a_user_event_has_serfs_variables_and_its_payload_on_stdin() {
        let event = UserEvent {
            ltime: 42,
            name: "deploy".into(),
            payload: b"v42".to_vec(),
            coalesce: true,
        };
        let env = user_event_env(&event, &member("me", &[("role", "web")]), None);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("SERF_EVENT"), Some("user"));
        assert_eq!(get("SERF_USER_EVENT"), Some("deploy"));
        assert_eq!(get("SHOAL_USER_EVENT"), Some("deploy"));
        assert_eq!(get("SERF_USER_LTIME"), Some("42"));
        assert_eq!(get("SHOAL_USER_LTIME"), Some("42"));
        assert_eq!(get("SERF_SELF_ROLE"), Some("web"));
        assert_eq!(user_event_stdin(&event), b"v42\n");
        let empty = UserEvent {
            payload: Vec::new(),
            ..event
        };
        assert_eq!(user_event_stdin(&empty), b"");
    }

    #[test]
    fn a_query_has_serfs_variables_and_its_payload_on_stdin() {
        let query = Query {
            ltime: 7,
            id: 1,
            name: "swarm-token".into(),
            payload: b"who".to_vec(),
            filters: Vec::new(),
            origin: "10.0.0.1:7948".parse().expect("addr"),
            timeout_ms: 1000,
            ack: true,
            relay_factor: 0,
        };
        let env = query_env(&query, &member("m1", &[("role", "manager")]), None);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("SERF_EVENT"), Some("query"));
        assert_eq!(get("SHOAL_EVENT"), Some("query"));
        assert_eq!(get("SERF_QUERY_NAME"), Some("swarm-token"));
        assert_eq!(get("SHOAL_QUERY_NAME"), Some("swarm-token"));
        assert_eq!(get("SERF_QUERY_LTIME"), Some("7"));
        assert_eq!(get("SHOAL_QUERY_LTIME"), Some("7"));
        assert_eq!(payload_stdin(&query.payload), b"who\n");
    }

    #[test]
    fn environment_has_serf_names_and_shoal_twins() {
        let local = member("me", &[("role", "lb"), ("http-port", "80")]);
        let env = member_event_env(
            MemberEventKind::Failed,
            &local,
            &[],
            Some(Path::new("/tmp/m.json")),
        );
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("SERF_EVENT"), Some("member-failed"));
        assert_eq!(get("SHOAL_EVENT"), Some("member-failed"));
        assert_eq!(get("SERF_SELF_NAME"), Some("me"));
        assert_eq!(get("SERF_SELF_ROLE"), Some("lb"));
        assert_eq!(get("SERF_TAG_HTTP_PORT"), Some("80"));
        assert_eq!(get("SHOAL_TAG_ROLE"), Some("lb"));
        assert_eq!(get("SHOAL_MEMBERS_FILE"), Some("/tmp/m.json"));
        assert_eq!(get("SHOAL_HEALTH"), Some(""));
        assert_eq!(get("SHOAL_SELF_HEALTH"), Some(""));
    }

    #[test]
    fn a_member_event_carries_its_members_health_and_stdin_stays_serfs() {
        let mut local = member("me", &[]);
        local.role.checks.insert("disk".into(), Health::Warning);
        let mut web = member("web", &[("role", "web")]);
        web.role.checks.insert("http".into(), Health::Critical);
        web.role.checks.insert("tcp".into(), Health::Passing);
        let plain = member("plain", &[]);
        let members = [web, plain];
        let env = member_event_env(MemberEventKind::Update, &local, &members, None);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("SHOAL_HEALTH"), Some("critical"));
        assert_eq!(get("SHOAL_MEMBER_HEALTH"), Some("web=critical"));
        assert_eq!(get("SHOAL_SELF_HEALTH"), Some("warning"));
        assert_eq!(
            member_event_stdin(&members),
            "web\t10.0.0.7\tweb\trole=web\nplain\t10.0.0.7\t\t\n"
        );
    }
}
