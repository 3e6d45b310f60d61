//! WebSocket frames (RFC 6455 section 5), sans I/O: a frame's header read from the front of
//! some bytes, a server's frame written, masking applied, close codes checked.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! | Masking-key (continued)       |          Payload Data         |
//! +-------------------------------- - - - - - - - - - - - - - - - +
//! ```

/// A continuation of a fragmented message.
pub const CONTINUATION: u8 = 0x0;
/// A text message (UTF-8).
pub const TEXT: u8 = 0x1;
/// A binary message.
pub const BINARY: u8 = 0x2;
/// Close.
pub const CLOSE: u8 = 0x8;
/// Ping.
pub const PING: u8 = 0x9;
/// Pong.
pub const PONG: u8 = 0xA;

/// The first header byte's bits.
const FIN: u8 = 0x80;
/// Set on the first frame of a compressed message (permessage-deflate, RFC 7692).
pub const RSV1: u8 = 0x40;
const RSV2_3: u8 = 0x30;
/// The largest payload of a control frame.
pub const MAX_CONTROL: u64 = 125;

/// A frame's header, as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The last frame of its message.
    pub fin: bool,
    /// RSV1 (compressed, under permessage-deflate).
    pub rsv1: bool,
    /// RSV2 or RSV3: no extension here defines them.
    pub rsv2_3: bool,
    /// What the frame is.
    pub opcode: u8,
    /// The client's masking key (clients must mask; servers must not).
    pub mask: Option<[u8; 4]>,
    /// The payload's length.
    pub length: u64,
    /// The header's own length, in bytes.
    pub size: usize,
}

impl Header {
    /// Whether it is a control frame (close, ping, pong, or a reserved control opcode).
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Reads the header at the front of `input`: `Ok(None)` until all of it is there; `Err` for
/// a length with the top bit set (the RFC forbids it: a protocol error).
pub fn parse_header(input: &[u8]) -> Result<Option<Header>, ()> {
    let [first, second, ..] = *input else { return Ok(None) };
    let (length, mut size) = match second & 0x7f {
        126 => match input.get(2..4) {
            Some(bytes) => (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4),
            None => return Ok(None),
        },
        127 => match input.get(2..10) {
            Some(bytes) => {
                let length = u64::from_be_bytes(bytes.try_into().expect("8 bytes"));
                if length >> 63 != 0 {
                    return Err(());
                }
                (length, 10)
            }
            None => return Ok(None),
        },
        length => (u64::from(length), 2),
    };
    let mask = if second & 0x80 != 0 {
        let Some(key) = input.get(size..size + 4) else { return Ok(None) };
        size += 4;
        Some(key.try_into().expect("4 bytes"))
    } else {
        None
    };
    Ok(Some(Header {
        fin: first & FIN != 0,
        rsv1: first & RSV1 != 0,
        rsv2_3: first & RSV2_3 != 0,
        opcode: first & 0x0f,
        mask,
        length,
        size,
    }))
}

/// Appends the header of a server frame (unmasked) whose payload is `length` bytes.
pub fn write_header(first: u8, length: usize, out: &mut Vec<u8>) {
    if length < 126 {
        out.extend_from_slice(&[first, length as u8]);
    } else if let Ok(length) = u16::try_from(length) {
        out.extend_from_slice(&[first, 126]);
        out.extend_from_slice(&length.to_be_bytes());
    } else {
        out.extend_from_slice(&[first, 127]);
        out.extend_from_slice(&(length as u64).to_be_bytes());
    }
}

/// Appends a whole server frame: `opcode`, final, with `payload`.
pub fn write_frame(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    write_header(FIN | opcode, payload.len(), out);
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and `reason` (the reason cut to fit 125 bytes, on a
/// character boundary).
pub fn write_close(code: u16, reason: &str, out: &mut Vec<u8>) {
    let mut end = reason.len().min(MAX_CONTROL as usize - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    write_frame(CLOSE, &payload, out);
}

/// Unmasks (or masks: the same XOR) `bytes` with `key`, the first byte being byte `offset`
/// of its frame's payload.
pub fn apply_mask(bytes: &mut [u8], key: [u8; 4], offset: usize) {
    let key: [u8; 4] = std::array::from_fn(|index| key[(offset + index) % 4]);
    // Four bytes at a time: byte for byte the same XOR, whatever the byte order.
    let word = u32::from_ne_bytes(key);
    let mut chunks = bytes.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes(chunk.try_into().expect("4 bytes")) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (index, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[index];
    }
}

/// Whether a close code may be sent by an endpoint (RFC 6455 section 7.4): the ones the RFC
/// defines for use on the wire, and 3000-4999 for libraries and applications. 1004, 1005,
/// 1006 and 1015 are reserved and never sent; 1012-1014, registered later, are refused
/// here as the Autobahn suite does.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// Close codes this server sends.
pub mod code {
    /// Going away: the server stops, or the client was idle or did not answer a ping.
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message that is not UTF-8 (or a message that does not inflate).
    pub const INVALID_DATA: u16 = 1007;
    /// Against the server's policy: a client too slow to read what the room sends it.
    pub const POLICY: u16 = 1008;
    /// A message over `--max-frame`.
    pub const TOO_BIG: u16 = 1009;
    /// The server cannot take the client now (its memory for clients is full, too many
    /// connections from one address): try again later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Headers of every length form, masked and not, are read back as written; cut short,
    /// they are "not yet".
    #[test]
    fn headers_round_trip_and_wait_for_their_end() {
        for length in [0usize, 5, 125, 126, 65535, 65536, 1 << 20] {
            let mut out = Vec::new();
            write_header(FIN | BINARY, length, &mut out);
            let header = parse_header(&out).unwrap().unwrap();
            assert_eq!(
                (header.fin, header.opcode, header.length, header.size),
                (true, BINARY, length as u64, out.len())
            );
            assert_eq!(header.mask, None);
            for cut in 0..out.len() {
                assert_eq!(parse_header(&out[..cut]), Ok(None));
            }
        }
        let masked = [0x81, 0x85, 1, 2, 3, 4];
        let header = parse_header(&masked).unwrap().unwrap();
        assert_eq!((header.mask, header.length, header.size), (Some([1, 2, 3, 4]), 5, 6));
        assert_eq!(parse_header(&masked[..5]), Ok(None));
        assert_eq!(parse_header(&[0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0]), Err(()));
    }

    /// Close frames carry their code, and a reason cut on a character boundary.
    #[test]
    fn close_frames_fit_a_control_frame() {
        let mut out = Vec::new();
        write_close(code::GOING_AWAY, &"é".repeat(100), &mut out);
        let header = parse_header(&out).unwrap().unwrap();
        assert!(header.length <= MAX_CONTROL);
        let payload = &out[header.size..];
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1001);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }

    proptest! {
        /// Unmasking in pieces, at any offsets, is the byte-by-byte XOR of the RFC.
        #[test]
        fn masking_in_pieces_is_the_rfc_xor(
            payload in proptest::collection::vec(any::<u8>(), 0..100),
            key in any::<[u8; 4]>(),
            cut in 0usize..100,
        ) {
            let expected: Vec<u8> = payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
            let mut bytes = payload.clone();
            let cut = cut.min(bytes.len());
            let (first, second) = bytes.split_at_mut(cut);
            apply_mask(first, key, 0);
            apply_mask(second, key, cut);
            prop_assert_eq!(bytes, expected);
        }
    }
}
