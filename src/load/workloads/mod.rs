//! The loader's workloads, one module each behind one trait, [`Exchange`]: what a workload
//! sends, how it checks what comes back, what it keeps per connection, and what it adds to
//! the report. The engine calls the trait and never asks which workload runs: wrk's model,
//! whose engine knows nothing of the requests its Lua script builds.
//!
//! Most workloads are a request and its exact reply (echo, uppercase, sum): they say how to
//! write request `seq` of connection `id` and how to check a reply to it, and the engine
//! does the rest (framing, the closed or open loop, timing). The others override what
//! differs: broadcast's lines are answered by their delivery to every other member; file
//! cuts and hashes its downloads itself; generic runs the requests and replies typed on the
//! command line, over a codec or cut from the raw stream.
//!
//! # Adding a workload
//! A file beside this one with a type that implements [`Exchange`], and its line in the
//! `workloads!` table below, which declares its module and makes its [`Workload`] variant.

mod acks;
mod catalogue;
mod payload;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use super::config::LoadConfig;
use super::engine::{Prep, Replies, Wire};
use super::plan::Plan;
use super::report::Report;
use super::script::Script;
use super::shared::Shared;
use super::socket::LoadSocket;
use super::tally::Tally;

use payload::MIN_SIZE;

/// Lists the workloads once: each line declares a workload's module and makes its
/// [`Workload`] variant (with its data, if it has any), tied to the type that runs it.
macro_rules! workloads {
    ($( $(#[$doc:meta])* $variant:ident $(($data:ty))? => $module:ident::$exchange:ident, )*) => {
        $( mod $module; )*

        /// Which traffic to generate and check (see the module of each).
        #[derive(Clone, Debug, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum Workload {
            $( $(#[$doc])* $variant $(($data))?, )*
        }

        impl Workload {
            /// The names `--workload` takes.
            pub const NAMES: &[&str] = &[$( <$module::$exchange as Exchange>::NAME, )*];

            /// What this workload is, as the rest of the loader needs to know it.
            pub(crate) fn kind(&self) -> &'static Kind {
                match self {
                    $( Workload::$variant { .. } => &const { Kind::of::<$module::$exchange>() }, )*
                }
            }

            /// The workload called `name`, with what it needs from `flags` (taken from it).
            fn named(name: &str, flags: &mut WorkloadFlags) -> Result<Workload, String> {
                $( if name == <$module::$exchange as Exchange>::NAME {
                    return <$module::$exchange as Exchange>::from_flags(flags);
                } )*
                Err(format!("unknown workload '{name}': expected {}", Workload::NAMES.join(", ")))
            }
        }
    };
}

workloads! {
    /// Replies must equal requests.
    Echo => echo::Echo,
    /// Requests mix ASCII and non-ASCII letters; replies must be their full uppercasing.
    Uppercase => uppercase::Uppercase,
    /// Requests are random integer lists; replies must be their sums.
    Sum => sum::Sum,
    /// Each message must reach every other connection, as `<sender-addr>: <message>`.
    Broadcast => broadcast::Broadcast,
    /// `GET` each file of this directory (`--files`, the one the server serves) in turn
    /// from a `file` listener; every byte must match (CRC-32 against the file).
    File(PathBuf) => file::File,
    /// The requests and replies given on the command line (`-m`, `--expect`...; see
    /// `script.rs`): any server's protocol.
    Generic(Script) => generic::Generic,
}

impl Workload {
    /// The workload called `name` (`--workload`), with what it needs from the other flags:
    /// `file` takes `--files`, `generic` the script of `-m` and the flags around it. A
    /// script given to any other workload is refused.
    pub fn from_flags(name: &str, mut flags: WorkloadFlags) -> Result<Workload, String> {
        let workload = Workload::named(name, &mut flags)?;
        if flags.script.is_some() {
            return Err(format!("-m/--message and --preset go with the generic workload, not {name}"));
        }
        Ok(workload)
    }

    /// Its name, as `--workload` takes it.
    pub fn name(&self) -> &'static str {
        self.kind().name
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the flags give a workload besides its name.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct WorkloadFlags {
    /// `--files DIR`.
    pub files: Option<PathBuf>,
    /// The generic workload's requests and replies (`-m`, `--expect`, `--preset`...).
    pub script: Option<Script>,
}

impl WorkloadFlags {
    /// Flags with these values.
    pub fn new(files: Option<PathBuf>, script: Option<Script>) -> WorkloadFlags {
        WorkloadFlags { files, script }
    }
}

/// A workload as the loader's other parts need it: its name, its rules, and the functions,
/// made for its type, that run it and report on it.
#[derive(Debug)]
pub(crate) struct Kind {
    /// See [`Exchange::NAME`].
    pub name: &'static str,
    /// See [`Exchange::RAW_STREAMS`].
    pub raw_streams: bool,
    /// See [`Exchange::DEFAULT_RATE`].
    pub default_rate: Option<f64>,
    /// See [`Exchange::one_process`].
    pub one_process: fn(&LoadConfig) -> Option<&'static str>,
    /// See [`Exchange::validate`].
    pub validate: fn(&LoadConfig) -> Result<(), String>,
    /// See [`Exchange::report`].
    pub report: fn(&LoadConfig, &Tally, &mut Report),
    /// Runs the threads of a run (see `load::run_threads`).
    pub run: super::RunThreads,
}

impl Kind {
    const fn of<W: Exchange>() -> Kind {
        Kind {
            name: W::NAME,
            raw_streams: W::RAW_STREAMS,
            default_rate: W::DEFAULT_RATE,
            one_process: W::one_process,
            validate: W::validate,
            report: W::report,
            run: super::run_threads::<W>,
        }
    }
}

/// Request `seq` of connection `id`, as a workload writes it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request {
    /// The connection.
    pub id: u32,
    /// Its sequence number on that connection.
    pub seq: u64,
    /// When it was due (open loop: its place in the schedule; closed loop: now).
    pub intended_ns: u64,
    /// When it is sent.
    pub sent_ns: u64,
    /// The start of the run, which every thread knows (times in a message are written as
    /// offsets from it).
    pub epoch_ns: u64,
}

/// A message a connection sends once, when it is up, before the load, and the exact answer
/// awaited before it counts as up (none: no answer is awaited).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Opening<'w> {
    /// The message, unframed.
    pub message: &'w [u8],
    /// Its answer, framing included.
    pub answer: Option<&'w [u8]>,
}

/// One workload, as a loader thread runs it. The thread makes its own from the run's shared
/// part ([`Exchange::Run`]) and keeps per connection an [`Exchange::Conn`], which the
/// engine hands back with each connection's replies.
pub(crate) trait Exchange: Sized + Send {
    /// The name `--workload` takes.
    const NAME: &'static str;
    /// Whether it can cut its replies from a raw stream (`--codec raw`): only a workload
    /// that knows where its replies end can.
    const RAW_STREAMS: bool = false;
    /// Whether a request is answered on the connection that sent it. Broadcast lines are
    /// answered by their delivery to every other member: what never came is counted as
    /// deliveries missing (see [`lost_at_end`](Exchange::lost_at_end)), not as the sender's
    /// requests, and a sender that waited `--reply-timeout` stops sending instead of being
    /// closed (its answers do not come on it; its wait counts from its line's send).
    const ANSWERED_ON_ITS_CONNECTION: bool = true;
    /// The open-loop rate when neither `--rate` nor `--pipeline` says how to send.
    const DEFAULT_RATE: Option<f64> = None;

    /// What every thread of a run shares: made once, before the threads start.
    type Run: Send + Sync;
    /// What it keeps per connection.
    type Conn: Default + Send + fmt::Debug;

    /// The workload, from what the flags give it (see [`Workload::from_flags`]).
    fn from_flags(flags: &mut WorkloadFlags) -> Result<Workload, String>;

    /// Why `config` cannot be split over processes (`--processes`, agents), if it cannot.
    fn one_process(_config: &LoadConfig) -> Option<&'static str> {
        None
    }

    /// Refuses a configuration this workload cannot run, with a message for the user.
    fn validate(_config: &LoadConfig) -> Result<(), String> {
        Ok(())
    }

    /// The part every thread shares, made once for the run.
    fn share(config: &LoadConfig, plans: &[Plan]) -> io::Result<Self::Run>;

    /// A thread's own, for its part of the run (`plan`).
    fn new(config: &LoadConfig, plan: &Plan, run: &Arc<Self::Run>) -> Self;

    /// Once the thread's reactor exists: what it registers with it.
    fn start(&mut self, _registry: &mio::Registry) -> io::Result<()> {
        Ok(())
    }

    /// Appends the payload of `request` (its framing is the codec's) to `out`.
    fn request(&self, request: &Request, out: &mut Vec<u8>, tally: &mut Tally);

    /// Whether `reply`, a whole reply, is the one expected for request `seq` of connection
    /// `id`. This runs for every reply: check in place where it can.
    fn check(&self, id: u32, seq: u64, reply: &[u8], scratch: &mut Vec<u8>) -> bool;

    /// Writes into `out` the reply expected for request `seq` of connection `id` (for a
    /// mismatch report).
    fn expected(&self, id: u32, seq: u64, out: &mut Vec<u8>);

    /// Counts `reply`, at byte `offset` of the connection's stream, as a wrong answer to
    /// request `seq`.
    fn mismatch(
        &self,
        id: u32,
        seq: u64,
        reply: &[u8],
        _offset: u64,
        tally: &mut Tally,
        scratch: &mut Vec<u8>,
    ) {
        scratch.clear();
        self.expected(id, seq, scratch);
        tally.mismatch(id, scratch, reply);
    }

    /// Takes the bytes a stream brought. By default they are cut into replies by the codec,
    /// each passed to [`reply`](Exchange::reply).
    fn take(&self, replies: &mut Replies<'_, Self>, bytes: &[u8]) {
        replies.frames(bytes, |replies, reply, offset| self.reply(replies, reply, offset));
    }

    /// One whole reply, at byte `offset` of its stream. By default, the answer to the
    /// oldest request outstanding, checked with [`check`](Exchange::check).
    fn reply(&self, replies: &mut Replies<'_, Self>, reply: &[u8], offset: u64) {
        replies.answer_checked(reply, offset);
    }

    /// What a connection sends once it is up, before the load, if anything.
    fn opening(&self) -> Option<Opening<'_>> {
        None
    }

    /// Connection `id` is up, on `socket`.
    fn on_up(&self, _id: u32, _socket: &LoadSocket) {}

    /// Called until it says the run may start, once every connection is up: what must
    /// happen first (broadcast: every member surely in the room).
    fn prepare(&mut self, _prep: &mut Prep<'_, Self::Conn>, _now: u64) -> bool {
        true
    }

    /// The run starts (its start is in `shared.run_start_ns`, and for a part of a larger run
    /// the whole run's size in `shared.whole`).
    fn begin(&mut self, _shared: &Shared) {}

    /// Closed loop, each turn: answers that came other than as a connection's replies
    /// (broadcast: lines every member has, seen by any thread).
    fn answers(&self, _wire: &mut Wire<'_, Self>, _now: u64) {}

    /// Whether nothing more is awaited once sending has stopped everywhere, with
    /// `in_flight` requests of this thread outstanding.
    fn drained(&self, in_flight: usize, _shared: &Shared) -> bool {
        in_flight == 0
    }

    /// What never came, counted at the end of the run, beyond this thread's requests still
    /// outstanding (losses only known over every thread are counted by one).
    fn lost_at_end(&self, _shared: &Shared) -> u64 {
        0
    }

    /// Adds its own part to the report.
    fn report(_config: &LoadConfig, _tally: &Tally, _report: &mut Report) {}
}

/// Refuses a `--size` too small for a payload that starts with a header.
fn header_fits(config: &LoadConfig, name: &str) -> Result<(), String> {
    if config.size < MIN_SIZE {
        return Err(format!("--size must be at least {MIN_SIZE} bytes for {name}"));
    }
    Ok(())
}
