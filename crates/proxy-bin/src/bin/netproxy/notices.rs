//! `run`'s live notices (docs/run.md, "Notices"): each refused or failed target told once, as
//! it happens, on netproxy's stderr or in the file of `--notices FILE`. A background thread
//! writes them, so that a request never waits on the terminal. When stderr is a terminal that
//! the child put in raw mode (a full-screen program), a notice would garble its screen: it
//! waits, and is printed with the summary at exit (or before the next notice, once the
//! terminal is back in canonical mode).

use std::io::{IsTerminal, Write};
use std::sync::mpsc;

/// Where the notices go.
pub(crate) enum Out {
    /// netproxy's stderr (the child's terminal, most often).
    Stderr,
    /// The file of `--notices FILE`, opened for appending.
    File(std::fs::File),
}

enum Msg {
    Line(String),
    Stop,
}

/// The writer of the notices: [`Notices::sink`] hands it lines, [`Notices::finish`] stops it.
pub(crate) struct Notices {
    tx: mpsc::Sender<Msg>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

/// Whether stderr is a terminal in raw (non-canonical) mode, as a full-screen program leaves
/// it: read from the terminal's settings now.
pub(crate) fn raw_terminal() -> bool {
    let err = std::io::stderr();
    if !err.is_terminal() {
        return false;
    }
    rustix::termios::tcgetattr(&err)
        .is_ok_and(|t| !t.local_modes.contains(rustix::termios::LocalModes::ICANON))
}

/// Writes `lines` to stderr at once, each ended by `\r\n` when the terminal is in raw mode (its
/// driver then adds no carriage return), `\n` otherwise.
pub(crate) fn print_lines(lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let end = if raw_terminal() { "\r\n" } else { "\n" };
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push_str(end);
    }
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

impl Notices {
    /// Starts the writer.
    pub(crate) fn start(mut out: Out) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let thread = std::thread::Builder::new()
            .name("netproxy-notices".into())
            .spawn(move || {
                let mut waiting: Vec<String> = Vec::new();
                for msg in rx {
                    let Msg::Line(line) = msg else { break };
                    match &mut out {
                        Out::File(f) => {
                            let _ = writeln!(f, "{line}");
                        }
                        Out::Stderr if raw_terminal() => waiting.push(line),
                        Out::Stderr => {
                            waiting.push(line);
                            print_lines(&waiting);
                            waiting.clear();
                        }
                    }
                }
                waiting
            })?;
        Ok(Self {
            tx,
            thread: Some(thread),
        })
    }

    /// What the recorder calls with each notice: queued for the writer, never blocking.
    pub(crate) fn sink(&self) -> impl Fn(String) + Send + Sync + 'static {
        let tx = self.tx.clone();
        move |line| {
            let _ = tx.send(Msg::Line(line));
        }
    }

    /// Writes what is queued and stops the writer; returns the notices that waited for a
    /// terminal in raw mode, to be printed with the summary.
    pub(crate) fn finish(mut self) -> Vec<String> {
        let _ = self.tx.send(Msg::Stop);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Notices {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
    }
}
