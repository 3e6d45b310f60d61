//! Names and history on Redis, sans I/O: the commands a server sends for a room whose names
//! and lines live on the engine, and what their replies say.
//!
//! Per room `R`:
//!
//! - `evloop:history:R`, a stream: each line a member said (not the notices), with its
//!   envelope (`envelope.rs`: origin, sequence, line), so a newcomer's history and the live
//!   lines can be merged by identity. Written by [`LINE`], one Lua script that `XADD`s the
//!   line (`MAXLEN ~ N`: at least the last N, trimmed by whole nodes) and `PUBLISH`es it:
//!   the stream's order and the channel's are the same, atomically. Read with `XREVRANGE +
//!   - COUNT N` when a member joins.
//! - `evloop:names:R`, a sorted set of the names held, scored by when each expires (ms, the
//!   engine's clock: `TIME`, so servers' clocks do not matter), and `evloop:owners:R`, a
//!   hash naming the process (origin) that holds each. Each server refreshes its own
//!   members' names every `--backplane-ping` ([`REFRESH`]); a name lives three intervals
//!   unrefreshed. Every script that reads the names first prunes the expired ones and
//!   returns them: the server that pruned them is the one that tells the room they left
//!   (nobody else sees them go). A dead server's members are thus told to have left at most
//!   four intervals after it died (20 s by default).
//! - `evloop:guests:R`, the counter guest names are numbered by.
//!
//! A claim is one script ([`CLAIM`]): a name held and not expired is taken; otherwise it is
//! the claimant's, and its earlier name (if this process holds it) is freed, atomically.

use std::sync::OnceLock;

use super::envelope::Envelope;
use super::questions::LineId;
use super::resp::{self, Frame};

/// Adds a line to the room's stream and publishes it, in one step. KEYS: the stream; ARGV:
/// the envelope, the lines to keep, the channel.
pub const LINE: &str = "\
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'l', ARGV[1])
return redis.call('PUBLISH', ARGV[3], ARGV[1])";

/// What every presence script starts with: the engine's time in ms, and the pruning of
/// expired names (KEYS[1] the names, KEYS[2] the owners), which returns them.
const PRUNE: &str = "\
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
for _, name in ipairs(gone) do
  redis.call('ZREM', KEYS[1], name)
  redis.call('HDEL', KEYS[2], name)
end
";

/// Claims a name. KEYS: names, owners, the guest counter; ARGV: the name ('' for a guest
/// name), the claimant's origin, the name's life in ms, its earlier name (''). Returns
/// `{name, taken (0 or 1), {expired names}}`.
const CLAIM: &str = "
local name = ARGV[1]
if name == '' then
  repeat name = 'guest-' .. redis.call('INCR', KEYS[3]) until not redis.call('ZSCORE', KEYS[1], name)
elseif redis.call('ZSCORE', KEYS[1], name) then
  return {name, 1, gone}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), name)
redis.call('HSET', KEYS[2], name, ARGV[2])
if ARGV[4] ~= '' and redis.call('HGET', KEYS[2], ARGV[4]) == ARGV[2] then
  redis.call('ZREM', KEYS[1], ARGV[4])
  redis.call('HDEL', KEYS[2], ARGV[4])
end
return {name, 0, gone}";

/// Who is here. KEYS: names, owners. Returns `{{names}, {expired names}}`.
const WHO: &str = "
return {redis.call('ZRANGE', KEYS[1], 0, -1), gone}";

/// Refreshes a process's names (and takes back one of them that expired meanwhile, if
/// nobody took it). KEYS: names, owners; ARGV: the origin, the life in ms, the names.
/// Returns `{expired names}` (pruned before the refresh: a name of this process among them
/// was late, and is taken back).
const REFRESH: &str = "
for i = 3, #ARGV do
  local owner = redis.call('HGET', KEYS[2], ARGV[i])
  if owner == ARGV[1] or not owner then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[i])
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[1])
  end
end
return gone";

/// Frees a name if the process holds it. KEYS: names, owners; ARGV: the origin, the name.
const RELEASE: &str = "
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then
  redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('HDEL', KEYS[2], ARGV[2])
  return 1
end
return 0";

/// The scripts' text and their SHA-1 (what `EVALSHA` names them by), loaded on every
/// connection of the publisher link before it is up ([`load_scripts`]).
struct Scripts {
    texts: [String; 5],
    shas: [String; 5],
}

const LINE_SCRIPT: usize = 0;
const CLAIM_SCRIPT: usize = 1;
const WHO_SCRIPT: usize = 2;
const REFRESH_SCRIPT: usize = 3;
const RELEASE_SCRIPT: usize = 4;

fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| {
        let texts = [
            LINE.to_string(),
            format!("{PRUNE}{CLAIM}"),
            format!("{PRUNE}{WHO}"),
            format!("{PRUNE}{REFRESH}"),
            RELEASE.to_string(),
        ];
        let shas = texts.clone().map(|text| sha1_smol::Sha1::from(text.as_bytes()).digest().to_string());
        Scripts { texts, shas }
    })
}

/// Appends `SCRIPT LOAD` of every script: as many replies as [`SCRIPT_COUNT`].
pub fn load_scripts(out: &mut Vec<u8>) {
    for text in &scripts().texts {
        resp::encode_command(out, &[b"SCRIPT", b"LOAD", text.as_bytes()]);
    }
}

/// How many commands [`load_scripts`] sends.
pub const SCRIPT_COUNT: usize = 5;

/// A room's keys.
#[derive(Clone, Debug)]
pub struct Keys {
    history: String,
    names: String,
    owners: String,
    guests: String,
}

impl Keys {
    /// The keys of room `name`.
    pub fn of(name: &str) -> Keys {
        Keys {
            history: format!("evloop:history:{name}"),
            names: format!("evloop:names:{name}"),
            owners: format!("evloop:owners:{name}"),
            guests: format!("evloop:guests:{name}"),
        }
    }
}

/// `EVALSHA sha <keys...> <args...>`.
fn evalsha(out: &mut Vec<u8>, script: usize, keys: &[&[u8]], args: &[&[u8]]) {
    let count = keys.len().to_string();
    let mut parts: Vec<&[u8]> = vec![b"EVALSHA", scripts().shas[script].as_bytes(), count.as_bytes()];
    parts.extend_from_slice(keys);
    parts.extend_from_slice(args);
    resp::encode_command(out, &parts);
}

/// A process's origin as the scripts store it.
fn origin_text(origin: u64) -> String {
    format!("{origin:016x}")
}

/// A line a room keeps: stored in its stream and published on `channel`.
pub fn encode_line(out: &mut Vec<u8>, keys: &Keys, channel: &str, envelope: &[u8], keep: usize) {
    let keep = keep.to_string();
    evalsha(out, LINE_SCRIPT, &[keys.history.as_bytes()], &[envelope, keep.as_bytes(), channel.as_bytes()]);
}

/// A claim of `wanted` (a guest name if `None`) by `origin`, freeing `old`.
pub fn encode_claim(
    out: &mut Vec<u8>,
    keys: &Keys,
    (wanted, old): (Option<&str>, Option<&str>),
    origin: u64,
    life_ms: u64,
) {
    let (origin, life) = (origin_text(origin), life_ms.to_string());
    evalsha(
        out,
        CLAIM_SCRIPT,
        &[keys.names.as_bytes(), keys.owners.as_bytes(), keys.guests.as_bytes()],
        &[
            wanted.unwrap_or_default().as_bytes(),
            origin.as_bytes(),
            life.as_bytes(),
            old.unwrap_or_default().as_bytes(),
        ],
    );
}

/// Who is in the room.
pub fn encode_who(out: &mut Vec<u8>, keys: &Keys) {
    evalsha(out, WHO_SCRIPT, &[keys.names.as_bytes(), keys.owners.as_bytes()], &[]);
}

/// The room's last `count` lines, newest first.
pub fn encode_history(out: &mut Vec<u8>, keys: &Keys, count: usize) {
    let count = count.to_string();
    resp::encode_command(
        out,
        &[b"XREVRANGE", keys.history.as_bytes(), b"+", b"-", b"COUNT", count.as_bytes()],
    );
}

/// `origin`'s names, refreshed.
pub fn encode_refresh<'n>(
    out: &mut Vec<u8>,
    keys: &Keys,
    origin: u64,
    life_ms: u64,
    names: impl Iterator<Item = &'n String>,
) {
    let (origin, life) = (origin_text(origin), life_ms.to_string());
    let mut args: Vec<&[u8]> = vec![origin.as_bytes(), life.as_bytes()];
    for name in names {
        args.push(name.as_bytes());
    }
    evalsha(out, REFRESH_SCRIPT, &[keys.names.as_bytes(), keys.owners.as_bytes()], &args);
}

/// `name` freed, if `origin` holds it.
pub fn encode_release(out: &mut Vec<u8>, keys: &Keys, origin: u64, name: &str) {
    let origin = origin_text(origin);
    evalsha(
        out,
        RELEASE_SCRIPT,
        &[keys.names.as_bytes(), keys.owners.as_bytes()],
        &[origin.as_bytes(), name.as_bytes()],
    );
}

/// Bulk strings of an array, as text (a name is ASCII).
fn strings(frame: &Frame<'_>) -> Option<Vec<String>> {
    let Frame::Array(Some(items)) = frame else { return None };
    items.iter().map(|item| item.bytes().map(|bytes| String::from_utf8_lossy(bytes).into_owned())).collect()
}

/// [`CLAIM`]'s reply: the name, whether it is taken, the names that expired.
pub fn claimed(frame: &Frame<'_>) -> Option<(String, bool, Vec<String>)> {
    let Frame::Array(Some(items)) = frame else { return None };
    match items.as_slice() {
        [name, Frame::Integer(taken), gone] => {
            Some((String::from_utf8_lossy(name.bytes()?).into_owned(), *taken != 0, strings(gone)?))
        }
        _ => None,
    }
}

/// [`WHO`]'s reply: the names (sorted here), and those that expired.
pub fn present(frame: &Frame<'_>) -> Option<(Vec<String>, Vec<String>)> {
    let Frame::Array(Some(items)) = frame else { return None };
    match items.as_slice() {
        [names, gone] => {
            let mut names = strings(names)?;
            names.sort_unstable();
            Some((names, strings(gone)?))
        }
        _ => None,
    }
}

/// [`REFRESH`]'s reply: the names that expired.
pub fn expired(frame: &Frame<'_>) -> Option<Vec<String>> {
    strings(frame)
}

/// `XREVRANGE`'s reply, oldest first: each entry's line and identity (entries that are not
/// an envelope under `l` are skipped).
pub fn history(frame: &Frame<'_>) -> Option<Vec<(LineId, Vec<u8>)>> {
    let Frame::Array(Some(entries)) = frame else { return None };
    let mut lines = Vec::with_capacity(entries.len());
    for entry in entries.iter().rev() {
        let Frame::Array(Some(parts)) = entry else { return None };
        let [_, Frame::Array(Some(fields))] = parts.as_slice() else { return None };
        let value = fields.chunks(2).find(|pair| pair[0].bytes() == Some(b"l")).and_then(|pair| pair.get(1));
        if let Some(envelope) = value.and_then(Frame::bytes).and_then(Envelope::decode) {
            let id = LineId { origin: envelope.origin, sequence: envelope.sequence };
            lines.push((id, envelope.line.to_vec()));
        }
    }
    Some(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Frame<'_> {
        resp::parse(bytes, 1 << 20).unwrap().unwrap().0
    }

    /// Scripts are called by their SHA-1, which `SCRIPT LOAD` answers with.
    #[test]
    fn scripts_are_named_by_their_sha1() {
        let mut out = Vec::new();
        encode_who(&mut out, &Keys::of("lobby"));
        let sha = &scripts().shas[WHO_SCRIPT];
        assert_eq!(sha.len(), 40);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(&format!("*5\r\n$7\r\nEVALSHA\r\n$40\r\n{sha}\r\n$1\r\n2\r\n")), "{text}");
        assert!(text.contains("evloop:names:lobby") && text.contains("evloop:owners:lobby"));
    }

    /// The replies read as the scripts write them.
    #[test]
    fn reads_the_replies() {
        let claim = parse(b"*3\r\n$7\r\nguest-3\r\n:0\r\n*1\r\n$3\r\nold\r\n");
        assert_eq!(claimed(&claim), Some(("guest-3".to_string(), false, vec!["old".to_string()])));
        let who = parse(b"*2\r\n*2\r\n$3\r\nbob\r\n$3\r\nann\r\n*0\r\n");
        assert_eq!(present(&who), Some((vec!["ann".to_string(), "bob".to_string()], vec![])));
        let mut envelope = Vec::new();
        Envelope { origin: 7, sequence: 2, line: b"ann: hi" }.encode(&mut envelope);
        let mut range = b"*2\r\n*2\r\n$3\r\n2-0\r\n*2\r\n$1\r\nl\r\n".to_vec();
        range.extend_from_slice(format!("${}\r\n", envelope.len()).as_bytes());
        range.extend_from_slice(&envelope);
        range.extend_from_slice(b"\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nx\r\n$1\r\ny\r\n");
        let lines = history(&parse(&range)).unwrap();
        assert_eq!(
            lines,
            [(LineId { origin: 7, sequence: 2 }, b"ann: hi".to_vec())],
            "oldest first; foreign skipped"
        );
    }
}
