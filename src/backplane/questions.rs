//! What a server asks the engine about a room, beyond carrying its lines: a name for a member
//! (unique in the room on every server), who is in the room, and the room's last lines for a
//! newcomer. The engine answers later (a round trip), so each question gets a number, and the
//! answer comes back with it ([`News`]); the reactor routes it to the connection that asked.
//!
//! The questions and answers are the same whatever the engine; how each engine keeps names
//! and lines is its own (`redis.rs`, `jetstream.rs`).

/// A line's identity: the server process that published it and its place in that process's
/// sequence for the room (the envelope's two numbers, `envelope.rs`). Unique per line, on
/// every server: a newcomer's history and the live lines it was held are merged by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LineId {
    /// The publishing process.
    pub origin: u64,
    /// Its sequence number in the room, from 1.
    pub sequence: u64,
}

/// A question about a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Question<'a> {
    /// A name for a member: `wanted`, or a guest name (`guest-N`) if `None`; `old`, the
    /// member's name until now, is free again once it has the new one.
    Claim {
        /// The name asked for.
        wanted: Option<&'a str>,
        /// The member's earlier name.
        old: Option<&'a str>,
    },
    /// The names of the room's members, on every server.
    Who,
    /// The room's last lines (as many as it keeps), oldest first.
    History,
}

/// The engine's answer to a [`Question`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The name is the member's now (`taken: false`), or another member's.
    Claimed {
        /// The name (the guest name picked, for a guest).
        name: String,
        /// Another member has it.
        taken: bool,
    },
    /// The room's members' names, sorted.
    Present(Vec<String>),
    /// The room's last lines, oldest first, each with its identity.
    History(Vec<(LineId, Vec<u8>)>),
    /// No answer: the link to the engine was lost before it came, or the engine refused
    /// (the asker falls back on what this server knows).
    Failed,
}

/// What the engine told this server, besides room lines: handed to the reactor in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum News {
    /// The answer to question number `ask`.
    Answer {
        /// The number [`Backplane::ask`](super::Backplane::ask) gave the question.
        ask: u64,
        /// What the engine said.
        answer: Answer,
    },
    /// Members of room `room` on a server that is gone (it died: the engine let their names
    /// expire) left. `tell_others`: this server is the one to tell every server's members
    /// (it found them expired, and nobody else will); otherwise each server tells its own.
    Gone {
        /// The room.
        room: usize,
        /// Their names.
        names: Vec<String>,
        /// Whether the notice is for every server's members (published) or this server's.
        tell_others: bool,
    },
}
