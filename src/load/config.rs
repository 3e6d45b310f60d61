//! What a load run is told to do, checked before anything starts, and how it is shared out
//! over threads.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::engine::Plan;
use super::workload::{MIN_SIZE, Workload};
use crate::address::ListenAddr;
use crate::codec::Codec;

/// The open-loop rate of a broadcast run when `--rate` is not given: each message fans out
/// to every other connection, so a closed loop would have no natural pace.
pub const DEFAULT_BROADCAST_RATE: f64 = 1000.0;

/// When the run stops sending.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stop {
    /// After this long (after the warmup).
    After(Duration),
    /// After this many messages in total.
    Messages(u64),
}

/// A load run, as `evloop-load`'s flags describe it.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The server.
    pub target: ListenAddr,
    /// What to send and check.
    pub workload: Workload,
    /// Framing: `line` or `length`.
    pub codec: Codec,
    /// Connections, over all threads.
    pub connections: u32,
    /// When to stop sending.
    pub stop: Stop,
    /// Time at the start whose messages are verified but not counted in the figures.
    pub warmup: Duration,
    /// Closed loop: requests in flight per connection.
    pub pipeline: u32,
    /// Open loop: messages per second in total, sent on schedule whatever the replies do.
    pub rate: Option<f64>,
    /// Payload bytes per request.
    pub size: usize,
    /// New connections per second in total; `None`: as fast as the server accepts.
    pub connect_rate: Option<f64>,
    /// A connect not done by then fails as a timeout.
    pub connect_timeout: Duration,
    /// After sending stops, how long to wait for outstanding replies; missing ones are lost.
    pub reply_timeout: Duration,
    /// Local addresses to connect from, round robin; empty: the kernel's choice.
    pub sources: Vec<IpAddr>,
    /// Reactor threads, each with its share of everything.
    pub threads: u32,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            target: ListenAddr::Tcp(([127, 0, 0, 1], 7000).into()),
            workload: Workload::Echo,
            codec: Codec::Line,
            connections: 50,
            stop: Stop::After(Duration::from_secs(10)),
            warmup: Duration::ZERO,
            pipeline: 1,
            rate: None,
            size: 64,
            connect_rate: None,
            connect_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(5),
            sources: Vec::new(),
            threads: 1,
        }
    }
}

impl LoadConfig {
    /// Refuses combinations that cannot work, with a message for the user.
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.target, ListenAddr::Tcp(_)) {
            return Err(format!(
                "cannot load {}: only TCP targets are supported",
                self.target
            ));
        }
        if !matches!(self.codec, Codec::Line | Codec::Length) {
            return Err(format!(
                "codec {} is not supported by the loader: use line or length",
                self.codec
            ));
        }
        if self.workload != Workload::Sum && self.size < MIN_SIZE {
            return Err(format!(
                "--size must be at least {MIN_SIZE} bytes for {}",
                self.workload
            ));
        }
        if self.workload == Workload::Broadcast && self.connections < 2 {
            return Err("broadcast needs at least 2 connections".to_string());
        }
        if self.threads == 0 || self.threads > self.connections {
            return Err(format!(
                "--threads must be between 1 and the number of connections ({})",
                self.connections
            ));
        }
        if let Some(source) = self
            .sources
            .iter()
            .find(|source| source.is_ipv4() != self.target_addr().is_ipv4())
        {
            return Err(format!(
                "source {source} and target {} are of different IP versions",
                self.target
            ));
        }
        Ok(())
    }

    /// The open-loop rate, if the run is open loop.
    pub fn open_loop_rate(&self) -> Option<f64> {
        match (self.rate, self.workload) {
            (Some(rate), _) => Some(rate),
            (None, Workload::Broadcast) => Some(DEFAULT_BROADCAST_RATE),
            (None, _) => None,
        }
    }

    /// The target's socket address.
    ///
    /// # Panics
    /// If the target is not TCP, which [`validate`](Self::validate) refuses.
    pub fn target_addr(&self) -> SocketAddr {
        match self.target {
            ListenAddr::Tcp(addr) => addr,
            _ => panic!("validated: the target is TCP"),
        }
    }

    /// The source address connection `id` connects from.
    pub fn source_for(&self, id: u32) -> Option<IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[id as usize % self.sources.len()])
    }

    /// Shares connections, messages and rates out over the threads as evenly as can be.
    pub fn plans(&self) -> Vec<Plan> {
        let threads = self.threads;
        let share = |total: u64, index: u32| {
            total / u64::from(threads) + u64::from(u64::from(index) < total % u64::from(threads))
        };
        let mut first_id = 0;
        (0..threads)
            .map(|index| {
                let count = share(u64::from(self.connections), index) as u32;
                let plan = Plan {
                    index: index as usize,
                    first_id,
                    count,
                    messages: match self.stop {
                        Stop::Messages(total) => Some(share(total, index)),
                        Stop::After(_) => None,
                    },
                    rate: self
                        .open_loop_rate()
                        .map(|rate| rate * f64::from(count) / f64::from(self.connections)),
                    connect_rate: self
                        .connect_rate
                        .map(|rate| rate * f64::from(count) / f64::from(self.connections)),
                };
                first_id += count;
                plan
            })
            .collect()
    }

    /// The run's mode in words, for the report.
    pub fn mode(&self) -> String {
        match self.open_loop_rate() {
            Some(rate) => format!("open loop at {rate} msgs/s"),
            None => format!("closed loop, pipeline {}", self.pipeline),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads get every connection and message exactly once, and their share of the rate.
    #[test]
    fn plans_share_everything_out() {
        let config = LoadConfig {
            connections: 10,
            threads: 3,
            stop: Stop::Messages(100),
            rate: Some(1000.0),
            ..LoadConfig::default()
        };
        let plans = config.plans();
        assert_eq!(
            plans.iter().map(|plan| plan.count).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!(
            plans.iter().map(|plan| plan.first_id).collect::<Vec<_>>(),
            [0, 4, 7]
        );
        assert_eq!(
            plans.iter().filter_map(|plan| plan.messages).sum::<u64>(),
            100
        );
        let rate: f64 = plans.iter().filter_map(|plan| plan.rate).sum();
        assert!((rate - 1000.0).abs() < 1e-6);
    }

    /// Impossible runs are refused before starting.
    #[test]
    fn validation_refuses_impossible_runs() {
        let bad = [
            LoadConfig {
                codec: Codec::Raw,
                ..LoadConfig::default()
            },
            LoadConfig {
                size: 8,
                ..LoadConfig::default()
            },
            LoadConfig {
                workload: Workload::Broadcast,
                connections: 1,
                ..LoadConfig::default()
            },
            LoadConfig {
                threads: 100,
                ..LoadConfig::default()
            },
            LoadConfig {
                sources: vec!["::1".parse().unwrap()],
                ..LoadConfig::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
        assert!(
            LoadConfig {
                workload: Workload::Sum,
                size: 8,
                ..LoadConfig::default()
            }
            .validate()
            .is_ok()
        );
    }
}
