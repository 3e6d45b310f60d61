//! `metrics`: a Prometheus scrape endpoint on the same reactor. HTTP/1.1 `GET /metrics`
//! answers the server's counters in the Prometheus text format; any other path gets a 404,
//! any other method a 405; one request per connection (`Connection: close`).
//!
//! The handler reads the request (with `httparse`, no HTTP server crate) and decides the
//! answer; the counters are the reactor's, so for a scrape it states the intent
//! ([`Outbox::reply_metrics`]) and the reactor renders them. It is served with the `raw`
//! codec: each read is appended here until the request's head is complete.

use std::collections::HashMap;
use std::io::Write as _;

use crate::handlers::{ConnId, Handler, Outbox, Peer};

/// The longest request head accepted; a longer one gets 431 and the connection closes.
const MAX_REQUEST: usize = 8 * 1024;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Request bytes of connections whose head is not complete yet.
    pending: HashMap<ConnId, Vec<u8>>,
}

impl Metrics {
    fn respond(status: &str, extra: &str, body: &str, out: &mut Outbox) {
        out.reply_with(|buf| {
            let _ = write!(
                buf,
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
                body.len()
            );
        });
        out.close();
    }
}

impl Handler for Metrics {
    fn on_message(&mut self, from: Peer<'_>, message: &[u8], out: &mut Outbox) {
        let buffer = self.pending.entry(from.id).or_default();
        buffer.extend_from_slice(message);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(buffer) {
            Ok(httparse::Status::Partial) if buffer.len() <= MAX_REQUEST => return,
            Ok(httparse::Status::Partial) => {
                Metrics::respond("431 Request Header Fields Too Large", "", "too large\n", out)
            }
            Err(_) => Metrics::respond("400 Bad Request", "", "bad request\n", out),
            Ok(httparse::Status::Complete(_)) => match (request.method, request.path) {
                (Some("GET"), Some("/metrics")) => {
                    out.reply_metrics();
                    out.close();
                }
                (Some("GET" | "HEAD"), _) => {
                    Metrics::respond("404 Not Found", "", "not found: try /metrics\n", out)
                }
                _ => {
                    Metrics::respond("405 Method Not Allowed", "Allow: GET\r\n", "method not allowed\n", out)
                }
            },
        }
        self.pending.remove(&from.id);
    }

    fn on_disconnect(&mut self, peer: Peer<'_>, _out: &mut Outbox) {
        self.pending.remove(&peer.id);
    }

    /// HTTP runs over a stream.
    fn needs_connections(&self) -> bool {
        true
    }
}
