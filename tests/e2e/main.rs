//! The end-to-end suite: one test target, one module per scenario.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod config_fixtures;
