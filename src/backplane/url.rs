//! `--backplane URL`: which pub/sub engine carries rooms between servers, and where it is.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use crate::sys::address::parse_socket_addr;

/// A pub/sub engine's address, as given to `--backplane`:
///
/// - `redis://HOST:PORT`: Redis over TCP;
/// - `redis+unix:///path/to/redis.sock`: Redis over a Unix socket;
/// - `nats://HOST:PORT`: NATS over TCP.
///
/// HOST is an IP address or `localhost`, as for listen addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackplaneUrl {
    /// Redis pub/sub over TCP.
    Redis(SocketAddr),
    /// Redis pub/sub over a Unix-domain socket.
    RedisUnix(PathBuf),
    /// NATS core pub/sub over TCP.
    Nats(SocketAddr),
}

impl BackplaneUrl {
    /// The engine's name, for logs.
    pub fn engine(&self) -> &'static str {
        match self {
            BackplaneUrl::Redis(_) | BackplaneUrl::RedisUnix(_) => "redis",
            BackplaneUrl::Nats(_) => "nats",
        }
    }
}

impl fmt::Display for BackplaneUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackplaneUrl::Redis(addr) => write!(f, "redis://{addr}"),
            BackplaneUrl::RedisUnix(path) => write!(f, "redis+unix://{}", path.display()),
            BackplaneUrl::Nats(addr) => write!(f, "nats://{addr}"),
        }
    }
}

impl FromStr for BackplaneUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "bad backplane {text:?}: expected redis://HOST:PORT, redis+unix:///path/to/redis.sock or nats://HOST:PORT"
            )
        };
        if let Some(path) = text.strip_prefix("redis+unix://") {
            if !path.starts_with('/') {
                return Err(bad());
            }
            return Ok(BackplaneUrl::RedisUnix(PathBuf::from(path)));
        }
        let (scheme, rest) = text.split_once("://").ok_or_else(bad)?;
        let addr = parse_socket_addr(rest.trim_end_matches('/')).map_err(|_| bad())?;
        match scheme {
            "redis" => Ok(BackplaneUrl::Redis(addr)),
            "nats" => Ok(BackplaneUrl::Nats(addr)),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three forms parse and print back as typed.
    #[test]
    fn parses_the_three_forms() {
        for text in ["redis://127.0.0.1:6379", "redis+unix:///tmp/redis.sock", "nats://[::1]:4222"] {
            let url: BackplaneUrl = text.parse().unwrap();
            assert_eq!(url.to_string(), text);
        }
        assert_eq!("nats://localhost:4222".parse::<BackplaneUrl>().unwrap().engine(), "nats");
    }

    /// Other schemes, missing ports and relative socket paths are refused, quoted.
    #[test]
    fn refuses_the_rest() {
        for text in ["kafka://127.0.0.1:1", "redis://127.0.0.1", "redis+unix://tmp/x", "127.0.0.1:6379", ""] {
            let error = text.parse::<BackplaneUrl>().unwrap_err();
            assert!(error.contains(&format!("{text:?}")), "{error}");
        }
    }
}
