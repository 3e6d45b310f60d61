//! Parsing the quantities people type on command lines: durations (`10s`, `500ms`, `0.5`),
//! byte sizes (`65536`, `64K`, `1M`) and rates, each also in the "must be positive" form
//! both binaries' flags use.

use std::time::Duration;

/// A duration: a number of seconds (`2`, `0.5`) or a number with a unit (`ms`, `s`, `m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(number) = text.strip_suffix("ms") {
        (number, 1e-3)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1.0)
    } else if let Some(number) = text.strip_suffix('m') {
        (number, 60.0)
    } else {
        (text, 1.0)
    };
    match number.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 && value * scale < 1e9 => {
            Ok(Duration::from_secs_f64(value * scale))
        }
        _ => Err(format!("bad duration '{text}': expected seconds (e.g. 10, 0.5) or 250ms, 10s, 2m")),
    }
}

/// A byte size: a plain number, or one with a binary unit (`K` = 1024, `M`, `G`).
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let upper = text.trim().to_ascii_uppercase();
    let upper = upper.strip_suffix("IB").or_else(|| upper.strip_suffix('B')).unwrap_or(&upper);
    let (number, scale) = match upper.chars().last() {
        Some('K') => (&upper[..upper.len() - 1], 1usize << 10),
        Some('M') => (&upper[..upper.len() - 1], 1 << 20),
        Some('G') => (&upper[..upper.len() - 1], 1 << 30),
        _ => (upper, 1),
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|value| value.checked_mul(scale))
        .ok_or_else(|| format!("bad size '{text}': expected bytes, e.g. 65536, 64K, 1M"))
}

/// A duration that must be more than zero (timeouts, intervals, run lengths).
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err("must be more than 0".to_string()),
        duration => Ok(duration),
    }
}

/// A byte size of at least one byte (limits).
pub fn positive_bytes(text: &str) -> Result<usize, String> {
    match parse_bytes(text)? {
        0 => Err("must be at least 1 byte".to_string()),
        bytes => Ok(bytes),
    }
}

/// A rate per second: a finite number above zero.
pub fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("bad rate '{text}': expected a positive number per second")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations with and without units.
    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "x", "-1", "1h", "inf", "NaN"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    /// Sizes with and without units.
    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("64K"), Ok(65536));
        assert_eq!(parse_bytes("64KiB"), Ok(65536));
        assert_eq!(parse_bytes("1m"), Ok(1 << 20));
        for bad in ["", "K", "1.5M", "-1", "12X"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
