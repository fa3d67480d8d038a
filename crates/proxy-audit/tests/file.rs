//! The JSON-lines audit file: every field, appending, mode 0600, reopening after rotation, and
//! what is refused at its path (symlinks, named pipes, hard links, another user's file).
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

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Log lines written through a `tracing` subscriber, for the warnings of the opening thread.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[test]
fn a_symlink_at_the_path_is_refused_and_the_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("precious");
    std::fs::write(&target, "precious\n").unwrap();
    let path = dir.path().join("audit.jsonl");
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let err = JsonLinesFile::open(&path).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    // A dangling one is refused too (nothing is created at its target).
    let dangling = dir.path().join("dangling.jsonl");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    assert!(JsonLinesFile::open(&dangling).is_err());
    assert!(!dir.path().join("nowhere").exists());
}

#[test]
fn a_file_open_to_others_is_narrowed_to_0600_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, "").unwrap();
    set_mode(&path, 0o644);
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let sink =
        tracing::subscriber::with_default(subscriber, || JsonLinesFile::open(&path).unwrap());
    assert_eq!(mode(&path), 0o600);
    let text = log.text();
    assert!(text.contains("WARN"), "{text}");
    assert!(
        text.contains("mode 0644") && text.contains("narrowed to 0600"),
        "{text}"
    );
    assert!(text.contains(&path.display().to_string()), "{text}");

    // A private file is left alone, without a warning.
    let quiet = Captured::default();
    let writer = quiet.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .finish();
    let again =
        tracing::subscriber::with_default(subscriber, || JsonLinesFile::open(&path).unwrap());
    again.close();
    assert_eq!(quiet.text(), "");

    // Reopening (log rotation): a file someone put in place, open to others, is narrowed too.
    let rotated = dir.path().join("audit.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    std::fs::write(&path, "").unwrap();
    set_mode(&path, 0o666);
    sink.reopen();
    sink.record(&event("after.example.com", true));
    let start = std::time::Instant::now();
    while lines(&path).is_empty() {
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(mode(&path), 0o600);

    // A symlink put at the path before a reopen is refused: the events stay in the file
    // already open.
    let next = dir.path().join("audit.jsonl.2");
    std::fs::rename(&path, &next).unwrap();
    let target = dir.path().join("elsewhere");
    std::fs::write(&target, "").unwrap();
    std::os::unix::fs::symlink(&target, &path).unwrap();
    sink.reopen();
    sink.record(&event("later.example.com", true));
    sink.close();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
    let kept = lines(&next);
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[1]["server.address"], "later.example.com");
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

/// Runs `f` on a thread of its own and gives its result, failing the test when it has not come
/// within a generous bound (what would hang is asserted not to).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{what} hung"))
}

/// A named pipe at `path`.
fn mkfifo(path: &std::path::Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
}

#[test]
fn a_named_pipe_at_the_path_is_refused_without_waiting_for_a_reader() {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    mkfifo(&path);
    // Nobody reads it: the open does not wait for a reader.
    let p = path.clone();
    let err = within("opening a named pipe", move || {
        JsonLinesFile::open(&p).map(|_| ())
    })
    .unwrap_err();
    assert!(err.to_string().contains("named pipe (FIFO)"), "{err}");
    // Someone reads it: refused all the same.
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits().cast_signed())
        .open(&path)
        .unwrap();
    let p = path.clone();
    let err = within("opening a named pipe", move || {
        JsonLinesFile::open(&p).map(|_| ())
    })
    .unwrap_err();
    assert!(err.to_string().contains("named pipe (FIFO)"), "{err}");
    // A socket is no file either.
    let sock = dir.path().join("audit.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let err = JsonLinesFile::open(&sock).unwrap_err();
    assert!(err.to_string().contains("it is a socket"), "{err}");
}

#[test]
fn a_hard_link_at_the_path_is_refused_and_its_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("precious");
    std::fs::write(&victim, "precious\n").unwrap();
    set_mode(&victim, 0o644);
    let path = dir.path().join("audit.jsonl");
    std::fs::hard_link(&victim, &path).unwrap();
    let err = JsonLinesFile::open(&path).unwrap_err();
    assert!(err.to_string().contains("it has 2 hard links"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(mode(&victim), 0o644);
    // Its only name left, the file is the log's own.
    std::fs::remove_file(&victim).unwrap();
    std::fs::write(&path, "").unwrap();
    let sink = JsonLinesFile::open(&path).unwrap();
    sink.record(&event("one.example.com", true));
    sink.close();
    assert_eq!(lines(&path).len(), 1);
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn another_users_file_at_the_path_is_refused() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to give the file to another user (uid 65534)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, "theirs\n").unwrap();
    set_mode(&path, 0o644);
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    let err = JsonLinesFile::open(&path).unwrap_err();
    assert!(
        err.to_string()
            .contains("it is owned by uid 65534, not by netproxy's user (uid 0)"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "theirs\n");
    assert_eq!(mode(&path), 0o644);
}

/// At a reopen (log rotation), a named pipe or a hard link put at the path is refused with an
/// error logged; the events go on to the file already open, and nothing hangs.
#[test]
fn a_named_pipe_or_hard_link_at_a_reopen_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    // Never dropped here: a writer stuck at the pipe would make the drop (which waits for
    // the writer) hang instead of the test failing.
    let sink =
        std::mem::ManuallyDrop::new(std::sync::Arc::new(JsonLinesFile::open(&path).unwrap()));
    sink.record(&event("first.example.com", true));

    let old = dir.path().join("audit.jsonl.1");
    std::fs::rename(&path, &old).unwrap();
    mkfifo(&path);
    sink.reopen();
    sink.record(&event("second.example.com", true));
    let start = std::time::Instant::now();
    while lines(&old).len() < 2 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the writer hung at the named pipe"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    std::fs::remove_file(&path).unwrap();
    let victim = dir.path().join("precious");
    std::fs::write(&victim, "precious\n").unwrap();
    set_mode(&victim, 0o644);
    std::fs::hard_link(&victim, &path).unwrap();
    sink.reopen();
    sink.record(&event("third.example.com", true));
    let s = std::sync::Arc::clone(&sink);
    within("closing the audit log", move || s.close());
    drop(std::mem::ManuallyDrop::into_inner(sink));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(mode(&victim), 0o644);
    let kept = lines(&old);
    assert_eq!(kept.len(), 3);
    assert_eq!(kept[2]["server.address"], "third.example.com");
}

/// `/dev/stderr` and `/dev/fd/N` are links only root can plant: they are followed to netproxy's
/// own standard streams, whatever they are (a terminal, a pipe, a file).
#[test]
fn the_processs_own_standard_streams_are_accepted() {
    for path in ["/dev/stderr", "/dev/fd/2", "/dev/null"] {
        let file = JsonLinesFile::open(std::path::Path::new(path));
        assert!(file.is_ok(), "{path}: {:?}", file.err());
        file.unwrap().close();
    }
    // Another link under /dev's subfolders is not followed.
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("stderr");
    std::os::unix::fs::symlink("/dev/stderr", &link).unwrap();
    assert!(JsonLinesFile::open(&link).is_err());
}
