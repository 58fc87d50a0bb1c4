//! Event handlers with Serf's contract: filters, environment, stdin, and the dispatcher that
//! coalesces events and runs handlers without ever stalling gossip.

pub mod dispatch;
pub mod env;
pub mod filter;
pub mod members_dir;
pub mod query;
pub mod user;
