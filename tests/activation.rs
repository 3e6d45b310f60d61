//! The modern inetd: the server under a real `systemd-socket-activate` (package `systemd`,
//! installed by scripts/test), serving the socket it was handed (`fd:3`) over TCP and UDP,
//! and telling a `NOTIFY_SOCKET` when it is ready and when it stops.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};

use util::ports::{self, Protocol};
use util::{ServerProcess, server_command};

/// `systemd-socket-activate` holding a port on 127.0.0.1 (a datagram socket with
/// `datagram`) for evloop-server `--listen HANDLER=fd:3`; returned with the port once it
/// holds it. It refuses port 0, so it is given a free port, and trusted once its readiness
/// line is out and it holds the port (another port if something else took that one first).
fn activate(datagram: bool, handler: &str) -> (Child, u16) {
    let protocol = if datagram { Protocol::Udp } else { Protocol::Tcp };
    ports::start_on_a_free_port("systemd-socket-activate", protocol, |port| {
        let mut command = Command::new("systemd-socket-activate");
        if datagram {
            command.arg("--datagram");
        }
        let listen = format!("{handler}=fd:3");
        command
            .args([
                "-l",
                &format!("127.0.0.1:{port}"),
                env!("CARGO_BIN_EXE_evloop-server"),
                "--listen",
                &listen,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("systemd-socket-activate (scripts/test installs systemd)");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        if !line.starts_with("Listening on") {
            let _ = child.kill();
            let _ = child.wait();
            let _ = stderr.read_to_string(&mut line);
            return Err(format!("no readiness line; its stderr:\n{line}"));
        }
        ports::wait_held(&mut child, port, protocol)?;
        // Keep reading its (and then our server's) log, so the pipe never fills.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Ok((child, port))
    })
}

fn stop(mut child: Child) {
    // SAFETY: kill() on the PID of our own child has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// TCP: the first client starts the server, which serves it on the inherited socket.
#[test]
fn serves_an_activated_tcp_socket() {
    let (child, port) = activate(false, "echo");
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    client.write_all(b"activated\n").unwrap();
    let mut reply = [0; 10];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"activated\n");
    drop(client);
    stop(child);
}

/// UDP: the first datagram starts the server, which answers it on the inherited socket.
#[test]
fn serves_an_activated_udp_socket() {
    let (child, port) = activate(true, "sum");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    socket.send_to(b"50,40", ("127.0.0.1", port)).unwrap();
    let mut reply = [0; 16];
    let (length, _) = socket.recv_from(&mut reply).unwrap();
    assert_eq!(&reply[..length], b"90");
    stop(child);
}

/// With NOTIFY_SOCKET set: READY=1 once it listens, STOPPING=1 when the drain begins.
#[test]
fn notifies_ready_and_stopping() {
    let path = std::env::temp_dir().join(format!("evloop-notify-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let supervisor = UnixDatagram::bind(&path).unwrap();
    supervisor.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
    let mut command = server_command(&["--listen", "echo=127.0.0.1:0"]);
    command.env("NOTIFY_SOCKET", &path);
    let server = ServerProcess::start(command, 1);
    let mut message = [0; 64];
    let length = supervisor.recv(&mut message).unwrap();
    assert_eq!(&message[..length], b"READY=1");
    server.signal(libc::SIGTERM);
    let length = supervisor.recv(&mut message).unwrap();
    assert_eq!(&message[..length], b"STOPPING=1");
    let (code, _) = server.wait();
    assert_eq!(code, Some(0));
    std::fs::remove_file(path).unwrap();
}

/// Under socket activation (LISTEN_PID is this process), an fd: outside the descriptors
/// passed is a usage error (exit 2); without it, a descriptor that is not an open socket
/// fails to bind (exit 1). Both name it.
#[test]
fn refuses_an_fd_not_passed() {
    // `exec` keeps the shell's PID, so LISTEN_PID=$$ names the server.
    let script =
        format!("LISTEN_PID=$$ LISTEN_FDS=1 exec {} --listen echo=fd:9", env!("CARGO_BIN_EXE_evloop-server"));
    let output = Command::new("sh").args(["-c", &script]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("fd:9 was not passed"), "{stderr}");

    let output = server_command(&["--listen", "echo=fd:9"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen on fd:9"), "{stderr}");
}
