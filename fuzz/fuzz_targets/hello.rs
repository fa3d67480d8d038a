//! The `hello` target: proxy_fuzz::hello (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_fuzz::hello::run(data));
