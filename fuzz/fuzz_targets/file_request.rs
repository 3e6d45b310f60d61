//! `cargo +nightly fuzz run file_request`: the properties are in `evloop::fuzzing::file_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| evloop::fuzzing::file_request(data));
