//! The `socks_udp` target: proxy_fuzz::socks_udp (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_fuzz::socks_udp::run(data));
