//! `--sources 127.0.0.1,127.0.0.2-127.0.0.9`: the local addresses connections are spread
//! over. One source address reaches one destination through at most ~28k ephemeral ports;
//! several sources multiply that.

use std::net::{IpAddr, Ipv4Addr};

/// The most addresses one `--sources` may expand to.
const MAX_SOURCES: usize = 65_536;

/// Parses a comma-separated list of addresses and IPv4 ranges `A-B`.
pub fn parse_sources(text: &str) -> Result<Vec<IpAddr>, String> {
    let mut sources = Vec::new();
    for part in text.split(',').map(str::trim) {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (parse_v4(first)?, parse_v4(last)?);
                if last < first {
                    return Err(format!("bad source range '{part}': the end comes before the start"));
                }
                if (last - first) as usize >= MAX_SOURCES {
                    return Err(format!("bad source range '{part}': more than {MAX_SOURCES} addresses"));
                }
                sources.extend((first..=last).map(|address| IpAddr::V4(Ipv4Addr::from(address))));
            }
            None => sources.push(
                part.parse::<IpAddr>()
                    .map_err(|_| format!("bad source address '{part}': expected an IP address or A-B"))?,
            ),
        }
    }
    if sources.len() > MAX_SOURCES {
        return Err(format!("too many source addresses (max {MAX_SOURCES})"));
    }
    Ok(sources)
}

fn parse_v4(text: &str) -> Result<u32, String> {
    text.trim()
        .parse::<Ipv4Addr>()
        .map(u32::from)
        .map_err(|_| format!("bad source address '{text}': ranges are IPv4, A-B"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lists and ranges expand in order.
    #[test]
    fn expands_lists_and_ranges() {
        let sources = parse_sources("127.0.0.1,127.0.0.2-127.0.0.4, ::1").unwrap();
        let text: Vec<String> = sources.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "::1"]);
        assert_eq!(parse_sources("127.0.0.250-127.0.1.2").unwrap().len(), 9);
    }

    /// Nonsense is refused with the culprit named.
    #[test]
    fn refuses_nonsense() {
        assert!(parse_sources("127.0.0.9-127.0.0.1").unwrap_err().contains("end comes before"));
        assert!(parse_sources("nope").unwrap_err().contains("'nope'"));
        assert!(parse_sources("10.0.0.0-10.255.255.255").is_err());
    }
}
