//! An idle proxy leaves its log and audit threads asleep (they used to wake every 20 ms and
//! every 500 ms): a laptop running it all day should not pay for it.

use std::collections::BTreeMap;
use std::time::Duration;

use proxy_test_support::wait_for;

use crate::otlp::{collector, otel};
use crate::support::{World, wait_audit};

/// The threads watched; their names as the kernel keeps them (cut to 15 bytes).
const WATCHED: [&str; 3] = ["netproxy-log", "netproxy-audit-log", "netproxy-otlp"];

/// How many times each watched thread of `pid` went to sleep (its voluntary context switches:
/// each is followed by a wake-up).
fn wakeups(pid: u32) -> Vec<(String, u64)> {
    let mut by_name = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        let switches = std::fs::read_to_string(task.join("status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        *by_name.entry(name.trim().to_owned()).or_insert(0) += switches;
    }
    WATCHED
        .iter()
        .map(|t| {
            let name: String = t.chars().take(15).collect();
            let n = *by_name
                .get(&name)
                .unwrap_or_else(|| panic!("no thread {name}: {by_name:?}"));
            (name, n)
        })
        .collect()
}

/// Waits until the watched threads are asleep: their counts the same on two looks in a row,
/// further apart than any of them lingers after work (a thread that polls never settles).
fn asleep(pid: u32) -> Vec<(String, u64)> {
    let mut before = wakeups(pid);
    wait_for("the log and audit threads to fall asleep", || {
        std::thread::sleep(Duration::from_millis(300));
        let now = wakeups(pid);
        if now == before {
            Ok(now)
        } else {
            before.clone_from(&now);
            Err(format!("{now:?}"))
        }
    })
}

/// The wake-ups are counted, and no time is asserted: the quiet stretch is the proxy answering
/// a hundred admin API requests, work in which nothing is decided, logged or audited. A thread
/// that polls wakes in that stretch and fails the test; a thread that sleeps until it has work
/// wakes zero times. Then one decision wakes each thread, which shows that the counts see them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_proxy_does_not_wake_its_log_and_audit_threads() {
    let w = World::new(&["api.test"]).await;
    let logs = tempfile::tempdir().unwrap();
    let audit = logs.path().join("audit.jsonl");
    let (endpoint, exported) = collector(false).await;
    let config = format!(
        "[network]\naudit_log = {:?}\n{}",
        audit.display().to_string(),
        otel(&endpoint)
    );
    let s = w
        .serve()
        .admin()
        .args(&["--allow", "api.test"])
        .config(&config)
        .start();
    let pid = s.process.id();
    // One decision, seen through to its log line, audit line and export.
    let decide = |n: usize| {
        assert_eq!(s.get(&w.url("api.test", "")).status, 200);
        wait_audit(&audit, "the decision's audit line", |l| l.len() >= n);
        wait_for("the decision's export", || {
            let hosts = exported.lock().unwrap().clone();
            (hosts.len() >= n).then_some(()).ok_or(format!("{hosts:?}"))
        });
        wait_for("the decision's log line", || {
            let log = s.process.stderr();
            let lines = log.matches("network.policy.decision").count();
            (lines >= n).then_some(()).ok_or(log)
        });
    };
    decide(1);
    let before = asleep(pid);

    let health = s.api(None);
    for _ in 0..100 {
        assert_eq!(health.get("/health").0, 200);
    }
    let after = wakeups(pid);
    assert_eq!(before, after, "woken with nothing to do");

    decide(2);
    let woken = asleep(pid);
    for ((name, a), (_, b)) in after.iter().zip(&woken) {
        assert!(
            b > a,
            "{name} did not wake for a decision: {after:?} -> {woken:?}"
        );
    }
    s.stop();
}
