//! Agent configuration: defaults < config files < `SHOAL_*` environment < flags, validated into
//! one typed [`AgentConfig`]. Every error names the setting and the bad value.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shoal_core::broadcast::{validate_name, validate_tag, validate_tags};
use shoal_core::{DEFAULT_PORT, NodeConfig, Profile};
use thiserror::Error;

use crate::cli::AgentArgs;
use crate::control::server::{ControlAddr, ControlToken, DEFAULT_MAX_CONNECTIONS};
use crate::handlers::filter::{HandlerSpec, ParseError};
use crate::logging::LogFormat;
use crate::templates::TemplateSpec;

mod checks;

/// A setting that cannot be used. The agent does not start (or, on reload, keeps the old
/// configuration).
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for shoal.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A value is malformed.
    #[error("invalid {setting} {value:?}: {reason}")]
    Invalid {
        /// The flag or key.
        setting: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A handler spec is malformed.
    #[error("invalid --event-handler {spec:?}: {source}")]
    Handler {
        /// The spec.
        spec: String,
        /// Why.
        source: ParseError,
    },
}

fn invalid(setting: &'static str, value: &str, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        setting,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// The keys a TOML config file may hold (the same names as the flags, with `_`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    node: Option<String>,
    bind: Option<String>,
    advertise: Option<String>,
    #[serde(default)]
    join: Vec<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    tags_file: Option<PathBuf>,
    #[serde(default)]
    event_handlers: Vec<String>,
    #[serde(default)]
    templates: Vec<String>,
    profile: Option<String>,
    control: Option<String>,
    control_token_file: Option<PathBuf>,
    control_header_timeout: Option<String>,
    control_max_connections: Option<usize>,
    log_level: Option<String>,
    log_format: Option<LogFormat>,
    handler_timeout: Option<String>,
    coalesce: Option<String>,
    retry_max: Option<u32>,
    retry_interval: Option<String>,
    reconnect_timeout: Option<String>,
    tombstone_timeout: Option<String>,
    snapshot: Option<PathBuf>,
    rejoin: Option<bool>,
    replay: Option<bool>,
    discover: Option<String>,
    stop_delay: Option<String>,
    stop_timeout: Option<String>,
}

impl FileConfig {
    /// Reads and parses one file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })
    }

    /// Layers `other` over `self`: scalars replace, lists append, tags merge.
    fn merge(&mut self, other: FileConfig) {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f; } )* };
        }
        take!(
            node,
            bind,
            advertise,
            tags_file,
            profile,
            control,
            control_token_file,
            control_header_timeout,
            control_max_connections,
            log_level,
            log_format,
            handler_timeout,
            coalesce,
            retry_max,
            retry_interval,
            reconnect_timeout,
            tombstone_timeout,
            snapshot,
            rejoin,
            replay,
            discover,
            stop_delay,
            stop_timeout
        );
        self.join.extend(other.join);
        self.tags.extend(other.tags);
        self.event_handlers.extend(other.event_handlers);
        self.templates.extend(other.templates);
    }
}

/// The validated agent configuration: the gossip node's settings, then the agent's own.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// What the gossip node starts with: name, bind and advertise addresses, tags, profile,
    /// join targets and retries, reap timeouts, snapshot, rejoin and discovery. Anything the
    /// agent has no setting for (the UDP packet budget) keeps [`NodeConfig::new`]'s default.
    pub node: NodeConfig,
    /// Where runtime tag changes are kept (`--tags-file`); its tags, when it exists, are
    /// already in `node.tags`.
    pub tags_file: Option<PathBuf>,
    /// Event handlers, in order.
    pub handlers: Vec<HandlerSpec>,
    /// Templates, in order.
    pub templates: Vec<TemplateSpec>,
    /// Control API address.
    pub control: ControlAddr,
    /// The control API's token (`--control-token-file`), if requests must carry one.
    pub control_token: Option<ControlToken>,
    /// How long a control connection may take to send a request header.
    pub control_header_timeout: Duration,
    /// Most control connections open at once.
    pub control_max_connections: usize,
    /// Log filter.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Handler timeout.
    pub handler_timeout: Duration,
    /// Member-event quiet window.
    pub coalesce: Duration,
    /// Wait after leaving before stopping the supervised app.
    pub stop_delay: Duration,
    /// How long the app may take to stop.
    pub stop_timeout: Duration,
    /// The supervised app (empty: none).
    pub app: Vec<String>,
    /// The files it was read from (re-read on SIGHUP).
    pub files: Vec<PathBuf>,
}

/// Loads the files named in `args`, layers the flags over them, and checks the files the
/// agent will need: the snapshot can be written, every template can be read and rendered.
pub fn load(args: &AgentArgs) -> Result<AgentConfig, ConfigError> {
    let mut file = FileConfig::default();
    for path in &args.config {
        file.merge(FileConfig::load(path)?);
    }
    let cfg = resolve(args, file)?;
    checks::files(&cfg)?;
    Ok(cfg)
}

fn resolve(args: &AgentArgs, file: FileConfig) -> Result<AgentConfig, ConfigError> {
    let name = match args.node.clone().or(file.node) {
        Some(n) if n.trim().is_empty() => return Err(invalid("--node", &n, "must not be empty")),
        Some(n) => {
            validate_name(&n).map_err(|e| invalid("--node", &n, e))?;
            n
        }
        None => {
            let n = hostname();
            validate_name(&n).map_err(|e| {
                invalid(
                    "--node",
                    &n,
                    format!("{e} (the default is the hostname: set --node)"),
                )
            })?;
            n
        }
    };
    let bind = args.bind.clone().or(file.bind);
    let bind = match bind {
        Some(b) => parse_addr("--bind", &b, DEFAULT_PORT)?,
        None => SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
    };
    let advertise = match args.advertise.clone().or(file.advertise) {
        Some(a) => Some(parse_addr("--advertise", &a, bind.port())?),
        None => None,
    };
    let mut tags = file.tags;
    for pair in &checks::tag_args(args) {
        let (k, v) = pair
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| invalid("--tag", pair, "expected KEY=VALUE"))?;
        tags.insert(k.to_string(), v.to_string());
    }
    for (k, v) in &tags {
        validate_tag(k, v).map_err(|e| invalid("--tag", &format!("{k}={v}"), e))?;
    }
    validate_tags(&tags).map_err(|e| invalid("--tag", &checks::tags_text(&tags), e))?;
    let tags_file = args.tags_file.clone().or(file.tags_file);
    if let Some(path) = &tags_file {
        let path_text = path.display().to_string();
        // As in Serf, the tags a node last had at runtime win over the configured ones.
        if let Some(kept) =
            crate::tags_file::load(path).map_err(|e| invalid("--tags-file", &path_text, e))?
        {
            validate_tags(&kept).map_err(|e| invalid("--tags-file", &path_text, e))?;
            tags = kept;
        }
    }
    let mut handlers = Vec::new();
    for spec in file.event_handlers.iter().chain(&args.event_handlers) {
        handlers.push(
            HandlerSpec::parse(spec).map_err(|source| ConfigError::Handler {
                spec: spec.clone(),
                source,
            })?,
        );
    }
    let mut templates = Vec::new();
    for spec in file.templates.iter().chain(&args.templates) {
        templates.push(TemplateSpec::parse(spec).map_err(|e| invalid("--template", spec, e))?);
    }
    let profile = match args.profile.clone().or(file.profile) {
        Some(p) => p.parse().map_err(|e: String| invalid("--profile", &p, e))?,
        None => Profile::Lan,
    };
    let control = args.control.clone().or(file.control);
    let control = match control {
        Some(c) => control_addr(&c)?,
        None => ControlAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 7373))),
    };
    let control_token = match args.control_token_file.clone().or(file.control_token_file) {
        Some(path) => {
            let token = crate::token::read_token_file(&path)
                .map_err(|e| invalid("--control-token-file", &path.display().to_string(), e))?;
            Some(ControlToken { token, file: path })
        }
        None => None,
    };
    let control_header_timeout = duration(
        "--control-header-timeout",
        args.control_header_timeout
            .clone()
            .or(file.control_header_timeout),
        "10s",
    )?;
    if control_header_timeout.is_zero() {
        return Err(invalid(
            "--control-header-timeout",
            "0",
            "must be more than zero (a client could hold a connection forever)",
        ));
    }
    let control_max_connections = args
        .control_max_connections
        .or(file.control_max_connections)
        .unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if control_max_connections == 0 {
        return Err(invalid(
            "--control-max-connections",
            "0",
            "must be at least 1",
        ));
    }
    let mut join = file.join;
    join.extend(args.join.iter().filter(|j| !j.trim().is_empty()).cloned());
    for target in &join {
        if let Some(problem) = checks::port_problem(target) {
            return Err(invalid("--join", target, problem));
        }
    }
    // Read in the order the settings were always checked, so the first bad one is reported.
    let log_level = args
        .log_level
        .clone()
        .or(file.log_level)
        .unwrap_or_else(|| "info".into());
    let log_format = args.log_format.or(file.log_format).unwrap_or_default();
    let handler_timeout = duration(
        "--handler-timeout",
        args.handler_timeout.clone().or(file.handler_timeout),
        "30s",
    )?;
    let coalesce = duration(
        "--coalesce",
        args.coalesce.clone().or(file.coalesce),
        "100ms",
    )?;
    let retry_max = args.retry_max.or(file.retry_max).unwrap_or(0);
    let retry_interval = match args.retry_interval.clone().or(file.retry_interval) {
        Some(v) => Some(duration("--retry-interval", Some(v), "0s")?),
        None => None,
    };
    let reconnect_timeout = duration(
        "--reconnect-timeout",
        args.reconnect_timeout.clone().or(file.reconnect_timeout),
        "24h",
    )?;
    let tombstone_timeout = duration(
        "--tombstone-timeout",
        args.tombstone_timeout.clone().or(file.tombstone_timeout),
        "24h",
    )?;
    let stop_delay = duration(
        "--stop-delay",
        args.stop_delay.clone().or(file.stop_delay),
        "1s",
    )?;
    let stop_timeout = duration(
        "--stop-timeout",
        args.stop_timeout.clone().or(file.stop_timeout),
        "10s",
    )?;
    let discover = match args.discover.clone().or(file.discover) {
        Some(c) => {
            shoal_core::discover::validate_cluster(&c).map_err(|e| invalid("--discover", &c, e))?;
            Some(c)
        }
        None => None,
    };
    Ok(AgentConfig {
        node: NodeConfig {
            advertise,
            tags,
            profile,
            join,
            retry_max,
            retry_interval,
            reconnect_timeout,
            tombstone_timeout,
            snapshot: args.snapshot.clone().or(file.snapshot),
            rejoin: args.rejoin || file.rejoin.unwrap_or(false),
            replay: args.replay || file.replay.unwrap_or(false),
            discover,
            ..NodeConfig::new(name, bind)
        },
        tags_file,
        handlers,
        templates,
        control,
        control_token,
        control_header_timeout,
        control_max_connections,
        log_level,
        log_format,
        handler_timeout,
        coalesce,
        stop_delay,
        stop_timeout,
        app: args.app.clone(),
        files: args.config.clone(),
    })
}

fn duration(
    setting: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<Duration, ConfigError> {
    let text = value.unwrap_or_else(|| default.to_string());
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text.trim())
        .map_err(|e| invalid(setting, &text, format!("{e} (examples: 250ms, 5s, 24h)")))
}

/// `ip:port`, `[v6]:port`, a bare IP (default port) or `host:port` resolved now.
fn parse_addr(
    setting: &'static str,
    value: &str,
    default_port: u16,
) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    let value = value.trim();
    if let Some(problem) = checks::port_problem(value) {
        return Err(invalid(setting, value, problem));
    }
    // A literal address parses without a look-up; only a host name reaches the resolver.
    let with_port = shoal_core::config::with_default_port(value, default_port);
    with_port
        .to_socket_addrs()
        .map_err(|e| invalid(setting, value, e))?
        .next()
        .ok_or_else(|| invalid(setting, value, "resolves to no address"))
}

/// `unix:/path` or an address for [`parse_addr`].
fn control_addr(value: &str) -> Result<ControlAddr, ConfigError> {
    match value.trim().strip_prefix(shoal_proto::client::UNIX_PREFIX) {
        Some("") => Err(invalid(
            "--control",
            value,
            "unix: needs a socket path, e.g. unix:/run/shoal/control.sock",
        )),
        Some(path) => Ok(ControlAddr::Unix(PathBuf::from(path))),
        None => Ok(ControlAddr::Tcp(parse_addr("--control", value, 7373)?)),
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "shoal".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> AgentArgs {
        AgentArgs::default()
    }

    #[test]
    fn defaults_follow_serf_with_shoal_ports() {
        let cfg = resolve(&args(), FileConfig::default()).expect("valid");
        assert_eq!(cfg.node.bind, "0.0.0.0:7948".parse().expect("addr"));
        assert_eq!(
            cfg.control,
            ControlAddr::Tcp("127.0.0.1:7373".parse().expect("addr"))
        );
        assert!(cfg.control_token.is_none());
        assert_eq!(cfg.control_header_timeout, Duration::from_secs(10));
        assert_eq!(cfg.control_max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(cfg.coalesce, Duration::from_millis(100));
        assert_eq!(cfg.node.profile, Profile::Lan);
        assert!(!cfg.node.name.is_empty());
    }

    #[test]
    fn flags_override_file_and_lists_append() {
        let file: FileConfig = toml::from_str(
            "node = \"from-file\"\njoin = [\"a:1\"]\n[tags]\nrole = \"db\"\nzone = \"x\"\n",
        )
        .expect("toml");
        let mut a = args();
        a.node = Some("from-flag".into());
        a.join = vec!["b:2".into()];
        a.tags = vec!["role=web".into()];
        let cfg = resolve(&a, file).expect("valid");
        assert_eq!(cfg.node.name, "from-flag");
        assert_eq!(cfg.node.join, vec!["a:1", "b:2"]);
        assert_eq!(cfg.node.tags["role"], "web");
        assert_eq!(cfg.node.tags["zone"], "x");
    }

    #[test]
    fn malformed_values_name_the_setting() {
        let mut a = args();
        a.tags = vec!["novalue".into()];
        let err = resolve(&a, FileConfig::default())
            .expect_err("bad tag")
            .to_string();
        assert!(err.contains("--tag") && err.contains("KEY=VALUE"), "{err}");
        let mut a = args();
        a.coalesce = Some("soon".into());
        let err = resolve(&a, FileConfig::default())
            .expect_err("bad duration")
            .to_string();
        assert!(err.contains("--coalesce"), "{err}");
        let mut a = args();
        a.event_handlers = vec!["member-jion=./x.sh".into()];
        let err = resolve(&a, FileConfig::default())
            .expect_err("bad filter")
            .to_string();
        assert!(err.contains("member-jion"), "{err}");
    }

    #[test]
    fn every_file_key_takes_effect() {
        let text = r#"
            node = "n"
            bind = "127.0.0.1:1000"
            advertise = "127.0.0.1:1001"
            join = ["a:1"]
            event_handlers = ["member-join=x"]
            templates = ["a:b"]
            profile = "wan"
            control = "127.0.0.1:1002"
            control_header_timeout = "2s"
            control_max_connections = 7
            log_level = "debug"
            log_format = "json"
            handler_timeout = "5s"
            coalesce = "0"
            retry_max = 3
            retry_interval = "2s"
            reconnect_timeout = "1h"
            tombstone_timeout = "2h"
            snapshot = "/tmp/s.json"
            rejoin = true
            replay = true
            discover = "prod"
            stop_delay = "3s"
            stop_timeout = "4s"
            tags_file = "/nonexistent/tags.json"
            [tags]
            role = "web"
        "#;
        let mut file = FileConfig::default();
        file.merge(toml::from_str(text).expect("toml"));
        let cfg = resolve(&args(), file).expect("valid");
        assert_eq!(cfg.node.name, "n");
        assert_eq!(cfg.node.bind.port(), 1000);
        assert_eq!(cfg.node.advertise.map(|a| a.port()), Some(1001));
        assert_eq!(cfg.node.join, vec!["a:1"]);
        assert_eq!(cfg.handlers.len(), 1);
        assert_eq!(cfg.templates.len(), 1);
        assert_eq!(cfg.node.profile, Profile::Wan);
        assert_eq!(
            cfg.control,
            ControlAddr::Tcp("127.0.0.1:1002".parse().expect("addr"))
        );
        assert_eq!(cfg.control_header_timeout, Duration::from_secs(2));
        assert_eq!(cfg.control_max_connections, 7);
        assert_eq!(cfg.log_level, "debug");
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert_eq!(cfg.handler_timeout, Duration::from_secs(5));
        assert_eq!(cfg.coalesce, Duration::ZERO);
        assert_eq!(cfg.node.retry_max, 3);
        assert_eq!(cfg.node.retry_interval, Some(Duration::from_secs(2)));
        assert_eq!(cfg.node.reconnect_timeout, Duration::from_secs(3600));
        assert_eq!(cfg.node.tombstone_timeout, Duration::from_secs(7200));
        assert_eq!(cfg.node.snapshot, Some(PathBuf::from("/tmp/s.json")));
        assert!(cfg.node.rejoin);
        assert!(cfg.node.replay);
        assert_eq!(cfg.node.discover.as_deref(), Some("prod"));
        assert_eq!(cfg.stop_delay, Duration::from_secs(3));
        assert_eq!(cfg.stop_timeout, Duration::from_secs(4));
        assert_eq!(cfg.node.tags["role"], "web");
        assert_eq!(cfg.tags_file, Some(PathBuf::from("/nonexistent/tags.json")));
    }

    #[test]
    fn a_tags_file_wins_over_tag_flags_and_a_corrupt_one_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tags.json");
        let mut a = args();
        a.tags = vec!["role=flag".into()];
        a.tags_file = Some(path.clone());
        let cfg = resolve(&a, FileConfig::default()).expect("no file yet");
        assert_eq!(cfg.node.tags["role"], "flag");
        assert_eq!(cfg.tags_file.as_deref(), Some(path.as_path()));
        std::fs::write(&path, r#"{"role":"kept"}"#).expect("write");
        let cfg = resolve(&a, FileConfig::default()).expect("valid");
        assert_eq!(
            cfg.node.tags,
            BTreeMap::from([("role".into(), "kept".into())])
        );
        std::fs::write(&path, "not json").expect("write");
        let err = resolve(&a, FileConfig::default())
            .expect_err("corrupt")
            .to_string();
        assert!(
            err.contains("--tags-file") && err.contains("tags.json"),
            "{err}"
        );
    }

    #[test]
    fn the_sample_config_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shoal.toml");
        let cfg = resolve(&args(), FileConfig::load(&path).expect("parses")).expect("valid");
        assert_eq!(cfg.node.name, "web-1");
        assert_eq!(cfg.handlers.len(), 2);
    }

    #[test]
    fn a_unix_control_address_and_a_token_file_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").expect("write");
        let file: FileConfig = toml::from_str(&format!(
            "control = \"unix:/run/shoal.sock\"\ncontrol_token_file = {:?}\n",
            token.display().to_string()
        ))
        .expect("toml");
        let cfg = resolve(&args(), file).expect("valid");
        assert_eq!(cfg.control, ControlAddr::Unix("/run/shoal.sock".into()));
        assert_eq!(cfg.control.to_string(), "unix:/run/shoal.sock");
        let kept = cfg.control_token.expect("token");
        assert_eq!(kept.token, "s3cret");
        assert!(!format!("{kept:?}").contains("s3cret"));
        let mut a = args();
        a.control = Some("unix:".into());
        let err = resolve(&a, FileConfig::default()).expect_err("no path");
        assert!(err.to_string().contains("--control"), "{err}");
        std::fs::write(&token, "\n").expect("write");
        let mut a = args();
        a.control_token_file = Some(token.clone());
        let err = resolve(&a, FileConfig::default()).expect_err("empty token");
        assert!(
            err.to_string().contains("--control-token-file") && err.to_string().contains("empty"),
            "{err}"
        );
    }

    /// Issue 10: names and tags with control characters are refused at the door.
    #[test]
    fn unsafe_names_and_tags_are_refused_naming_the_setting() {
        let mut a = args();
        a.node = Some("web-9\n    server evil 6.6.6.6:80 check\n#".into());
        let err = resolve(&a, FileConfig::default())
            .expect_err("newline")
            .to_string();
        assert!(err.contains("--node") && err.contains("'\\n'"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        let mut a = args();
        a.tags = vec!["http_port=80\u{1b}[2J".into()];
        let err = resolve(&a, FileConfig::default())
            .expect_err("escape")
            .to_string();
        assert!(
            err.contains("--tag") && err.contains("control character"),
            "{err}"
        );
        let file: FileConfig = toml::from_str("[tags]\n\"bad key\" = \"v\"\n").expect("toml");
        let err = resolve(&args(), file)
            .expect_err("space in key")
            .to_string();
        assert!(err.contains("--tag") && err.contains("bad key"), "{err}");
        let file: FileConfig = toml::from_str("node = \"a/b\"\n").expect("toml");
        let err = resolve(&args(), file).expect_err("slash").to_string();
        assert!(err.contains("--node") && err.contains("'/'"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let err = toml::from_str::<FileConfig>("nodee = \"x\"\n").expect_err("typo");
        assert!(err.to_string().contains("nodee"), "{err}");
    }
}
