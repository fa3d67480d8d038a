//! netproxy's own tests of the real binary and the gate: one test target (one binary to link),
//! one module per subject, the harness they share in `support`.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
// A skipped test says why on stderr.
#![allow(clippy::print_stderr)]

mod addresses;
mod admin;
mod ask;
mod audit;
mod cli;
mod credentials;
mod faults;
#[cfg(target_os = "linux")]
mod idle;
#[cfg(target_os = "linux")]
mod isolate;
mod learn;
mod metrics;
mod mitm;
mod otlp;
mod packaging;
mod reload;
mod revoke;
mod run;
mod serve;
mod socks;
mod support;
mod trust_bundle;
mod unix_sockets;
