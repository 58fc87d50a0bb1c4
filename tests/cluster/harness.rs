//! Runs real `shoal` processes on loopback: port 0, the readiness line, polling with a
//! deadline, kill on drop, and the agent's log printed when a test fails.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

use shoal_proto::{Client, ClientError, InfoResponse, MemberInfo, MembersResponse};
pub use shoal_testkit::wait_until;
use shoal_testkit::{clean_command, print_log_tail, spawn_and_read_ready};

/// The `shoal` binary cargo built for these tests.
pub const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

/// Longest wait for an agent's readiness line.
const READY_LIMIT: Duration = Duration::from_secs(10);

/// One `shoal agent` on loopback (port 0), with its own temporary directory for its log.
/// Killed on drop; the log's tail is printed if the test is panicking.
pub struct Agent {
    /// The node name (`--node`).
    pub name: String,
    /// The bound gossip address, from the readiness line.
    pub gossip: SocketAddr,
    /// The bound control-API address, from the readiness line; the unspecified address
    /// `0.0.0.0:0` for an agent started with `--control unix:PATH` (see `control_addr`).
    pub control: SocketAddr,
    /// The control address as the readiness line gives it: `ip:port` or `unix:/path`.
    pub control_addr: String,
    /// The token the agent was started with (`--control-token-file`), which the harness's
    /// own requests send.
    pub token: Option<String>,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

impl Agent {
    /// Starts `shoal agent` (local profile, loopback, port 0) with extra `args`.
    pub fn start(name: &str, args: &[&str]) -> Agent {
        Self::try_start(name, args).unwrap_or_else(|e| panic!("agent {name} did not start: {e}"))
    }

    /// [`Agent::start`], with the reason (and the log) as `Err` if it did not start.
    pub fn try_start(name: &str, args: &[&str]) -> Result<Agent, String> {
        Self::try_start_wrapped(&[], name, args, &[])
    }

    /// [`Agent::start`] with extra environment variables (say, its own `TMPDIR`).
    pub fn start_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> Agent {
        Self::try_start_wrapped(&[], name, args, env)
            .unwrap_or_else(|e| panic!("agent {name} did not start: {e}"))
    }

    /// Starts the agent under `wrapper` (e.g. `unshare --pid --fork`); `args` may end with
    /// `--` and an app to supervise.
    pub fn start_wrapped(wrapper: &[&str], name: &str, args: &[&str]) -> Agent {
        Self::try_start_wrapped(wrapper, name, args, &[])
            .unwrap_or_else(|e| panic!("agent {name} did not start: {e}"))
    }

    fn try_start_wrapped(
        wrapper: &[&str],
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Agent, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let log = dir.path().join("agent.log");
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let control: &[&str] = if args.contains(&"--control") {
            &[]
        } else {
            &["--control", "127.0.0.1:0"]
        };
        let token = args
            .iter()
            .position(|a| *a == "--control-token-file")
            .and_then(|i| args.get(i + 1))
            .and_then(|path| std::fs::read_to_string(path).ok())
            .map(|t| t.trim().to_string());
        let bind: &[&str] = if args.contains(&"--bind") {
            &[]
        } else {
            &["--bind", "127.0.0.1:0"]
        };
        let profile: &[&str] = if args.contains(&"--profile") {
            &[]
        } else {
            &["--profile", "local"]
        };
        let (program, pre): (&str, &[&str]) = match wrapper.split_first() {
            Some((first, rest)) => (first, rest),
            None => (SHOAL, &[]),
        };
        let shoal: &[&str] = if wrapper.is_empty() { &[] } else { &[SHOAL] };
        let mut cmd = clean_command(program);
        cmd.args(pre)
            .args(shoal)
            .args(["agent", "--node", name])
            .args(control)
            .args(bind)
            .args(profile)
            .args(["--log-level", "info,shoal=debug"])
            .args(args)
            .envs(env.iter().copied())
            .stderr(log_file);
        Self::launch(cmd, dir, log, token)
    }

    /// Runs `shoal` with exactly `args` (the subcommand first: `agent ...`) and `env`, nothing
    /// added: for command lines copied from elsewhere (Serf's unit file). The name is the one
    /// the readiness line gives.
    pub fn try_start_exact(args: &[&str], env: &[(&str, &str)]) -> Result<Agent, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let log = dir.path().join("agent.log");
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut cmd = clean_command(SHOAL);
        cmd.args(args).envs(env.iter().copied()).stderr(log_file);
        Self::launch(cmd, dir, log, None)
    }

    fn launch(
        mut cmd: std::process::Command,
        dir: tempfile::TempDir,
        log: PathBuf,
        token: Option<String>,
    ) -> Result<Agent, String> {
        let (child, ready) = spawn_and_read_ready(&mut cmd, READY_LIMIT).map_err(|e| {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            format!("{e}; log:\n{text}")
        })?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Agent {
            name: ready.name.clone(),
            gossip: ready.gossip,
            control: ready
                .control
                .parse()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            control_addr: ready.control,
            token,
            child,
            log,
            _dir: dir,
            rt,
        })
    }

    /// What other agents pass to `--join` to join this one.
    pub fn join_arg(&self) -> String {
        self.gossip.to_string()
    }

    /// The pid of the agent process (of the wrapper, when started under one).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn client(&self) -> Client {
        Client::new(self.control_addr.clone()).with_token(self.token.clone())
    }

    /// `GET /v1/members`.
    pub fn try_members(&self) -> Result<Vec<MemberInfo>, ClientError> {
        self.rt
            .block_on(self.client().get::<MembersResponse>("/v1/members"))
            .map(|r| r.members)
    }

    /// `GET /v1/info`; panics if the agent does not answer.
    pub fn info(&self) -> InfoResponse {
        self.rt
            .block_on(self.client().get::<InfoResponse>("/v1/info"))
            .unwrap_or_else(|e| panic!("{}: info failed: {e}", self.name))
    }

    /// `GET /v1/primary` (this agent's own group); `None` if it does not answer.
    pub fn primary(&self) -> Option<shoal_proto::PrimaryResponse> {
        self.rt
            .block_on(
                self.client()
                    .get::<shoal_proto::PrimaryResponse>("/v1/primary"),
            )
            .ok()
    }

    /// The status this agent lists for `name`, if it lists it.
    pub fn status_of(&self, name: &str) -> Option<String> {
        self.try_members()
            .ok()?
            .into_iter()
            .find(|m| m.name == name)
            .map(|m| m.status)
    }

    /// How many members this agent lists `alive` (0 if it does not answer).
    pub fn count_alive(&self) -> usize {
        self.try_members()
            .map(|ms| ms.iter().filter(|m| m.status == "alive").count())
            .unwrap_or(0)
    }

    /// Sends `sig` to the agent process.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("signal");
    }

    /// SIGKILL, and reaps the process.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(limit, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    /// The agent's log (its stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the log shows `needle` within 5 s: a line is written after
    /// the change it reports, so a test that saw the change polls for it.
    pub fn logged(&self, needle: &str) -> bool {
        wait_until(Duration::from_secs(5), || self.log().contains(needle))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            print_log_tail(&format!("log of agent {}", self.name), &self.log, 60);
        }
    }
}

/// A scratch directory for handler output.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Writes an executable script.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).expect("create script");
    f.write_all(body.as_bytes()).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Reads a file if it exists.
pub fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Runs the `shoal` CLI; returns (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = clean_command(SHOAL)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run shoal");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Sends `request` as is to `addr` and returns the whole answer (status line, headers, body).
pub fn raw_http(addr: SocketAddr, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// `POST path` with `body` sent as is (it need not be valid JSON); the whole answer.
pub fn post_raw(addr: SocketAddr, path: &str, body: &str) -> String {
    raw_http(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// The tags `agent` lists for member `name`, if it lists it.
pub fn tags_of(agent: &Agent, name: &str) -> Option<std::collections::BTreeMap<String, String>> {
    agent
        .try_members()
        .ok()?
        .into_iter()
        .find(|m| m.name == name)
        .map(|m| m.tags)
}
