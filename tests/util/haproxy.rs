//! HAProxy in TCP mode in front of evloop servers, with `send-proxy-v2`, or with a
//! configuration of the test's own: the real balancer (scripts/test installs it), on a
//! private port, killed on drop.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use super::ports::{self, Protocol};

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
    /// HAProxy cannot bind port 0 and say which it got: it is given a free port, and
    /// trusted once it holds it (another port if something else took that one first).
    pub fn with_config(name: &str, text: impl Fn(u16) -> String) -> Haproxy {
        let config = std::env::temp_dir().join(format!("evloop-haproxy-{}-{name}.cfg", std::process::id()));
        ports::start_on_a_free_port("haproxy", Protocol::Tcp, |port| {
            std::fs::write(&config, text(port)).unwrap();
            let mut child = Command::new("haproxy")
                .args(["-db", "-f", config.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("haproxy (scripts/test installs it)");
            // Its alerts (a bind refused, a bad configuration) are part of a failure's reason.
            ports::wait_held(&mut child, port, Protocol::Tcp)?;
            Ok(Haproxy { child, port, config: config.clone() })
        })
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
