//! UTF-8 checked as a text message arrives, piece by piece, failing at the first byte that
//! cannot be part of valid UTF-8: a client sending a huge invalid message is closed at its
//! first bad byte, not after the server has buffered it all (Autobahn 6.4.x).
//!
//! `std::str::from_utf8` does the work: it tells a sequence cut off at the end of the input
//! (`error_len() == None`, kept here until the next piece) from one that is wrong already.

/// The state between pieces: the start of a character cut off at the end of the last one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Utf8 {
    pending: [u8; 4],
    len: u8,
}

impl Utf8 {
    /// Checks the next piece; false at the first byte that makes the text invalid.
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        if self.len > 0 {
            // Finish the character begun in the last piece first.
            let width = char_width(self.pending[0]);
            let take = (width - self.len as usize).min(bytes.len());
            let len = self.len as usize;
            self.pending[len..len + take].copy_from_slice(&bytes[..take]);
            self.len += take as u8;
            bytes = &bytes[take..];
            match std::str::from_utf8(&self.pending[..self.len as usize]) {
                Ok(_) => self.len = 0,
                Err(error) if error.error_len().is_none() => return true,
                Err(_) => return false,
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => true,
            Err(error) if error.error_len().is_none() => {
                let rest = &bytes[error.valid_up_to()..];
                self.pending[..rest.len()].copy_from_slice(rest);
                self.len = rest.len() as u8;
                true
            }
            Err(_) => false,
        }
    }

    /// Whether the text ended on a character boundary (nothing left cut off).
    pub fn is_complete(&self) -> bool {
        self.len == 0
    }
}

/// The length of the character a (valid) lead byte starts.
fn char_width(lead: u8) -> usize {
    match lead {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_in_pieces(bytes: &[u8], cuts: &[usize]) -> bool {
        let mut utf8 = Utf8::default();
        let mut start = 0;
        let mut ends: Vec<usize> = cuts.iter().map(|&cut| cut.min(bytes.len())).collect();
        ends.sort_unstable();
        ends.push(bytes.len());
        for end in ends {
            if end < start {
                continue;
            }
            if !utf8.feed(&bytes[start..end]) {
                return false;
            }
            start = end;
        }
        utf8.is_complete()
    }

    /// A bad byte fails at once, even with the rest of its character still to come.
    #[test]
    fn fails_at_the_first_bad_byte() {
        let mut utf8 = Utf8::default();
        assert!(utf8.feed("κόσμε".as_bytes()));
        assert!(utf8.feed(&[0xce]), "a character cut off is fine so far");
        assert!(!utf8.feed(&[0x41]), "but not followed by ASCII");
        let mut utf8 = Utf8::default();
        // A surrogate (U+D800) is refused at its second byte.
        assert!(!utf8.feed(&[0xed, 0xa0]));
        let mut utf8 = Utf8::default();
        assert!(!utf8.feed(&[0xf4, 0x90]), "past U+10FFFF");
        let mut utf8 = Utf8::default();
        assert!(utf8.feed(&[0xf0, 0x9f]) && !utf8.is_complete());
    }

    proptest! {
        /// Checked in any pieces, bytes are valid exactly when `from_utf8` says so whole.
        #[test]
        fn pieces_agree_with_the_whole(
            bytes in prop_oneof![
                any::<String>().prop_map(String::into_bytes),
                proptest::collection::vec(any::<u8>(), 0..40),
            ],
            cuts in proptest::collection::vec(0usize..60, 0..8),
        ) {
            prop_assert_eq!(check_in_pieces(&bytes, &cuts), std::str::from_utf8(&bytes).is_ok());
        }
    }
}
