//! `proxy-tests` holds netproxy's end-to-end suite (`tests/e2e`) and its fixtures
//! (`tests/fixtures`). The library itself is empty: the suite is one test target with a module
//! per scenario, so it links once.
#![forbid(unsafe_code)]
