//! The `config` target: proxy_fuzz::config (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_fuzz::config::run(data));
