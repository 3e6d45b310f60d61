//! `cargo +nightly fuzz run decoders`: the properties are in `evloop::fuzzing::decoders`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| evloop::fuzzing::decoders(data));
