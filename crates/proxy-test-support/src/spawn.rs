//! Programs under test as real processes. [`Process`] starts one, waits for the ready file it
//! writes once it serves, collects its stderr as it comes (so the pipe never fills, and a test
//! can wait for a log line instead of sleeping), and kills it when dropped, also when the test
//! fails. [`output_within`] runs a program to its end, bounded.
//!
//! The program is the caller's `Command` (its path, arguments and environment): Cargo gives a
//! binary's path (`CARGO_BIN_EXE_<name>`) only to its own package's tests.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::wait::{PATIENCE, wait_for};

/// A process's stderr so far, and whether it has ended (the process closed it).
#[derive(Debug, Default)]
struct Stderr {
    text: Mutex<(String, bool)>,
    grew: Condvar,
}

/// A running program. Dropping it kills the process and reaps it.
#[derive(Debug)]
pub struct Process {
    child: Child,
    stderr: Arc<Stderr>,
    reader: Option<JoinHandle<()>>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Starts `command` with its stderr collected; stdin and stdout stay as `command` sets
    /// them.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let stderr = Arc::new(Stderr::default());
        let s = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                let n = pipe.read(&mut buf).unwrap_or(0);
                let mut g = s.text.lock().unwrap_or_else(PoisonError::into_inner);
                g.0.push_str(&String::from_utf8_lossy(&buf[..n]));
                g.1 = n == 0;
                drop(g);
                s.grew.notify_all();
                if n == 0 {
                    return;
                }
            }
        });
        Self {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    /// Starts `command` and waits until it has written `ready`: a regular file (a symlink
    /// planted at that path does not count) with some content, which is returned. The test
    /// fails, with the process's stderr, if the process exits first or the file does not come
    /// within [`PATIENCE`].
    pub fn spawn_ready(command: Command, ready: &Path) -> (Self, String) {
        let mut p = Self::spawn(command);
        let text = wait_for("the ready file", || {
            if let Some(status) = p.child.try_wait().expect("try_wait") {
                panic!(
                    "the process exited ({status}) before it was ready:\n{}",
                    p.stderr()
                );
            }
            std::fs::symlink_metadata(ready)
                .ok()
                .filter(std::fs::Metadata::is_file)
                .and_then(|_| std::fs::read_to_string(ready).ok())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| p.stderr())
        });
        (p, text)
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child, for its stdin and stdout.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The stderr written so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .text
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clone()
    }

    /// Waits until a whole line of stderr satisfies `pred` and returns the first such line. The test
    /// fails, with the stderr so far, when the process closes stderr (it exits) without one, or
    /// after [`PATIENCE`].
    pub fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let begin = Instant::now();
        let mut g = self
            .stderr
            .text
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            // Whole lines only: the last may still be coming.
            let whole = if g.1 {
                g.0.as_str()
            } else {
                g.0.rsplit_once('\n').map_or("", |(w, _)| w)
            };
            if let Some(line) = whole.lines().find(|l| pred(l)) {
                return line.to_owned();
            }
            let left = PATIENCE.saturating_sub(begin.elapsed());
            assert!(
                !g.1 && !left.is_zero(),
                "no line on stderr for {what}:\n{}",
                g.0
            );
            g = self
                .stderr
                .grew
                .wait_timeout(g, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Sends the signal `name` (`TERM`, `HUP`, ...) with kill(1).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(ok.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit (failing the test after [`PATIENCE`]): its exit code, or
    /// `None` when a signal ended it.
    pub fn wait_exit(&mut self) -> Option<i32> {
        self.wait_status().code()
    }

    fn wait_status(&mut self) -> ExitStatus {
        wait_for("the process to exit", || {
            self.child
                .try_wait()
                .expect("try_wait")
                .ok_or("still running")
        })
    }

    /// Waits for stderr to close (the process and any child that inherited it are gone).
    fn join_stderr(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    /// Sends SIGTERM and waits for the exit: the exit code and the whole stderr.
    pub fn stop(self) -> (Option<i32>, String) {
        self.signal("TERM");
        self.finish()
    }

    /// Waits for the exit (failing the test after [`PATIENCE`]) and for stderr to close: the
    /// exit code and the whole stderr.
    pub fn finish(mut self) -> (Option<i32>, String) {
        let code = self.wait_exit();
        self.join_stderr();
        (code, self.stderr())
    }
}

/// Runs `command` to its end with stdin empty and its output collected (read as it comes, so a
/// large output cannot stall it); kills it and fails the test if it runs longer than
/// [`PATIENCE`].
pub fn output_within(mut command: Command) -> Output {
    command.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut p = Process::spawn(command);
    let mut pipe = p.child.stdout.take().expect("stdout is piped");
    let stdout = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = pipe.read_to_end(&mut out);
        out
    });
    let status = p.wait_status();
    p.join_stderr();
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: p.stderr().into_bytes(),
    }
}
