//! Black-box tests: real `shoal` processes on loopback, driven through the CLI and the
//! control API.

mod accuracy;
mod bad_input;
mod control;
mod discovery;
mod events;
mod handlers;
mod harness;
mod hygiene;
mod membership;
mod names;
mod netns;
mod operator;
mod queries;
mod stream;
mod supervise;
mod tags;
mod templates;
