//! The fan-out baseline of examples/bench.rs: a chat room on raw mio and nothing else, what
//! evloop's `broadcast` does with none of its machinery. Each line a member sends goes to
//! every other member as `<sender-addr>: <line>`, framed once per read and written straight
//! from that one buffer to every member whose socket takes it (only what a socket refuses is
//! copied, to wait for `WRITABLE`). The kernel's copy per member is the floor.
//!
//! Run:  cargo run --release --example mio_fanout -- 127.0.0.1:7200
//! Load: evloop-load --workload broadcast --target 127.0.0.1:7200 -c 100 --active 1 --pipeline 8

use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);
/// A member whose unsent lines pass this is dropped, so memory stays bounded.
const MAX_BACKLOG: usize = 64 << 20;

struct Member {
    stream: TcpStream,
    /// `<addr>: `, the prefix of its lines.
    prefix: Vec<u8>,
    /// An unterminated line.
    input: Vec<u8>,
    /// What its socket did not take yet.
    backlog: Vec<u8>,
}

fn main() -> io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7200".to_string());
    evloop::raise_file_limit()?; // the soft limit (often 1,024) up to the hard one
    let mut listener = TcpListener::bind(addr.parse().map_err(io::Error::other)?)?;
    println!("broadcast listening on {}", listener.local_addr()?);
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let (mut events, mut members, mut buffer, mut lines) =
        (Events::with_capacity(1024), Slab::<Member>::new(), vec![0; 64 * 1024], Vec::new());
    loop {
        poll.poll(&mut events, None)?;
        for event in &events {
            if event.token() == LISTENER {
                while let Ok((mut stream, peer)) = listener.accept() {
                    let entry = members.vacant_entry();
                    poll.registry().register(
                        &mut stream,
                        Token(entry.key()),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    stream.set_nodelay(true)?;
                    let prefix = format!("{peer}: ").into_bytes();
                    entry.insert(Member { stream, prefix, input: Vec::new(), backlog: Vec::new() });
                }
                continue;
            }
            let key = event.token().0;
            let Some(member) = members.get_mut(key) else { continue };
            let mut gone =
                event.is_writable() && write_some(&mut member.stream, &mut member.backlog).is_err();
            lines.clear();
            while !gone {
                match member.stream.read(&mut buffer) {
                    Ok(0) => gone = true,
                    Ok(n) => {
                        member.input.extend_from_slice(&buffer[..n]);
                        let end = member.input.iter().rposition(|&byte| byte == b'\n').map_or(0, |at| at + 1);
                        for line in member.input[..end].split_inclusive(|&byte| byte == b'\n') {
                            lines.extend_from_slice(&member.prefix);
                            lines.extend_from_slice(line);
                        }
                        member.input.drain(..end);
                        if n < buffer.len() {
                            break;
                        }
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => gone = true,
                }
            }
            let mut dropped = Vec::new();
            if !lines.is_empty() {
                for (other, member) in members.iter_mut().filter(|(other, _)| *other != key) {
                    if member.backlog.is_empty() {
                        let written = write_from(&mut member.stream, &lines).unwrap_or(0);
                        member.backlog.extend_from_slice(&lines[written..]);
                    } else {
                        member.backlog.extend_from_slice(&lines);
                    }
                    if member.backlog.len() > MAX_BACKLOG {
                        dropped.push(other);
                    }
                }
            }
            dropped.extend(gone.then_some(key));
            for key in dropped {
                let mut member = members.remove(key);
                poll.registry().deregister(&mut member.stream)?;
            }
        }
    }
}

/// Writes what `stream` takes of `bytes`; returns how much.
fn write_from(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(n) => written += n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) => return Err(error),
        }
    }
    Ok(written)
}

/// Writes what `stream` takes of its backlog, keeping the rest.
fn write_some(stream: &mut TcpStream, backlog: &mut Vec<u8>) -> io::Result<()> {
    let written = write_from(stream, backlog)?;
    backlog.drain(..written);
    Ok(())
}
