//! A WebSocket client by hand, for the tests: the opening request, frames masked or not (a
//! test may send what no library would), and frames read back one by one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::READ_TIMEOUT;

/// A frame as read.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A close frame's code.
    #[track_caller]
    pub fn close_code(&self) -> u16 {
        assert_eq!(self.opcode, 0x8, "a close frame: {self:?}");
        u16::from_be_bytes([self.payload[0], self.payload[1]])
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.payload.clone()).expect("UTF-8")
    }
}

pub struct WsClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// The response to `request`: the status line and the headers, and the connection.
pub fn http(addr: SocketAddr, request: &str) -> (String, Vec<String>, BufReader<TcpStream>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).expect("a status line");
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a header");
        if line.trim().is_empty() {
            break;
        }
        headers.push(line.trim().to_string());
    }
    (status.trim().to_string(), headers, reader)
}

/// An opening request for `path`, with `extra` headers.
pub fn upgrade_request(addr: SocketAddr, path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

impl WsClient {
    /// Opens a WebSocket to `addr`; panics unless the server switches.
    #[track_caller]
    pub fn connect(addr: SocketAddr) -> WsClient {
        WsClient::connect_path(addr, "/")
    }

    /// Opens a WebSocket to `path` on `addr`; panics unless the server switches.
    #[track_caller]
    pub fn connect_path(addr: SocketAddr, path: &str) -> WsClient {
        let (status, headers, reader) = http(addr, &upgrade_request(addr, path, ""));
        assert_eq!(status, "HTTP/1.1 101 Switching Protocols", "{headers:?}");
        assert!(
            headers.contains(&"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_string()),
            "{headers:?}"
        );
        let writer = reader.get_ref().try_clone().unwrap();
        WsClient { reader, writer }
    }

    /// A client on a stream already switched (a second handle on another's socket).
    pub fn from_stream(stream: TcpStream) -> WsClient {
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        WsClient { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream }
    }

    /// Sends one frame: `first` is the first header byte (FIN, RSV, opcode); masked as a
    /// client must, unless `masked` is false.
    pub fn send_frame(&mut self, first: u8, payload: &[u8], masked: bool) {
        self.send_raw(&frame(first, payload, masked));
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    /// Sends a whole text message in one frame.
    pub fn send_text(&mut self, text: &str) {
        self.send_frame(0x81, text.as_bytes(), true);
    }

    /// The next frame.
    #[track_caller]
    pub fn frame(&mut self) -> Frame {
        let mut head = [0u8; 2];
        self.reader.read_exact(&mut head).expect("a frame header");
        assert_eq!(head[1] & 0x80, 0, "a server's frame is not masked");
        let length = match head[1] & 0x7f {
            126 => {
                let mut bytes = [0u8; 2];
                self.reader.read_exact(&mut bytes).unwrap();
                u64::from(u16::from_be_bytes(bytes))
            }
            127 => {
                let mut bytes = [0u8; 8];
                self.reader.read_exact(&mut bytes).unwrap();
                u64::from_be_bytes(bytes)
            }
            length => u64::from(length),
        };
        let mut payload = vec![0; length as usize];
        self.reader.read_exact(&mut payload).expect("a frame's payload");
        Frame { fin: head[0] & 0x80 != 0, opcode: head[0] & 0x0f, payload }
    }

    /// The next text message (in one frame).
    #[track_caller]
    pub fn text(&mut self) -> String {
        let frame = self.frame();
        assert_eq!((frame.fin, frame.opcode), (true, 0x1), "a text frame: {frame:?}");
        frame.text()
    }

    /// The next text message as JSON (the console's messages).
    #[track_caller]
    pub fn json(&mut self) -> serde_json::Value {
        serde_json::from_str(&self.text()).expect("a JSON object")
    }

    /// The next JSON message whose `type` is `kind`, skipping others (the console's).
    #[track_caller]
    pub fn next_of(&mut self, kind: &str) -> serde_json::Value {
        loop {
            let message = self.json();
            if message["type"] == kind {
                return message;
            }
        }
    }

    /// Asserts the next frame is a close with `code`, and that the server then closes.
    #[track_caller]
    pub fn expect_close(&mut self, code: u16) {
        let frame = self.frame();
        assert_eq!(
            frame.close_code(),
            code,
            "close reason {:?}",
            String::from_utf8_lossy(&frame.payload[2..])
        );
        self.expect_end();
    }

    /// Asserts the server closes the connection (after anything already read).
    #[track_caller]
    pub fn expect_end(&mut self) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "bytes after the close: {rest:?}"),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(error) => panic!("expected the connection to end: {error}"),
        }
    }

    /// Whether a frame arrives within `wait` (nothing is consumed).
    pub fn has_data_within(&mut self, wait: std::time::Duration) -> bool {
        self.writer.set_read_timeout(Some(wait)).unwrap();
        let ready = self.reader.fill_buf().is_ok_and(|buffered| !buffered.is_empty());
        self.writer.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        ready
    }

    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }
}

/// One frame's bytes: `first` is the first header byte (FIN, RSV, opcode); masked as a
/// client must, unless `masked` is false.
pub fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut frame = vec![first];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        length if length < 126 => frame.push(mask_bit | length as u8),
        length if length <= 0xffff => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(length as u16).to_be_bytes());
        }
        length => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(length as u64).to_be_bytes());
        }
    }
    let key = [0x37, 0xfa, 0x21, 0x3d];
    if masked {
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(index, byte)| byte ^ key[index % 4]));
    } else {
        frame.extend_from_slice(payload);
    }
    frame
}

/// A whole text message in one masked frame, as a client sends it (to send several in one
/// write).
pub fn masked_text(text: &str) -> Vec<u8> {
    frame(0x81, text.as_bytes(), true)
}
