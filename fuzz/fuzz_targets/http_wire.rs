//! The `http_wire` target: proxy_fuzz::http_wire (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_fuzz::http_wire::run(data));
