//! The client's side of `ws`, for the load generator: the opening request and its answer,
//! frames masked as a client must send them, and the server's frames read back.
//!
//! Reading is stateless (a `Copy` decoder like the other codecs'): a server's data frame is
//! one whole message here, its payload a slice of the input, and control frames are passed
//! over. A fragmented message from a server is refused as a `FrameError`: the servers this
//! drives (evloop, the Node `ws` package) send each message in one frame.

use super::frame::{self, CONTINUATION};
use crate::codec::FrameError;

/// A client's opening request for `path` on `host`, with `key` (base64 of 16 bytes).
#[cfg(feature = "load")]
pub fn request(host: &str, path: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Masks the frame a server would send (`Codec::Ws`'s framing, written at `start` of
/// `out`) as a client must send it: the mask bit set, `mask` after the header, the payload
/// XORed with it.
#[cfg(feature = "load")]
pub fn mask_frame(out: &mut Vec<u8>, start: usize, mask: [u8; 4]) {
    let header = match out[start + 1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    out[start + 1] |= 0x80;
    let payload = start + header;
    out.splice(payload..payload, mask);
    frame::apply_mask(&mut out[payload + 4..], mask, 0);
}

/// The status line of the server's answer to the opening request, and the length of the
/// whole answer, once it has all come (its blank line).
#[cfg(feature = "load")]
pub fn response_head(input: &[u8]) -> Option<(&[u8], usize)> {
    let end = input.windows(4).position(|window| window == b"\r\n\r\n")? + 4;
    let status = input[..end].split(|&byte| byte == b'\r').next().unwrap_or_default();
    Some((status, end))
}

/// Whether a status line says the server switched to WebSocket.
#[cfg(feature = "load")]
pub fn switched(status: &[u8]) -> bool {
    status.starts_with(b"HTTP/1.1 101")
}

/// Reads a server's frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientDecoder;

impl ClientDecoder {
    /// See [`crate::codec::Decoder::decode`]: the next data frame's payload; control
    /// frames are passed over.
    pub fn decode<'a>(
        &mut self,
        input: &mut &'a [u8],
        max_frame: usize,
    ) -> Result<Option<&'a [u8]>, FrameError> {
        loop {
            let header = match frame::parse_header(input) {
                Ok(Some(header)) => header,
                Ok(None) => return Ok(None),
                Err(()) => return Err(FrameError::Protocol("a WebSocket frame length over 2^63")),
            };
            if header.length > max_frame as u64 {
                // Not kept: everything read so far is dropped, and the stream with it.
                *input = &input[input.len()..];
                return Err(FrameError::FrameTooLong { max: max_frame });
            }
            let end = header.size + header.length as usize;
            if input.len() < end {
                return Ok(None);
            }
            let payload = &input[header.size..end];
            *input = &input[end..];
            if header.is_control() {
                continue;
            }
            if header.mask.is_some() || !header.fin || header.opcode == CONTINUATION {
                return Err(FrameError::Protocol("a masked or fragmented WebSocket frame from a server"));
            }
            return Ok(Some(payload));
        }
    }
}
