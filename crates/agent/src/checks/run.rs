//! One run of a check: the script, the HTTP request or the TCP connection, never longer than
//! the check's timeout, and what it says in one [`Probe`].

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use shoal_core::Health;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::spec::{Endpoint, HttpTarget, Kind};
use crate::shell::{self, Job, Outcome};

/// Output kept from one run (a script's, an HTTP body's first bytes).
pub const OUTPUT_LIMIT: usize = 1024;

/// What one run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Its result, before rise/fall.
    pub health: Health,
    /// What it printed or answered, at most [`OUTPUT_LIMIT`] bytes: a script's stdout (its
    /// stderr when stdout is empty), `HTTP 503` with the body's first line, a connect error.
    pub output: String,
}

impl Probe {
    fn new(health: Health, output: impl Into<String>) -> Self {
        let mut output = output.into();
        truncate(&mut output, OUTPUT_LIMIT);
        Self { health, output }
    }

    /// The output's first line, for the log.
    pub fn first_line(&self) -> &str {
        self.output.lines().next().unwrap_or("")
    }
}

/// Runs `kind` once; `check` names it to the script (`SHOAL_CHECK`).
pub async fn probe(check: &str, kind: &Kind, timeout: Duration) -> Probe {
    match kind {
        Kind::Script(cmd) => script(check, cmd, timeout).await,
        Kind::Http(target) => http(target, timeout).await,
        Kind::Tcp(endpoint) => tcp(endpoint, timeout).await,
    }
}

/// Consul's convention: exit 0 passing, 1 warning, anything else critical; killed with its
/// whole process group at the timeout (critical). Output is read bounded ([`shell`]).
async fn script(check: &str, cmd: &str, timeout: Duration) -> Probe {
    let (done, ran) = oneshot::channel();
    let job = Job {
        event: format!("check:{check}"),
        env: vec![("SHOAL_CHECK".into(), check.to_string())],
        done: Some(done),
        quiet: true,
        ..Job::default()
    };
    let outcome = shell::run(cmd, job, timeout).await;
    let text = match ran.await {
        Ok(ran) => {
            let stream = if ran.stdout.iter().all(u8::is_ascii_whitespace) {
                ran.stderr
            } else {
                ran.stdout
            };
            String::from_utf8_lossy(&stream).trim().to_string()
        }
        Err(_) => String::new(),
    };
    match outcome {
        Outcome::Exited(Some(0)) => Probe::new(Health::Passing, text),
        Outcome::Exited(Some(1)) => Probe::new(Health::Warning, text),
        Outcome::Exited(Some(code)) => {
            Probe::new(Health::Critical, with_note(text, &format!("exit {code}")))
        }
        Outcome::Exited(None) => {
            Probe::new(Health::Critical, with_note(text, "killed by a signal"))
        }
        Outcome::TimedOut => Probe::new(
            Health::Critical,
            with_note(
                text,
                &format!(
                    "timed out after {} and killed",
                    humantime::format_duration(timeout)
                ),
            ),
        ),
        Outcome::SpawnFailed => Probe::new(Health::Critical, "could not start /bin/sh"),
    }
}

/// `GET`: 2xx passing, 429 warning, anything else, or no answer within the timeout, critical.
async fn http(target: &HttpTarget, timeout: Duration) -> Probe {
    match tokio::time::timeout(timeout, get(target)).await {
        Err(_) => Probe::new(
            Health::Critical,
            format!(
                "no answer from {} within {}",
                target.url,
                humantime::format_duration(timeout)
            ),
        ),
        Ok(Err(error)) => Probe::new(Health::Critical, format!("{}: {error}", target.url)),
        Ok(Ok((status, body))) => {
            let health = match status {
                200..=299 => Health::Passing,
                429 => Health::Warning,
                _ => Health::Critical,
            };
            let body = String::from_utf8_lossy(&body);
            let first = body.lines().map(str::trim).find(|l| !l.is_empty());
            let output = match first {
                Some(line) => format!("HTTP {status}: {line}"),
                None => format!("HTTP {status}"),
            };
            Probe::new(health, output)
        }
    }
}

/// One request on a new connection; the status and the body's first [`OUTPUT_LIMIT`] bytes
/// (the rest is not read: the connection is closed).
async fn get(target: &HttpTarget) -> Result<(u16, Vec<u8>), String> {
    let stream = connect(&target.endpoint).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let conn = AbortOnDrop(tokio::spawn(conn));
    let request = Request::get(target.path.as_str())
        .header("host", target.authority.as_str())
        .header(
            "user-agent",
            concat!("shoal-check/", env!("CARGO_PKG_VERSION")),
        )
        .header("connection", "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut kept = Vec::new();
    while kept.len() < OUTPUT_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = OUTPUT_LIMIT - kept.len();
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            // The status is the answer; a body cut short does not change it.
            Some(Err(_)) | None => break,
        }
    }
    drop(conn);
    Ok((status, kept))
}

/// Connected within the timeout: passing.
async fn tcp(endpoint: &Endpoint, timeout: Duration) -> Probe {
    match tokio::time::timeout(timeout, connect(endpoint)).await {
        Ok(Ok(_)) => Probe::new(Health::Passing, format!("connected to {endpoint}")),
        Ok(Err(error)) => Probe::new(Health::Critical, error),
        Err(_) => Probe::new(
            Health::Critical,
            format!(
                "no connection to {endpoint} within {}",
                humantime::format_duration(timeout)
            ),
        ),
    }
}

async fn connect(endpoint: &Endpoint) -> Result<TcpStream, String> {
    TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| format!("cannot connect to {endpoint}: {e}"))
}

/// Stops the connection task when the request is done (or abandoned at the timeout).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn with_note(text: String, note: &str) -> String {
    match text.is_empty() {
        true => note.to_string(),
        false => format!("{note}: {text}"),
    }
}

/// Cuts `text` to at most `limit` bytes, at a character boundary.
fn truncate(text: &mut String, limit: usize) {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(spec: &str) -> Probe {
        let kind = Kind::parse(spec).expect("spec");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(probe("t", &kind, Duration::from_millis(500)))
    }

    #[test]
    fn a_scripts_exit_code_is_its_health_and_its_output_is_kept() {
        assert_eq!(run("script:echo fine"), Probe::new(Health::Passing, "fine"));
        assert_eq!(
            run("script:echo slow >&2; exit 1"),
            Probe::new(Health::Warning, "slow")
        );
        assert_eq!(run("script:exit 2"), Probe::new(Health::Critical, "exit 2"));
        assert_eq!(
            run("script:echo \"$SHOAL_CHECK\""),
            Probe::new(Health::Passing, "t")
        );
        let big = run("script:head -c 100000 /dev/zero | tr '\\0' x");
        assert_eq!(
            (big.health, big.output.len()),
            (Health::Passing, OUTPUT_LIMIT)
        );
        let hung = run("script:echo started; sleep 30");
        assert_eq!(hung.health, Health::Critical);
        assert!(
            hung.output
                .starts_with("timed out after 500ms and killed: started"),
            "{}",
            hung.output
        );
    }

    #[test]
    fn a_closed_port_is_critical_and_an_open_one_passing() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert_eq!(
            run(&format!("tcp:127.0.0.1:{port}")).health,
            Health::Passing
        );
        drop(listener);
        let closed = run(&format!("tcp:127.0.0.1:{port}"));
        assert_eq!(closed.health, Health::Critical);
        assert!(
            closed.output.contains("cannot connect"),
            "{}",
            closed.output
        );
        let http = run(&format!("http:http://127.0.0.1:{port}/"));
        assert_eq!(http.health, Health::Critical);
    }

    #[test]
    fn a_server_that_never_answers_is_critical_at_the_timeout() {
        // Bound and listening, never accepting: the connection is made, no answer comes.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let started = std::time::Instant::now();
        let silent = run(&format!("http:http://127.0.0.1:{port}/health"));
        assert_eq!(silent.health, Health::Critical);
        assert!(
            silent.output.starts_with("no answer from http://127.0.0.1"),
            "{}",
            silent.output
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(listener);
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        let mut text = "ééé".to_string();
        truncate(&mut text, 3);
        assert_eq!(text, "é");
    }
}
