//! shoal-testkit: the agent-process kit shared by the black-box tests (`tests/cluster/`) and
//! the cluster benchmark (`benches/cluster/`). Not published; a dev-dependency of `shoal`.
//!
//! Layout:
//! - [`command`]: [`clean_command`], a command that does not inherit the caller's `SHOAL_*`
//!   variables.
//! - [`ready`]: start an agent process and read its readiness line with a limit, blocking
//!   ([`spawn_and_read_ready`], or [`spawn_with_ready`] and [`ReadyReader::wait`] later).
//! - [`ready_async`]: the same for `tokio::process`, for the benchmark.
//! - [`poll`]: [`poll()`] and [`wait_until`], polling with a deadline instead of sleeping.
//! - [`members`]: the member list of every agent at once, through the control API
//!   ([`members_of_all`]) or the CLI ([`members_of_all_cli`]).
//! - [`log`]: [`log_tail`] and [`print_log_tail`], an agent's log when something failed.
//! - [`floating`]: the floating-IP lab (network namespaces, HAProxy, shoal or Keepalived, a
//!   client), for the floating-IP test and the failover benchmark.
//!
//! The readiness line's type itself is [`shoal_proto::ReadyLine`].

pub mod command;
pub mod floating;
pub mod log;
pub mod members;
pub mod poll;
pub mod ready;
pub mod ready_async;

pub use command::clean_command;
pub use log::{log_tail, print_log_tail};
pub use members::{
    info_of_all, members_of, members_of_all, members_of_all_cli, parse_members_output,
};
pub use poll::{poll, wait_until};
pub use ready::{ReadyError, ReadyReader, parse_ready, spawn_and_read_ready, spawn_with_ready};
pub use shoal_proto::Ready;
