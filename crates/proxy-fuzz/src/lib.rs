//! netproxy's fuzz targets as plain functions of the input bytes, each asserting the
//! invariants of what it drives (docs/fuzzing.md). Two runners share them:
//! - `fuzz/` (its own workspace, nightly only): cargo-fuzz's libFuzzer binaries, one per
//!   target, each calling the function here (`cargo xtask fuzz [TARGET] [--secs N]`);
//! - this crate's `replay` test (stable, in `cargo xtask ci`): every file of the committed
//!   corpora (`fuzz/corpus/TARGET/`) and of the regressions (`fuzz/regressions/TARGET/`, the
//!   inputs that once failed) run through the same function.
//!
//! A target never touches the network or the disk; a violated invariant is a panic. The wire
//! targets (`http_wire`, `socks_wire`) run a real front-end on an in-memory stream in a
//! runtime of their own with a paused clock ([`wire`]); `socks_wire` may bind a loopback UDP
//! socket for a UDP association, to which nothing is sent.
#![forbid(unsafe_code)]

pub mod config;
pub mod hello;
pub mod hooks;
pub mod host;
pub mod http_wire;
pub mod input;
pub mod mem;
pub mod otlp;
pub mod policy;
pub mod proxy_auth;
pub mod socks_request;
pub mod socks_udp;
pub mod socks_wire;
pub mod unix_header;
pub mod wire;

/// A fuzz target: its name (the cargo-fuzz binary and the corpus folder) and its function.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The name: `fuzz/fuzz_targets/NAME.rs`, `fuzz/corpus/NAME/`.
    pub name: &'static str,
    /// Runs one input; panics when an invariant does not hold.
    pub run: fn(&[u8]),
}

/// Every target, in the order `cargo xtask fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "host",
        run: host::run,
    },
    Target {
        name: "policy",
        run: policy::run,
    },
    Target {
        name: "config",
        run: config::run,
    },
    Target {
        name: "hooks",
        run: hooks::run,
    },
    Target {
        name: "hello",
        run: hello::run,
    },
    Target {
        name: "otlp",
        run: otlp::run,
    },
    Target {
        name: "socks_request",
        run: socks_request::run,
    },
    Target {
        name: "socks_udp",
        run: socks_udp::run,
    },
    Target {
        name: "unix_header",
        run: unix_header::run,
    },
    Target {
        name: "proxy_auth",
        run: proxy_auth::run,
    },
    Target {
        name: "http_wire",
        run: http_wire::run,
    },
    Target {
        name: "socks_wire",
        run: socks_wire::run,
    },
];

/// The target named `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
