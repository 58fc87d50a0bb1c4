//! The client of the lab: a thread that moves itself into the client namespace (`setns` changes
//! only the calling thread's network namespace) and sends `GET /` to the floating address over a
//! new connection every few milliseconds, recording when each request started, when it ended and
//! which node answered. Requests go out one after the other, each with a short timeout, like
//! `while true; do curl -m 0.2 http://VIP/; done`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use nix::sched::{CloneFlags, setns};

/// One request of the client.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was sent.
    pub sent: Instant,
    /// When the answer (or the error) came.
    pub done: Instant,
    /// The node that answered (HAProxy's body), or why the request failed.
    pub answer: Result<String, String>,
}

/// What the client saw from a moment on (see [`Prober::wait_for`]).
#[derive(Debug, Clone)]
pub struct Switch {
    /// From the moment until the first answer from the awaited node arrived.
    pub after: Duration,
    /// Requests sent after the moment that failed (refused, timed out, bad answer) before it.
    pub failed: usize,
    /// Requests sent after the moment that another node answered before it.
    pub others: usize,
}

/// The client thread; stopped and joined on drop.
pub struct Prober {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How long one request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(200);

/// The pause between the end of one request and the next.
pub const REQUEST_GAP: Duration = Duration::from_millis(10);

impl Prober {
    /// Starts the client in namespace `ns` (a name under /run/netns) against `target`.
    pub fn start(ns: &str, target: SocketAddr) -> Result<Prober, String> {
        let netns = std::fs::File::open(format!("/run/netns/{ns}"))
            .map_err(|e| format!("cannot open /run/netns/{ns}: {e}"))?;
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let thread = {
            let samples = Arc::clone(&samples);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("floating-ip-client".into())
                .spawn(move || {
                    let started = setns(&netns, CloneFlags::CLONE_NEWNET)
                        .map_err(|e| format!("setns into the client namespace: {e}"))
                        .and_then(|()| {
                            tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()
                                .map_err(|e| format!("client runtime: {e}"))
                        });
                    let runtime = match started {
                        Ok(rt) => {
                            let _ = ready_tx.send(Ok(()));
                            rt
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        let answer = runtime.block_on(async {
                            match tokio::time::timeout(REQUEST_TIMEOUT, get(target)).await {
                                Ok(answer) => answer,
                                Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?}")),
                            }
                        });
                        let sample = Sample {
                            sent,
                            done: Instant::now(),
                            answer,
                        };
                        lock(&samples).push(sample);
                        std::thread::sleep(REQUEST_GAP);
                    }
                })
                .map_err(|e| format!("cannot start the client thread: {e}"))?
        };
        let prober = Prober {
            samples,
            stop,
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(prober),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the client thread ended before it started".into()),
        }
    }

    /// Every request so far.
    pub fn samples(&self) -> Vec<Sample> {
        lock(&self.samples).clone()
    }

    /// The answer of the last request that ended, if any.
    pub fn last(&self) -> Option<Sample> {
        lock(&self.samples).last().cloned()
    }

    /// What happened to the requests sent at or after `since`, up to the first answer from
    /// `node`; `None` if `node` has not answered since then.
    pub fn switch_since(&self, since: Instant, node: &str) -> Option<Switch> {
        let samples = lock(&self.samples);
        let after: Vec<&Sample> = samples.iter().filter(|s| s.sent >= since).collect();
        let first = after.iter().position(|s| s.answer.as_deref() == Ok(node))?;
        let before = &after[..first];
        Some(Switch {
            after: after[first].done.saturating_duration_since(since),
            failed: before.iter().filter(|s| s.answer.is_err()).count(),
            others: before.iter().filter(|s| s.answer.is_ok()).count(),
        })
    }

    /// Waits at most `limit` for an answer from `node` to a request sent at or after `since`.
    /// `Err` says what the client saw instead.
    pub fn wait_for(&self, since: Instant, node: &str, limit: Duration) -> Result<Switch, String> {
        let mut found = None;
        crate::wait_until(limit, || {
            found = self.switch_since(since, node);
            found.is_some()
        });
        found.ok_or_else(|| {
            format!(
                "{node} did not answer within {limit:?}; since then: {}",
                self.summary_since(since)
            )
        })
    }

    /// A count of the answers (per node) and failures (per reason) since `since`.
    pub fn summary_since(&self, since: Instant) -> String {
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for s in lock(&self.samples).iter().filter(|s| s.sent >= since) {
            let key = match &s.answer {
                Ok(node) => format!("answered by {node}"),
                Err(e) => format!("failed: {e}"),
            };
            *counts.entry(key).or_default() += 1;
        }
        if counts.is_empty() {
            return "no request ended".into();
        }
        counts
            .iter()
            .map(|(k, n)| format!("{n} x {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(samples: &Mutex<Vec<Sample>>) -> MutexGuard<'_, Vec<Sample>> {
    // A panic while the lock is held cannot leave the list half-written (push is the only
    // change), so a poisoned lock is still a good list.
    samples.lock().unwrap_or_else(|p| p.into_inner())
}

/// `GET /` over a new connection; the trimmed body on a 200.
async fn get(target: SocketAddr) -> Result<String, String> {
    let stream = tokio::net::TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let request = Request::get("/")
        .header(hyper::header::HOST, target.to_string())
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    conn.abort();
    if status != hyper::StatusCode::OK {
        return Err(format!("status {status}"));
    }
    Ok(String::from_utf8_lossy(&body).trim().to_string())
}
