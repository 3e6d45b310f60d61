//! Load from many hosts: `evloop-load --agent` runs on each loader host and waits for runs;
//! `evloop-load --coordinate --agents N` splits one run between N of them, starts them at
//! one instant, and merges their results into one report, exactly (histograms whole, never
//! percentiles). They meet on NATS, an engine people already run (and evloop's backplane
//! speaks); each agent runs its share as loader processes, as `--processes` does.
//!
//! - `bus`: one NATS connection as a `mio` source (the backplane's link and protocol), with
//!   subscriptions made again after a reconnect.
//! - `wire`: the messages, their subjects, and the clock arithmetic.
//! - [`agent`]: the agent.
//! - [`coordinator`]: the coordinator.

pub mod agent;
mod bus;
pub mod coordinator;
mod wire;

pub use agent::{AgentOptions, run_agent};
pub use coordinator::{CoordinateOptions, coordinate};
