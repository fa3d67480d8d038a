//! The JSON-lines audit file: every field, appending, mode 0600, reopening after rotation.
#![allow(clippy::unwrap_used)]

use proxy_audit::JsonLinesFile;
use proxy_core::{
    AuditEvent, AuditSink, Decision, Mode, Protocol, Reason, RequestMeta, Rule, Target,
};

fn event(host: &str, allow: bool) -> AuditEvent {
    let meta = RequestMeta::new(
        Protocol::HttpsConnect,
        Target::parse_authority(host, 443).unwrap(),
    )
    .with_method("CONNECT")
    .with_client("127.0.0.1:40000".parse().unwrap());
    let d = if allow {
        Decision::allow().with_rule(Rule::new("**.example.com", Some("command-line".into())))
    } else {
        Decision::deny(Reason::NotAllowed)
    };
    AuditEvent::new(&meta, &d, Mode::Full)
}

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn one_object_a_line_appended_private_and_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
    let sink = JsonLinesFile::open(&path).unwrap();
    sink.record(&event("api.example.com", true));
    sink.record(&event("evil.test", false));
    // Written without waiting for shutdown.
    let start = std::time::Instant::now();
    while lines(&path).len() < 3 {
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let got = lines(&path);
    assert_eq!(got[0]["earlier"], true);
    let allow = &got[1];
    let want = serde_json::json!({
        "event.name": "netproxy.policy_decision",
        "network.policy.scope": "domain",
        "network.policy.decision": "allow",
        "network.policy.source": "baseline_policy",
        "network.policy.reason": "allow",
        "network.policy.override": false,
        "network.policy.mode": "full",
        "network.policy.rule": "**.example.com",
        "network.policy.layer": "command-line",
        "network.transport.protocol": "https_connect",
        "server.address": "api.example.com",
        "server.port": 443,
        "http.request.method": "CONNECT",
        "client.address": "127.0.0.1:40000",
    });
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&allow[k], v, "{k}");
    }
    let ts = allow["event.timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), 24, "{ts}");
    assert!(ts.ends_with('Z'));
    assert_eq!(got[2]["network.policy.reason"], "not_allowed");
    assert_eq!(got[2]["network.policy.rule"], serde_json::Value::Null);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The file existed already (created by the test); a new one is created 0600.
        let fresh = dir.path().join("fresh.jsonl");
        let s2 = JsonLinesFile::open(&fresh).unwrap();
        s2.close();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Rotation: the file is moved away, reopen, new events go to a new file.
    let rotated = dir.path().join("audit.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    sink.reopen();
    sink.record(&event("after.example.com", true));
    sink.close();
    assert_eq!(lines(&rotated).len(), 3);
    let fresh = lines(&path);
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0]["server.address"], "after.example.com");
    assert_eq!(sink.dropped(), 0);
}

#[test]
fn a_file_that_cannot_be_opened_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(JsonLinesFile::open(&dir.path().join("missing/dir/audit.jsonl")).is_err());
}

/// A full disk (`/dev/full` fails every write with ENOSPC): the events are counted as lost.
#[cfg(target_os = "linux")]
#[test]
fn events_a_failed_write_loses_are_counted() {
    let sink = JsonLinesFile::open(std::path::Path::new("/dev/full")).unwrap();
    for i in 0..5 {
        sink.record(&event(&format!("h{i}.example.com"), true));
    }
    sink.close();
    assert_eq!(sink.dropped(), 5);
}
