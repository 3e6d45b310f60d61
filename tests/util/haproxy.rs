//! HAProxy in TCP mode in front of evloop servers, with `send-proxy-v2`, or with a
//! configuration of the test's own: the real balancer (scripts/test installs it), on a
//! private port, killed on drop.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// HAProxy in front of `backends`, on a port of its own; killed on drop.
pub struct Haproxy {
    child: Child,
    port: u16,
    config: std::path::PathBuf,
}

impl Haproxy {
    pub fn start(name: &str, backends: &[SocketAddr]) -> Haproxy {
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(index, addr)| format!("    server s{index} {addr} send-proxy-v2\n"))
            .collect();
        Haproxy::with_config(name, |port| {
            format!(
                "global\n    maxconn 1000\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
                 frontend front\n    bind 127.0.0.1:{port}\n    default_backend back\n\
                 backend back\n    balance roundrobin\n{servers}"
            )
        })
    }

    /// HAProxy with the configuration `text(port)` gives, which must bind 127.0.0.1:port.
    pub fn with_config(name: &str, text: impl FnOnce(u16) -> String) -> Haproxy {
        let port = free_port();
        let config = std::env::temp_dir().join(format!("evloop-haproxy-{}-{name}.cfg", std::process::id()));
        std::fs::write(&config, text(port)).unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (scripts/test installs it)");
        super::wait_accepting(port, "haproxy");
        Haproxy { child, port, config }
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}
