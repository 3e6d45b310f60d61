//! Just enough JSON to read JetStream's answers: a member of an object, a number, a string,
//! an object's keys. Read by hand, not with a JSON crate: the backplane is core, and these
//! answers are small and flat enough. A value is its raw bytes, read further only when asked.

/// The bytes just after the value that starts at `at` (after whitespace), or `None` if it is
/// not well formed.
fn skip_value(json: &[u8], at: usize) -> Option<usize> {
    let at = skip_space(json, at);
    match json.get(at)? {
        b'"' => skip_string(json, at),
        open @ (b'{' | b'[') => {
            let close = if *open == b'{' { b'}' } else { b']' };
            let mut at = skip_space(json, at + 1);
            if json.get(at) == Some(&close) {
                return Some(at + 1);
            }
            loop {
                if close == b'}' {
                    at = skip_string(json, skip_space(json, at))?;
                    at = skip_space(json, at);
                    if json.get(at) != Some(&b':') {
                        return None;
                    }
                    at += 1;
                }
                at = skip_space(json, skip_value(json, at)?);
                match json.get(at)? {
                    b',' => at += 1,
                    byte if *byte == close => return Some(at + 1),
                    _ => return None,
                }
            }
        }
        _ => {
            // A number, true, false or null: up to the next delimiter.
            let end = json[at..]
                .iter()
                .position(|byte| matches!(byte, b',' | b'}' | b']') || byte.is_ascii_whitespace())
                .map_or(json.len(), |length| at + length);
            (end > at).then_some(end)
        }
    }
}

fn skip_space(json: &[u8], mut at: usize) -> usize {
    while json.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

/// The bytes just after the string that starts (with its quote) at `at`.
fn skip_string(json: &[u8], at: usize) -> Option<usize> {
    if json.get(at) != Some(&b'"') {
        return None;
    }
    let mut at = at + 1;
    loop {
        match json.get(at)? {
            b'\\' => at += 2,
            b'"' => return Some(at + 1),
            _ => at += 1,
        }
    }
}

/// The members of the object `json`, as (key, raw value); empty if it is not an object.
pub fn members(json: &[u8]) -> Vec<(String, &[u8])> {
    let mut members = Vec::new();
    let mut at = skip_space(json, 0);
    if json.get(at) != Some(&b'{') {
        return members;
    }
    at = skip_space(json, at + 1);
    while json.get(at) == Some(&b'"') {
        let Some(key_end) = skip_string(json, at) else { return Vec::new() };
        let Some(key) = string(&json[at..key_end]) else { return Vec::new() };
        let colon = skip_space(json, key_end);
        if json.get(colon) != Some(&b':') {
            return Vec::new();
        }
        let start = skip_space(json, colon + 1);
        let Some(end) = skip_value(json, start) else { return Vec::new() };
        members.push((key, &json[start..end]));
        at = skip_space(json, end);
        if json.get(at) == Some(&b',') {
            at = skip_space(json, at + 1);
        }
    }
    members
}

/// The value at `path` (keys of nested objects) in `json`.
pub fn get<'a>(json: &'a [u8], path: &[&str]) -> Option<&'a [u8]> {
    let mut value = json;
    for key in path {
        value = members(value).into_iter().find(|(name, _)| name == key)?.1;
    }
    Some(value)
}

/// A whole number.
pub fn number(raw: &[u8]) -> Option<u64> {
    std::str::from_utf8(raw).ok()?.parse().ok()
}

/// A string's text (escapes read: `\"`, `\\`, `\/`, `\uXXXX` for the basic plane; others
/// kept as their letter).
pub fn string(raw: &[u8]) -> Option<String> {
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    let mut text = String::with_capacity(inner.len());
    let mut bytes = inner.iter().copied();
    let mut plain = Vec::new();
    while let Some(byte) = bytes.next() {
        if byte != b'\\' {
            plain.push(byte);
            continue;
        }
        text.push_str(std::str::from_utf8(&std::mem::take(&mut plain)).ok()?);
        match bytes.next()? {
            b'u' => {
                let hex: Vec<u8> = bytes.by_ref().take(4).collect();
                if hex.len() < 4 {
                    return None;
                }
                let code = u32::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?;
                text.push(char::from_u32(code).unwrap_or('\u{fffd}'));
            }
            b'n' => text.push('\n'),
            b't' => text.push('\t'),
            other => text.push(other as char),
        }
    }
    text.push_str(std::str::from_utf8(&plain).ok()?);
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What JetStream answers reads as it says, nested, escaped and spaced as it comes.
    #[test]
    fn reads_jetstream_answers() {
        let info = br#"{"type":"x","config":{"subjects":["evloop.names.\u003e"],"max_age":3},
            "state":{"messages":2,"subjects":{"evloop.names.lobby.ann":1, "evloop.names.lobby.bob" : 1}},"ok":true}"#;
        let subjects = get(info, &["state", "subjects"]).unwrap();
        let keys: Vec<String> = members(subjects).into_iter().map(|(key, _)| key).collect();
        assert_eq!(keys, ["evloop.names.lobby.ann", "evloop.names.lobby.bob"]);
        assert_eq!(get(info, &["state", "messages"]).and_then(number), Some(2));
        let subject = get(info, &["config", "subjects"]).unwrap();
        assert_eq!(string(&subject[1..subject.len() - 1]), Some("evloop.names.>".to_string()));
        let ack = br#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 1"},"stream":"N","seq":0}"#;
        assert_eq!(get(ack, &["error", "err_code"]).and_then(number), Some(10071));
        assert_eq!(get(br#"{"stream":"N", "seq":7}"#, &["seq"]).and_then(number), Some(7));
        assert_eq!(get(ack, &["nope"]), None);
    }

    /// Anything else reads as nothing, and never panics.
    #[test]
    fn refuses_the_rest() {
        for bad in [&b""[..], b"[1,2]", b"{", b"{\"a\"", b"{\"a\":}", b"{\"a\":\"x}", b"{\"a\" 1}", b"\"x"] {
            assert!(members(bad).is_empty(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(string(br#""a\"b\\c\/d""#), Some("a\"b\\c/d".to_string()));
        assert_eq!(string(b"\"\\u00\""), None);
    }
}
