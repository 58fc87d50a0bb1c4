//! Request and response bodies of the control API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One member, in Serf's JSON shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Node name.
    pub name: String,
    /// `ip:port` of its gossip endpoint.
    pub addr: String,
    /// Gossip port.
    pub port: u16,
    /// `alive`, `suspect`, `leaving`, `left` or `failed`.
    pub status: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// The wire protocol versions it speaks, in Serf's shape (`serf members -format=json`).
    #[serde(default)]
    pub protocol: ProtocolInfo,
    /// Its aggregate health (`passing`, `warning` or `critical`: the worst of its checks);
    /// `null` for a member that runs no checks.
    #[serde(default)]
    pub health: Option<String>,
    /// Each of its checks' states, by check name (empty without checks).
    #[serde(default)]
    pub checks: BTreeMap<String, String>,
}

/// A member's protocol versions: the one in use and the range understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProtocolInfo {
    /// Newest version understood.
    pub max: u8,
    /// Oldest version understood.
    pub min: u8,
    /// The version in use.
    pub version: u8,
}

/// `GET /v1/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersResponse {
    /// Every known member, the agent itself included, sorted by name.
    pub members: Vec<MemberInfo>,
}

/// `POST /v1/join` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Targets: `ip:port` or `name:port` (a name joins every address it resolves to).
    pub addrs: Vec<String>,
    /// Also run the user events the cluster still remembers (Serf's `join -replay`).
    #[serde(default)]
    pub replay: bool,
}

/// `POST /v1/event` body: a user event for every member's `user` / `user:NAME` handlers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRequest {
    /// The event's name.
    pub name: String,
    /// Given to the handlers on stdin (default: empty).
    #[serde(default)]
    pub payload: String,
    /// Handlers may fold it into a newer event of the same name within the quiet window
    /// (default: true, as in Serf).
    #[serde(default = "yes")]
    pub coalesce: bool,
}

fn yes() -> bool {
    true
}

/// `POST /v1/event` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventResponse {
    /// The event's Lamport time (`SERF_USER_LTIME` in the handlers).
    pub ltime: u64,
}

/// `POST /v1/query` body: a query for the members that pass every filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// The query's name (`query:NAME` handlers match it).
    pub name: String,
    /// Given to the handlers on stdin (default: empty).
    #[serde(default)]
    pub payload: String,
    /// Only members whose name matches one of these regular expressions (anchored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// Only members whose tag KEY matches the regular expression (anchored), for every key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// How long to wait, in milliseconds (default: the profile's, scaled by cluster size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Ask each matching member for an ack (default: true, as in Serf).
    #[serde(default = "yes")]
    pub ack: bool,
    /// Also send each answer through this many random members, 0 to 5 (default: 0).
    #[serde(default)]
    pub relay_factor: u8,
}

/// One line of the `POST /v1/query` answer (NDJSON, one object per line, as they happen):
/// `started` first, then `ack` and `response` lines as they arrive, `done` last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum QueryLine {
    /// The query was sent (or, with `expected` empty, not: no member passes the filters).
    Started {
        /// The query's name.
        name: String,
        /// Its Lamport time (`SERF_QUERY_LTIME` in the handlers).
        ltime: u64,
        /// How long the agent waits, in milliseconds.
        timeout_ms: u64,
        /// The members that pass the filters in this agent's view: the query ends as soon as
        /// all of them answered.
        expected: Vec<String>,
    },
    /// A member received the query.
    Ack {
        /// Its name.
        from: String,
    },
    /// A member answered.
    Response {
        /// Its name.
        from: String,
        /// Its handler's stdout (invalid UTF-8 replaced).
        payload: String,
    },
    /// The query is over.
    Done {
        /// Acks received.
        acks: usize,
        /// Answers received.
        responses: usize,
        /// True when the timeout ended it (not every expected member answered).
        timed_out: bool,
    },
}

/// `POST /v1/join` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    /// How many addresses answered.
    pub joined: usize,
}

/// `POST /v1/force-leave` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForceLeaveRequest {
    /// Name of the failed member.
    pub node: String,
}

/// `POST /v1/tags` body: tags to set, then tags to delete (both optional, not both empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagsRequest {
    /// Tags to add or change.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Keys to remove (applied after `set`).
    #[serde(default)]
    pub delete: Vec<String>,
}

/// `POST /v1/tags` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagsResponse {
    /// The agent's tags now.
    pub tags: BTreeMap<String, String>,
}

/// Answer of requests with nothing else to say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OkResponse {
    /// Always true.
    pub ok: bool,
}

/// `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoResponse {
    /// About this agent.
    pub agent: AgentInfo,
    /// Member counts by status.
    pub members: MemberCounts,
    /// Traffic counters since start.
    pub stats: StatsInfo,
    /// The event handlers loaded now (after the last SIGHUP).
    #[serde(default)]
    pub handlers: Vec<HandlerInfo>,
    /// Events the agent received since start.
    #[serde(default)]
    pub events: EventCounts,
    /// The streams (`/v1/stream`, `/v1/monitor`).
    #[serde(default)]
    pub streams: StreamCounts,
    /// The process the agent runs in (Serf's `runtime` section).
    #[serde(default)]
    pub runtime: RuntimeInfo,
    /// Serf's `serf` section: the counters `serf info` shows, from this agent's view.
    #[serde(default)]
    pub serf: SerfCounters,
    /// This agent's own health checks (`--check`), by name.
    #[serde(default)]
    pub checks: Vec<CheckInfo>,
    /// This agent's primary group (`--group`), if it is in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<PrimaryInfo>,
}

/// `GET /v1/info`'s `primary` section: this agent's group, its priority and state, and the
/// primary it acted on last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimaryInfo {
    /// The group (`--group`).
    pub group: String,
    /// This agent's priority (`--priority`).
    pub priority: u32,
    /// `primary`, `backup` or `fault`; `None` before the first transition.
    pub state: Option<String>,
    /// The group's primary as this agent acted on it (`None`: none).
    pub primary: Option<String>,
}

/// The answer of `GET /v1/primary[?group=G]`: a group's primary as this agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimaryResponse {
    /// The group asked about (this agent's own without `?group=`).
    pub group: String,
    /// Its primary (`None`: no member qualifies, or too few are in sight for the quorum).
    pub primary: Option<String>,
    /// The primary before the last change this agent acted on (its own group only).
    pub previous: Option<String>,
    /// This agent's state in the group: `primary`, `backup` or `fault` (its own group only,
    /// after its first transition).
    pub state: Option<String>,
    /// The eligible members (alive or suspect, passing, in the group), best first.
    pub eligible: Vec<PrimaryCandidate>,
}

/// One eligible member of a group, in [`PrimaryResponse::eligible`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimaryCandidate {
    /// Its name.
    pub name: String,
    /// Its priority.
    pub priority: u32,
    /// Whether it claims the role (it ran `--on-primary` and not yet `--on-backup` or
    /// `--on-fault`).
    pub claims: bool,
    /// `alive` or `suspect`.
    pub status: String,
}

/// One of this agent's health checks, as `shoal info` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckInfo {
    /// The check's name.
    pub name: String,
    /// `script`, `http` or `tcp`.
    pub kind: String,
    /// What it runs or asks: the command, the URL or `HOST:PORT`.
    pub target: String,
    /// The announced state after rise/fall (`critical` until the first result).
    pub state: String,
    /// The last run's own result, before rise/fall; `null` before the first run.
    pub last_result: Option<String>,
    /// The last run's output: a script's first bytes of output, the HTTP status line, or the
    /// connection error (at most 1 KiB).
    pub output: String,
    /// When the last run started (RFC 3339, UTC); `null` before the first run.
    pub last_run: Option<String>,
    /// How long the last run took, in milliseconds.
    pub duration_ms: u64,
    /// Runs since start.
    pub runs: u64,
    /// Milliseconds between runs.
    pub interval_ms: u64,
    /// Past this a run counts critical (a script's whole process group is killed).
    pub timeout_ms: u64,
    /// Results needed to get better.
    pub rise: u32,
    /// Results needed to get worse.
    pub fall: u32,
}

/// Serf's `runtime` section of `serf info`, for shoal's process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    /// Operating system (`linux`).
    pub os: String,
    /// CPU architecture, Rust's name (`x86_64`; Serf's Go says `amd64`).
    pub arch: String,
    /// CPUs the agent may use.
    pub cpu_count: usize,
    /// What built the agent (`shoal 0.1.0`; Serf prints its Go version).
    pub version: String,
}

/// Serf's `serf` section of `serf info`: the counters shoal has an equivalent for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerfCounters {
    /// Live members (alive, suspect or leaving), this one included.
    pub members: usize,
    /// Failed members.
    pub failed: usize,
    /// Members that left.
    pub left: usize,
    /// Local health score (Lifeguard's; 0 is healthy).
    pub health_score: u64,
    /// Gossip is sealed.
    pub encrypted: bool,
    /// The user-event Lamport time this agent is up to.
    pub event_time: u64,
    /// The query Lamport time this agent is up to.
    pub query_time: u64,
}

/// One loaded event handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandlerInfo {
    /// Its filter as written (`member-join,user:deploy`); empty: every event.
    pub filter: String,
    /// The script, run as `sh -c SCRIPT`.
    pub script: String,
}

/// Events received from the gossip layer, before coalescing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    /// Member events (join, leave, failed, update, reap).
    pub member: u64,
    /// User events received (each once; duplicates are dropped before).
    pub user: u64,
    /// User events handed to handlers (the rest were coalesced into newer ones of their name,
    /// or no handler wants them).
    pub user_handled: u64,
    /// Queries received that this member passes the filters of.
    #[serde(default)]
    pub query: u64,
}

/// The streaming endpoints' readers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamCounts {
    /// `/v1/stream` readers connected now.
    pub events: usize,
    /// `/v1/monitor` readers connected now.
    pub monitors: usize,
    /// Readers of either kind closed by the agent because they fell behind, since start.
    pub dropped_slow: u64,
}

/// About the agent answering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Node name.
    pub name: String,
    /// shoal version.
    pub version: String,
    /// Bound gossip address.
    pub bind: String,
    /// Advertised gossip address.
    pub advertise: String,
    /// Control API address.
    pub control: String,
    /// Timing profile.
    pub profile: String,
    /// Own tags.
    pub tags: BTreeMap<String, String>,
    /// Gossip is sealed (`--encrypt` or `--keyring-file`).
    #[serde(default)]
    pub encrypted: bool,
    /// Plaintext is accepted beside sealed gossip (`--encrypt-accept-plaintext`).
    #[serde(default)]
    pub accept_plaintext: bool,
    /// Packets go out plaintext although a key is loaded (`--encrypt-send-plaintext`).
    #[serde(default)]
    pub send_plaintext: bool,
    /// Keys in this agent's keyring.
    #[serde(default)]
    pub keys: usize,
    /// The cluster label (`--cluster`); empty: none.
    #[serde(default)]
    pub cluster: String,
}

/// Member counts by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberCounts {
    /// Alive.
    pub alive: usize,
    /// Suspect.
    pub suspect: usize,
    /// Leaving.
    pub leaving: usize,
    /// Left.
    pub left: usize,
    /// Failed.
    pub failed: usize,
}

/// Traffic counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsInfo {
    /// Datagrams received.
    pub packets_in: u64,
    /// Datagrams sent.
    pub packets_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Malformed datagrams dropped.
    pub packets_dropped: u64,
    /// Push-pulls completed.
    pub push_pulls: u64,
    /// Member names or tags refused from the network (unsafe characters, over the limits).
    #[serde(default)]
    pub metas_refused: u64,
    /// Events dropped because handlers fell behind.
    pub events_dropped: u64,
    /// Handler runs so far.
    pub handler_runs: u64,
    /// Handler runs killed at their timeout.
    pub handler_timeouts: u64,
    /// Probes that UDP lost and a TCP ping answered.
    #[serde(default)]
    pub tcp_fallbacks: u64,
    /// The local health score (Lifeguard): 0 is healthy, up to 8; the agent stretches its
    /// probe timings by `score + 1` while it has signs of its own trouble.
    #[serde(default)]
    pub health_score: u64,
    /// Datagrams and stream frames refused before decoding, by reason: `plaintext`, `no_key`,
    /// `unknown_key`, `truncated`, `tampered`, `replayed`, `stale`, `wrong_cluster`,
    /// `malformed` (every reason is listed, zero or not).
    #[serde(default)]
    pub refused: BTreeMap<String, u64>,
}

/// The body of `POST /v1/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysRequest {
    /// `install`, `use`, `remove` or `list`.
    pub op: String,
    /// The key (base64), for every operation but `list`.
    #[serde(default)]
    pub key: Option<String>,
}

/// The answer of `GET /v1/keys` and `POST /v1/keys`: what every member said.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysResponse {
    /// The operation.
    pub op: String,
    /// Members asked (alive or suspect when the query was sent, this one included).
    pub members: usize,
    /// Members that answered.
    pub responded: usize,
    /// Members that failed or did not answer, with why.
    pub failed: BTreeMap<String, String>,
    /// Every key installed on a member that answered, with how many of them hold it.
    pub keys: BTreeMap<String, usize>,
    /// Primary keys of the members that answered, with how many use each.
    pub primary: BTreeMap<String, usize>,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `bad_request`, `not_found`, `conflict`, `unavailable`,
    /// `method_not_allowed`, `payload_too_large`, `internal`, `too_many_streams`,
    /// `unauthorized` (401: no or a wrong token), `too_many_connections`; as the last
    /// line of a stream, `slow_reader`.
    pub code: String,
    /// What went wrong.
    pub message: String,
}

impl ErrorBody {
    /// An error body.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.to_string(),
                message: message.into(),
            },
        }
    }
}
