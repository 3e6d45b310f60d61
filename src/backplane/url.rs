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

/// `--backplane URL[,URL...]`: one engine, at any of several addresses, all of one kind.
///
/// Redis: the addresses are tried in order, from the first again after each loss (a primary
/// and the replica an operator promotes by hand; Sentinel is not spoken). NATS: the servers
/// of one cluster, any of which will do; a link lost moves on to the next, and the
/// `connect_urls` a server announces in its `INFO` join the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackplaneUrls(Vec<BackplaneUrl>);

impl BackplaneUrls {
    /// The addresses, in order (never empty).
    pub fn addrs(&self) -> &[BackplaneUrl] {
        &self.0
    }

    /// The first address: the engine's kind, and where links start.
    pub fn first(&self) -> &BackplaneUrl {
        &self.0[0]
    }
}

impl From<BackplaneUrl> for BackplaneUrls {
    fn from(url: BackplaneUrl) -> BackplaneUrls {
        BackplaneUrls(vec![url])
    }
}

impl fmt::Display for BackplaneUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, url) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{url}")?;
        }
        Ok(())
    }
}

impl FromStr for BackplaneUrls {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let urls = text.split(',').map(str::parse).collect::<Result<Vec<BackplaneUrl>, String>>()?;
        if urls.iter().any(|url| url.engine() != urls[0].engine()) {
            return Err(format!(
                "bad backplane {text:?}: every address must be of one engine, redis or nats"
            ));
        }
        Ok(BackplaneUrls(urls))
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

    /// A list is one engine at several addresses, printed back as typed.
    #[test]
    fn lists_are_of_one_engine() {
        let text = "nats://10.0.0.1:4222,nats://10.0.0.2:4222,nats://[::1]:4222";
        let urls: BackplaneUrls = text.parse().unwrap();
        assert_eq!((urls.addrs().len(), urls.to_string()), (3, text.to_string()));
        for bad in ["redis://127.0.0.1:6379,nats://127.0.0.1:4222", "redis://127.0.0.1:6379,", ""] {
            assert!(bad.parse::<BackplaneUrls>().is_err(), "{bad}");
        }
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
