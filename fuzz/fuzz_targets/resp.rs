//! `cargo +nightly fuzz run resp`: the properties are in `evloop::fuzzing::resp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| evloop::fuzzing::resp(data));
