//! The primary-selection flags of `shoal agent` (docs/primary.md), flattened into
//! [`super::AgentArgs`]; also config-file keys of the same names with `_`.

use clap::Args;

/// `--group` and the settings of this node's place in it.
#[derive(Debug, Args, Default, Clone)]
pub struct PrimaryArgs {
    /// Join primary group NAME: among its alive, passing members the highest --priority (then
    /// the lowest name) is primary, and this node runs --on-primary / --on-backup /
    /// --on-fault on its own transitions (see docs/primary.md).
    #[arg(
        long,
        env = "SHOAL_GROUP",
        value_name = "NAME",
        help_heading = "Primary group"
    )]
    pub group: Option<String>,
    /// This node's priority in its group, 0 to 255; higher wins [default: 100].
    #[arg(long, env = "SHOAL_PRIORITY", value_name = "N", help_heading = "Primary group",
          value_parser = clap::value_parser!(u32).range(..=255))]
    pub priority: Option<u32>,
    /// A better member that appears takes the role from a working primary; --preempt=false
    /// keeps it (Keepalived's nopreempt; give every member of the group the same setting)
    /// [default: true].
    #[arg(long, env = "SHOAL_PREEMPT", value_name = "BOOL", help_heading = "Primary group",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub preempt: Option<bool>,
    /// Become primary only while seeing at least N alive members of the group, this one
    /// included: with a majority (2 of 3), the minority side of a partition steps down
    /// [default: 1].
    #[arg(long, env = "SHOAL_GROUP_QUORUM", value_name = "N", help_heading = "Primary group",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub group_quorum: Option<u32>,
    /// Act on a new primary only once the same outcome held this long; stepping down and
    /// fault are never delayed [default: 0].
    #[arg(
        long,
        env = "SHOAL_PRIMARY_DELAY",
        value_name = "DURATION",
        help_heading = "Primary group"
    )]
    pub primary_delay: Option<String>,
    /// Run (sh -c) when this node becomes its group's primary (Keepalived's notify_master).
    #[arg(
        long,
        env = "SHOAL_ON_PRIMARY",
        value_name = "CMD",
        help_heading = "Primary group"
    )]
    pub on_primary: Option<String>,
    /// Run when this node becomes a backup: at start (unless it is primary at once), when
    /// another member takes the role, and before it leaves as primary (Keepalived's
    /// notify_backup).
    #[arg(
        long,
        env = "SHOAL_ON_BACKUP",
        value_name = "CMD",
        help_heading = "Primary group"
    )]
    pub on_backup: Option<String>,
    /// Run when this node's own checks stop passing (Keepalived's notify_fault).
    #[arg(
        long,
        env = "SHOAL_ON_FAULT",
        value_name = "CMD",
        help_heading = "Primary group"
    )]
    pub on_fault: Option<String>,
}
