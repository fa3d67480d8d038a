//! The end-to-end suite: one test target, one module per scenario.

mod config_fixtures;
