//! `audit_log = PATH`: one JSON object a line, appended, reopened on request (SIGHUP, for log
//! rotation), created with mode 0600. The request path only queues the event; a writer thread
//! writes it at once when the log is quiet, and within 20 ms under load (a thousand events a
//! second or more); no event waits in a buffer for others to fill it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proxy_core::{AuditEvent, AuditSink};

use crate::queue::DropOldest;

/// Events waiting for the writer; beyond this the oldest are dropped and counted.
const QUEUE: usize = 65_536;
/// The most events one write takes.
const MAX_BATCH: usize = 4096;
/// Under load (at least [`BUSY_EVENTS`] events within the current or the previous
/// [`PACE_WINDOW`]), each batch gathers this long before it is written.
const BUSY_LINGER: Duration = Duration::from_millis(20);
/// See [`BUSY_LINGER`]: a thousand events a second.
const BUSY_EVENTS: usize = 100;
/// See [`BUSY_LINGER`].
const PACE_WINDOW: Duration = Duration::from_millis(100);

/// How many events the writer took lately, in windows of [`PACE_WINDOW`].
#[derive(Debug)]
struct Pace {
    start: Instant,
    count: usize,
    previous: usize,
}

impl Pace {
    fn new(now: Instant) -> Self {
        Self {
            start: now,
            count: 0,
            previous: 0,
        }
    }

    /// Counts `taken` events at `now`; whether events come fast enough for batches to gather.
    fn busy(&mut self, now: Instant, taken: usize) -> bool {
        let age = now.saturating_duration_since(self.start);
        if age >= PACE_WINDOW {
            // The window just ended counts only if it ended just now.
            self.previous = if age < 2 * PACE_WINDOW { self.count } else { 0 };
            self.count = 0;
            self.start = now;
        }
        self.count = self.count.saturating_add(taken);
        self.count >= BUSY_EVENTS || self.previous >= BUSY_EVENTS
    }
}

/// The JSON-lines audit file.
#[derive(Debug)]
pub struct JsonLinesFile {
    shared: Arc<Shared>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    queue: DropOldest<Arc<AuditEvent>>,
    reopen: AtomicBool,
    /// Events whose write failed.
    unwritten: AtomicU64,
}

/// Opens `path` for appending, creating it with mode 0600. Refused, so that whoever can write
/// the folder cannot choose what netproxy writes to or make it hang: a symlink at `path`
/// (`O_NOFOLLOW`), a named pipe or socket (`O_NONBLOCK`: opening a pipe nobody reads fails at
/// once instead of waiting for a reader), anything but a regular file or a character device
/// (such as `/dev/stderr`), and a regular file with another name (a hard link) or another
/// owner than netproxy's user. An existing file readable or writable by others is narrowed to
/// 0600, with a warning.
fn open(path: &Path) -> std::io::Result<File> {
    use rustix::fs::OFlags;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
    let refused = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
    // `/dev/stderr`, `/dev/stdout` and `/dev/fd/N` are links that only root can plant: they are
    // followed, to netproxy's own standard streams (a pipe among them: opened without blocking,
    // it has a reader).
    let own_stream = path.parent() == Some(Path::new("/dev")) || path.starts_with("/dev/fd/");
    let mut flags = OFlags::NONBLOCK;
    if !own_stream {
        flags |= OFlags::NOFOLLOW;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(flags.bits().cast_signed());
    let file = opts.open(path).map_err(|e| {
        if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            refused("it is a symbolic link, which is refused (give the file's own path)".into())
        } else if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) {
            // A pipe without a reader, or a socket.
            match std::fs::symlink_metadata(path).map(|m| m.file_type()) {
                Ok(t) if t.is_fifo() => refused(NAMED_PIPE.into()),
                Ok(t) if t.is_socket() => refused(format!("it is a socket; {NOT_A_FILE}")),
                _ => e,
            }
        } else {
            e
        }
    })?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if kind.is_fifo() && !own_stream {
        return Err(refused(NAMED_PIPE.into()));
    }
    if !(kind.is_file() || kind.is_char_device() || (own_stream && kind.is_fifo())) {
        return Err(refused(format!("it is not a regular file; {NOT_A_FILE}")));
    }
    if kind.is_file() {
        if meta.nlink() > 1 {
            return Err(refused(format!(
                "it has {} hard links: another name leads to the same file, which netproxy would write (give a file of its own)",
                meta.nlink()
            )));
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(refused(format!(
                "it is owned by uid {}, not by netproxy's user (uid {me}); give a file netproxy creates or owns",
                meta.uid()
            )));
        }
    }
    // Writes wait as usual (a terminal's would otherwise fail with EAGAIN).
    let flags = rustix::fs::fcntl_getfl(&file)?;
    rustix::fs::fcntl_setfl(&file, flags - OFlags::NONBLOCK)?;
    let mode = meta.permissions().mode() & 0o7777;
    // Only a regular file: a device such as /dev/stderr keeps its mode.
    if kind.is_file() && mode & !0o600 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("it has mode {mode:04o} and cannot be narrowed to 0600: {e}"),
                )
            })?;
        tracing::warn!(
            path = %path.display(),
            "the audit log had mode {mode:04o}, open to other users; narrowed to 0600"
        );
    }
    Ok(file)
}

/// Why a named pipe at the audit log's path is refused.
const NAMED_PIPE: &str =
    "it is a named pipe (FIFO), which is refused: give a regular file (or a character device)";

/// What the audit log may be.
const NOT_A_FILE: &str = "give a regular file, a character device, or /dev/stderr";

impl JsonLinesFile {
    /// Opens (or creates, mode 0600) `path` for appending and starts the writer thread.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = open(path)?;
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            queue: DropOldest::new(QUEUE),
            reopen: AtomicBool::new(false),
            unwritten: AtomicU64::new(0),
        });
        let s = shared.clone();
        let writer = std::thread::Builder::new()
            .name("netproxy-audit-log".into())
            .spawn(move || write_loop(&s, file))?;
        Ok(Self {
            shared,
            writer: std::sync::Mutex::new(Some(writer)),
        })
    }

    /// Reopens the file (after a log rotation moved it away): at once, so that the old file is
    /// released and the new one created even while no event comes.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Relaxed);
        self.shared.queue.nudge();
    }

    /// Events lost: dropped because the writer fell behind, or not written because the write
    /// failed.
    pub fn dropped(&self) -> u64 {
        self.shared.queue.dropped() + self.shared.unwritten.load(Ordering::Relaxed)
    }

    /// Writes what is queued and stops the writer (at shutdown).
    pub fn close(&self) {
        self.shared.queue.close();
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for JsonLinesFile {
    fn drop(&mut self) {
        self.close();
    }
}

/// Writes batches of lines and keeps the file whole across failed writes (a full disk): a
/// line cut short by a failure is ended before the next batch, so that the file stays one JSON
/// object a line.
#[derive(Debug)]
struct Output {
    /// The last write ended inside a line.
    cut: bool,
    outage: crate::Outage,
}

impl Output {
    fn new(path: &Path) -> Self {
        Self {
            cut: false,
            outage: crate::Outage::new(path.display().to_string()),
        }
    }

    /// Writes `lines` (`count` whole lines) to `w`; returns how many of them were lost, i.e.
    /// not written whole. `queue_drops` is the queue's drop count so far.
    fn write(&mut self, w: &mut impl Write, lines: &[u8], count: usize, queue_drops: u64) -> u64 {
        let mut done = 0;
        let mut result = Ok(());
        if self.cut {
            result = w.write_all(b"\n");
            if result.is_ok() {
                self.cut = false;
            }
        }
        if result.is_ok() {
            result = write_some(w, lines, &mut done);
        }
        let Err(e) = result else {
            self.outage.report(None, queue_drops);
            return 0;
        };
        let written = &lines[..done];
        if !written.is_empty() && !written.ends_with(b"\n") {
            self.cut = true;
        }
        let whole = written.iter().filter(|&&b| b == b'\n').count();
        let lost = count.saturating_sub(whole) as u64;
        self.outage.report(Some((&e, lost)), queue_drops);
        lost
    }
}

/// `write_all` that counts in `done` how much of `buf` was written before a failure.
fn write_some(w: &mut impl Write, buf: &[u8], done: &mut usize) -> std::io::Result<()> {
    while *done < buf.len() {
        match w.write(&buf[*done..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => *done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_loop(shared: &Shared, mut file: File) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut clock = crate::TimestampCache::default();
    let mut batch = std::collections::VecDeque::new();
    let mut linger = Duration::ZERO;
    let mut pace = Pace::new(Instant::now());
    let mut out = Output::new(&shared.path);
    loop {
        shared
            .queue
            .wait_into(&mut batch, MAX_BATCH, linger, crate::IDLE_WAIT);
        // A quiet log gets each event at once. Under load each batch gathers for a while: a
        // write costs far more than the lines in it (measured in docs/benchmarks.md), and a
        // busy proxy then makes about fifty writes a second.
        if !batch.is_empty() {
            linger = if pace.busy(Instant::now(), batch.len()) {
                BUSY_LINGER
            } else {
                Duration::ZERO
            };
        }
        if shared.reopen.swap(false, Ordering::Relaxed) {
            match open(&shared.path) {
                Ok(f) => {
                    file = f;
                    // A new file starts with no broken line of the old one.
                    out.cut = false;
                }
                Err(e) => tracing::error!(
                    path = %shared.path.display(),
                    error = %e,
                    "cannot reopen the audit log; writing to the old file"
                ),
            }
        }
        if batch.is_empty() {
            if shared.queue.finished() {
                out.outage.finish(shared.queue.dropped());
                return;
            }
            continue;
        }
        buf.clear();
        for ev in &batch {
            crate::write_line(&mut buf, ev, clock.format(ev.timestamp));
        }
        let lost = out.write(&mut file, &buf, batch.len(), shared.queue.dropped());
        shared.unwritten.fetch_add(lost, Ordering::Relaxed);
        crate::pool::EVENTS.give_back(&mut batch);
    }
}

impl AuditSink for JsonLinesFile {
    fn record(&self, event: &AuditEvent) {
        self.shared.queue.push(Arc::new(event.clone()));
    }

    fn record_shared(&self, event: &Arc<AuditEvent>) {
        self.shared.queue.push(event.clone());
    }

    fn keeps_events(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes `room` bytes, then fails like a full disk until given more room.
    struct Disk {
        data: Vec<u8>,
        room: usize,
    }

    impl Write for Disk {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::Error::from_raw_os_error(28));
            }
            let n = b.len().min(self.room).min(7);
            self.data.extend_from_slice(&b[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The only test that reaches the outage's log lines (tracing caches a callsite's interest
    /// across threads).
    #[test]
    fn a_line_cut_by_a_full_disk_is_ended_and_only_unwritten_lines_count_as_lost() {
        let log = crate::testing::Capture::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, full_disk);
        let log = log.text();
        // Three failed writes and a recovery: one error, one warning with the total lost; then
        // the same for a writer that fell behind, and one more at the end.
        let lines: Vec<_> = log.lines().collect();
        assert_eq!(lines.len(), 5, "{log}");
        assert!(
            lines[0].contains("ERROR") && lines[0].contains("lost=2"),
            "{log}"
        );
        assert!(lines[0].contains("audit.jsonl"), "{log}");
        assert!(
            lines[1].contains("WARN") && lines[1].contains("lost=3"),
            "{log}"
        );
        assert!(
            lines[2].contains("ERROR")
                && lines[2].contains("fell behind")
                && lines[2].contains("lost=5"),
            "{log}"
        );
        assert!(
            lines[3].contains("WARN") && lines[3].contains("lost=5"),
            "{log}"
        );
        assert!(
            lines[4].contains("stopped while losing events") && lines[4].contains("lost=2"),
            "{log}"
        );
    }

    fn full_disk() {
        let mut out = Output::new(Path::new("audit.jsonl"));
        let mut disk = Disk {
            data: Vec::new(),
            room: 20,
        };
        assert_eq!(out.write(&mut disk, b"{\"a\":1}\n", 1, 0), 0);
        // Room for the first line and part of the second: two of three lost.
        assert_eq!(
            out.write(&mut disk, b"{\"b\":2}\n{\"c\":3}\n{\"d\":4}\n", 3, 0),
            2
        );
        assert!(out.cut && out.outage.lost() == Some(2));
        // Still full: nothing written, all lost.
        assert_eq!(out.write(&mut disk, b"{\"e\":5}\n", 1, 0), 1);
        assert_eq!(out.outage.lost(), Some(3));
        // Room again: the cut line is ended first, then the batch follows whole.
        disk.room = 100;
        assert_eq!(out.write(&mut disk, b"{\"f\":6}\n", 1, 0), 0);
        assert!(!out.cut && out.outage.lost().is_none());
        let text = String::from_utf8(disk.data.clone()).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"b\":2}\n{\"c\"\n{\"f\":6}\n");
        // Every line but the cut one is a whole object.
        let whole: Vec<_> = text
            .lines()
            .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
            .collect();
        assert_eq!(whole, ["{\"a\":1}", "{\"b\":2}", "{\"f\":6}"]);
        // The writes succeed but the queue dropped 5 events meanwhile: an outage too, until a
        // round with no new drops.
        assert_eq!(out.write(&mut disk, b"{\"g\":7}\n", 1, 5), 0);
        assert_eq!(out.outage.lost(), Some(5));
        assert_eq!(out.write(&mut disk, b"{\"h\":8}\n", 1, 5), 0);
        assert!(out.outage.lost().is_none());
        // Stopping with drops not yet reported.
        out.outage.finish(7);
    }

    #[test]
    fn batches_gather_only_under_load() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut pace = Pace::new(t0);
        // Requests one after the other, even a few at once: each event is written at once.
        assert!(!pace.busy(ms(1), 1));
        assert!(!pace.busy(ms(12), 3));
        assert!(!pace.busy(ms(30), 1));
        // A thousand events a second: batches gather...
        assert!(!pace.busy(ms(101), 40));
        assert!(pace.busy(ms(150), 60));
        // ...also at the start of the next window...
        assert!(pace.busy(ms(210), 1));
        assert!(pace.busy(ms(330), 150));
        // ...until the load stops: a window later, quiet again.
        assert!(pace.busy(ms(430), 1));
        assert!(!pace.busy(ms(560), 1));
        // After a long pause the last busy window does not count.
        assert!(pace.busy(ms(600), 200));
        assert!(!pace.busy(ms(5000), 1));
    }
}
