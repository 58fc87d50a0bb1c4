//! One producer, many slow consumers: lines handed to every subscriber whose key wants them,
//! through a bounded channel each, never waiting for one.
//!
//! The producer is the agent's event path ([`super::events`]) or the log itself
//! ([`super::monitor`]); it calls [`Fanout::publish`], which only ever `try_send`s. A
//! subscriber whose channel is full has fallen [`CAPACITY`] lines behind: it is removed (the
//! producer must not wait for it, and a gap it cannot see would make its view wrong), counted,
//! and its stream ends with the `ending` line it subscribed with.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

/// Lines queued per subscriber. Past this the subscriber is dropped. 512 lines are 100-300 KB,
/// on top of what the kernel's socket buffers hold: a reader that pauses for a moment keeps
/// its stream, one that stopped reading is let go.
pub const CAPACITY: usize = 512;

/// Called with the subscribers' keys whenever the set changes, under the lock: it must not log
/// (the monitors' fan-out runs inside the log itself) nor block.
pub type OnChange<K> = Box<dyn Fn(&mut dyn Iterator<Item = &K>) + Send + Sync>;

struct Sub<K> {
    id: u64,
    key: K,
    /// Held only here: removing the subscriber closes its channel.
    tx: mpsc::Sender<Bytes>,
    /// Set when it was removed for falling behind.
    lagged: Arc<AtomicBool>,
}

/// The subscribers of one kind of stream.
pub struct Fanout<K> {
    subs: Mutex<Vec<Sub<K>>>,
    /// `subs.len()`, readable without the lock: publishing to nobody costs one load.
    len: AtomicUsize,
    next_id: AtomicU64,
    /// Subscribers removed for falling behind, since start.
    dropped: AtomicU64,
    on_change: Option<OnChange<K>>,
}

impl<K: Send + Sync + 'static> Fanout<K> {
    /// No subscribers; `on_change` (if any) is told of every change of the set.
    pub fn new(on_change: Option<OnChange<K>>) -> Self {
        Self {
            subs: Mutex::new(Vec::new()),
            len: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            on_change,
        }
    }

    /// Subscribers now.
    pub fn readers(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// No subscriber now.
    pub fn is_empty(&self) -> bool {
        self.readers() == 0
    }

    /// Subscribers removed for falling behind, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Sub<K>>> {
        // A panic elsewhere while holding the lock leaves the list intact (every change is a
        // single push or retain), so a poisoned lock is still usable.
        self.subs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn changed(&self, subs: &[Sub<K>]) {
        self.len.store(subs.len(), Ordering::Relaxed);
        if let Some(hook) = &self.on_change {
            hook(&mut subs.iter().map(|s| &s.key));
        }
    }

    /// A new subscriber with `key`. Its stream holds `permit` (the cap on open streams) until
    /// it ends; `ending` is its last line if it is dropped for falling behind.
    pub fn subscribe(
        self: &Arc<Self>,
        key: K,
        ending: Bytes,
        permit: OwnedSemaphorePermit,
    ) -> LineStream {
        let (tx, rx) = mpsc::channel(CAPACITY);
        let lagged = Arc::new(AtomicBool::new(false));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut subs = self.lock();
        subs.push(Sub {
            id,
            key,
            tx,
            lagged: lagged.clone(),
        });
        self.changed(&subs);
        drop(subs);
        let fanout = self.clone();
        LineStream {
            rx,
            lagged,
            ending: Some(ending),
            on_drop: Some(Box::new(move || fanout.remove(id))),
            _permit: permit,
        }
    }

    fn remove(&self, id: u64) {
        let mut subs = self.lock();
        let before = subs.len();
        subs.retain(|s| s.id != id);
        if subs.len() != before {
            self.changed(&subs);
        }
    }

    /// Hands `line(key)` to every subscriber it gives a line for, without waiting. Returns how
    /// many subscribers were removed because they had fallen behind.
    pub fn publish(&self, mut line: impl FnMut(&K) -> Option<Bytes>) -> usize {
        if self.is_empty() {
            return 0;
        }
        let mut subs = self.lock();
        let before = subs.len();
        let mut lagged = 0;
        subs.retain(|sub| {
            let Some(bytes) = line(&sub.key) else {
                return !sub.tx.is_closed();
            };
            match sub.tx.try_send(bytes) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    sub.lagged.store(true, Ordering::Relaxed);
                    lagged += 1;
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if subs.len() != before {
            self.dropped.fetch_add(lagged as u64, Ordering::Relaxed);
            self.changed(&subs);
        }
        lagged
    }
}

/// A subscriber's lines as an HTTP body (chunked, one chunk per line). Dropping it (the
/// connection closed) unsubscribes at once and frees its place under the cap.
pub struct LineStream {
    rx: mpsc::Receiver<Bytes>,
    lagged: Arc<AtomicBool>,
    ending: Option<Bytes>,
    on_drop: Option<Box<dyn FnOnce() + Send + Sync>>,
    _permit: OwnedSemaphorePermit,
}

impl LineStream {
    /// Runs `after` once this stream has unsubscribed, when it is dropped.
    pub fn then_on_drop(mut self, after: impl FnOnce() + Send + Sync + 'static) -> Self {
        let first = self.on_drop.take();
        self.on_drop = Some(Box::new(move || {
            if let Some(first) = first {
                first();
            }
            after();
        }));
        self
    }

    /// The next line, for tests and for callers that are not hyper.
    pub async fn next(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_frame(cx))
            .await
            .and_then(|frame| frame.ok()?.into_data().ok())
    }
}

impl Drop for LineStream {
    fn drop(&mut self) {
        if let Some(on_drop) = self.on_drop.take() {
            on_drop();
        }
    }
}

impl Body for LineStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(line)) => Poll::Ready(Some(Ok(Frame::data(line)))),
            Poll::Ready(None) if self.lagged.load(Ordering::Relaxed) => {
                Poll::Ready(self.ending.take().map(|line| Ok(Frame::data(line))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Semaphore;

    fn permit(s: &Arc<Semaphore>) -> OwnedSemaphorePermit {
        s.clone().try_acquire_owned().expect("a free permit")
    }

    fn line(n: usize) -> Bytes {
        Bytes::from(format!("{n}\n"))
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_is_dropped_counted_and_told_while_others_keep_up() {
        let cap = Arc::new(Semaphore::new(2));
        let fanout = Arc::new(Fanout::<()>::new(None));
        let mut slow = fanout.subscribe((), Bytes::from("END\n"), permit(&cap));
        let mut fast = fanout.subscribe((), Bytes::new(), permit(&cap));
        for n in 0..=CAPACITY {
            let removed = fanout.publish(|_| Some(line(n)));
            assert_eq!(removed, usize::from(n == CAPACITY), "at line {n}");
            assert_eq!(fast.next().await, Some(line(n)));
        }
        assert_eq!((fanout.readers(), fanout.dropped()), (1, 1));
        for n in 0..CAPACITY {
            assert_eq!(
                slow.next().await,
                Some(line(n)),
                "queued lines still arrive"
            );
        }
        assert_eq!(slow.next().await, Some(Bytes::from("END\n")));
        assert_eq!(slow.next().await, None);
        drop(slow);
        assert_eq!(
            cap.available_permits(),
            1,
            "the dropped reader's place is free"
        );
    }

    #[tokio::test]
    async fn a_closed_stream_unsubscribes_at_once_and_keys_choose_the_lines() {
        let cap = Arc::new(Semaphore::new(2));
        let seen = Arc::new(AtomicUsize::new(0));
        let hook_seen = seen.clone();
        let hook: OnChange<u8> = Box::new(move |keys| {
            hook_seen.store(keys.count(), Ordering::Relaxed);
        });
        let fanout = Arc::new(Fanout::new(Some(hook)));
        let mut odd = fanout.subscribe(1u8, Bytes::new(), permit(&cap));
        let even = fanout.subscribe(0u8, Bytes::new(), permit(&cap));
        assert_eq!(seen.load(Ordering::Relaxed), 2);
        drop(even);
        assert_eq!((fanout.readers(), seen.load(Ordering::Relaxed)), (1, 1));
        assert_eq!(cap.available_permits(), 1);
        for n in 0..4usize {
            fanout.publish(|key| (n % 2 == usize::from(*key)).then(|| line(n)));
        }
        assert_eq!(odd.next().await, Some(line(1)));
        assert_eq!(odd.next().await, Some(line(3)));
    }
}
