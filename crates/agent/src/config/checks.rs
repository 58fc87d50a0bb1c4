//! Checks beside [`super::resolve`]: the files the agent will write or read, found usable at
//! start; and the `--tag` flags, which `SHOAL_TAG` stands in for as a comma-separated list.

use std::collections::BTreeMap;
use std::path::Path;

use super::{AgentConfig, ConfigError, invalid};
use crate::cli::AgentArgs;

/// What would otherwise fail only once the agent runs (a snapshot never written, a template
/// never rendered): found at start, with the setting named.
pub(super) fn files(cfg: &AgentConfig) -> Result<(), ConfigError> {
    if let Some(path) = &cfg.node.snapshot {
        writable("--snapshot", path)?;
    }
    for spec in &cfg.templates {
        let text = format!("{}:{}", spec.src.display(), spec.dest.display());
        std::fs::File::open(&spec.src)
            .and_then(|f| match f.metadata()?.is_dir() {
                true => Err(std::io::Error::other("it is a directory")),
                false => Ok(()),
            })
            .map_err(|e| {
                invalid(
                    "--template",
                    &text,
                    format!("cannot read the template {}: {e}", spec.src.display()),
                )
            })?;
        writable("--template", &spec.dest)?;
    }
    Ok(())
}

/// `path` can be replaced atomically, as the agent will: a temporary file can be made beside
/// it (the check removes it again), and `path` is not a directory.
fn writable(setting: &'static str, path: &Path) -> Result<(), ConfigError> {
    let text = path.display().to_string();
    if path.is_dir() {
        return Err(invalid(setting, &text, "is a directory, not a file"));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    tempfile::NamedTempFile::new_in(dir).map(drop).map_err(|e| {
        invalid(
            setting,
            &text,
            format!("cannot write in {}: {e}", dir.display()),
        )
    })
}

/// The `--tag` flags; with none, `SHOAL_TAG` split at commas. Only the variable is split:
/// a flag's value may hold commas (`--tag list=a,b`).
pub(super) fn tag_args(args: &AgentArgs) -> Vec<String> {
    if !args.tags.is_empty() {
        return args.tags.clone();
    }
    match std::env::var("SHOAL_TAG") {
        Ok(list) => list
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// `k=v,k=v`, shortened: what an error about a whole tag set quotes.
pub(super) fn tags_text(tags: &BTreeMap<String, String>) -> String {
    let text: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let text = text.join(",");
    match text.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}

/// What is wrong with the port of `value` (`ip:port`, `[v6]:port`, `host:port`), if it names
/// one that is no port: out of range or not a number. Checked before any look-up, which would
/// otherwise try the whole text as a host name and say only that it does not resolve.
pub(super) fn port_problem(value: &str) -> Option<String> {
    let value = value.trim();
    let port = match value.strip_prefix('[') {
        Some(rest) => rest.split_once("]:")?.1,
        None if value.matches(':').count() == 1 => value.rsplit_once(':')?.1,
        None => return None,
    };
    if port.is_empty() {
        return Some("the port is empty".into());
    }
    if !port.chars().all(|c| c.is_ascii_digit()) {
        return Some(format!("port {port:?} is not a number"));
    }
    match port.parse::<u16>() {
        Ok(_) => None,
        Err(_) => Some(format!("port {port} is out of range (0-65535)")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FileConfig, load, resolve};
    use crate::cli::AgentArgs;

    fn args() -> AgentArgs {
        AgentArgs::default()
    }

    /// Issue 11: `--bind 127.0.0.1:99999` said "failed to lookup address information".
    #[test]
    fn a_bad_port_is_named_before_any_look_up() {
        let mut a = args();
        a.bind = Some("127.0.0.1:99999".into());
        let err = resolve(&a, FileConfig::default())
            .expect_err("port")
            .to_string();
        assert!(
            err.contains("--bind") && err.contains("port 99999 is out of range"),
            "{err}"
        );
        assert_eq!(
            super::port_problem("[::1]:http").as_deref(),
            Some("port \"http\" is not a number")
        );
        assert_eq!(
            super::port_problem("web:").as_deref(),
            Some("the port is empty")
        );
        for fine in ["web:7948", "[::1]:0", "::1", "10.0.0.1", "web"] {
            assert_eq!(super::port_problem(fine), None, "{fine}");
        }
        let mut a = args();
        a.join = vec!["web:70000".into()];
        let err = resolve(&a, FileConfig::default())
            .expect_err("join port")
            .to_string();
        assert!(err.contains("--join") && err.contains("70000"), "{err}");
    }

    /// Issue 11: an unwritable snapshot or a missing template was found only later.
    #[test]
    fn an_unwritable_snapshot_or_a_missing_template_is_refused_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").expect("write");
        let mut a = args();
        a.snapshot = Some(file.join("snapshot.json"));
        let err = load(&a).expect_err("parent is a file").to_string();
        assert!(
            err.contains("--snapshot") && err.contains("cannot write in"),
            "{err}"
        );
        a.snapshot = Some(dir.path().to_path_buf());
        let err = load(&a).expect_err("a directory").to_string();
        assert!(err.contains("is a directory"), "{err}");
        a.snapshot = Some(dir.path().join("snapshot.json"));
        assert!(load(&a).is_ok());
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            1,
            "the check leaves nothing behind"
        );

        let missing = dir.path().join("missing.tmpl");
        a.templates = vec![format!(
            "{}:{}",
            missing.display(),
            dir.path().join("out").display()
        )];
        let err = load(&a).expect_err("missing source").to_string();
        assert!(
            err.contains("--template") && err.contains("missing.tmpl"),
            "{err}"
        );
        a.templates = vec![format!("{}:{}", file.display(), file.join("out").display())];
        let err = load(&a).expect_err("unwritable destination").to_string();
        assert!(
            err.contains("--template") && err.contains("cannot write"),
            "{err}"
        );
        a.templates = vec![format!(
            "{}:{}",
            file.display(),
            dir.path().join("out").display()
        )];
        assert!(load(&a).is_ok());
    }

    /// Issue 11: the flag's value was split at commas like SHOAL_TAG's.
    #[test]
    fn a_tag_flag_keeps_its_commas() {
        let mut a = args();
        a.tags = vec!["list=a,b".into(), "role=web".into()];
        let cfg = resolve(&a, FileConfig::default()).expect("valid");
        assert_eq!(cfg.node.tags["list"], "a,b");
        assert_eq!(cfg.node.tags["role"], "web");
    }

    /// Issue 11: tags over the total limit were refused only after start (exit 2).
    #[test]
    fn tags_over_the_total_limit_are_refused_before_start() {
        let mut a = args();
        a.tags = (0..5)
            .map(|i| format!("k{i}={}", "v".repeat(1000)))
            .collect();
        let err = resolve(&a, FileConfig::default())
            .expect_err("too large")
            .to_string();
        assert!(err.contains("--tag") && err.contains("4096"), "{err}");
        let mut a = args();
        a.node = Some("n".repeat(200));
        let err = resolve(&a, FileConfig::default())
            .expect_err("long name")
            .to_string();
        assert!(err.contains("--node") && err.contains("128"), "{err}");
    }
}
