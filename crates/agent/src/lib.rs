//! The `shoal` binary's library half.
//!
//! Layout:
//! - [`cli`]: clap definitions; [`config`]: files, environment and flags into [`config::AgentConfig`].
//! - [`agent`]: runs the agent (node, control API, handlers, signals).
//! - [`control`]: the HTTP/JSON control API; [`view`]: its member JSON.
//! - [`handlers`]: Serf-compatible event handlers (filters, environment, runner, dispatcher).
//! - [`commands`]: client subcommands (`members`, `join`, `leave`, `force-leave`, `info`).
//! - [`logging`]: the tracing subscriber.

pub mod agent;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod handlers;
pub mod logging;
pub mod reaper;
pub mod shell;
pub mod supervise;
pub mod templates;
pub mod view;
