//! `cargo +nightly fuzz run websocket`: the properties are in `evloop::fuzzing::websocket`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| evloop::fuzzing::websocket(data));
