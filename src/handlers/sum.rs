//! `sum`: signed 64-bit integers separated by commas and/or whitespace; the reply is their
//! sum in decimal (`50,40` -> `90`, `1, 2, 3` -> `6`).

use std::io::Write as _;

use crate::handlers::{Handler, Outbox, Peer};

/// Replies with the sum of the integers in the message, or `ERR <reason>`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sum;

impl Handler for Sum {
    fn on_message(&mut self, _from: Peer<'_>, message: &[u8], out: &mut Outbox) {
        match sum(message) {
            Ok(total) => out.reply_with(|buf| {
                let _ = write!(buf, "{total}");
            }),
            Err(reason) => out.reply_with(|buf| {
                let _ = write!(buf, "ERR {reason}");
            }),
        }
    }
}

/// Why a message has no sum.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SumError {
    /// Nothing but separators.
    NoIntegers,
    /// A token that is not a signed 64-bit integer (shown, shortened if long).
    NotAnInteger(String),
    /// The sum, or one integer, does not fit in a signed 64-bit integer.
    Overflow,
}

impl std::fmt::Display for SumError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SumError::NoIntegers => f.write_str("no integers"),
            SumError::NotAnInteger(token) => write!(f, "not an integer: '{token}'"),
            SumError::Overflow => f.write_str("overflow: the sum does not fit in 64 bits"),
        }
    }
}

/// The longest piece of a bad token quoted back in an error, so an error reply stays short.
const MAX_QUOTED: usize = 32;

/// Adds up the integers in `message`.
pub(crate) fn sum(message: &[u8]) -> Result<i64, SumError> {
    let mut total: i64 = 0;
    let mut count = 0;
    let tokens =
        message.split(|&byte| byte == b',' || byte.is_ascii_whitespace()).filter(|token| !token.is_empty());
    for token in tokens {
        let value = parse_i64(token)?;
        total = total.checked_add(value).ok_or(SumError::Overflow)?;
        count += 1;
    }
    if count == 0 {
        return Err(SumError::NoIntegers);
    }
    Ok(total)
}

fn parse_i64(token: &[u8]) -> Result<i64, SumError> {
    use std::num::IntErrorKind;
    let not_an_integer = || {
        let quoted = String::from_utf8_lossy(&token[..token.len().min(MAX_QUOTED)]);
        let ellipsis = if token.len() > MAX_QUOTED { "..." } else { "" };
        SumError::NotAnInteger(format!("{}{ellipsis}", quoted.escape_debug()))
    };
    let text = std::str::from_utf8(token).map_err(|_| not_an_integer())?;
    text.parse::<i64>().map_err(|error| match error.kind() {
        IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => SumError::Overflow,
        _ => not_an_integer(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::test_support::only_reply;

    /// The separators the issue names all work, and negative numbers too.
    #[test]
    fn sums() {
        assert_eq!(only_reply(&mut Sum, b"50,40"), "90");
        assert_eq!(only_reply(&mut Sum, b"1, 2, 3"), "6");
        assert_eq!(only_reply(&mut Sum, b"1 2\t3"), "6");
        assert_eq!(only_reply(&mut Sum, b"-5,+2"), "-3");
        assert_eq!(only_reply(&mut Sum, b"42"), "42");
        assert_eq!(only_reply(&mut Sum, b"-9223372036854775808"), "-9223372036854775808");
    }

    /// No integers, a non-integer token, and overflow each give an ERR reply.
    #[test]
    fn errors() {
        assert_eq!(only_reply(&mut Sum, b""), "ERR no integers");
        assert_eq!(only_reply(&mut Sum, b" , "), "ERR no integers");
        assert_eq!(only_reply(&mut Sum, b"1,x2"), "ERR not an integer: 'x2'");
        assert_eq!(only_reply(&mut Sum, b"1.5"), "ERR not an integer: '1.5'");
        assert_eq!(
            only_reply(&mut Sum, b"9223372036854775807,1"),
            "ERR overflow: the sum does not fit in 64 bits"
        );
        assert_eq!(
            only_reply(&mut Sum, b"99999999999999999999"),
            "ERR overflow: the sum does not fit in 64 bits"
        );
        let long = only_reply(&mut Sum, &[b'y'; 100]);
        assert!(long.len() < 80 && long.ends_with("...'"), "{long}");
    }
}
