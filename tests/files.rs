//! The `file` handler over real sockets: every reply, traversal attempts, many concurrent
//! downloads verified byte for byte, non-reading downloaders that cost no memory, a file
//! that shrinks mid-transfer, and the start-up refusal without --files.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use evloop::ServerConfig;
use util::{ServerProcess, TestServer, server_command};

/// A fresh directory of this test's own.
fn directory(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("evloop-files-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    dir
}

/// `size` bytes that are not all alike (a byte out of place would show).
fn pattern(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn file_server(dir: &Path) -> TestServer {
    let mut config = ServerConfig::default();
    config.files = Some(dir.to_path_buf());
    TestServer::start_with(config, &["file=127.0.0.1:0"])
}

/// A client of the file protocol: reply lines, and exact byte counts after an OK.
struct FileClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl FileClient {
    fn connect(addr: SocketAddr) -> FileClient {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
        FileClient { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream }
    }

    fn send(&mut self, request: &str) {
        self.writer.write_all(request.as_bytes()).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "connection ended mid-line: {line:?}");
        line.trim_end().to_string()
    }

    /// `GET request` -> the file's bytes, after checking the `OK <size>` line.
    fn get(&mut self, request: &str) -> Vec<u8> {
        self.send(&format!("GET {request}\n"));
        let reply = self.line();
        let size: usize = reply.strip_prefix("OK ").unwrap_or_else(|| panic!("{reply}")).parse().unwrap();
        let mut body = vec![0; size];
        self.reader.read_exact(&mut body).unwrap();
        body
    }
}

/// LIST, GET, GET with an offset, subdirectories, and every ERR; the connection serves on
/// after each, and requests pipelined behind a download are answered after it, in order.
#[test]
fn every_reply() {
    let dir = directory("replies");
    std::fs::write(dir.join("b.txt"), b"hello\n").unwrap();
    std::fs::write(dir.join("a.bin"), pattern(100_000, 1)).unwrap();
    std::fs::write(dir.join("sub/c.txt"), b"nested").unwrap();
    std::fs::write(dir.join("empty"), b"").unwrap();
    let server = file_server(&dir);
    let mut client = FileClient::connect(server.addr());

    client.send("LIST\n");
    assert_eq!(client.line(), "OK 3");
    assert_eq!(client.line(), "100000 a.bin");
    assert_eq!(client.line(), "6 b.txt");
    assert_eq!(client.line(), "0 empty");
    assert_eq!(client.get("a.bin"), pattern(100_000, 1));
    assert_eq!(client.get("a.bin 99990"), &pattern(100_000, 1)[99_990..]);
    assert_eq!(client.get("sub/c.txt"), b"nested");
    assert_eq!(client.get("empty"), b"");
    assert_eq!(client.get("b.txt 6"), b"");
    for (request, reason) in [
        ("GET nope", "ERR no such file"),
        ("GET sub", "ERR not a regular file"),
        ("GET b.txt 7", "ERR offset 7 is past the end (6 bytes)"),
        ("GET b.txt x", "ERR bad offset"),
        ("FETCH b.txt", "ERR expected LIST"),
    ] {
        client.send(&format!("{request}\n"));
        let reply = client.line();
        assert!(reply.starts_with(reason), "{request}: {reply}");
    }
    // Pipelined: a download, then a listing, then another download, in one write.
    client.send("GET a.bin\nLIST\nGET b.txt\n");
    assert_eq!(client.line(), "OK 100000");
    let mut body = vec![0; 100_000];
    client.reader.read_exact(&mut body).unwrap();
    assert_eq!(body, pattern(100_000, 1));
    assert_eq!(client.line(), "OK 3");
    for _ in 0..3 {
        client.line();
    }
    assert_eq!(client.line(), "OK 6");
    assert_eq!(client.line(), "hello");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Every way out of the directory is refused, and the connection keeps serving.
#[test]
fn traversal_attempts_are_refused() {
    let dir = directory("traversal");
    std::fs::write(dir.join("inside.txt"), b"in").unwrap();
    let outside = dir.with_extension("secret");
    std::fs::write(&outside, b"secret").unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("link-out")).unwrap();
    std::os::unix::fs::symlink("../", dir.join("sub/up")).unwrap();
    let server = file_server(&dir);
    let mut client = FileClient::connect(server.addr());
    let name = outside.file_name().unwrap().to_string_lossy().into_owned();
    for request in [
        format!("GET ../{name}"),
        format!("GET {}", outside.display()),
        format!("GET sub/../../{name}"),
        "GET link-out".to_string(),
        format!("GET sub/up/../{name}"),
        "GET /etc/passwd".to_string(),
        "GET ..".to_string(),
    ] {
        client.send(&format!("{request}\n"));
        let reply = client.line();
        assert!(reply.starts_with("ERR "), "{request}: {reply}");
        assert!(!reply.contains("secret"), "{reply}");
    }
    client.send("GET a\0b\n");
    assert!(client.line().starts_with("ERR "));
    assert_eq!(client.get("inside.txt"), b"in", "the connection serves on");
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_file(outside).unwrap();
}

/// 40 clients download a 12 MB file at once; each gets every byte, in order.
#[test]
fn forty_concurrent_downloads_verify() {
    let dir = directory("concurrent");
    let content = pattern(12 * 1024 * 1024, 7);
    std::fs::write(dir.join("big.bin"), &content).unwrap();
    let server = file_server(&dir);
    let addr = server.addr();
    let clients: Vec<_> =
        (0..40).map(|_| std::thread::spawn(move || FileClient::connect(addr).get("big.bin"))).collect();
    for client in clients {
        let body = client.join().unwrap();
        assert!(body == content, "a download differs from the file");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Bytes the kernel holds for `stream` to read.
fn queued(stream: &TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut bytes: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int into `bytes`, which lives for the call; the
    // descriptor is the open socket `stream` owns.
    unsafe { libc::ioctl(stream.as_raw_fd(), libc::FIONREAD, &mut bytes) };
    bytes as usize
}

/// The resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 20 clients ask for a 200 MB file and read nothing: the server holds no file bytes for
/// them (sendfile, as the socket drains), so its memory stays where it was; then one of them
/// reads its file to the end, correct.
#[test]
fn non_reading_downloaders_cost_no_memory() {
    let dir = directory("stalled");
    let file = std::fs::File::create(dir.join("huge.bin")).unwrap();
    file.set_len(200 * 1024 * 1024).unwrap(); // sparse: zeros, and no disk
    let files = dir.display().to_string();
    let server =
        ServerProcess::start(server_command(&["--listen", "file=127.0.0.1:0", "--files", &files]), 1);
    let pid = server.child.id();
    let before = rss_kib(pid);
    let mut stalled: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addrs[0]).unwrap();
            stream.write_all(b"GET huge.bin\n").unwrap();
            stream
        })
        .collect();
    // Wait until the server has pushed at least 64 KiB down each socket (what the kernel
    // holds for the client, FIONREAD): it has been streaming to all twenty.
    let deadline = std::time::Instant::now() + util::READ_TIMEOUT;
    while !stalled.iter().all(|stream| queued(stream) >= 64 * 1024) {
        assert!(std::time::Instant::now() < deadline, "the server is not sending to every client");
        std::thread::sleep(Duration::from_millis(10));
    }
    let after = rss_kib(pid);
    assert!(after < before + 16 * 1024, "RSS grew from {before} KiB to {after} KiB");
    let mut reader = BufReader::new(stalled.remove(0));
    let mut header = String::new();
    reader.read_line(&mut header).unwrap();
    assert_eq!(header, "OK 209715200\n");
    let mut total = 0u64;
    let mut buffer = vec![0u8; 1 << 20];
    while total < 209_715_200 {
        let n = reader.read(&mut buffer).unwrap();
        assert!(n > 0, "ended after {total} bytes");
        assert!(buffer[..n].iter().all(|&byte| byte == 0));
        total += n as u64;
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A file that shrinks while it is being sent ends that connection: the size was promised,
/// and the client sees the stream end short of it rather than bytes that are not the file.
#[test]
fn a_file_that_shrinks_ends_the_connection() {
    let dir = directory("shrink");
    std::fs::write(dir.join("shrinking.bin"), pattern(64 * 1024 * 1024, 3)).unwrap();
    let server = file_server(&dir);
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    stream.write_all(b"GET shrinking.bin\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut header = String::new();
    reader.read_line(&mut header).unwrap();
    assert_eq!(header, "OK 67108864\n");
    std::fs::OpenOptions::new().write(true).open(dir.join("shrinking.bin")).unwrap().set_len(1024).unwrap();
    let mut received = Vec::new();
    reader.read_to_end(&mut received).unwrap_or_default();
    assert!(received.len() < 64 * 1024 * 1024, "got the whole promised size");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Over a Unix socket too (sendfile works there as well).
#[test]
fn downloads_over_a_unix_socket() {
    let dir = directory("unix");
    std::fs::write(dir.join("f.bin"), pattern(1_000_000, 9)).unwrap();
    let path = dir.join("server.sock");
    let mut config = ServerConfig::default();
    config.files = Some(dir.clone());
    let _server = TestServer::start_with(config, &[&format!("file=unix:{}", path.display())]);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    stream.write_all(b"GET f.bin\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut header = String::new();
    reader.read_line(&mut header).unwrap();
    assert_eq!(header, "OK 1000000\n");
    let mut body = vec![0; 1_000_000];
    reader.read_exact(&mut body).unwrap();
    assert!(body == pattern(1_000_000, 9));
    std::fs::remove_dir_all(dir).unwrap();
}

/// A file listener needs --files: exit 2, one line naming it.
#[test]
fn a_file_listener_needs_files() {
    let output = server_command(&["--listen", "file=127.0.0.1:0"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--files"), "{stderr}");
}
