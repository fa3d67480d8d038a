//! The `host` target: proxy_fuzz::host (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_fuzz::host::run(data));
