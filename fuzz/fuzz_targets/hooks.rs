//! The `hooks` target: proxy_fuzz::hooks (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_fuzz::hooks::run(data));
