//! The `socks_request` target: proxy_fuzz::socks_request (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_fuzz::socks_request::run(data));
