//! A member's health and its place in a primary group (Keepalived's job, on gossip): what each
//! member announces about itself beside its tags, in its [`crate::membership::Meta`].
//!
//! The checks themselves run in the agent, never in the gossip loop; the core only carries
//! their result. Every member computes a group's primary from its own view, so all that has to
//! travel is each member's health and `(group, priority)`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// At most this many checks per member (each travels in every copy of its meta).
pub const MAX_CHECKS: usize = 32;

/// A check's or a member's health, with Consul's names and order: passing is best.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Exit code 0, a 2xx answer, a TCP connection made.
    Passing,
    /// Exit code 1, HTTP 429.
    Warning,
    /// Anything else, a timeout, or not run yet.
    Critical,
}

impl Health {
    /// The lowercase word (`passing`, `warning`, `critical`).
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Passing => "passing",
            Health::Warning => "warning",
            Health::Critical => "critical",
        }
    }

    /// The worst of the given states (`None` for none at all): the aggregate of a member's
    /// checks, as Consul computes it.
    pub fn worst(states: impl IntoIterator<Item = Health>) -> Option<Health> {
        states.into_iter().max()
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Health {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "passing" => Ok(Health::Passing),
            "warning" => Ok(Health::Warning),
            "critical" => Ok(Health::Critical),
            other => Err(format!(
                "unknown health {other:?}: expected passing, warning or critical"
            )),
        }
    }
}

/// A member's membership of a primary group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The group's name (a safe name, as node names are).
    pub name: String,
    /// Higher wins; ties go to the lower node name.
    pub priority: u32,
    /// This member runs as its group's primary now (it ran `--on-primary` and not yet
    /// `--on-backup`/`--on-fault`). With preemption off, the others keep a claiming member
    /// primary while it stays eligible, as VRRP's `nopreempt` keeps a master whose adverts
    /// arrive; a newcomer learns who holds the role from this.
    pub primary: bool,
}

/// What a member announces about its health and group. The default (no checks, no group) is
/// what a member without `--check` or `--group` announces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Each check's state (after rise/fall), by check name.
    pub checks: BTreeMap<String, Health>,
    /// The member's primary group, if any.
    pub group: Option<Group>,
}

impl Role {
    /// The aggregate health: the worst check, `None` for a member that runs no checks (which
    /// counts as passing for primary selection, as in Keepalived without `track_script`).
    pub fn health(&self) -> Option<Health> {
        Health::worst(self.checks.values().copied())
    }

    /// What a member that restarted (a newer identity generation, whose own meta has not
    /// arrived yet) is known to announce from its previous life's role: the same group and
    /// checks, every check back at `critical` (a check is critical until its first result)
    /// and no primary claim (the new process has run no `--on-primary`). Without this a
    /// restarted primary looked healthy and primary for the moment before its new meta came.
    pub fn restarted(&self) -> Role {
        Role {
            checks: self
                .checks
                .keys()
                .map(|name| (name.clone(), Health::Critical))
                .collect(),
            group: self.group.clone().map(|group| Group {
                primary: false,
                ..group
            }),
        }
    }

    /// Each check's state as its word (`passing`, ...), for JSON and templates.
    pub fn check_words(&self) -> BTreeMap<String, String> {
        self.checks
            .iter()
            .map(|(name, state)| (name.clone(), state.to_string()))
            .collect()
    }

    /// The health primary selection goes by: a member without checks is passing.
    pub fn effective_health(&self) -> Health {
        self.health().unwrap_or(Health::Passing)
    }
}

/// Why a role is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    /// Too many checks.
    #[error("{0} checks; the limit is {MAX_CHECKS}")]
    TooManyChecks(usize),
    /// A check name that is empty, over 128 bytes or outside the node-name set.
    #[error("check name {0:?} must be 1 to 128 ASCII letters, digits, '-', '_' or '.'")]
    CheckName(String),
    /// A group name likewise.
    #[error("group name {0:?} must be 1 to 128 ASCII letters, digits, '-', '_' or '.'")]
    GroupName(String),
}

/// Checks a role: at most [`MAX_CHECKS`] checks, check and group names in the node-name set.
pub fn validate_role(role: &Role) -> Result<(), RoleError> {
    if role.checks.len() > MAX_CHECKS {
        return Err(RoleError::TooManyChecks(role.checks.len()));
    }
    for name in role.checks.keys() {
        if !safe_name(name) {
            return Err(RoleError::CheckName(name.clone()));
        }
    }
    if let Some(group) = role.group.as_ref().filter(|g| !safe_name(&g.name)) {
        return Err(RoleError::GroupName(group.name.clone()));
    }
    Ok(())
}

/// The node-name rule ([`crate::broadcast::validate_name`]), for check and group names.
pub fn safe_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aggregate_is_the_worst_check_and_none_without_checks() {
        let mut role = Role::default();
        assert_eq!(role.health(), None);
        assert_eq!(role.effective_health(), Health::Passing);
        role.checks.insert("a".into(), Health::Passing);
        role.checks.insert("b".into(), Health::Warning);
        assert_eq!(role.health(), Some(Health::Warning));
        role.checks.insert("c".into(), Health::Critical);
        assert_eq!(role.health(), Some(Health::Critical));
    }

    #[test]
    fn unsafe_check_and_group_names_are_refused() {
        let mut role = Role::default();
        role.checks.insert("ok-1".into(), Health::Passing);
        assert_eq!(validate_role(&role), Ok(()));
        role.checks.insert("bad\nname".into(), Health::Passing);
        assert!(matches!(validate_role(&role), Err(RoleError::CheckName(_))));
        let role = Role {
            checks: BTreeMap::new(),
            group: Some(Group {
                name: "lb x".into(),
                priority: 1,
                primary: false,
            }),
        };
        assert!(matches!(validate_role(&role), Err(RoleError::GroupName(_))));
    }

    #[test]
    fn health_words_round_trip() {
        for h in [Health::Passing, Health::Warning, Health::Critical] {
            assert_eq!(h.as_str().parse::<Health>(), Ok(h));
        }
        assert!("ok".parse::<Health>().is_err());
    }
}
