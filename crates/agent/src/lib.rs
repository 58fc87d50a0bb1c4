//! The `shoal` binary's library half.
//!
//! Layout:
//! - [`cli`]: clap definitions; [`goflags`]: Go's (Serf's) flag spellings rewritten for clap;
//!   [`config`]: files (shoal's TOML, Serf's JSON), environment and flags into
//!   [`config::AgentConfig`].
//! - [`agent`]: runs the agent (node, control API, handlers, templates, signals).
//! - [`control`]: the HTTP/JSON control API; [`view`]: members as JSON and as `k=v` tag text.
//! - [`stream`]: `/v1/stream` (events as NDJSON) and `/v1/monitor` (the log): a fan-out
//!   through bounded per-reader channels that nothing on the event path or in the log waits for.
//! - [`handlers`]: Serf-compatible event handlers (filters, environment, dispatcher).
//! - [`templates`]: `--template` files rendered from the member view (by `shoal-template`).
//! - [`primary`]: primary selection (`--group`): the pure election and transition machine, and
//!   the driver that runs `--on-primary` / `--on-backup` / `--on-fault`.
//! - [`checks`]: health checks (`--check`), one task each, their states announced through
//!   [`role::RoleCell`] as the member's health.
//! - [`shell`]: runs one `sh -c` script for a handler or a template command, bounded in time.
//! - [`supervise`]: the app run after `--`; [`reaper`]: zombie reaping when the agent is PID 1.
//! - [`commands`]: client subcommands (`members`, `join`, `leave`, `force-leave`, `tags`,
//!   `event`, `info`, `monitor`, `keys`, `primary`).
//! - [`keys`]: cluster-wide key rotation through internal `_shoal-` queries, answered here.
//! - [`logging`]: the tracing subscriber and the log format.
//! - [`tags_file`]: `--tags-file`, the tags kept across restarts.
//! - [`token`]: the control-API token (checked, read from a file, compared in constant time).
//! - [`report`]: an error and its causes as one line, each cause said once.

pub mod agent;
pub mod checks;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod goflags;
pub mod handlers;
pub mod keys;
pub mod logging;
pub mod primary;
pub mod reaper;
pub mod report;
pub mod role;
pub mod rpc;
pub mod shell;
pub mod stream;
pub mod supervise;
pub mod tags_file;
pub mod templates;
pub mod token;
pub mod view;
