//! The primary-group settings (`--group` and the rest, or the same keys in a config file)
//! into [`Settings`]; flags win over the file.

use shoal_core::Group;
use shoal_core::role::safe_name;

use super::{ConfigError, FileConfig, duration, invalid};
use crate::cli::AgentArgs;
use crate::cli::primary::PrimaryArgs;
use crate::primary::Settings;

/// Most a priority may be, as in Keepalived (VRRP's priority is one byte).
const MAX_PRIORITY: u32 = 255;

/// Whether the node will join someone: `--join`, `--discover` or a snapshot to rejoin from.
pub(super) fn has_somewhere_to_join(args: &AgentArgs, file: &FileConfig) -> bool {
    args.join
        .iter()
        .chain(&file.join)
        .any(|j| !j.trim().is_empty())
        || args.discover.is_some()
        || file.discover.is_some()
        || args.snapshot.is_some()
        || file.snapshot.is_some()
}

/// The settings, `None` without a group. `wait_to_join`: the node has somewhere to join
/// (`--join`, `--discover`, a snapshot), so it does not take the role before it has.
pub(super) fn resolve(
    args: &PrimaryArgs,
    file: &FileConfig,
    wait_to_join: bool,
) -> Result<Option<Settings>, ConfigError> {
    let group = args.group.clone().or_else(|| file.group.clone());
    let priority = args.priority.or(file.priority);
    let preempt = args.preempt.or(file.preempt);
    let quorum = args.group_quorum.or(file.group_quorum);
    let delay = args
        .primary_delay
        .clone()
        .or_else(|| file.primary_delay.clone());
    let script = |flag: &Option<String>, key: &Option<String>| {
        flag.clone()
            .or_else(|| key.clone())
            .filter(|s| !s.trim().is_empty())
    };
    let on_primary = script(&args.on_primary, &file.on_primary);
    let on_backup = script(&args.on_backup, &file.on_backup);
    let on_fault = script(&args.on_fault, &file.on_fault);
    let Some(group) = group else {
        let given = [
            ("--priority", priority.is_some()),
            ("--preempt", preempt.is_some()),
            ("--group-quorum", quorum.is_some()),
            ("--primary-delay", delay.is_some()),
            ("--on-primary", on_primary.is_some()),
            ("--on-backup", on_backup.is_some()),
            ("--on-fault", on_fault.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, set)| *set) {
            return Err(invalid(
                "--group",
                "",
                format!("{flag} needs --group NAME (the primary group it applies to)"),
            ));
        }
        return Ok(None);
    };
    if !safe_name(&group) {
        return Err(invalid(
            "--group",
            &group,
            "must be 1 to 128 ASCII letters, digits, '-', '_' or '.'",
        ));
    }
    let priority = priority.unwrap_or(100);
    if priority > MAX_PRIORITY {
        return Err(invalid(
            "--priority",
            &priority.to_string(),
            format!("must be 0 to {MAX_PRIORITY}"),
        ));
    }
    let quorum = quorum.unwrap_or(1);
    if quorum == 0 {
        return Err(invalid(
            "--group-quorum",
            "0",
            "must be at least 1 (this member counts itself)",
        ));
    }
    Ok(Some(Settings {
        group: Group {
            name: group,
            priority,
            primary: false,
        },
        preempt: preempt.unwrap_or(true),
        quorum: quorum as usize,
        delay: duration("--primary-delay", delay, "0")?,
        on_primary,
        on_backup,
        on_fault,
        wait_to_join,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(primary: PrimaryArgs) -> AgentArgs {
        AgentArgs {
            node: Some("n1".into()),
            bind: Some("127.0.0.1:0".into()),
            primary,
            ..AgentArgs::default()
        }
    }

    #[test]
    fn the_group_settings_come_from_flags_over_the_file_with_defaults() {
        let file: FileConfig = toml::from_str(
            "group = \"lb\"\npriority = 150\npreempt = false\ngroup_quorum = 2\n\
             primary_delay = \"2s\"\non_primary = \"up.sh\"\non_backup = \"down.sh\"\n",
        )
        .expect("toml");
        let flags = PrimaryArgs {
            priority: Some(200),
            on_fault: Some("fault.sh".into()),
            ..PrimaryArgs::default()
        };
        let cfg = super::super::resolve(&args(flags), file).expect("valid");
        let s = cfg.primary.expect("a group");
        assert_eq!(s.group.name, "lb");
        assert_eq!(s.group.priority, 200);
        assert!(!s.preempt);
        assert_eq!(s.quorum, 2);
        assert_eq!(s.delay, std::time::Duration::from_secs(2));
        assert_eq!(s.on_primary.as_deref(), Some("up.sh"));
        assert_eq!(s.on_backup.as_deref(), Some("down.sh"));
        assert_eq!(s.on_fault.as_deref(), Some("fault.sh"));
        assert_eq!(cfg.node.role.group, Some(s.group.clone()));
        let plain = PrimaryArgs {
            group: Some("db".into()),
            ..PrimaryArgs::default()
        };
        let s = super::super::resolve(&args(plain), FileConfig::default())
            .expect("valid")
            .primary
            .expect("a group");
        assert_eq!((s.group.priority, s.preempt, s.quorum), (100, true, 1));
        assert!(s.delay.is_zero() && !s.wait_to_join);
    }

    #[test]
    fn bad_group_settings_are_refused_with_the_setting_named() {
        let cases = [
            (
                PrimaryArgs {
                    on_primary: Some("up.sh".into()),
                    ..PrimaryArgs::default()
                },
                "--on-primary needs --group",
            ),
            (
                PrimaryArgs {
                    group: Some("lb x".into()),
                    ..PrimaryArgs::default()
                },
                "invalid --group \"lb x\"",
            ),
            (
                PrimaryArgs {
                    group: Some("lb".into()),
                    primary_delay: Some("soon".into()),
                    ..PrimaryArgs::default()
                },
                "invalid --primary-delay \"soon\"",
            ),
            (
                PrimaryArgs {
                    group: Some("lb".into()),
                    group_quorum: Some(0),
                    ..PrimaryArgs::default()
                },
                "invalid --group-quorum",
            ),
        ];
        for (flags, expected) in cases {
            let err = super::super::resolve(&args(flags), FileConfig::default())
                .expect_err("refused")
                .to_string();
            assert!(err.contains(expected), "{err}");
        }
        let file: FileConfig = toml::from_str("group = \"lb\"\npriority = 300\n").expect("toml");
        let err = super::super::resolve(&args(PrimaryArgs::default()), file)
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("invalid --priority \"300\": must be 0 to 255"),
            "{err}"
        );
    }
}
