//! `cargo +nightly fuzz run metrics_request`: the properties are in `evloop::fuzzing::metrics_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| evloop::fuzzing::metrics_request(data));
