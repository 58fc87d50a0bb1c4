//! Command-line definitions (clap). Every agent flag also reads a `SHOAL_*` variable; validation
//! into a typed config happens in [`crate::config`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::logging::LogFormat;

pub mod primary;

/// shoal: gossip cluster membership with Serf-compatible event handlers.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (one per host or container).
    Agent(Box<AgentArgs>),
    /// List the members this agent knows.
    Members(MembersArgs),
    /// Ask the agent to join the cluster of the given addresses.
    Join(JoinArgs),
    /// Make the agent leave the cluster gracefully and exit.
    Leave(ClientArgs),
    /// Mark a failed member as left, everywhere.
    ForceLeave(ForceLeaveArgs),
    /// Change the agent's tags at runtime; every member sees them (`member-update`).
    Tags(TagsArgs),
    /// Send a user event to every member (their `user` and `user:NAME` handlers run once).
    Event(EventArgs),
    /// Ask the members that pass the filters; print their acks and answers as they arrive.
    Query(QueryArgs),
    /// Show the agent's own state and counters.
    Info(InfoArgs),
    /// Print a new random encryption key for --encrypt (base64 of 32 bytes).
    Keygen,
    /// Change or list the gossip encryption keys of every member (Serf's `key`).
    Keys(KeysArgs),
    /// Stream the agent's log from now on, until interrupted (Serf's `monitor`).
    Monitor(MonitorArgs),
    /// Check that every live member answers (acks) a query, as `serf reachability` does;
    /// exit 1 if one does not.
    Reachability(ReachabilityArgs),
    /// Print the primary of a group as this agent sees it (its own group by default);
    /// exit 1 if there is none.
    Primary(PrimaryCmdArgs),
    /// Print the version.
    Version,
}

/// Flags of `shoal agent`.
#[derive(Debug, Args, Default)]
pub struct AgentArgs {
    /// Node name, unique in the cluster [default: the hostname].
    #[arg(long, env = "SHOAL_NODE", value_name = "NAME")]
    pub node: Option<String>,
    /// Address for gossip (UDP and TCP); port 0 picks a free one [default: 0.0.0.0:7948].
    #[arg(long, env = "SHOAL_BIND", value_name = "ADDR")]
    pub bind: Option<String>,
    /// Bind to this network interface's address (Serf's -iface): its first address if --bind
    /// has no IP (0.0.0.0), else it must hold --bind's IP. Also the interface --discover uses.
    #[arg(long, env = "SHOAL_IFACE", value_name = "NAME")]
    pub iface: Option<String>,
    /// Address other members should use to reach this one [default: the bound address].
    #[arg(long, env = "SHOAL_ADVERTISE", value_name = "ADDR")]
    pub advertise: Option<String>,
    /// A member to join: ip:port or name:port (a name joins every address it resolves to).
    /// Repeatable; SHOAL_JOIN takes a comma-separated list. Retried while alone (see
    /// --retry-max), so it is also Serf's -retry-join.
    #[arg(
        long,
        visible_alias = "retry-join",
        env = "SHOAL_JOIN",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub join: Vec<String>,
    /// A tag KEY=VALUE; the value may hold commas (`--tag list=a,b`). Repeatable. With no
    /// --tag, SHOAL_TAG takes a comma-separated list (`role=web,zone=a`).
    #[arg(long = "tag", value_name = "K=V")]
    pub tags: Vec<String>,
    /// The `role` tag (Serf's deprecated -role): the same as `--tag role=ROLE`, which wins.
    #[arg(long, value_name = "ROLE")]
    pub role: Option<String>,
    /// Keep the tags in this JSON file: rewritten after every `shoal tags` change, and read at
    /// start, where it wins over --tag and the config file's tags.
    #[arg(long, env = "SHOAL_TAGS_FILE", value_name = "PATH")]
    pub tags_file: Option<PathBuf>,
    /// An event handler: [FILTER=]SCRIPT, run with `sh -c` (Serf's syntax). Repeatable.
    #[arg(
        long = "event-handler",
        env = "SHOAL_EVENT_HANDLER",
        value_name = "[FILTER=]SCRIPT"
    )]
    pub event_handlers: Vec<String>,
    /// Timing profile: lan, wan or local (loopback tests) [default: lan].
    #[arg(long, env = "SHOAL_PROFILE", value_name = "PROFILE")]
    pub profile: Option<String>,
    /// Control API address: ip:port (HTTP; keep it on loopback) or unix:/path (a Unix
    /// socket, created mode 0600) [default: 127.0.0.1:7373].
    #[arg(long, env = "SHOAL_CONTROL", value_name = "ADDR")]
    pub control: Option<String>,
    /// Require this file's content (trimmed) as a bearer token on every control request;
    /// clients pass it with --token-file or SHOAL_CONTROL_TOKEN.
    #[arg(long, env = "SHOAL_CONTROL_TOKEN_FILE", value_name = "PATH")]
    pub control_token_file: Option<PathBuf>,
    /// Close a control connection that has not sent a whole request header within this
    /// long (idle keep-alive connections included) [default: 10s].
    #[arg(long, env = "SHOAL_CONTROL_HEADER_TIMEOUT", value_name = "DURATION")]
    pub control_header_timeout: Option<String>,
    /// Most control connections open at once; one more is answered 503
    /// `too_many_connections` and closed [default: 128].
    #[arg(long, env = "SHOAL_CONTROL_MAX_CONNECTIONS", value_name = "N")]
    pub control_max_connections: Option<usize>,
    /// Also serve Serf's msgpack RPC protocol here, for Serf's CLI and client libraries (it
    /// is always served on the control port too) [default: none].
    #[arg(long, env = "SHOAL_RPC_ADDR", value_name = "ADDR")]
    pub rpc_addr: Option<String>,
    /// The key Serf RPC clients must give (`serf -rpc-auth`) [default: the control token,
    /// if any, else none].
    #[arg(long, env = "SHOAL_RPC_AUTH", value_name = "KEY")]
    pub rpc_auth: Option<String>,
    /// Log level: trace, debug, info, warn or error (Serf's TRACE, DEBUG, INFO, WARN, ERR and
    /// `warning` too, any case), or directives like warn,shoal_core=debug [default: info].
    #[arg(long, env = "SHOAL_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format [default: text].
    #[arg(long, env = "SHOAL_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// A config file: shoal's TOML, or Serf's JSON (`.json`, or content starting with `{`); a
    /// directory stands for its *.json and *.toml files in lexical order. Repeatable: later
    /// files override earlier ones' values (lists and tags merge), flags override files.
    #[arg(long = "config", visible_aliases = ["config-file", "config-dir"], env = "SHOAL_CONFIG",
          value_name = "FILE|DIR")]
    pub config: Vec<PathBuf>,
    /// Kill a handler still running after this long [default: 30s].
    #[arg(long, env = "SHOAL_HANDLER_TIMEOUT", value_name = "DURATION")]
    pub handler_timeout: Option<String>,
    /// Quiet window over which member events are coalesced; 0 disables [default: 100ms].
    #[arg(long, env = "SHOAL_COALESCE", value_name = "DURATION")]
    pub coalesce: Option<String>,
    /// Give up joining after this many attempts while alone; 0 retries forever [default: 0].
    #[arg(long, env = "SHOAL_RETRY_MAX", value_name = "N")]
    pub retry_max: Option<u32>,
    /// First wait between join attempts while alone; doubles each time [default: profile's].
    #[arg(long, env = "SHOAL_RETRY_INTERVAL", value_name = "DURATION")]
    pub retry_interval: Option<String>,
    /// How long a failed member stays listed before it is reaped [default: 24h].
    #[arg(long, env = "SHOAL_RECONNECT_TIMEOUT", value_name = "DURATION")]
    pub reconnect_timeout: Option<String>,
    /// How long a left member stays listed before it is reaped [default: 24h].
    #[arg(long, env = "SHOAL_TOMBSTONE_TIMEOUT", value_name = "DURATION")]
    pub tombstone_timeout: Option<String>,
    /// File to keep the known members in (written atomically on every change); after a
    /// restart they are rejoined with no --join.
    #[arg(long, env = "SHOAL_SNAPSHOT", value_name = "PATH")]
    pub snapshot: Option<PathBuf>,
    /// Rejoin the snapshot's members even if this node left gracefully last time.
    #[arg(long, env = "SHOAL_REJOIN")]
    pub rejoin: bool,
    /// On the first join, also run the user events the cluster still remembers (Serf's
    /// -replay); otherwise only events from the join on run.
    #[arg(long, env = "SHOAL_REPLAY")]
    pub replay: bool,
    /// Render SRC (Jinja2 syntax) to DEST from the member view whenever it changes, then run
    /// COMMAND if DEST changed. Repeatable.
    #[arg(
        long = "template",
        env = "SHOAL_TEMPLATE",
        value_name = "SRC:DEST[:COMMAND]"
    )]
    pub templates: Vec<String>,
    /// Find members of cluster CLUSTER on the local network by multicast, with no address.
    #[arg(long, env = "SHOAL_DISCOVER", value_name = "CLUSTER")]
    pub discover: Option<String>,
    /// With an app after `--`: after leaving, wait this long before stopping the app, so load
    /// balancers drop this member first [default: 1s].
    #[arg(long, env = "SHOAL_STOP_DELAY", value_name = "DURATION")]
    pub stop_delay: Option<String>,
    /// With an app after `--`: how long the app may take to exit after the stop signal before
    /// it is killed [default: 10s].
    #[arg(long, env = "SHOAL_STOP_TIMEOUT", value_name = "DURATION")]
    pub stop_timeout: Option<String>,
    /// Seal all gossip with this key: base64 of 16, 24 or 32 bytes (`shoal keygen` or
    /// `serf keygen` output). With --keyring-file, it creates the file when missing; an
    /// existing file wins.
    #[arg(long, env = "SHOAL_ENCRYPT", value_name = "KEY")]
    pub encrypt: Option<String>,
    /// Keep the keyring in this file (Serf's format: a JSON array of base64 keys, the first
    /// in use); `shoal keys` changes are written to it.
    #[arg(long, env = "SHOAL_KEYRING_FILE", value_name = "PATH")]
    pub keyring_file: Option<PathBuf>,
    /// For a rolling upgrade to encryption only: send sealed, but also accept plaintext
    /// packets (anyone can join while this is on). Logged loudly.
    #[arg(long, env = "SHOAL_ENCRYPT_ACCEPT_PLAINTEXT")]
    pub encrypt_accept_plaintext: bool,
    /// Rolling upgrade, first step: load the key but keep sending plaintext (and accept both),
    /// while some members have no key yet. Logged loudly.
    #[arg(long, env = "SHOAL_ENCRYPT_SEND_PLAINTEXT")]
    pub encrypt_send_plaintext: bool,
    /// Cluster label, authenticated in every packet: members of another cluster never merge
    /// with this one (letters, digits, '-', '_', '.').
    #[arg(long, env = "SHOAL_CLUSTER", value_name = "NAME")]
    pub cluster: Option<String>,
    /// Primary selection: --group, --priority, --on-primary and the rest.
    #[command(flatten)]
    pub primary: primary::PrimaryArgs,
    /// Health checks (`--check`, `--check-interval`, ...).
    #[command(flatten)]
    pub health: crate::checks::args::CheckArgs,
    /// The app to run and supervise: `shoal agent [flags] -- COMMAND ARGS`.
    #[arg(last = true, value_name = "COMMAND")]
    pub app: Vec<String>,
}

/// The control address and token, shared by every client command.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Control API address of the agent: ip:port or unix:/path.
    #[arg(long, env = "SHOAL_CONTROL", default_value = shoal_proto::DEFAULT_CONTROL)]
    pub control: String,
    /// Send this file's content (trimmed) as the control token (the agent's
    /// --control-token-file); wins over SHOAL_CONTROL_TOKEN.
    #[arg(long, env = "SHOAL_CONTROL_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

/// Flags of `shoal keys`: exactly one operation.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("op").required(true).multiple(false)
    .args(["install", "use_key", "remove", "list"])))]
pub struct KeysArgs {
    /// Control API address.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Install KEY on every member (it opens packets; --use makes it the one that seals).
    #[arg(long, value_name = "KEY")]
    pub install: Option<String>,
    /// Make the installed KEY the one every member seals with.
    #[arg(long = "use", value_name = "KEY")]
    pub use_key: Option<String>,
    /// Remove KEY from every member (refused while it is in use).
    #[arg(long, value_name = "KEY")]
    pub remove: Option<String>,
    /// List the keys installed across the cluster, with how many members hold each.
    #[arg(long)]
    pub list: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

/// Flags of `shoal members`.
#[derive(Debug, Args)]
pub struct MembersArgs {
    /// Control API address.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only members whose status matches this regular expression (anchored).
    #[arg(long, value_name = "RE")]
    pub status: Option<String>,
    /// Only members whose name matches this regular expression (anchored).
    #[arg(long, value_name = "RE")]
    pub name: Option<String>,
    /// Only members with tag KEY whose value matches RE (anchored). Repeatable.
    #[arg(long = "tag", value_name = "KEY=RE")]
    pub tags: Vec<String>,
    /// Only members whose `role` tag matches RE (anchored; Serf's `-role`, = `--tag role=RE`).
    #[arg(long, value_name = "RE")]
    pub role: Option<String>,
    /// Only members whose aggregate health (passing, warning, critical; `none` for a member
    /// without checks) matches RE (anchored).
    #[arg(long, value_name = "RE")]
    pub health: Option<String>,
    /// Also print each member's protocol versions, as `serf members -detailed` does, and,
    /// when some member runs checks, its health and its checks' states.
    #[arg(long)]
    pub detailed: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

/// Output format of client commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
}

/// Flags of `shoal join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// Control API address.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Addresses to join: ip:port or name:port.
    #[arg(required = true, value_name = "ADDR")]
    pub addrs: Vec<String>,
    /// Also run the user events the cluster still remembers (Serf's -replay).
    #[arg(long)]
    pub replay: bool,
}

/// Flags of `shoal force-leave`.
#[derive(Debug, Args)]
pub struct ForceLeaveArgs {
    /// Control API address.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Name of the failed member.
    #[arg(value_name = "NODE")]
    pub node: String,
}

/// Flags of `shoal info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Control API address.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Health check: exit 0 only if the agent is joined (lists another live member), else 1.
    #[arg(long)]
    pub joined: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

/// Flags of `shoal primary`.
#[derive(Debug, Args)]
pub struct PrimaryCmdArgs {
    /// Control API address.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The group [default: the agent's own --group].
    #[arg(value_name = "GROUP")]
    pub group: Option<String>,
    /// Output: the primary's name, or JSON (group, primary, previous, state, eligible).
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

/// Flags of `shoal reachability`.
#[derive(Debug, Args)]
pub struct ReachabilityArgs {
    /// Control API address.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Also print each ack and the query's timings.
    #[arg(long)]
    pub verbose: bool,
}

/// Flags of `shoal monitor`.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Control API address.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Show lines at this level and more severe ones. Independent of the agent's own
    /// --log-level: `debug` here shows debug lines even if the agent logs only info.
    #[arg(long, value_enum, value_name = "LEVEL", default_value_t = MonitorLevelArg::Info)]
    pub log_level: MonitorLevelArg,
    /// Lines as the agent writes them (text) or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub format: LogFormat,
}

/// `shoal monitor --log-level` (Serf's levels; `err` as Serf spells it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MonitorLevelArg {
    /// Everything.
    Trace,
    /// More detail.
    Debug,
    /// The default.
    Info,
    /// Warnings and errors.
    #[value(alias = "warning")]
    Warn,
    /// Errors only.
    #[value(alias = "err")]
    Error,
}

impl From<MonitorLevelArg> for shoal_proto::MonitorLevel {
    fn from(level: MonitorLevelArg) -> Self {
        match level {
            MonitorLevelArg::Trace => Self::Trace,
            MonitorLevelArg::Debug => Self::Debug,
            MonitorLevelArg::Info => Self::Info,
            MonitorLevelArg::Warn => Self::Warn,
            MonitorLevelArg::Error => Self::Error,
        }
    }
}

/// Flags of `shoal tags`.
#[derive(Debug, Args)]
pub struct TagsArgs {
    /// Control API address.
    #[command(flatten)]
    pub client: ClientArgs,
    /// A tag to add or change, KEY=VALUE. Repeatable.
    #[arg(long = "set", value_name = "K=V", value_parser = safe_tag,
          required_unless_present = "delete")]
    pub set: Vec<(String, String)>,
    /// A tag key to remove (after the --set ones are applied). Repeatable.
    #[arg(long = "delete", value_name = "K")]
    pub delete: Vec<String>,
}

/// Flags of `shoal event`.
#[derive(Debug, Args)]
pub struct EventArgs {
    /// Control API address.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Handlers may fold this event into a newer one of the same name within the quiet
    /// window: --coalesce=false runs every one.
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub coalesce: bool,
    /// The event's name (`user:NAME` handlers match it).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Given to the handlers on stdin.
    #[arg(value_name = "PAYLOAD", default_value = "")]
    pub payload: String,
}

/// Flags of `shoal query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Control API address.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only members whose name matches this regular expression (anchored). Repeatable: a
    /// member matching any of them.
    #[arg(long = "node", value_name = "RE")]
    pub nodes: Vec<String>,
    /// Only members with tag KEY whose value matches RE (anchored). Repeatable: all must match.
    #[arg(long = "tag", value_name = "KEY=RE", value_parser = key_value)]
    pub tags: Vec<(String, String)>,
    /// How long to wait for answers [default: the profile's gossip interval * 32 *
    /// ceil(log10(members + 1)); lan: 3.2s up to 9 members].
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Do not ask the members for acks.
    #[arg(long)]
    pub no_ack: bool,
    /// Also send each answer through this many random members (0 to 5).
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=5))]
    pub relay_factor: u8,
    /// Output: text (Serf's lines) or json (the API's NDJSON lines, one object per line).
    #[arg(long, value_enum, default_value_t = QueryFormat::Text)]
    pub format: QueryFormat,
    /// The query's name (`query:NAME` handlers match it).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Given to the handlers on stdin.
    #[arg(value_name = "PAYLOAD", default_value = "")]
    pub payload: String,
}

/// Output format of `shoal query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueryFormat {
    /// `Ack from 'NAME'`, `Response from 'NAME': TEXT`, then the totals (Serf's).
    Text,
    /// One JSON object per line, as `POST /v1/query` streams them.
    Json,
}

/// A duration like `500ms` or `2s`, not zero.
fn positive_duration(text: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d.is_zero() => Err("the timeout must be more than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e} (examples: 500ms, 2s)")),
    }
}

/// `KEY=VALUE` that is a valid tag: the key of letters, digits and `-_.`, the value with no
/// control character (the agent checks it too; this says so before asking).
fn safe_tag(text: &str) -> Result<(String, String), String> {
    let (k, v) = key_value(text)?;
    shoal_core::broadcast::validate_tag(&k, &v).map_err(|e| e.to_string())?;
    Ok((k, v))
}

/// `KEY=VALUE` with a non-empty key.
fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// For a command line clap refused: the first word before any `--` that looks like a Go-style
/// flag (one dash, a long name) but names none of the command's flags. Known ones were already
/// rewritten by [`crate::goflags::normalize`]; for the rest, clap alone would read `-bogus` as
/// the short flags `-b -o -g ...` and suggest `-- -b`, which would start `-b` as a supervised
/// app.
pub fn single_dash_hint(args: &[String]) -> Option<String> {
    use clap::CommandFactory;
    let words: Vec<&str> = args
        .iter()
        .skip(1)
        .map(String::as_str)
        .take_while(|a| *a != "--")
        .collect();
    let sub = Cli::command();
    let sub = words
        .iter()
        .find_map(|w| sub.find_subcommand(w))
        .cloned()
        .unwrap_or(sub);
    words.iter().find_map(|word| {
        let rest = word.strip_prefix('-').filter(|r| !r.starts_with('-'))?;
        let name = rest.split_once('=').map_or(rest, |(n, _)| n);
        let go_style = name.len() > 1
            && name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !go_style {
            return None;
        }
        Some(format!(
            "unknown flag {word}: `shoal {} --help` lists the flags (one dash or two)",
            sub.get_name()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        std::iter::once("shoal")
            .chain(words.iter().copied())
            .map(String::from)
            .collect()
    }

    /// Issue 11: `-bogus` made clap suggest `-- -b`, which starts `-b` as a supervised app.
    #[test]
    fn an_unknown_go_style_flag_is_named_with_where_to_look() {
        assert_eq!(
            single_dash_hint(&argv(&["agent", "-bogus=1"])).as_deref(),
            Some("unknown flag -bogus=1: `shoal agent --help` lists the flags (one dash or two)")
        );
        let hint = single_dash_hint(&argv(&["members", "-wide"])).expect("hint");
        assert!(hint.contains("shoal members --help"), "{hint}");
        assert_eq!(single_dash_hint(&argv(&["agent", "--", "-node"])), None);
        assert_eq!(single_dash_hint(&argv(&["agent", "--bogus"])), None);
        assert_eq!(single_dash_hint(&argv(&["event", "deploy", "-1"])), None);
    }
}
