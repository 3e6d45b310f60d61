//! The benchmark baseline: a line-echo server on tokio's `current_thread` runtime, one task
//! per connection. It echoes whole lines only and writes everything complete from one read
//! in one `write_all`, the same batching evloop does, so the comparison is like for like.
//!
//! Run:  cargo run --release --example tokio_echo -- 127.0.0.1:7100
//! Try:  nc 127.0.0.1 7100      (type a line, get it back)
//! Load: evloop-load --target 127.0.0.1:7100 -c 100 -d 10s

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Longest line kept while waiting for its end (like evloop's default --max-frame).
const MAX_LINE: usize = 64 * 1024;

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7100".to_string());
    let addr = addr.parse().map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    let socket =
        if let std::net::SocketAddr::V4(_) = addr { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(65535)?; // evloop's default; the kernel caps both at somaxconn
    println!("echo listening on {}", listener.local_addr()?);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(echo_lines(stream));
            }
            Err(error) => {
                eprintln!("tokio_echo: accept failed: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn echo_lines(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buffer = vec![0; 4096];
    let mut filled = 0;
    loop {
        if filled == buffer.len() {
            if buffer.len() >= MAX_LINE {
                return Ok(()); // a line too long: drop the client
            }
            buffer.resize(buffer.len() * 2, 0);
        }
        let read = stream.read(&mut buffer[filled..]).await?;
        if read == 0 {
            return Ok(());
        }
        filled += read;
        if let Some(last_newline) = buffer[..filled].iter().rposition(|&byte| byte == b'\n') {
            stream.write_all(&buffer[..=last_newline]).await?;
            buffer.copy_within(last_newline + 1..filled, 0);
            filled -= last_newline + 1;
        }
    }
}
