//! Black-box tests: real `shoal` processes on loopback, driven through the CLI and the
//! control API.

mod accuracy;
mod bad_input;
mod control;
mod discovery;
mod events;
mod floating_ip;
mod forged;
mod handlers;
mod harness;
mod health;
mod hygiene;
mod membership;
mod names;
mod netns;
mod operator;
mod parity;
mod primary;
mod primary_netns;
mod primary_partition;
mod queries;
mod sealed;
mod serf_cli;
mod serf_config;
mod serf_rpc;
mod stream;
mod supervise;
mod tags;
mod templates;
