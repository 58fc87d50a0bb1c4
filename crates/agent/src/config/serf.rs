//! Serf's JSON config files (`serf agent -config-file`), read into shoal's [`FileConfig`].
//!
//! The keys are Serf's (`cmd/serf/command/agent/config.go`), with Serf's types: durations as
//! Go duration strings (`"24h"`, `"30s"`), `event_handlers` as `[FILTER=]SCRIPT` strings,
//! `start_join` and `retry_join` as lists of addresses. Keys Serf has but shoal cannot honour
//! (syslog, statsd, a custom memberlist profile, ...) are refused with the reason, as are keys
//! Serf does not know: a setting is never silently dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::{ConfigError, FileConfig};

/// The keys of a Serf config file that shoal reads, with Serf's names and types.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SerfFile {
    node_name: Option<String>,
    role: Option<String>,
    disable_coordinates: Option<bool>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    tags_file: Option<PathBuf>,
    bind: Option<String>,
    interface: Option<String>,
    advertise: Option<String>,
    encrypt_key: Option<String>,
    keyring_file: Option<PathBuf>,
    log_level: Option<String>,
    rpc_addr: Option<String>,
    rpc_auth: Option<String>,
    replay_on_join: Option<bool>,
    #[serde(default)]
    start_join: Vec<String>,
    #[serde(default)]
    retry_join: Vec<String>,
    retry_max_attempts: Option<u32>,
    retry_interval: Option<String>,
    #[serde(default)]
    event_handlers: Vec<String>,
    profile: Option<String>,
    snapshot_path: Option<PathBuf>,
    leave_on_terminate: Option<bool>,
    skip_leave_on_interrupt: Option<bool>,
    discover: Option<String>,
    reconnect_timeout: Option<String>,
    tombstone_timeout: Option<String>,
    rejoin_after_leave: Option<bool>,
}

/// Serf's keys that shoal has no equivalent for, and why: refused rather than ignored.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "protocol",
        "shoal speaks its own gossip protocol (it cannot pin a Serf protocol version)",
    ),
    (
        "profile_path",
        "shoal has no custom memberlist profile file; use profile lan, wan or local",
    ),
    (
        "reconnect_interval",
        "shoal does not probe failed members on a timer; they rejoin when they come back",
    ),
    (
        "disable_name_resolution",
        "shoal always resolves a name conflict (the newer claimant stops)",
    ),
    (
        "enable_syslog",
        "shoal logs to stderr (journald under systemd); it has no syslog output",
    ),
    ("syslog_facility", "shoal has no syslog output"),
    (
        "statsite_addr",
        "shoal has no metrics sink; its counters are in `shoal info`",
    ),
    (
        "statsd_addr",
        "shoal has no metrics sink; its counters are in `shoal info`",
    ),
    (
        "query_response_size_limit",
        "shoal's query size limits follow its packet budget and are not configurable",
    ),
    (
        "query_size_limit",
        "shoal's query size limits follow its packet budget and are not configurable",
    ),
    (
        "broadcast_timeout",
        "shoal's leave waits for its own deadline and is not configurable",
    ),
];

/// Every key [`SerfFile`] reads, for the unknown-key message.
const KNOWN: &[&str] = &[
    "node_name",
    "role",
    "disable_coordinates",
    "tags",
    "tags_file",
    "bind",
    "interface",
    "advertise",
    "encrypt_key",
    "keyring_file",
    "log_level",
    "rpc_addr",
    "rpc_auth",
    "replay_on_join",
    "start_join",
    "retry_join",
    "retry_max_attempts",
    "retry_interval",
    "event_handlers",
    "profile",
    "snapshot_path",
    "leave_on_terminate",
    "skip_leave_on_interrupt",
    "discover",
    "reconnect_timeout",
    "tombstone_timeout",
    "rejoin_after_leave",
];

/// Parses Serf's JSON `text` (read from `path`, named in every error) into shoal's settings.
pub(super) fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    let fail = |message: String| ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let value: Value =
        serde_json::from_str(text).map_err(|e| fail(format!("not valid JSON: {e}")))?;
    let Value::Object(map) = &value else {
        return Err(fail("a Serf config file holds one JSON object".into()));
    };
    for key in map.keys() {
        if let Some((_, why)) = UNSUPPORTED.iter().find(|(k, _)| k == key) {
            return Err(fail(format!("Serf's key {key:?} is not supported: {why}")));
        }
        if !KNOWN.contains(&key.as_str()) {
            let hint = match key.as_str() {
                "retry_max" => " (Serf spells it retry_max_attempts)".to_string(),
                "node" => " (Serf spells it node_name)".to_string(),
                "snapshot" => " (Serf spells it snapshot_path)".to_string(),
                "encrypt" => " (Serf spells it encrypt_key)".to_string(),
                _ => String::new(),
            };
            return Err(fail(format!(
                "unknown key {key:?}{hint}; a .json config file takes Serf's keys \
                 (docs/migrating-from-serf.md lists them)"
            )));
        }
    }
    let serf: SerfFile = serde_json::from_value(value).map_err(|e| fail(e.to_string()))?;
    Ok(into_shoal(serf))
}

/// Serf's settings under shoal's names. `role` is the `role` tag, as in Serf; `start_join`
/// and `retry_join` are both join targets (shoal retries every join, see `--retry-max`).
fn into_shoal(serf: SerfFile) -> FileConfig {
    let mut tags = serf.tags;
    if let Some(role) = serf.role {
        tags.insert("role".into(), role);
    }
    let mut join = serf.start_join;
    join.extend(serf.retry_join);
    // `disable_coordinates` is accepted either way: shoal has no network coordinates, so
    // the setting's effect (no coordinate for RPC clients) is what shoal always does.
    let _ = serf.disable_coordinates;
    FileConfig {
        node: serf.node_name,
        bind: serf.bind,
        iface: serf.interface,
        advertise: serf.advertise,
        join,
        tags,
        tags_file: serf.tags_file,
        event_handlers: serf.event_handlers,
        profile: serf.profile,
        rpc_addr: serf.rpc_addr,
        rpc_auth: serf.rpc_auth,
        log_level: serf.log_level,
        retry_max: serf.retry_max_attempts,
        retry_interval: serf.retry_interval,
        reconnect_timeout: serf.reconnect_timeout,
        tombstone_timeout: serf.tombstone_timeout,
        snapshot: serf.snapshot_path,
        rejoin: serf.rejoin_after_leave,
        replay: serf.replay_on_join,
        discover: serf.discover,
        encrypt: serf.encrypt_key,
        keyring_file: serf.keyring_file,
        leave_on_terminate: serf.leave_on_terminate,
        skip_leave_on_interrupt: serf.skip_leave_on_interrupt,
        ..FileConfig::default()
    }
}

/// The files `paths` stand for, in the order to merge them: a file as itself, a directory as
/// its `*.json` and `*.toml` files in lexical order (not recursive; other files are skipped),
/// as Serf reads `-config-dir`.
pub(super) fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ConfigError> {
    let mut files = Vec::new();
    for path in paths {
        let read_err = |source| ConfigError::Read {
            path: path.clone(),
            source,
        };
        if !std::fs::metadata(path).map_err(read_err)?.is_dir() {
            files.push(path.clone());
            continue;
        }
        let mut found = Vec::new();
        for entry in std::fs::read_dir(path).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let file = entry.path();
            let config_ext = matches!(
                file.extension().and_then(|e| e.to_str()),
                Some("json" | "toml")
            );
            if config_ext && !file.is_dir() {
                found.push(file);
            }
        }
        found.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        files.extend(found);
    }
    Ok(files)
}

/// Whether `path` holds Serf's JSON rather than shoal's TOML: by extension, else by content
/// (a JSON object starts with `{`, which no TOML file does).
pub(super) fn is_json(path: &Path, text: &str) -> bool {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => true,
        Some("toml") => false,
        _ => text.trim_start().starts_with('{'),
    }
}
