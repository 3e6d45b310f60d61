//! The preamble layer of a connection: the PROXY protocol header (HAProxy's, v1 and v2),
//! sans I/O. It is the first thing on the wire, before a TLS handshake if there is one (a
//! balancer in TCP mode passes TLS through untouched and puts the header in front), and
//! nothing above it hears of the connection until it has come. It is: what a balancer sends before
//! the client's own bytes so the server learns the client's real address. Without it, every
//! peer a server behind a balancer sees is the balancer.
//!
//! - v1: one text line, `PROXY TCP4 <src> <dst> <sport> <dport>\r\n` (or `TCP6`, or
//!   `UNKNOWN`), at most 107 bytes.
//! - v2: a 12-byte signature, a version/command byte, a family/protocol byte, a 2-byte length,
//!   then the addresses (and optional TLVs, skipped).
//!
//! [`parse`] takes the header from the front of the first bytes of a connection: the
//! client's address (`None` for a `LOCAL` or `UNKNOWN` header: a health check, no client),
//! and the bytes it used; `Ok(None)` while the header is not all there yet.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature.
const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, by the specification.
const V1_MAX: usize = 107;
/// The longest v2 header accepted: the 16-byte start and a bounded address block.
const V2_MAX: usize = 16 + 512;

/// A parsed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The client's address, if the header carries one.
    pub source: Option<SocketAddr>,
    /// Bytes the header took from the front of the stream.
    pub length: usize,
}

/// A header that is not the PROXY protocol, or not one this server accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadHeader(pub &'static str);

impl fmt::Display for BadHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad PROXY header: {}", self.0)
    }
}

/// Parses the header at the front of `input`: `Ok(Some(header))`, `Ok(None)` if more bytes
/// are needed, or why it is not a PROXY header.
pub fn parse(input: &[u8]) -> Result<Option<Header>, BadHeader> {
    let prefix = input.len().min(SIGNATURE.len());
    if input[..prefix] == SIGNATURE[..prefix] {
        return if input.len() < SIGNATURE.len() { Ok(None) } else { parse_v2(input) };
    }
    let v1 = b"PROXY ";
    let prefix = input.len().min(v1.len());
    if input[..prefix] == v1[..prefix] {
        return parse_v1(input);
    }
    Err(BadHeader("the connection does not start with one"))
}

fn parse_v1(input: &[u8]) -> Result<Option<Header>, BadHeader> {
    let Some(end) = input.iter().take(V1_MAX).position(|&byte| byte == b'\n') else {
        return if input.len() >= V1_MAX { Err(BadHeader("v1 line too long")) } else { Ok(None) };
    };
    let line = input[..end].strip_suffix(b"\r").ok_or(BadHeader("v1 line without CRLF"))?;
    let line = std::str::from_utf8(line).map_err(|_| BadHeader("v1 line not ASCII"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let source = match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => None,
        ["PROXY", family @ ("TCP4" | "TCP6"), source, _destination, port, _destination_port] => {
            let ip: IpAddr = source.parse().map_err(|_| BadHeader("v1 source address"))?;
            if ip.is_ipv4() != (*family == "TCP4") {
                return Err(BadHeader("v1 address of the wrong family"));
            }
            let port: u16 = port.parse().map_err(|_| BadHeader("v1 source port"))?;
            Some(SocketAddr::new(ip, port))
        }
        _ => return Err(BadHeader("v1 line malformed")),
    };
    Ok(Some(Header { source, length: end + 1 }))
}

fn parse_v2(input: &[u8]) -> Result<Option<Header>, BadHeader> {
    if input.len() < 16 {
        return Ok(None);
    }
    let (version_command, family, length) =
        (input[12], input[13], u16::from_be_bytes([input[14], input[15]]));
    if version_command >> 4 != 2 {
        return Err(BadHeader("v2 version"));
    }
    let total = 16 + usize::from(length);
    if total > V2_MAX {
        return Err(BadHeader("v2 header too long"));
    }
    if input.len() < total {
        return Ok(None);
    }
    let addresses = &input[16..total];
    let source = match (version_command & 0x0f, family) {
        // LOCAL: the balancer's own connection (a health check): no client address.
        (0x0, _) => None,
        (0x1, 0x11) if addresses.len() >= 12 => {
            let ip = Ipv4Addr::new(addresses[0], addresses[1], addresses[2], addresses[3]);
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([addresses[8], addresses[9]])))
        }
        (0x1, 0x21) if addresses.len() >= 36 => {
            let octets: [u8; 16] = addresses[..16].try_into().expect("16 bytes");
            let port = u16::from_be_bytes([addresses[32], addresses[33]]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        // Another family (UNSPEC, Unix) through a PROXY: no IP address to use.
        (0x1, 0x00 | 0x31 | 0x32) => None,
        (0x1, _) => return Err(BadHeader("v2 address block too short or family unknown")),
        _ => return Err(BadHeader("v2 command")),
    };
    Ok(Some(Header { source, length: total }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(source: SocketAddr) -> Vec<u8> {
        let mut header = SIGNATURE.to_vec();
        match source {
            SocketAddr::V4(addr) => {
                header.extend([0x21, 0x11, 0, 12 + 4]);
                header.extend(addr.ip().octets());
                header.extend([127, 0, 0, 1]);
                header.extend(addr.port().to_be_bytes());
                header.extend(7000u16.to_be_bytes());
                header.extend([0x04, 0, 1, 0xaa]); // a TLV, skipped
            }
            SocketAddr::V6(addr) => {
                header.extend([0x21, 0x21, 0, 36]);
                header.extend(addr.ip().octets());
                header.extend(Ipv6Addr::LOCALHOST.octets());
                header.extend(addr.port().to_be_bytes());
                header.extend(7000u16.to_be_bytes());
            }
        }
        header
    }

    /// v1 and v2 headers give the client's address and their length; what follows is the
    /// client's.
    #[test]
    fn parses_v1_and_v2() {
        let input = b"PROXY TCP4 192.0.2.7 127.0.0.1 51234 7000\r\nhello\n";
        let header = parse(input).unwrap().unwrap();
        assert_eq!(header.source, Some("192.0.2.7:51234".parse().unwrap()));
        assert_eq!(&input[header.length..], b"hello\n");
        let header = parse(b"PROXY TCP6 2001:db8::1 ::1 40000 7000\r\n").unwrap().unwrap();
        assert_eq!(header.source, Some("[2001:db8::1]:40000".parse().unwrap()));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().source, None);
        for source in ["198.51.100.9:4242", "[2001:db8::2]:5353"] {
            let source: SocketAddr = source.parse().unwrap();
            let mut input = v2(source);
            let length = input.len();
            input.extend(b"rest");
            let header = parse(&input).unwrap().unwrap();
            assert_eq!((header.source, header.length), (Some(source), length));
        }
    }

    /// Cut anywhere before its end, a header is "not yet", never an error or a wrong answer.
    #[test]
    fn any_cut_waits_for_the_rest() {
        let v1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 51234 7000\r\n".to_vec();
        for whole in [v1, v2("198.51.100.9:4242".parse().unwrap())] {
            for cut in 0..whole.len() {
                assert_eq!(parse(&whole[..cut]), Ok(None), "cut at {cut}");
            }
            assert!(parse(&whole).unwrap().is_some());
        }
    }

    /// Anything else is refused: a client that speaks first, malformed lines, bad versions.
    #[test]
    fn refuses_what_is_not_a_header() {
        for input in [
            &b"hello\n"[..],
            b"PROXY TCP4 not-an-ip 127.0.0.1 1 2\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"\r\n\r\n\0\r\nQUIT\n\x11\x11\0\0",
        ] {
            assert!(parse(input).is_err(), "{:?}", String::from_utf8_lossy(input));
        }
        assert!(parse(&[b'P'; 200]).is_err());
    }
}
