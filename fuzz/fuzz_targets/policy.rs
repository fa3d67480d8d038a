//! The `policy` target: proxy_fuzz::policy (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_fuzz::policy::run(data));
