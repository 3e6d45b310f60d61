//! The opening handshake (RFC 6455 section 4), sans I/O: an HTTP/1.1 request head in, the
//! answer out. An Upgrade on any path becomes a WebSocket; without one, `GET /` gets the
//! chat page (built into the binary), other paths 404 and other methods 405, and the
//! connection closes after the answer.
//!
//! The request is parsed with `httparse`; the accept key is SHA-1 of the client's key and the
//! RFC's GUID, in base64.

use super::Options;

/// The longest request head accepted; a longer one is answered 431.
pub const MAX_HEAD: usize = 8 * 1024;

/// A page a `ws` listener serves on `GET /` without an upgrade: self-contained, it opens its
/// WebSocket at the same origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// The HTML.
    pub html: &'static str,
    /// What it is, for the 404 of other paths ("the chat page is at /").
    pub name: &'static str,
}

impl Page {
    /// The chat page: it joins the listener's room.
    pub const CHAT: Page = Page { html: include_str!("page.html"), name: "chat page" };
}

impl Default for Page {
    fn default() -> Page {
        Page::CHAT
    }
}

/// The GUID the accept key is derived with (RFC 6455 section 1.3).
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What to answer a request head with.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Switch to WebSocket: send `response`; `deflate` if permessage-deflate was agreed.
    Upgrade {
        /// The 101 response.
        response: Vec<u8>,
        /// permessage-deflate agreed (no context takeover either way): the window the
        /// server compresses with, in bits (15 unless the client asked for less).
        deflate: Option<u8>,
    },
    /// An HTTP answer, after which the connection closes (`reason` is for the log).
    Respond {
        /// The whole response.
        response: Vec<u8>,
        /// Why, in a few words.
        reason: &'static str,
    },
}

/// The answer to the request head `head` (ending with its blank line).
pub fn answer(head: &[u8], options: &Options) -> Answer {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(head), Ok(httparse::Status::Complete(_))) {
        return respond(400, "Bad Request", "", "bad request\n", "a malformed request");
    }
    let (method, path) = (request.method.unwrap_or(""), request.path.unwrap_or(""));
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| String::from_utf8_lossy(header.value).into_owned())
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|value| value.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") {
        return match (method, path) {
            ("GET", "/") => page(options.page, false),
            ("HEAD", "/") => page(options.page, true),
            ("GET" | "HEAD", _) => respond(
                404,
                "Not Found",
                "",
                &format!("not found: the {} is at /\n", options.page.name),
                "not found",
            ),
            _ => respond(
                405,
                "Method Not Allowed",
                "Allow: GET\r\n",
                "method not allowed\n",
                "a method not allowed",
            ),
        };
    }
    if method != "GET" {
        return respond(
            405,
            "Method Not Allowed",
            "Allow: GET\r\n",
            "a WebSocket opens with GET\n",
            "an upgrade not by GET",
        );
    }
    if !has_token("connection", "upgrade") {
        return respond(400, "Bad Request", "", "Connection: Upgrade is missing\n", "no Connection: Upgrade");
    }
    if header("sec-websocket-version").as_deref().map(str::trim) != Some("13") {
        return respond(
            426,
            "Upgrade Required",
            "Sec-WebSocket-Version: 13\r\n",
            "WebSocket version 13 only\n",
            "a WebSocket version other than 13",
        );
    }
    let Some(key) = header("sec-websocket-key").map(|key| key.trim().to_string()).filter(|key| is_key(key))
    else {
        return respond(
            400,
            "Bad Request",
            "",
            "a Sec-WebSocket-Key of 16 bytes is missing\n",
            "no valid key",
        );
    };
    if let Some(origin) = header("origin") {
        if !options.origin_allowed(origin.trim(), header("host").as_deref().unwrap_or("")) {
            return respond(
                403,
                "Forbidden",
                "",
                "this origin may not open a WebSocket here\n",
                "origin refused",
            );
        }
    }
    // The first offer it can honour, in the client's order of preference.
    let deflate = if options.deflate {
        header_values(&request, "sec-websocket-extensions").iter().find_map(|offer| deflate_window(offer))
    } else {
        None
    };
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        accept_key(&key)
    );
    if let Some(window) = &deflate {
        response.push_str("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover");
        if let Some(bits) = window.asked {
            response.push_str(&format!("; server_max_window_bits={bits}"));
        }
        response.push_str("\r\n");
    }
    response.push_str("\r\n");
    Answer::Upgrade {
        response: response.into_bytes(),
        deflate: deflate.map(|window| window.asked.unwrap_or(15)),
    }
}

/// The server's window under an agreed permessage-deflate.
struct Window {
    /// The bits the client asked for (`server_max_window_bits=N`), if it asked.
    asked: Option<u8>,
}

/// Every value of header `name` (it may be repeated).
fn header_values(request: &httparse::Request<'_, '_>, name: &str) -> Vec<String> {
    request
        .headers
        .iter()
        .filter(|header| header.name.eq_ignore_ascii_case(name))
        .flat_map(|header| {
            String::from_utf8_lossy(header.value)
                .split(',')
                .map(|offer| offer.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The server's window if `offer` (one extension offer) is permessage-deflate with
/// parameters this server can honour: it compresses each message on its own (no context
/// takeover) with the window the client asks for, down to 512 bytes (9 bits: zlib has no
/// smaller), and inflates any window.
fn deflate_window(offer: &str) -> Option<Window> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next().is_some_and(|name| name.eq_ignore_ascii_case("permessage-deflate")) {
        return None;
    }
    let mut window = Window { asked: None };
    let mut seen = Vec::new();
    for parameter in parts {
        let (name, value) = match parameter.split_once('=') {
            Some((name, value)) => (name.trim().to_ascii_lowercase(), Some(value.trim().trim_matches('"'))),
            None => (parameter.to_ascii_lowercase(), None),
        };
        if seen.contains(&name) {
            return None; // a parameter twice: the offer is invalid (RFC 7692 7.1)
        }
        let bits = |value: Option<&str>| {
            value.and_then(|bits| bits.parse::<u8>().ok()).filter(|bits| (8..=15).contains(bits))
        };
        match (name.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", value) => {
                bits(value)?;
            }
            ("server_max_window_bits", value) => {
                let asked = bits(value)?;
                if !super::deflate_windows().contains(&asked) {
                    return None;
                }
                window.asked = Some(asked);
            }
            _ => return None,
        }
        seen.push(name);
    }
    Some(window)
}

/// The listener's page (`head_only`: its headers alone, for HEAD).
fn page(page: Page, head_only: bool) -> Answer {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        page.html.len()
    );
    let mut response = head.into_bytes();
    if !head_only {
        response.extend_from_slice(page.html.as_bytes());
    }
    Answer::Respond { response, reason: "the page served" }
}

/// A short plain-text HTTP answer that closes the connection.
pub fn respond(status: u16, text: &str, extra: &str, body: &str, reason: &'static str) -> Answer {
    let response = format!(
        "HTTP/1.1 {status} {text}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    Answer::Respond { response: response.into_bytes(), reason }
}

/// Whether `key` is a base64 encoding of 16 bytes, as the RFC requires.
fn is_key(key: &str) -> bool {
    key.len() == 24
        && key.ends_with("==")
        && key[..22].bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'+' || byte == b'/')
}

/// `Sec-WebSocket-Accept` for `key`: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(GUID);
    base64(&sha1.digest().bytes())
}

/// Standard base64, padded: enough for an accept key (and for the loader's own key).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |bits, (index, &byte)| bits | u32::from(byte) << (16 - 8 * index));
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(ALPHABET[(bits >> (18 - 6 * index) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options::default()
    }

    fn upgrade(extra: &str) -> Vec<u8> {
        format!(
            "GET /chat HTTP/1.1\r\nHost: 127.0.0.1:7080\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    fn status(answer: &Answer) -> String {
        let response = match answer {
            Answer::Upgrade { response, .. } | Answer::Respond { response, .. } => response,
        };
        String::from_utf8_lossy(response).lines().next().unwrap_or_default().to_string()
    }

    /// The RFC's own example key gives the RFC's accept key.
    #[test]
    fn accept_key_is_the_rfcs() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }

    /// An upgrade on any path switches; the page, 404 and 405 without one.
    #[test]
    fn answers_each_kind_of_request() {
        let answer = answer(&upgrade(""), &options());
        assert_eq!(status(&answer), "HTTP/1.1 101 Switching Protocols");
        let Answer::Upgrade { response, deflate: None } = answer else { panic!("{answer:?}") };
        assert!(
            String::from_utf8(response)
                .unwrap()
                .contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n")
        );
        let page = super::answer(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &options());
        assert_eq!(status(&page), "HTTP/1.1 200 OK");
        assert_eq!(
            status(&super::answer(b"GET /nope HTTP/1.1\r\n\r\n", &options())),
            "HTTP/1.1 404 Not Found"
        );
        assert_eq!(
            status(&super::answer(b"POST / HTTP/1.1\r\n\r\n", &options())),
            "HTTP/1.1 405 Method Not Allowed"
        );
        assert_eq!(status(&super::answer(b"\x01\x02\r\n\r\n", &options())), "HTTP/1.1 400 Bad Request");
    }

    /// Wrong versions, keys and origins are refused with the status that says why.
    #[test]
    fn refuses_bad_upgrades() {
        let wrong_version = String::from_utf8(upgrade("")).unwrap().replace("Version: 13", "Version: 8");
        assert_eq!(status(&answer(wrong_version.as_bytes(), &options())), "HTTP/1.1 426 Upgrade Required");
        let bad_key = String::from_utf8(upgrade("")).unwrap().replace("dGhlIHNhbXBsZSBub25jZQ==", "short");
        assert_eq!(status(&answer(bad_key.as_bytes(), &options())), "HTTP/1.1 400 Bad Request");
        assert_eq!(
            status(&answer(&upgrade("Origin: http://127.0.0.1:7080\r\n"), &options())),
            "HTTP/1.1 101 Switching Protocols"
        );
        assert_eq!(
            status(&answer(&upgrade("Origin: https://evil.example\r\n"), &options())),
            "HTTP/1.1 403 Forbidden"
        );
        let mut wide = options();
        wide.origins = super::super::Origins::List(vec!["https://evil.example".to_string()]);
        assert_eq!(
            status(&answer(&upgrade("Origin: https://evil.example\r\n"), &wide)),
            "HTTP/1.1 101 Switching Protocols"
        );
        wide.origins = super::super::Origins::Any;
        assert_eq!(status(&answer(&upgrade("Origin: null\r\n"), &wide)), "HTTP/1.1 101 Switching Protocols");
    }

    /// permessage-deflate is agreed when offered with parameters the server can honour, at
    /// the window the client asks for.
    #[test]
    fn agrees_deflate_when_it_can() {
        let mut options = options();
        options.deflate = true;
        for (offer, agreed) in [
            ("permessage-deflate; client_max_window_bits", Some(15)),
            ("permessage-deflate", Some(15)),
            ("x-webkit-deflate-frame, permessage-deflate; server_no_context_takeover", Some(15)),
            ("permessage-deflate; server_max_window_bits=10", Some(10)),
            ("permessage-deflate; server_max_window_bits=8, permessage-deflate", Some(15)),
            ("permessage-deflate; bogus", None),
            ("permessage-deflate; client_max_window_bits=16", None),
        ] {
            let Answer::Upgrade { deflate, response } =
                answer(&upgrade(&format!("Sec-WebSocket-Extensions: {offer}\r\n")), &options)
            else {
                panic!("{offer}")
            };
            assert_eq!(deflate, agreed, "{offer}");
            assert_eq!(String::from_utf8(response).unwrap().contains("permessage-deflate"), agreed.is_some());
        }
    }
}
