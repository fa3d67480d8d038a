//! The stderr log: formatted by tracing-subscriber, written in batches by a background thread so
//! that a request never waits on the terminal or the log file, and two workers never contend
//! for the stderr lock. Lines are flushed within 20 ms, when 64 KiB are pending, and at exit; a
//! quiet log does not wake the thread at all.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Flush when this many bytes are pending.
const HIGH_WATER: usize = 64 * 1024;
/// Beyond this much pending output (stderr is a pipe nobody reads), lines are dropped rather
/// than held: memory stays bounded and the proxy keeps serving.
const MAX_PENDING: usize = 8 * 1024 * 1024;
/// Pending lines are written at most this long after the first of them.
const INTERVAL: Duration = Duration::from_millis(20);

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    stop: bool,
    /// The thread waits for a first line: the next write wakes it (only that one does).
    idle: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

/// The writer handed to tracing-subscriber; cheap to clone.
#[derive(Clone)]
pub(crate) struct BatchedStderr {
    shared: Arc<Shared>,
}

/// Flushes what is pending and stops the background thread when dropped.
pub(crate) struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        {
            let mut g = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            g.stop = true;
        }
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write_out(bytes: &[u8]) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(bytes);
    let _ = err.flush();
}

impl BatchedStderr {
    /// The writer and the guard that flushes it at exit.
    pub(crate) fn start() -> (Self, FlushGuard) {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("netproxy-log".into())
            .spawn(move || {
                let mut out = Vec::new();
                loop {
                    let stop = {
                        let mut g = s
                            .pending
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if g.buf.is_empty() && !g.stop {
                            g.idle = true;
                            g = s
                                .wake
                                .wait_while(g, |p| p.buf.is_empty() && !p.stop)
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            g.idle = false;
                        }
                        // Lines came: let more gather for a moment, unless there are plenty.
                        let (mut g, _) = s
                            .wake
                            .wait_timeout_while(g, INTERVAL, |p| {
                                p.buf.len() < HIGH_WATER && !p.stop
                            })
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        std::mem::swap(&mut g.buf, &mut out);
                        g.stop
                    };
                    if !out.is_empty() {
                        write_out(&out);
                        out.clear();
                    }
                    if stop {
                        return;
                    }
                }
            })
            .ok();
        (
            Self {
                shared: shared.clone(),
            },
            FlushGuard { shared, thread },
        )
    }
}

impl Write for BatchedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut g = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.stop {
            // Stopped (exiting): write through.
            drop(g);
            write_out(buf);
            return Ok(buf.len());
        }
        if g.buf.len() + buf.len() <= MAX_PENDING {
            g.buf.extend_from_slice(buf);
        }
        let wake = std::mem::take(&mut g.idle) || g.buf.len() >= HIGH_WATER;
        drop(g);
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchedStderr {
    type Writer = BatchedStderr;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Whether the log may use colour, by the rule clap follows for help and usage errors: only
/// when stderr is a terminal that is not `TERM=dumb` (nor has no `TERM` at all), and never
/// while `NO_COLOR` is set to anything but the empty string (no-color.org).
fn colour_on_stderr() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("TERM").is_some_and(|t| t != "dumb")
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `run`'s lines when `RUST_LOG` is not set: `netproxy: warning: MESSAGE key=value`, without
/// the timestamp, level column and module path of a log line. The terminal is the child's:
/// what netproxy says there reads as a line of netproxy's (docs/run.md).
struct Plain;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Plain
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            _ => "note",
        };
        write!(writer, "netproxy: {level}: ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Installs `run`'s stderr log: with `RUST_LOG`, the log of [`init`]; without it, warnings
/// and errors only, as plain lines of netproxy's ([`Plain`]).
pub(crate) fn init_run() -> FlushGuard {
    if std::env::var_os("RUST_LOG").is_some() {
        return init("warn", false);
    }
    let (writer, guard) = BatchedStderr::start();
    let filter = tracing_subscriber::EnvFilter::new("warn");
    let _ = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_env_filter(filter)
        .event_format(Plain)
        .try_init();
    guard
}

/// Installs the stderr log: `RUST_LOG` if set, else `default`; text or JSON lines. Returns the
/// guard that flushes it at exit.
pub(crate) fn init(default: &str, json: bool) -> FlushGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // fast-socks5 logs the RFC 1929 username and password at debug level: never let it.
    let filter = match "fast_socks5=info".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    let (writer, guard) = BatchedStderr::start();
    let builder = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(colour_on_stderr())
        .with_env_filter(filter);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    guard
}
