//! `GET /v1/monitor` (`shoal monitor`): the agent's log, streamed to readers as it is written.
//!
//! Two `tracing` layers sit beside the stderr one, a text and a JSON formatter (the same
//! formatters stderr uses, so lines read alike), each behind its own per-layer filter. A
//! filter lets a record through only if a reader of its format wants that level, read from
//! one atomic kept up to date as readers come and go; with no reader it says no to every
//! callsite, so the monitors cost nothing and stderr's own filter is untouched (each layer
//! has its own). A formatted line goes to the fan-out ([`super::fanout`]), which never waits.
//! A reader that falls behind is dropped and its stream ends with a last line saying so.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;
use shoal_proto::{ErrorBody, MonitorFormat, MonitorLevel};
use tokio::sync::OwnedSemaphorePermit;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::registry::LookupSpan;

use super::fanout::{CAPACITY, Fanout, LineStream, OnChange};

/// What one reader wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonitorKey {
    /// Text or JSON lines.
    pub format: MonitorFormat,
    /// The least severe level sent.
    pub level: MonitorLevel,
}

/// Per format, the most verbose level any reader wants: 0 none, 1 error ... 5 trace.
#[derive(Debug, Default)]
struct Levels {
    text: AtomicU8,
    json: AtomicU8,
}

impl Levels {
    fn of(&self, format: MonitorFormat) -> &AtomicU8 {
        match format {
            MonitorFormat::Text => &self.text,
            MonitorFormat::Json => &self.json,
        }
    }
}

fn rank(level: MonitorLevel) -> u8 {
    match level {
        MonitorLevel::Error => 1,
        MonitorLevel::Warn => 2,
        MonitorLevel::Info => 3,
        MonitorLevel::Debug => 4,
        MonitorLevel::Trace => 5,
    }
}

fn rank_of(level: &Level) -> u8 {
    rank(monitor_level(level))
}

fn monitor_level(level: &Level) -> MonitorLevel {
    match *level {
        Level::ERROR => MonitorLevel::Error,
        Level::WARN => MonitorLevel::Warn,
        Level::INFO => MonitorLevel::Info,
        Level::DEBUG => MonitorLevel::Debug,
        Level::TRACE => MonitorLevel::Trace,
    }
}

/// The monitor readers and the layers that feed them.
pub struct Monitors {
    fanout: Arc<Fanout<MonitorKey>>,
    levels: Arc<Levels>,
}

impl Monitors {
    /// No readers yet.
    pub fn new() -> Arc<Self> {
        let levels = Arc::new(Levels::default());
        let hook_levels = levels.clone();
        let hook: OnChange<MonitorKey> = Box::new(move |keys| {
            let (mut text, mut json) = (0, 0);
            for key in keys {
                let max = match key.format {
                    MonitorFormat::Text => &mut text,
                    MonitorFormat::Json => &mut json,
                };
                *max = (*max).max(rank(key.level));
            }
            hook_levels.text.store(text, Ordering::Relaxed);
            hook_levels.json.store(json, Ordering::Relaxed);
        });
        Arc::new(Self {
            fanout: Arc::new(Fanout::new(Some(hook))),
            levels,
        })
    }

    /// A new reader; from now on it gets every line at `key.level` or more severe.
    pub fn subscribe(&self, key: MonitorKey, permit: OwnedSemaphorePermit) -> LineStream {
        let message = format!(
            "this monitor fell {CAPACITY} lines behind; the agent closed it and sent none of the \
             later lines"
        );
        let ending = match key.format {
            MonitorFormat::Text => format!("shoal: {message}\n"),
            MonitorFormat::Json => {
                let body = ErrorBody::new("slow_reader", message);
                serde_json::to_string(&body).unwrap_or_default() + "\n"
            }
        };
        let stream = self
            .fanout
            .subscribe(key, Bytes::from(ending), permit)
            .then_on_drop(tracing_core::callsite::rebuild_interest_cache);
        // Callsites that every filter turned down are cached as such; ask them again.
        tracing_core::callsite::rebuild_interest_cache();
        stream
    }

    /// Readers now.
    pub fn readers(&self) -> usize {
        self.fanout.readers()
    }

    /// Readers closed for falling behind, since start.
    pub fn dropped(&self) -> u64 {
        self.fanout.dropped()
    }

    /// The text and the JSON layer, to install beside stderr's.
    pub fn layers<S>(self: &Arc<Self>) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let text = tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_writer(self.writer(MonitorFormat::Text))
            .with_filter(self.filter(MonitorFormat::Text));
        let json = tracing_subscriber::fmt::layer()
            .with_target(false)
            .json()
            .with_writer(self.writer(MonitorFormat::Json))
            .with_filter(self.filter(MonitorFormat::Json));
        text.and_then(json)
    }

    fn writer(&self, format: MonitorFormat) -> MonitorWriter {
        MonitorWriter {
            fanout: self.fanout.clone(),
            format,
        }
    }

    fn filter(&self, format: MonitorFormat) -> MonitorFilter {
        MonitorFilter {
            levels: self.levels.clone(),
            format,
        }
    }
}

/// Lets a record through to one format's layer when a reader of that format wants its level.
struct MonitorFilter {
    levels: Arc<Levels>,
    format: MonitorFormat,
}

impl MonitorFilter {
    fn max(&self) -> u8 {
        self.levels.of(self.format).load(Ordering::Relaxed)
    }
}

impl<S> Filter<S> for MonitorFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        rank_of(meta.level()) <= self.max()
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        // Asked again (rebuild_interest_cache) whenever a reader comes or goes.
        match rank_of(meta.level()) <= self.max() {
            true => Interest::sometimes(),
            false => Interest::never(),
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(match self.max() {
            0 => LevelFilter::OFF,
            1 => LevelFilter::ERROR,
            2 => LevelFilter::WARN,
            3 => LevelFilter::INFO,
            4 => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        })
    }
}

/// Where a monitor layer writes: one [`LineWriter`] per record, handed to the fan-out when
/// the formatter drops it.
struct MonitorWriter {
    fanout: Arc<Fanout<MonitorKey>>,
    format: MonitorFormat,
}

impl<'a> MakeWriter<'a> for MonitorWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        self.line(MonitorLevel::Error)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter<'a> {
        self.line(monitor_level(meta.level()))
    }
}

impl MonitorWriter {
    fn line(&self, level: MonitorLevel) -> LineWriter<'_> {
        LineWriter {
            to: self,
            level,
            buf: Vec::new(),
        }
    }
}

/// One formatted record.
struct LineWriter<'a> {
    to: &'a MonitorWriter,
    level: MonitorLevel,
    buf: Vec<u8>,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter<'_> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let line = Bytes::from(std::mem::take(&mut self.buf));
        let (format, level) = (self.to.format, self.level);
        // Inside the log: nothing here may log (the lock is not re-entrant).
        self.to
            .fanout
            .publish(|key| (key.format == format && key.level >= level).then(|| line.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Semaphore;
    use tracing_subscriber::layer::SubscriberExt;

    #[tokio::test]
    async fn readers_get_lines_at_their_level_in_their_format_and_nothing_before_they_came() {
        let monitors = Monitors::new();
        let subscriber = tracing_subscriber::registry().with(monitors.layers());
        let _guard = tracing::subscriber::set_default(subscriber);
        tracing::info!(member = "web-1", "before anyone listened");
        let cap = Arc::new(Semaphore::new(2));
        let key = |format, level| MonitorKey { format, level };
        let permit = || cap.clone().try_acquire_owned().expect("permit");
        let mut info = monitors.subscribe(key(MonitorFormat::Text, MonitorLevel::Info), permit());
        let mut debug = monitors.subscribe(key(MonitorFormat::Json, MonitorLevel::Debug), permit());
        tracing::debug!(detail = 1, "only for debug");
        tracing::info!(member = "web-1", addr = "10.0.0.5:7948", "member-join");
        let text = String::from_utf8(info.next().await.expect("a line").to_vec()).expect("utf-8");
        assert!(
            text.contains(" INFO ")
                && text.ends_with("member-join member=\"web-1\" addr=\"10.0.0.5:7948\"\n"),
            "{text:?}"
        );
        let first = debug.next().await.expect("a line");
        let value: serde_json::Value = serde_json::from_slice(&first).expect("json");
        assert_eq!(value["level"], "DEBUG");
        assert_eq!(value["fields"]["message"], "only for debug");
        drop((info, debug));
        assert_eq!(monitors.readers(), 0);
        assert_eq!(monitors.levels.text.load(Ordering::Relaxed), 0);
    }
}
