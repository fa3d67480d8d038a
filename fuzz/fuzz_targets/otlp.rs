//! The `otlp` target: proxy_fuzz::otlp (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_fuzz::otlp::run(data));
