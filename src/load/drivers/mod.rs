//! Runs made of runs, or of processes: each drives whole runs of the engine and puts their
//! reports together.
//!
//! - [`processes`]: `--processes N`: a run split over loader processes, merged exactly.
//! - [`sweep`]: `--sweep-connections`: a run per connection count, as CSV and SVG.
//! - [`step`]: `--step-members`: rooms grown step by step until a line's p95 reach passes a
//!   limit, as CSV and SVG.

pub mod processes;
pub mod step;
pub mod sweep;
