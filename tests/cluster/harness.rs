//! Runs real `shoal` processes on loopback: port 0, the readiness line, polling with a
//! deadline, kill on drop, and the agent's log printed when a test fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shoal_proto::{Client, ClientError, InfoResponse, MemberInfo, MembersResponse};

pub const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Agent {
    pub name: String,
    pub gossip: SocketAddr,
    pub control: SocketAddr,
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

    pub fn try_start(name: &str, args: &[&str]) -> Result<Agent, String> {
        Self::try_start_wrapped(&[], name, args)
    }

    /// Starts the agent under `wrapper` (e.g. `unshare --pid --fork`); `args` may end with
    /// `--` and an app to supervise.
    pub fn start_wrapped(wrapper: &[&str], name: &str, args: &[&str]) -> Agent {
        Self::try_start_wrapped(wrapper, name, args)
            .unwrap_or_else(|e| panic!("agent {name} did not start: {e}"))
    }

    fn try_start_wrapped(wrapper: &[&str], name: &str, args: &[&str]) -> Result<Agent, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let log = dir.path().join("agent.log");
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
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
        let mut child = Command::new(program)
            .args(pre)
            .args(shoal)
            .args(["agent", "--node", name, "--control", "127.0.0.1:0"])
            .args(bind)
            .args(profile)
            .args(["--log-level", "info,shoal=debug"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("no readiness line; log:\n{text}"));
            }
        };
        let ready: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("{e}: {line}"))?;
        let addr = |k: &str| -> Result<SocketAddr, String> {
            ready["ready"][k]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or(format!("readiness line lacks {k}: {line}"))
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Agent {
            name: name.to_string(),
            gossip: addr("gossip")?,
            control: addr("control")?,
            child,
            log,
            _dir: dir,
            rt,
        })
    }

    pub fn join_arg(&self) -> String {
        self.gossip.to_string()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn client(&self) -> Client {
        Client::new(self.control.to_string())
    }

    pub fn try_members(&self) -> Result<Vec<MemberInfo>, ClientError> {
        self.rt
            .block_on(self.client().get::<MembersResponse>("/v1/members"))
            .map(|r| r.members)
    }

    pub fn info(&self) -> InfoResponse {
        self.rt
            .block_on(self.client().get::<InfoResponse>("/v1/info"))
            .unwrap_or_else(|e| panic!("{}: info failed: {e}", self.name))
    }

    /// The status this agent lists for `name`, if it lists it.
    pub fn status_of(&self, name: &str) -> Option<String> {
        self.try_members()
            .ok()?
            .into_iter()
            .find(|m| m.name == name)
            .map(|m| m.status)
    }

    pub fn count_alive(&self) -> usize {
        self.try_members()
            .map(|ms| ms.iter().filter(|m| m.status == "alive").count())
            .unwrap_or(0)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("signal");
    }

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

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- log of agent {} (last 60 lines) ----", self.name);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
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
    let out = Command::new(SHOAL).args(args).output().expect("run shoal");
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
