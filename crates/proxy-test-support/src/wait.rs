//! Waiting for something a test can observe (a file's content, a log line, an answer), never for
//! a fixed time: [`wait_for`] polls until the thing is there, and only a hang reaches its bound.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How long a wait may last before the test fails: generous, as it only bounds a hang.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// How often [`wait_for`] looks again.
const PACE: Duration = Duration::from_millis(20);

/// Calls `probe` until it returns `Ok`, and returns that value; after [`PATIENCE`] the test
/// fails with `what` and the last `Err` (what was seen instead).
///
/// ```
/// let mut n = 0;
/// let three = proxy_test_support::wait_for("a count of three", || {
///     n += 1;
///     if n == 3 { Ok(n) } else { Err(n) }
/// });
/// assert_eq!(three, 3);
/// ```
pub fn wait_for<T, E: Display>(what: &str, mut probe: impl FnMut() -> Result<T, E>) -> T {
    let begin = Instant::now();
    loop {
        match probe() {
            Ok(v) => return v,
            Err(seen) => {
                assert!(
                    begin.elapsed() < PATIENCE,
                    "waited {PATIENCE:?} for {what}; last seen:\n{seen}"
                );
            }
        }
        std::thread::sleep(PACE);
    }
}
