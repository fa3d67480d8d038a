//! The `socks_wire` target: proxy_fuzz::socks_wire (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_fuzz::socks_wire::run(data));
