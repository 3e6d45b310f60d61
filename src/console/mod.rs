//! The console's messages, written once for every model that feeds it (docs/console.md has
//! the contract): the reactor (`reactor/console.rs`) and the comparison models
//! (`models/console/`) record their turns and connections here and send what it writes.
//!
//! - [`TurnLog`]: what each turn served, in order, each connection's totals, and the
//!   loop's figures over the last second;
//! - [`Watchers`]: who is sent turns, at most [`TURNS_PER_WINDOW`] per [`WINDOW`] each,
//!   and how many each was not sent (`skipped`: nothing is dropped silently);
//! - [`SnapshotWriter`]: a `snapshot` message, one connection at a time.
//!
//! Nothing here touches a socket: a model says what happened, and carries the JSON text it
//! gets back to its watchers its own way.

mod figures;
mod snapshot;
mod turns;
mod watchers;

use std::time::Duration;

use crate::codec::ws::Page;

pub(crate) use figures::Window;
pub(crate) use snapshot::{Counters, Row, SnapshotWriter};
pub(crate) use turns::{Served, Totals, TurnLog};
pub(crate) use watchers::Watchers;

/// The console page: self-contained (no external assets), it opens its WebSocket at `/live`.
pub(crate) const PAGE: Page = Page { html: include_str!("page.html"), name: "console" };

/// How often a snapshot goes out.
pub(crate) const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);
/// The window the turn cap counts over.
pub(crate) const WINDOW: Duration = Duration::from_millis(100);
/// Turns sent to one watcher per [`WINDOW`] at most (so at most 500 a second); the rest are
/// counted and said as `skipped`. A browser draws no more than that, and a loop turning
/// 200,000 times a second must not spend its time telling.
pub(crate) const TURNS_PER_WINDOW: u32 = 50;
/// A watcher with this much output not written yet is behind: turns for it are skipped (and
/// counted) until it catches up; past `--max-output` it is dropped like any slow consumer.
pub(crate) const BEHIND: usize = 256 * 1024;

/// The `skipped` message for `turns` turns not sent.
pub(crate) fn skipped(turns: u64) -> String {
    format!(r#"{{"type":"skipped","turns":{turns}}}"#)
}
