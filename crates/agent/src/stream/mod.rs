//! The streaming endpoints' machinery: [`fanout`] (bounded per-reader channels that the
//! producer never waits for), [`events`] (`/v1/stream`, events as NDJSON) and [`monitor`]
//! (`/v1/monitor`, the log).

pub mod events;
pub mod fanout;
pub mod monitor;
