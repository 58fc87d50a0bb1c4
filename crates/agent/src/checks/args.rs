//! The health-check flags of `shoal agent` (flattened into [`crate::cli::AgentArgs`]).

use clap::Args;

/// `--check` and the defaults of every check.
#[derive(Debug, Args, Default, Clone)]
pub struct CheckArgs {
    /// A health check NAME=SPEC, SPEC being script:CMD (`sh -c CMD`; exit 0 passing, 1
    /// warning, else critical), http:URL (GET an http:// URL; 2xx passing, 429 warning, else
    /// critical) or tcp:HOST:PORT (connected: passing). Repeatable; SHOAL_CHECK holds one.
    /// The aggregate (the worst check) is gossiped as this member's health.
    #[arg(long = "check", env = "SHOAL_CHECK", value_name = "NAME=SPEC")]
    pub checks: Vec<String>,
    /// How often each check runs [default: 1s].
    #[arg(long, env = "SHOAL_CHECK_INTERVAL", value_name = "DURATION")]
    pub check_interval: Option<String>,
    /// A run still going after this long counts critical; a script's whole process group is
    /// killed (at least 10ms) [default: 1s].
    #[arg(long, env = "SHOAL_CHECK_TIMEOUT", value_name = "DURATION")]
    pub check_timeout: Option<String>,
    /// Consecutive better results before a check's state gets better (Keepalived's rise)
    /// [default: 1].
    #[arg(long, env = "SHOAL_CHECK_RISE", value_name = "N")]
    pub check_rise: Option<u32>,
    /// Consecutive worse results before a check's state gets worse (Keepalived's fall)
    /// [default: 1].
    #[arg(long, env = "SHOAL_CHECK_FALL", value_name = "N")]
    pub check_fall: Option<u32>,
}
