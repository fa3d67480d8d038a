//! The `unix_header` target: proxy_fuzz::unix_header (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_fuzz::unix_header::run(data));
