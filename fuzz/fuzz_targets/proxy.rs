//! `cargo +nightly fuzz run proxy`: the properties are in `evloop::fuzzing::proxy`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| evloop::fuzzing::proxy(data));
