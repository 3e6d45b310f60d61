//! What a load run is told to do, checked before anything starts, and how it is shared out
//! over threads.

use std::net::IpAddr;
use std::time::Duration;

use super::workloads::Workload;
use crate::codec::Codec;
use crate::sys::address::ListenAddr;

/// When the run stops sending.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stop {
    /// After this long (after the warmup).
    After(Duration),
    /// After this many messages in total.
    Messages(u64),
}

/// A load run, as `evloop-load`'s flags describe it. Start from `LoadConfig::default()` and
/// change what you need.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LoadConfig {
    /// The server.
    pub target: ListenAddr,
    /// Further servers, for a room spread over several (broadcast over a backplane):
    /// connection `i` goes to the `i mod n`th of `target` and these.
    pub more_targets: Vec<ListenAddr>,
    /// What to send and check (a file run's directory and a generic run's script with it).
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
    /// How long to wait for a reply, from its request or the last bytes heard, whichever is
    /// later: a connection that waits longer is closed and its outstanding requests are lost
    /// (a closed-loop broadcast sender gives its lines up). After sending stops, how long
    /// to wait for the last replies.
    pub reply_timeout: Duration,
    /// Local addresses to connect from, round robin; empty: the kernel's choice.
    pub sources: Vec<IpAddr>,
    /// Reactor threads, each with its share of everything.
    pub threads: u32,
    /// How many of the connections send; the rest connect and stay idle (a mostly idle
    /// server with a few busy clients). `None`: all of them.
    pub active: Option<u32>,
    /// The id of the first connection: a loader process that runs one part of a larger
    /// run numbers its connections after the other parts'.
    pub first_id: u32,
    /// A part of a larger run: the whole run's connections (ids `0..` it); `None`: this is
    /// the whole run. Open loop, a part's schedule is shifted by its place in the whole, so
    /// the parts' messages interleave as one loader's would instead of going out together.
    pub whole_run_connections: Option<u32>,
    /// After the run, keep every connection open and idle this long (to measure what idle
    /// connections cost the server).
    pub hold: Duration,
    /// Report the full latency percentile spectrum too (`--latency`).
    pub latency_spectrum: bool,
    /// Broadcast in a closed loop (`--pipeline` without `--rate`): each sender keeps
    /// `pipeline` lines in flight, and a line counts as answered once every other member
    /// has it, so the run goes as fast as the room can fan out. Otherwise broadcast is open
    /// loop, at `rate` or its default (1,000 lines/s).
    pub broadcast_closed_loop: bool,
    /// Each message in a `write` of its own, at once, as most clients write (a chat client,
    /// a request per call): the server then finds a few messages per read, not a batch of
    /// `pipeline` of them (`--write-each`).
    pub write_each: bool,
    /// `--codec ws`: the path the opening request asks for (`--target ws://HOST:PORT/PATH`).
    pub ws_path: String,
    /// `--tls`: speak TLS to the server, trusting it as this says.
    pub tls: Option<crate::load::tls::Trust>,
    /// `--tls-name`: the name the server's certificate is checked against (and sent as SNI);
    /// `None`: the target's address.
    pub tls_name: Option<String>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            target: ListenAddr::Tcp(([127, 0, 0, 1], 7000).into()),
            more_targets: Vec::new(),
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
            active: None,
            first_id: 0,
            whole_run_connections: None,
            hold: Duration::ZERO,
            latency_spectrum: false,
            broadcast_closed_loop: false,
            write_each: false,
            ws_path: "/".to_string(),
            tls: None,
            tls_name: None,
        }
    }
}

impl LoadConfig {
    /// Refuses combinations that cannot work, with a message for the user.
    pub fn validate(&self) -> Result<(), String> {
        for target in &self.more_targets {
            if std::mem::discriminant(target) != std::mem::discriminant(&self.target) {
                return Err(format!("targets {} and {target} are of different kinds", self.target));
            }
        }
        match &self.target {
            ListenAddr::Udp(_) if !matches!(self.codec, Codec::Line | Codec::Raw) => {
                return Err("UDP carries one message per datagram: --codec does not apply".to_string());
            }
            ListenAddr::Fd(_) => return Err("fd: is a listening address, not a target".to_string()),
            ListenAddr::Unix(_) if !self.sources.is_empty() => {
                return Err("--sources applies to TCP and UDP targets, not Unix sockets".to_string());
            }
            _ => {}
        }
        let kind = self.workload.kind();
        let raw_allowed = kind.raw_streams && self.codec == Codec::Raw;
        if !matches!(self.codec, Codec::Line | Codec::Length | Codec::Ws) && !raw_allowed {
            return Err(format!(
                "codec {} is not supported by the loader: use line, length or ws (raw: the generic workload)",
                self.codec
            ));
        }
        if self.codec == Codec::Ws && !matches!(self.target, ListenAddr::Tcp(_)) {
            return Err("--codec ws runs over TCP".to_string());
        }
        if self.tls.is_some() && !matches!(self.target, ListenAddr::Tcp(_)) {
            return Err("--tls runs over TCP".to_string());
        }
        (kind.validate)(self)?;
        if self.threads == 0 || self.threads > self.connections {
            return Err(format!(
                "--threads must be between 1 and the number of connections ({})",
                self.connections
            ));
        }
        if self.active.is_some_and(|active| active == 0 || active > self.connections) {
            return Err(format!(
                "--active must be between 1 and the number of connections ({})",
                self.connections
            ));
        }
        if let Some(target) = self.target_ip() {
            if let Some(source) = self.sources.iter().find(|source| source.is_ipv4() != target.is_ipv4()) {
                return Err(format!(
                    "source {source} and target {} are of different IP versions",
                    self.target
                ));
            }
        }
        Ok(())
    }

    /// The open-loop rate, if the run is open loop.
    pub fn open_loop_rate(&self) -> Option<f64> {
        match (self.rate, self.workload.kind().default_rate) {
            (Some(rate), _) => Some(rate),
            (None, Some(rate)) if !self.broadcast_closed_loop => Some(rate),
            _ => None,
        }
    }

    /// The target's IP address, for TCP and UDP targets.
    pub fn target_ip(&self) -> Option<IpAddr> {
        match &self.target {
            ListenAddr::Tcp(addr) | ListenAddr::Udp(addr) => Some(addr.ip()),
            _ => None,
        }
    }

    /// The server connection `id` connects to.
    pub fn target_for(&self, id: u32) -> &ListenAddr {
        match id as usize % (1 + self.more_targets.len()) {
            0 => &self.target,
            other => &self.more_targets[other - 1],
        }
    }

    /// The name connection `id`'s server certificate is checked against.
    pub fn tls_name_for(&self, id: u32) -> String {
        match (&self.tls_name, self.target_for(id)) {
            (Some(name), _) => name.clone(),
            (None, ListenAddr::Tcp(addr)) => addr.ip().to_string(),
            (None, other) => other.to_string(),
        }
    }

    /// Every target, as the report names them (`a,b,c`).
    pub fn targets_text(&self) -> String {
        let mut text = self.target.to_string();
        for target in &self.more_targets {
            text.push(',');
            text.push_str(&target.to_string());
        }
        text
    }

    /// The source address connection `id` connects from.
    pub fn source_for(&self, id: u32) -> Option<IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[id as usize % self.sources.len()])
    }

    /// The `index`th of `parts` even shares of this run: connections, messages, active
    /// connections and rates, with the connection ids that go with them. Threads get parts,
    /// and so do loader processes (`--processes`).
    pub fn part(&self, index: u32, parts: u32) -> LoadConfig {
        let share = |total: u64| share_of(total, index, parts);
        let connections_before: u64 =
            (0..index).map(|before| share_of(u64::from(self.connections), before, parts)).sum();
        let first_id = self.first_id + connections_before as u32;
        let connections = share(u64::from(self.connections)) as u32;
        let active = self.active.map(|active| share(u64::from(active)) as u32);
        // Rates follow the connections that send.
        let fraction = match (active, self.active) {
            (Some(part), Some(total)) => f64::from(part) / f64::from(total),
            _ => f64::from(connections) / f64::from(self.connections),
        };
        LoadConfig {
            connections,
            first_id,
            whole_run_connections: Some(self.whole_run_connections.unwrap_or(self.connections)),
            stop: match self.stop {
                Stop::Messages(total) => Stop::Messages(self.messages_share(total, index, parts)),
                after => after,
            },
            rate: self.open_loop_rate().map(|rate| rate * fraction),
            connect_rate: self.connect_rate.map(|rate| rate * fraction),
            active,
            ..self.clone()
        }
    }

    /// Part `index`'s share of `total` messages. They follow the connections that send: a
    /// part with no `--active` connection gets none (it could not send them, and a counted
    /// run would wait for them for ever); without `--active`, even shares.
    fn messages_share(&self, total: u64, index: u32, parts: u32) -> u64 {
        let Some(all_active) = self.active else { return share_of(total, index, parts) };
        let active_before = |part: u32| -> u128 {
            (0..part).map(|before| u128::from(share_of(u64::from(all_active), before, parts))).sum()
        };
        // Cumulative shares rounded down: every message goes to exactly one part.
        let upto = |part: u32| u128::from(total) * active_before(part) / u128::from(all_active);
        (upto(index + 1) - upto(index)) as u64
    }

    /// The command-line arguments that make `evloop-load` run exactly this configuration
    /// (used to start loader processes, each with its part).
    pub fn to_args(&self) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        let mut flag = |name: &str, value: String| args.extend([format!("--{name}"), value]);
        flag("target", self.target.to_string());
        for target in &self.more_targets {
            flag("target", target.to_string());
        }
        flag("workload", self.workload.to_string());
        flag("codec", self.codec.to_string());
        flag("connections", self.connections.to_string());
        match self.stop {
            Stop::After(duration) => flag("duration", duration.as_secs_f64().to_string()),
            Stop::Messages(messages) => flag("messages", messages.to_string()),
        }
        flag("warmup", self.warmup.as_secs_f64().to_string());
        flag("pipeline", self.pipeline.to_string());
        flag("size", self.size.to_string());
        flag("connect-timeout", self.connect_timeout.as_secs_f64().to_string());
        flag("reply-timeout", self.reply_timeout.as_secs_f64().to_string());
        flag("threads", self.threads.to_string());
        flag("first-id", self.first_id.to_string());
        if let Some(whole) = self.whole_run_connections {
            flag("whole-run-connections", whole.to_string());
        }
        if !self.hold.is_zero() {
            flag("hold", self.hold.as_secs_f64().to_string());
        }
        if let Workload::File(dir) = &self.workload {
            flag("files", dir.display().to_string());
        }

        if let Some(rate) = self.rate {
            flag("rate", rate.to_string());
        }
        if let Some(rate) = self.connect_rate {
            flag("connect-rate", rate.to_string());
        }
        if let Some(active) = self.active {
            flag("active", active.to_string());
        }
        if !self.sources.is_empty() {
            let sources: Vec<String> = self.sources.iter().map(ToString::to_string).collect();
            flag("sources", sources.join(","));
        }
        if self.latency_spectrum {
            args.push("--latency".to_string());
        }
        if self.write_each {
            args.push("--write-each".to_string());
        }
        if self.codec == Codec::Ws && self.ws_path != "/" {
            args.extend(["--ws-path".to_string(), self.ws_path.clone()]);
        }
        match &self.tls {
            Some(crate::load::tls::Trust::Ca(path)) => {
                args.extend(["--tls".to_string(), "--tls-ca".to_string(), path.display().to_string()])
            }
            Some(crate::load::tls::Trust::Anything) => {
                args.extend(["--tls".to_string(), "--insecure".to_string()])
            }
            None => {}
        }
        if let Some(name) = &self.tls_name {
            args.extend(["--tls-name".to_string(), name.clone()]);
        }
        if let Workload::Generic(script) = &self.workload {
            args.extend(script.to_args());
        }
        args
    }

    /// The run's mode in words, for the report.
    pub fn mode(&self) -> String {
        let loop_mode = self.loop_mode();
        match &self.workload {
            Workload::Generic(script) => format!("{loop_mode}; {}", script.describe()),
            _ => loop_mode,
        }
    }

    /// Open or closed loop, in words.
    fn loop_mode(&self) -> String {
        match self.open_loop_rate() {
            Some(rate) => format!("open loop at {rate} msgs/s"),
            None if self.write_each => {
                format!("closed loop, pipeline {}, a write per message", self.pipeline)
            }
            None => format!("closed loop, pipeline {}", self.pipeline),
        }
    }
}

/// Part `index` of `total` split into `parts` shares as even as can be (the first ones get
/// the remainder, one each).
fn share_of(total: u64, index: u32, parts: u32) -> u64 {
    total / u64::from(parts) + u64::from(u64::from(index) < total % u64::from(parts))
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
        assert_eq!(plans.iter().map(|plan| plan.count).collect::<Vec<_>>(), [4, 3, 3]);
        assert_eq!(plans.iter().map(|plan| plan.first_id).collect::<Vec<_>>(), [0, 4, 7]);
        assert_eq!(plans.iter().filter_map(|plan| plan.messages).sum::<u64>(), 100);
        let rate: f64 = plans.iter().filter_map(|plan| plan.rate).sum();
        assert!((rate - 1000.0).abs() < 1e-6);
    }

    /// Parts (processes) cover every connection id once, and keep the rate and active share.
    #[test]
    fn parts_cover_the_run() {
        let config =
            LoadConfig { connections: 10, active: Some(4), rate: Some(100.0), ..LoadConfig::default() };
        let parts: Vec<LoadConfig> = (0..3).map(|index| config.part(index, 3)).collect();
        assert_eq!(
            parts.iter().map(|part| (part.first_id, part.connections)).collect::<Vec<_>>(),
            [(0, 4), (4, 3), (7, 3)]
        );
        assert_eq!(parts.iter().filter_map(|part| part.active).sum::<u32>(), 4);
        let rate: f64 = parts.iter().filter_map(|part| part.rate).sum();
        assert!((rate - 100.0).abs() < 1e-6);
        assert!(parts.iter().all(|part| part.whole_run_connections == Some(10)));
        assert_eq!(parts[1].part(0, 2).whole_run_connections, Some(10), "a part of a part keeps the whole");
        assert!(parts[1].to_args().windows(2).any(|flag| flag == ["--whole-run-connections", "10"]));
        let threads = LoadConfig { threads: 2, ..parts[1].clone() }.plans();
        assert_eq!(
            threads.iter().map(|plan| (plan.first_id, plan.count)).collect::<Vec<_>>(),
            [(4, 2), (6, 1)]
        );
    }

    /// Messages follow the connections that send: a part with no active connection gets
    /// none, and every message goes to exactly one part.
    #[test]
    fn messages_follow_the_active_connections() {
        let config = LoadConfig {
            connections: 10,
            active: Some(3),
            stop: Stop::Messages(100),
            ..LoadConfig::default()
        };
        let messages = |parts: u32| -> Vec<u64> {
            (0..parts)
                .map(|index| match config.part(index, parts).stop {
                    Stop::Messages(messages) => messages,
                    Stop::After(_) => unreachable!(),
                })
                .collect()
        };
        assert_eq!(messages(4), [33, 33, 34, 0]);
        assert_eq!(messages(2), [66, 34]);
        assert_eq!(messages(1), [100]);
    }

    /// Impossible runs are refused before starting.
    #[test]
    fn validation_refuses_impossible_runs() {
        let bad = [
            LoadConfig { codec: Codec::Raw, ..LoadConfig::default() },
            LoadConfig { size: 8, ..LoadConfig::default() },
            LoadConfig { workload: Workload::Broadcast, connections: 1, ..LoadConfig::default() },
            LoadConfig { threads: 100, ..LoadConfig::default() },
            LoadConfig { sources: vec!["::1".parse().unwrap()], ..LoadConfig::default() },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
        assert!(LoadConfig { workload: Workload::Sum, size: 8, ..LoadConfig::default() }.validate().is_ok());
    }
}
