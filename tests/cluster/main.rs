//! Black-box tests: real `shoal` processes on loopback, driven through the CLI and the
//! control API.

mod accuracy;
mod bad_input;
mod discovery;
mod events;
mod handlers;
mod harness;
mod membership;
mod netns;
mod queries;
mod sealed;
mod stream;
mod supervise;
mod tags;
mod templates;
