//! `cargo +nightly fuzz run nats`: the properties are in `evloop::fuzzing::nats`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| evloop::fuzzing::nats(data));
