//! How a run is shared out over the loader's threads: each gets a [`Plan`], its part of the
//! connections, messages and rates (see [`LoadConfig::part`]).

use super::config::{LoadConfig, Stop};

/// This thread's share of the run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The thread's number, 0-based.
    pub index: usize,
    /// The id of its first connection; it owns `first_id..first_id + count`.
    pub first_id: u32,
    /// How many connections it opens.
    pub count: u32,
    /// Its share of `--messages`.
    pub messages: Option<u64>,
    /// Its share of the open-loop rate, messages per second.
    pub rate: Option<f64>,
    /// Its share of `--connect-rate`.
    pub connect_rate: Option<f64>,
    /// How many of its connections send (`--active`); the rest stay idle.
    pub active: u32,
}

impl LoadConfig {
    /// Shares connections, messages and rates out over the threads as evenly as can be.
    pub(crate) fn plans(&self) -> Vec<Plan> {
        let mut first_id = self.first_id;
        (0..self.threads)
            .map(|index| {
                let part = self.part(index, self.threads);
                let plan = Plan {
                    index: index as usize,
                    first_id,
                    count: part.connections,
                    messages: match part.stop {
                        Stop::Messages(messages) => Some(messages),
                        Stop::After(_) => None,
                    },
                    rate: part.open_loop_rate(),
                    connect_rate: part.connect_rate,
                    active: part.active.unwrap_or(part.connections),
                };
                first_id += part.connections;
                plan
            })
            .collect()
    }
}
