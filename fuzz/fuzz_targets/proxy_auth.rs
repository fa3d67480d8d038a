//! The `proxy_auth` target: proxy_fuzz::proxy_auth (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_fuzz::proxy_auth::run(data));
