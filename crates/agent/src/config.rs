//! Agent configuration: defaults < config files < `SHOAL_*` environment < flags, validated into
//! one typed [`AgentConfig`]. Every error names the setting and the bad value.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shoal_core::broadcast::{validate_name, validate_tag, validate_tags};
use shoal_core::seal::{Key, Keyring};
use shoal_core::{DEFAULT_PORT, NodeConfig, Profile};
use thiserror::Error;

use crate::cli::AgentArgs;
use crate::control::server::{ControlAddr, ControlToken, DEFAULT_MAX_CONNECTIONS};
use crate::handlers::filter::{HandlerSpec, ParseError};
use crate::logging::LogFormat;
use crate::templates::TemplateSpec;

mod checks;
mod checks_cfg;
mod iface;
mod primary;
mod serf;

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
    /// The file is not valid TOML for shoal, nor Serf's JSON (a `.json` file).
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

/// The keys a TOML config file may hold (the same names as the flags, with `_`); a Serf JSON
/// file is read into the same struct (see `serf.rs`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    node: Option<String>,
    bind: Option<String>,
    iface: Option<String>,
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
    /// `[[check]]` tables: the health checks.
    #[serde(default)]
    check: Vec<checks_cfg::CheckTable>,
    check_interval: Option<String>,
    check_timeout: Option<String>,
    check_rise: Option<u32>,
    check_fall: Option<u32>,
    profile: Option<String>,
    control: Option<String>,
    control_token_file: Option<PathBuf>,
    control_header_timeout: Option<String>,
    control_max_connections: Option<usize>,
    rpc_addr: Option<String>,
    rpc_auth: Option<String>,
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
    encrypt: Option<String>,
    keyring_file: Option<PathBuf>,
    encrypt_accept_plaintext: Option<bool>,
    encrypt_send_plaintext: Option<bool>,
    cluster: Option<String>,
    /// Leave gracefully on SIGTERM (Serf's `leave_on_terminate`) [default: true].
    leave_on_terminate: Option<bool>,
    /// Exit without leaving on SIGINT (Serf's `skip_leave_on_interrupt`) [default: false].
    skip_leave_on_interrupt: Option<bool>,
    // The primary group (see `primary.rs`).
    group: Option<String>,
    priority: Option<u32>,
    preempt: Option<bool>,
    group_quorum: Option<u32>,
    primary_delay: Option<String>,
    on_primary: Option<String>,
    on_backup: Option<String>,
    on_fault: Option<String>,
}

impl FileConfig {
    /// Reads and parses one file: Serf's JSON (`.json`, or content starting with `{`) or
    /// shoal's TOML.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if serf::is_json(path, &text) {
            return serf::parse(path, &text);
        }
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
            iface,
            advertise,
            tags_file,
            check_interval,
            check_timeout,
            check_rise,
            check_fall,
            profile,
            control,
            control_token_file,
            control_header_timeout,
            control_max_connections,
            rpc_addr,
            rpc_auth,
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
            stop_timeout,
            encrypt,
            keyring_file,
            encrypt_accept_plaintext,
            encrypt_send_plaintext,
            cluster,
            leave_on_terminate,
            skip_leave_on_interrupt,
            group,
            priority,
            preempt,
            group_quorum,
            primary_delay,
            on_primary,
            on_backup,
            on_fault
        );
        self.join.extend(other.join);
        self.tags.extend(other.tags);
        self.event_handlers.extend(other.event_handlers);
        self.templates.extend(other.templates);
        self.check.extend(other.check);
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
    /// Health checks (`--check`, `[[check]]`); each starts `critical` in `node.role`.
    pub checks: Vec<crate::checks::CheckSpec>,
    /// Control API address.
    pub control: ControlAddr,
    /// The control API's token (`--control-token-file`), if requests must carry one.
    pub control_token: Option<ControlToken>,
    /// How long a control connection may take to send a request header.
    pub control_header_timeout: Duration,
    /// Most control connections open at once.
    pub control_max_connections: usize,
    /// Where Serf's RPC protocol is served besides the control port (`--rpc-addr`).
    pub rpc_addr: Option<SocketAddr>,
    /// The key Serf RPC clients must give (`--rpc-auth`).
    pub rpc_auth: Option<String>,
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
    /// Leave the cluster before exiting on SIGTERM (`leave_on_terminate`; true unless a
    /// config file says false).
    pub leave_on_terminate: bool,
    /// Leave the cluster before exiting on SIGINT (false when a config file sets
    /// `skip_leave_on_interrupt`).
    pub leave_on_interrupt: bool,
    /// The files it was read from (re-read on SIGHUP).
    pub files: Vec<PathBuf>,
    /// The primary group (`--group`), if any; its entry is in `node.role` already.
    pub primary: Option<crate::primary::Settings>,
}

/// Loads the files named in `args` (a directory stands for its `*.json` and `*.toml` files, in
/// lexical order), layers the flags over them, and checks the files the agent will need: the
/// snapshot can be written, every template can be read and rendered.
pub fn load(args: &AgentArgs) -> Result<AgentConfig, ConfigError> {
    let mut file = FileConfig::default();
    for path in serf::expand(&args.config)? {
        file.merge(FileConfig::load(&path)?);
    }
    let cfg = resolve(args, file)?;
    checks::files(&cfg)?;
    Ok(cfg)
}

fn resolve(args: &AgentArgs, file: FileConfig) -> Result<AgentConfig, ConfigError> {
    let primary = primary::resolve(
        &args.primary,
        &file,
        primary::has_somewhere_to_join(args, &file),
    )?;
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
    let bind = match args.iface.clone().or(file.iface) {
        Some(name) => iface::bind_on(&name, bind)?,
        None => bind,
    };
    let advertise = match args.advertise.clone().or(file.advertise) {
        Some(a) => Some(parse_addr("--advertise", &a, bind.port())?),
        None => None,
    };
    let mut tags = file.tags;
    if let Some(role) = &args.role {
        tags.insert("role".into(), role.clone());
    }
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
    let defaults = checks_cfg::FileDefaults {
        interval: file.check_interval,
        timeout: file.check_timeout,
        rise: file.check_rise,
        fall: file.check_fall,
    };
    let checks = checks_cfg::resolve(&args.health, defaults, &file.check)?;
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
    let rpc_addr = match args.rpc_addr.clone().or(file.rpc_addr) {
        Some(a) => Some(
            a.parse()
                .map_err(|e| invalid("--rpc-addr", &a, format!("{e}")))?,
        ),
        None => None,
    };
    // Serf's default `rpc_addr` is shoal's control address, which serves Serf's RPC already.
    let rpc_addr =
        rpc_addr.filter(|a: &SocketAddr| a.port() == 0 || control != ControlAddr::Tcp(*a));
    let rpc_auth = args.rpc_auth.clone().or(file.rpc_auth);
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
    let (keyring, keyring_file, accept_plaintext) = encryption(
        args.encrypt.clone().or(file.encrypt),
        args.keyring_file.clone().or(file.keyring_file),
        args.encrypt_accept_plaintext || file.encrypt_accept_plaintext.unwrap_or(false),
    )?;
    let send_plaintext =
        args.encrypt_send_plaintext || file.encrypt_send_plaintext.unwrap_or(false);
    if send_plaintext && keyring.is_none() {
        return Err(invalid(
            "--encrypt-send-plaintext",
            "true",
            "needs --encrypt or --keyring-file (it is a step toward sealed gossip)",
        ));
    }
    let cluster = args.cluster.clone().or(file.cluster).unwrap_or_default();
    if !cluster.is_empty() {
        shoal_core::seal::validate_label(&cluster)
            .map_err(|e| invalid("--cluster", &cluster, e))?;
    }
    let role = shoal_core::Role {
        group: primary.as_ref().map(|p| p.group.clone()),
        ..checks_cfg::initial_role(&checks)
    };
    Ok(AgentConfig {
        node: NodeConfig {
            role,
            keyring,
            keyring_file,
            accept_plaintext,
            send_plaintext,
            cluster,
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
        checks,
        control,
        control_token,
        control_header_timeout,
        control_max_connections,
        rpc_addr,
        rpc_auth,
        log_level,
        log_format,
        handler_timeout,
        coalesce,
        stop_delay,
        stop_timeout,
        app: args.app.clone(),
        files: args.config.clone(),
        leave_on_terminate: file.leave_on_terminate.unwrap_or(true),
        leave_on_interrupt: !file.skip_leave_on_interrupt.unwrap_or(false),
        primary,
    })
}

/// The keyring from `--encrypt` and `--keyring-file`: an existing keyring file wins (a key
/// rotated since is kept over a restart; an `--encrypt` key it lacks is ignored with a
/// warning); a missing one is created from `--encrypt` at start.
fn encryption(
    encrypt: Option<String>,
    file: Option<PathBuf>,
    accept_plaintext: bool,
) -> Result<(Option<Keyring>, Option<PathBuf>, bool), ConfigError> {
    let key = match &encrypt {
        Some(text) => {
            Some(Key::parse(text).map_err(|e| invalid("--encrypt", "(key not shown)", e))?)
        }
        None => None,
    };
    let kept = match &file {
        Some(path) => Keyring::load(path)
            .map_err(|e| invalid("--keyring-file", &path.display().to_string(), e))?,
        None => None,
    };
    let ring = match (kept, key) {
        (Some(ring), Some(key)) => {
            if !ring.keys().contains(&key) {
                // The log is not set up yet: straight to stderr, where the log goes too.
                eprintln!(
                    "shoal: warning: --encrypt names a key the keyring file does not hold; the keyring file wins"
                );
            }
            Some(ring)
        }
        (Some(ring), None) => Some(ring),
        (None, Some(key)) => Some(Keyring::new(key)),
        (None, None) => match &file {
            Some(path) => {
                return Err(invalid(
                    "--keyring-file",
                    &path.display().to_string(),
                    "holds no key: create it with --encrypt KEY, or write a JSON array of keys",
                ));
            }
            None => None,
        },
    };
    if accept_plaintext && ring.is_none() {
        return Err(invalid(
            "--encrypt-accept-plaintext",
            "true",
            "needs --encrypt or --keyring-file (it lets plaintext in beside sealed gossip)",
        ));
    }
    Ok((ring, file, accept_plaintext))
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
mod tests;
