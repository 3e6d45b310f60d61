//! RESP, the Redis serialization protocol: just what a publisher and a subscriber need, sans
//! I/O (bytes in, frames out), so it is tested without a socket.
//!
//! Commands go out as arrays of bulk strings (`*3\r\n$7\r\nPUBLISH\r\n...`). Replies come
//! back as simple strings (`+PONG`), errors (`-ERR ...`), integers (`:1`, what `PUBLISH`
//! answers), bulk strings and arrays (`*3 message <channel> <payload>` on a subscription).
//! [`parse`] takes the next whole frame from the front of a buffer, or says it is not
//! complete yet: an incomplete frame is a normal state, as with the codecs.

use std::fmt;

/// One reply frame, borrowing its bytes from the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `+OK`, `+PONG`.
    Simple(&'a [u8]),
    /// `-ERR ...`.
    Error(&'a [u8]),
    /// `:N`.
    Integer(i64),
    /// `$N` and N bytes; `None` for the null bulk string `$-1`.
    Bulk(Option<&'a [u8]>),
    /// `*N` and N frames; `None` for the null array `*-1`.
    Array(Option<Vec<Frame<'a>>>),
}

impl Frame<'_> {
    /// The bytes of a simple string or a bulk string.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Frame::Simple(bytes) | Frame::Bulk(Some(bytes)) => Some(bytes),
            _ => None,
        }
    }
}

/// Input that is not RESP, or a frame over the size allowed: the link is reset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RespError {
    /// A byte where a type marker, a number or `\r\n` should be.
    Malformed,
    /// A bulk string or array longer than allowed.
    TooLong,
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::Malformed => f.write_str("malformed RESP"),
            RespError::TooLong => f.write_str("RESP frame over the size allowed"),
        }
    }
}

/// The deepest nesting accepted (a subscription message is depth 2).
const MAX_DEPTH: usize = 4;

/// Takes the next whole frame from the front of `input`: `Ok(Some((frame, used)))`,
/// `Ok(None)` if `input` does not hold a whole frame yet, or an error. `max_bulk` bounds a
/// bulk string's length (and an array's element count), so a broken peer cannot make the
/// caller buffer without end.
pub fn parse(input: &[u8], max_bulk: usize) -> Result<Option<(Frame<'_>, usize)>, RespError> {
    let mut at = 0;
    match frame_at(input, &mut at, max_bulk, 0)? {
        Some(frame) => Ok(Some((frame, at))),
        None => Ok(None),
    }
}

fn frame_at<'a>(
    input: &'a [u8],
    at: &mut usize,
    max_bulk: usize,
    depth: usize,
) -> Result<Option<Frame<'a>>, RespError> {
    if depth > MAX_DEPTH {
        return Err(RespError::Malformed);
    }
    let Some(line) = line_at(input, *at)? else { return Ok(None) };
    let (marker, rest) = (line[0], &line[1..]);
    let after_line = *at + line.len() + 2;
    let frame = match marker {
        b'+' => Frame::Simple(rest),
        b'-' => Frame::Error(rest),
        b':' => Frame::Integer(number(rest)?),
        b'$' => {
            let length = number(rest)?;
            if length < 0 {
                Frame::Bulk(None)
            } else {
                let length = usize::try_from(length).map_err(|_| RespError::TooLong)?;
                if length > max_bulk {
                    return Err(RespError::TooLong);
                }
                let end = after_line + length;
                if input.len() < end + 2 {
                    return Ok(None);
                }
                if &input[end..end + 2] != b"\r\n" {
                    return Err(RespError::Malformed);
                }
                *at = end + 2;
                return Ok(Some(Frame::Bulk(Some(&input[after_line..end]))));
            }
        }
        b'*' => {
            let count = number(rest)?;
            if count < 0 {
                Frame::Array(None)
            } else {
                let count = usize::try_from(count).map_err(|_| RespError::TooLong)?;
                if count > max_bulk {
                    return Err(RespError::TooLong);
                }
                let mut cursor = after_line;
                let mut items = Vec::with_capacity(count.min(8));
                for _ in 0..count {
                    match frame_at(input, &mut cursor, max_bulk, depth + 1)? {
                        Some(item) => items.push(item),
                        None => return Ok(None),
                    }
                }
                *at = cursor;
                return Ok(Some(Frame::Array(Some(items))));
            }
        }
        _ => return Err(RespError::Malformed),
    };
    *at = after_line;
    Ok(Some(frame))
}

/// The line starting at `at`, without its `\r\n`, if it is all there. A type marker line
/// is short: one longer than this is not RESP.
fn line_at(input: &[u8], at: usize) -> Result<Option<&[u8]>, RespError> {
    const MAX_LINE: usize = 64 * 1024;
    let rest = &input[at.min(input.len())..];
    match memchr::memchr(b'\n', rest) {
        Some(0) => Err(RespError::Malformed),
        Some(end) if rest[end - 1] == b'\r' && end >= 2 => Ok(Some(&rest[..end - 1])),
        Some(_) => Err(RespError::Malformed),
        None if rest.len() > MAX_LINE => Err(RespError::TooLong),
        None => Ok(None),
    }
}

fn number(text: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(text).ok().and_then(|text| text.parse().ok()).ok_or(RespError::Malformed)
}

/// Appends a command (an array of bulk strings) to `out`.
pub fn encode_command(out: &mut Vec<u8>, parts: &[&[u8]]) {
    use std::io::Write as _;
    let _ = write!(out, "*{}\r\n", parts.len());
    for part in parts {
        let _ = write!(out, "${}\r\n", part.len());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every frame `bytes` holds, parsed from the front one after another.
    fn parse_all(bytes: &[u8]) -> Vec<Frame<'_>> {
        let mut frames = Vec::new();
        let mut at = 0;
        while let Some((frame, used)) = parse(&bytes[at..], 1 << 20).unwrap() {
            frames.push(frame);
            at += used;
        }
        assert_eq!(at, bytes.len(), "bytes left over");
        frames
    }

    const STREAM: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nroom\r\n:1\r\n:3\r\n+PONG\r\n-ERR no\r\n\
        *3\r\n$7\r\nmessage\r\n$4\r\nroom\r\n$5\r\na\r\nb!\r\n$-1\r\n*-1\r\n$0\r\n\r\n";

    /// The replies a publisher and a subscriber see parse to what they say.
    #[test]
    fn parses_the_replies_pub_sub_needs() {
        let frames = parse_all(STREAM);
        assert_eq!(frames.len(), 8);
        assert_eq!(
            frames[0],
            Frame::Array(Some(vec![
                Frame::Bulk(Some(b"subscribe")),
                Frame::Bulk(Some(b"room")),
                Frame::Integer(1)
            ]))
        );
        assert_eq!(frames[1], Frame::Integer(3));
        assert_eq!(frames[2], Frame::Simple(b"PONG"));
        assert_eq!(frames[3], Frame::Error(b"ERR no"));
        let Frame::Array(Some(message)) = &frames[4] else { panic!("not an array") };
        assert_eq!(message[2].bytes(), Some(&b"a\r\nb!"[..]), "a payload may hold \\r\\n");
        assert_eq!(frames[5], Frame::Bulk(None));
        assert_eq!(frames[6], Frame::Array(None));
        assert_eq!(frames[7], Frame::Bulk(Some(b"")));
    }

    /// Cut anywhere, a stream parses to the same frames: a cut frame is "not yet", never an
    /// error, and nothing is consumed until it is whole.
    #[test]
    fn any_split_parses_the_same() {
        let whole = parse_all(STREAM);
        for cut in 0..=STREAM.len() {
            let mut buffer = STREAM[..cut].to_vec();
            let mut frames: Vec<Frame<'static>> = Vec::new();
            let mut consumed = 0;
            // Parse what the first part holds, then append the rest and go on.
            while let Some((frame, used)) = parse(&buffer[consumed..], 1 << 20).unwrap() {
                frames.push(owned(frame));
                consumed += used;
            }
            buffer.extend_from_slice(&STREAM[cut..]);
            while let Some((frame, used)) = parse(&buffer[consumed..], 1 << 20).unwrap() {
                frames.push(owned(frame));
                consumed += used;
            }
            assert_eq!(consumed, STREAM.len(), "cut at {cut}");
            assert_eq!(frames, whole, "cut at {cut}");
        }
    }

    /// A copy that outlives the buffer (the test compares frames across buffers).
    fn owned(frame: Frame<'_>) -> Frame<'static> {
        let leak = |bytes: &[u8]| -> &'static [u8] { Box::leak(bytes.to_vec().into_boxed_slice()) };
        match frame {
            Frame::Simple(bytes) => Frame::Simple(leak(bytes)),
            Frame::Error(bytes) => Frame::Error(leak(bytes)),
            Frame::Integer(n) => Frame::Integer(n),
            Frame::Bulk(bytes) => Frame::Bulk(bytes.map(leak)),
            Frame::Array(items) => Frame::Array(items.map(|items| items.into_iter().map(owned).collect())),
        }
    }

    /// Garbage and oversize frames are errors, not "wait for more".
    #[test]
    fn refuses_garbage_and_oversize() {
        assert_eq!(parse(b"hello\r\n", 100), Err(RespError::Malformed));
        assert_eq!(parse(b"$x\r\n", 100), Err(RespError::Malformed));
        assert_eq!(parse(b"$5\r\nhelloXX", 100), Err(RespError::Malformed));
        assert_eq!(parse(b"$101\r\n", 100), Err(RespError::TooLong));
        assert_eq!(parse(b"+OK\n", 100), Err(RespError::Malformed));
    }

    /// Commands are arrays of bulk strings, binary-safe.
    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"PUBLISH", b"evloop:room:a", b"x\r\ny"]);
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$13\r\nevloop:room:a\r\n$4\r\nx\r\ny\r\n");
    }
}
