//! The audit log (`audit_log`, JSON lines) of the real `netproxy serve` process: one line per
//! decision, rotation, a full disk, and the files it refuses to open.

use proxy_test_support::wait_for;

use std::path::Path;

use crate::support::{World, chmod, mode, planted_symlink, serve, wait_audit};

/// `-c audit_log=PATH`.
fn audit_log(path: &Path) -> [String; 2] {
    [
        "-c".into(),
        format!("audit_log={:?}", path.display().to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_has_one_line_per_decision_and_follows_rotation() {
    let w = World::new(&["api.test", "other.test"]).await;
    let port = w.origin.addr().port();
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("audit.jsonl");
    let s = w
        .serve()
        .admin()
        .args(&["--allow", "api.test", "--deny", "other.test"])
        .args(&audit_log(&path))
        .start();
    let status = |args: &[&str], url: String| s.curl().args(args).get(url).status;
    assert_eq!(status(&[], w.url("api.test", "a?secret=1")), 200);
    assert_eq!(status(&["-p"], w.url("api.test", "b")), 200);
    assert_eq!(status(&[], w.url("other.test", "c")), 403);
    assert_eq!(status(&[], format!("http://10.1.2.3:{port}/d")), 403);
    let read = |p: &std::path::Path, n: usize| wait_audit(p, "audit lines", |l| l.len() >= n);
    let lines = read(&path, 4);
    assert_eq!(lines.len(), 4);
    assert_eq!(mode(&path), 0o600);
    let want = [
        (
            "http",
            "GET",
            "api.test",
            "allow",
            "allow",
            "baseline_policy",
        ),
        (
            "https_connect",
            "CONNECT",
            "api.test",
            "allow",
            "allow",
            "baseline_policy",
        ),
        (
            "http",
            "GET",
            "other.test",
            "deny",
            "denied",
            "baseline_policy",
        ),
        (
            "http",
            "GET",
            "10.1.2.3",
            "deny",
            "not_allowed_local",
            "baseline_policy",
        ),
    ];
    for (line, (proto, method, host, decision, reason, source)) in lines.iter().zip(want) {
        assert_eq!(line["event.name"], "netproxy.policy_decision");
        assert_eq!(line["network.transport.protocol"], proto, "{line}");
        assert_eq!(line["http.request.method"], method, "{line}");
        assert_eq!(line["server.address"], host, "{line}");
        assert_eq!(line["server.port"], port, "{line}");
        assert_eq!(line["network.policy.decision"], decision, "{line}");
        assert_eq!(line["network.policy.reason"], reason, "{line}");
        assert_eq!(line["network.policy.source"], source, "{line}");
        assert_eq!(line["network.policy.scope"], "domain", "{line}");
        assert_eq!(line["network.policy.override"], false, "{line}");
        assert!(
            line["client.address"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:"),
            "{line}"
        );
        assert_eq!(line["event.timestamp"].as_str().unwrap().len(), 24);
    }
    assert_eq!(lines[0]["network.policy.rule"], "api.test");
    assert_eq!(lines[0]["network.policy.layer"], "command-line");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("secret") && !text.contains("/a"), "{text}");

    // Rotation: move the file away, SIGHUP, and a new file is there at once (no event needed),
    // private too; the next decision goes to it.
    let rotated = logs.path().join("audit.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    s.process.signal("HUP");
    wait_for("the audit log reopened", || {
        path.exists().then_some(()).ok_or("")
    });
    assert_eq!(mode(&path), 0o600);
    assert_eq!(status(&[], w.url("other.test", "e")), 403);
    let fresh = read(&path, 1);
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0]["server.address"], "other.test");
    assert_eq!(read(&rotated, 4).len(), 4);
    s.stop();
}

/// A full disk (`/dev/full` fails every write): requests still go through, the lost events
/// are counted in the metrics, and the outage is logged once, not per write.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_log_on_a_full_disk_counts_its_losses_and_says_so_once() {
    let w = World::new(&["api.test"]).await;
    let s = w
        .serve()
        .admin()
        .args(&["--allow", "api.test"])
        .config("[network]\naudit_log = \"/dev/full\"\n")
        .start();
    for _ in 0..5 {
        assert_eq!(s.get(&w.url("api.test", "")).status, 200);
    }
    let api = s.api(Some(&s.token()));
    wait_for("five lost events in the metrics", || {
        let (_, metrics) = api.get("/metrics");
        if metrics.contains("netproxy_audit_export_dropped_total 5") {
            Ok(())
        } else {
            Err(metrics)
        }
    });
    let err = s.stop();
    assert_eq!(
        err.matches("audit events are being lost until this sink works again")
            .count(),
        1,
        "{err}"
    );
    assert!(err.contains("sink=/dev/full"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains("the audit sink stopped while losing events"),
        "{err}"
    );
}

#[test]
fn an_audit_log_that_cannot_be_opened_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/audit.jsonl");
    serve()
        .args(&audit_log(&path))
        .start_fails()
        .assert_err(1, &["cannot open the audit log"]);
}

/// The audit log: a named pipe (nobody reading it) or a hard link to another file at its path
/// stops the start at once (exit 1, naming the path); the linked file is left untouched.
#[test]
fn the_audit_log_refuses_a_named_pipe_and_a_hard_link() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let start = || serve().args(&audit_log(&log)).start_fails();
    let opened = format!("cannot open the audit log {}", log.display());

    rustix::fs::mknodat(
        rustix::fs::CWD,
        &log,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    start().assert_err(1, &[&opened, "named pipe"]);
    std::fs::remove_file(&log).unwrap();

    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    chmod(&victim, 0o644);
    std::fs::hard_link(&victim, &log).unwrap();
    start().assert_err(1, &[&opened, "hard links"]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(mode(&victim), 0o644);
}

/// The audit log: a symlink at its path stops the start (exit 1, naming the path); a file open
/// to others is narrowed to 0600 with a warning.
#[test]
fn the_audit_log_refuses_a_symlink_and_narrows_a_wide_file() {
    let dir = tempfile::tempdir().unwrap();
    let (victim, log) = planted_symlink(dir.path(), "audit.jsonl");
    let start = || serve().args(&audit_log(&log));
    start().start_fails().assert_err(
        1,
        &[
            &format!("cannot open the audit log {}", log.display()),
            "symbolic link",
        ],
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");

    std::fs::remove_file(&log).unwrap();
    std::fs::write(&log, "").unwrap();
    chmod(&log, 0o644);
    let s = start().start();
    assert_eq!(mode(&log), 0o600);
    let stderr = s.stop();
    assert!(
        stderr.contains("WARN")
            && stderr.contains("mode 0644")
            && stderr.contains("narrowed to 0600"),
        "{stderr}"
    );
}
