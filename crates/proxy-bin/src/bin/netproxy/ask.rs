//! `netproxy run --ask` (docs/run.md, "Approvals"): allowlist misses held for an answer, given
//! on the controlling terminal or through the admin API (`GET /pending`, `POST /pending/ID`).
//! The table itself is the library's [`Approvals`]; this module is its terminal.
//!
//! The terminal is shared with the child, so netproxy takes it only with the child stopped.
//! Under `--ask` with a terminal, CMD runs in a process group of its own (set at spawn by
//! `process_group(0)`), which netproxy makes the terminal's foreground group. To ask, a thread
//! of netproxy's (with SIGTTOU and SIGTTIN blocked, so that changing the terminal from the
//! background is allowed instead of stopping netproxy) stops the child's group (SIGSTOP) and
//! the foreground group when the child made another one of its own (an interactive shell's
//! job), saves the terminal's settings, becomes the foreground group, asks with the settings
//! the terminal had when netproxy started (line by line, echoed; Ctrl-C or Ctrl-D denies),
//! then restores the child's settings, gives the terminal back and continues the groups
//! (SIGCONT; SIGWINCH too for a full-screen child, so that it redraws). Questions come one at
//! a time, oldest first; while the child is stopped, every question waiting is asked.
//!
//! Job control goes on working: a Ctrl-Z stops the child's group, which netproxy notices
//! (it looks at the child every 200 ms); it takes the terminal back and stops its own process
//! group as the child's would have stopped, so that the shell sees the job stop. When the
//! shell continues it (`fg`), netproxy gives the terminal back to the child and continues it;
//! after `bg`, it continues the child without the terminal.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netproxy::approvals::{AnswerError, DEFAULT_TIMEOUT, managed_refusal};
use netproxy::{Approvals, Service};
use proxy_core::{Answered, Approval, Host, PendingDecision};
use rustix::process::{Pid, Signal};
use rustix::termios::{
    InputModes, LocalModes, OptionalActions, OutputModes, QueueSelector, SpecialCodeIndex, Termios,
};

use super::RunArgs;

/// How often the terminal's thread looks at the child and at the table.
const TICK: Duration = Duration::from_millis(200);

/// `--ask`, set up before CMD starts.
pub(crate) struct Ask {
    approvals: Approvals,
    /// The controlling terminal, when netproxy has one in the foreground; otherwise answers
    /// come through the admin API only.
    terminal: Option<std::fs::File>,
}

/// Sets up `--ask` on `service` (nothing without `--ask`): the approvals table as the gate's
/// decider, and the terminal to ask on. `Err` with the exit code after saying why it cannot
/// run: a managed requirement forbids it (3), or there is neither a terminal nor `--admin` to
/// answer through (2).
pub(crate) fn prepare(
    args: &RunArgs,
    service: Service,
) -> Result<(Service, Option<Ask>), ExitCode> {
    if !args.ask {
        return Ok((service, None));
    }
    let config = service.config();
    if let Some(r) = config.requirements().iter().find(|r| r.ask == Some(false)) {
        eprintln!(
            "netproxy: config error: {}: network.ask: managed ask = false forbids --ask (holding requests for approval)",
            r.origin.display()
        );
        return Err(ExitCode::from(super::EXIT_CONFIG));
    }
    // What the managed constraints fix is refused without asking: the allowlist cannot grow.
    if let Some(why) = managed_refusal(&config) {
        eprintln!(
            "netproxy: warning: --ask: requests outside the allowlist are refused without asking: {why}"
        );
        return Ok((service, None));
    }
    let terminal = foreground_terminal();
    if terminal.is_none() && args.admin.is_none() {
        eprintln!(
            "netproxy run: --ask asks on the terminal, and netproxy has none in the foreground; \
             give --admin ADDR to answer through the admin API (GET /pending, POST /pending/ID)"
        );
        return Err(ExitCode::from(super::EXIT_USAGE));
    }
    let approvals = Approvals::new(timeout(), super::home_dir().map(|h| h.join("config.toml")));
    let service = service.with_approvals(approvals.clone());
    Ok((
        service,
        Some(Ask {
            approvals,
            terminal,
        }),
    ))
}

/// How long a request waits for an answer: [`DEFAULT_TIMEOUT`]; debug builds take
/// `NETPROXY_ASK_TIMEOUT_MS` for the tests.
fn timeout() -> Duration {
    if cfg!(debug_assertions)
        && let Some(ms) = std::env::var("NETPROXY_ASK_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
    {
        return Duration::from_millis(ms);
    }
    DEFAULT_TIMEOUT
}

/// `/dev/tty`, when netproxy's process group is its foreground group (a netproxy started in
/// the background must not take the terminal from the shell).
fn foreground_terminal() -> Option<std::fs::File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        "/dev/tty",
        OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .ok()?;
    let fg = rustix::termios::tcgetpgrp(&fd).ok()?;
    (fg == rustix::process::getpgrp()).then(|| std::fs::File::from(fd))
}

impl Ask {
    /// Before CMD starts: with a terminal, CMD gets a process group of its own.
    pub(crate) fn configure(&self, cmd: &mut tokio::process::Command) {
        if self.terminal.is_some() {
            cmd.process_group(0);
        }
    }

    /// Once CMD runs: with a terminal, gives it the terminal and starts the thread that asks.
    pub(crate) fn start(self, child: &tokio::process::Child) -> Asking {
        let (tx, rx) = mpsc::channel();
        let child = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw);
        let thread = match (self.terminal, child) {
            (Some(tty), Some(child)) => {
                let changed = tx.clone();
                self.approvals.on_change(move || {
                    let _ = changed.send(Msg::Changed);
                });
                // A SIGCONT to netproxy: the shell continued the job netproxy stopped.
                let continued = tx.clone();
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(
                    Signal::CONT.as_raw(),
                )) {
                    Ok(mut s) => {
                        tokio::spawn(async move {
                            while s.recv().await.is_some() {
                                if continued.send(Msg::Continued).is_err() {
                                    return;
                                }
                            }
                        });
                    }
                    Err(e) => tracing::warn!("--ask: cannot watch SIGCONT: {e}"),
                }
                let approvals = self.approvals.clone();
                let spawned = std::thread::Builder::new()
                    .name("netproxy-ask".into())
                    .spawn(move || Prompter::new(tty, child, approvals).run(&rx));
                match spawned {
                    Ok(t) => Some(t),
                    Err(e) => {
                        tracing::warn!("--ask: cannot start the terminal's thread: {e}");
                        None
                    }
                }
            }
            _ => None,
        };
        Asking {
            approvals: self.approvals,
            tx,
            thread,
        }
    }
}

/// `--ask` while CMD runs.
pub(crate) struct Asking {
    approvals: Approvals,
    tx: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl Asking {
    /// Once CMD has exited: the terminal back to netproxy's process group (when CMD's had
    /// it), and, unless `quiet`, what answers allowed for this session only (not saved).
    pub(crate) fn finish(self, quiet: bool) {
        let _ = self.tx.send(Msg::Finish);
        if let Some(t) = self.thread {
            let _ = t.join();
        }
        let unsaved = self.approvals.unsaved();
        if !quiet && !unsaved.is_empty() {
            let flags: Vec<String> = unsaved.iter().map(|p| format!("--allow {p}")).collect();
            eprintln!(
                "netproxy: allowed for this session only, not saved: {} ({} allows it next time)",
                unsaved.join(", "),
                flags.join(" ")
            );
        }
    }
}

enum Msg {
    /// The table changed.
    Changed,
    /// netproxy was continued.
    Continued,
    /// CMD exited.
    Finish,
}

/// The terminal's side of `--ask`, on a thread of its own.
struct Prompter {
    tty: std::fs::File,
    approvals: Approvals,
    /// netproxy's process group.
    own: Pid,
    /// CMD, the leader of its process group.
    child: Pid,
    /// The terminal's settings when netproxy started: the ones questions are asked with.
    saved: Option<Termios>,
    /// Other process groups of CMD's seen in the foreground (an interactive shell's jobs).
    groups: Vec<Pid>,
}

/// How one question ended.
enum Asked {
    Answered,
    /// Answered elsewhere, timed out, or no request waits any more.
    Gone,
    /// CMD exited.
    Finish,
}

/// One line read from the terminal.
enum Read {
    Line(String),
    /// Ctrl-C, Ctrl-D, or the terminal went away: a refusal.
    Refuse,
    Gone,
    Finish,
}

impl Prompter {
    fn new(tty: std::fs::File, child: Pid, approvals: Approvals) -> Self {
        let saved = rustix::termios::tcgetattr(&tty).ok();
        Self {
            tty,
            approvals,
            own: rustix::process::getpgrp(),
            child,
            saved,
            groups: Vec::new(),
        }
    }

    fn run(mut self, rx: &mpsc::Receiver<Msg>) {
        block_terminal_signals();
        // CMD's group gets the terminal. Until now it was a background group: if it touched
        // the terminal it was stopped (SIGTTIN, SIGTTOU), and is continued now.
        if let Err(e) = rustix::termios::tcsetpgrp(&self.tty, self.child) {
            tracing::warn!("--ask: cannot give the terminal to the command: {e}");
        }
        let _ = rustix::process::kill_process_group(self.child, Signal::CONT);
        loop {
            match rx.recv_timeout(TICK) {
                Ok(Msg::Finish) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Ok(Msg::Changed | Msg::Continued) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if stopped(self.child) {
                if self.relay_stop(rx) {
                    break;
                }
                continue;
            }
            if !self.approvals.view().pending.is_empty() && self.ask_all(rx) {
                break;
            }
        }
        self.restore();
    }

    /// Whether `group` is one of CMD's: its own, or one whose leader descends from CMD.
    fn is_childs(&mut self, group: Pid) -> bool {
        if group == self.child || self.groups.contains(&group) {
            return true;
        }
        let mut pid = group.as_raw_nonzero().get();
        for _ in 0..32 {
            let Some(parent) = parent_of(pid) else {
                return false;
            };
            if parent == self.child.as_raw_nonzero().get() {
                self.groups.push(group);
                return true;
            }
            if parent <= 1 {
                return false;
            }
            pid = parent;
        }
        false
    }

    /// Asks every question waiting, with CMD stopped: `true` when CMD exited meanwhile.
    fn ask_all(&mut self, rx: &mpsc::Receiver<Msg>) -> bool {
        let Ok(fg) = rustix::termios::tcgetpgrp(&self.tty) else {
            return false;
        };
        let childs = fg != self.own && self.is_childs(fg);
        if fg != self.own && !childs {
            // Someone else's terminal now (netproxy runs in the background): the questions
            // wait for the admin API, or for their timeout.
            return false;
        }
        // CMD first, then its foreground job: a shell that saw its job stop would take the
        // terminal back and report the job stopped.
        let mut groups = vec![self.child];
        if childs && fg != self.child {
            groups.push(fg);
        }
        for g in &groups {
            let _ = rustix::process::kill_process_group(*g, Signal::STOP);
        }
        for g in &groups {
            wait_stopped(*g);
        }
        let theirs = rustix::termios::tcgetattr(&self.tty).ok();
        if childs && let Err(e) = rustix::termios::tcsetpgrp(&self.tty, self.own) {
            tracing::warn!("--ask: cannot take the terminal: {e}");
            continue_groups(&groups);
            return false;
        }
        self.question_mode();
        let mut finish = false;
        while let Some(p) = self.approvals.view().pending.into_iter().next() {
            if matches!(self.ask(&p, rx), Asked::Finish) {
                finish = true;
                break;
            }
        }
        // Back as it was: CMD's settings, its group in the foreground, continued.
        if let Some(t) = &theirs {
            let _ = rustix::termios::tcsetattr(&self.tty, OptionalActions::Now, t);
        }
        if childs {
            let _ = rustix::termios::tcsetpgrp(&self.tty, fg);
        }
        continue_groups(&groups);
        // A full-screen program (its terminal not line by line) redraws on a size change.
        if theirs
            .as_ref()
            .is_some_and(|t| !t.local_modes.contains(LocalModes::ICANON))
        {
            let _ = rustix::process::kill_process_group(fg, Signal::WINCH);
        }
        finish
    }

    /// The terminal as it was when netproxy started, line by line and echoed; Ctrl-C ends a
    /// line (and refuses) instead of sending SIGINT; typed-ahead input (meant for CMD) is
    /// dropped, never taken for an answer.
    fn question_mode(&self) {
        if let Some(saved) = &self.saved {
            let mut t = saved.clone();
            t.local_modes |= LocalModes::ICANON | LocalModes::ECHO | LocalModes::ECHOE;
            t.local_modes.remove(LocalModes::ISIG);
            t.input_modes |= InputModes::ICRNL;
            t.output_modes |= OutputModes::OPOST | OutputModes::ONLCR;
            t.special_codes[SpecialCodeIndex::VEOL] = CTRL_C;
            let _ = rustix::termios::tcsetattr(&self.tty, OptionalActions::Now, &t);
        }
        let _ = rustix::termios::tcflush(&self.tty, QueueSelector::IFlush);
    }

    fn say(&self, text: &str) {
        let _ = (&self.tty).write_all(text.as_bytes());
    }

    /// Asks about one pending decision until it is answered or gone.
    fn ask(&mut self, p: &PendingDecision, rx: &mpsc::Receiver<Msg>) -> Asked {
        let target = match Host::parse(&p.host) {
            Ok(h) => proxy_core::Target::net(h, p.port).to_string(),
            Err(_) => format!("{}:{}", p.host, p.port),
        };
        let pattern = Host::parse(&p.host)
            .map(|h| Approvals::pattern_for(&h, p.port))
            .unwrap_or_else(|_| target.clone());
        let left = p.expires.saturating_sub(unix_now());
        let waiting = match p.waiting {
            1 => String::new(),
            n => format!(", {n} requests"),
        };
        self.say(&format!(
            "\nnetproxy: {target} ({}{waiting}) is not in the allowlist; \
             refused in {left} s unless you answer.\n",
            p.protocol
        ));
        if pattern != target {
            self.say(&format!(
                "netproxy: for the session, and saved, it is allowed as {pattern} (every port).\n"
            ));
        }
        loop {
            self.say(
                "netproxy: allow it [o]nce, for this [s]ession, s[a]ve it to a config file, or [d]eny? ",
            );
            let line = match self.read_line(p.id, rx) {
                Read::Line(l) => l,
                Read::Refuse => {
                    self.say("\n");
                    "d".to_owned()
                }
                Read::Gone => {
                    self.say(&format!(
                        "\nnetproxy: {target}: answered elsewhere, timed out, or no longer waited for.\n"
                    ));
                    return Asked::Gone;
                }
                Read::Finish => return Asked::Finish,
            };
            let choice = match line.trim().to_ascii_lowercase().as_str() {
                "o" | "once" => Approval::Once,
                "s" | "session" => Approval::Session,
                "a" | "save" => Approval::Save,
                "d" | "deny" | "n" | "no" => Approval::Deny,
                "" => continue,
                _ => {
                    self.say("netproxy: answer o, s, a or d.\n");
                    continue;
                }
            };
            let file = if choice == Approval::Save {
                match self.ask_file(p.id, rx) {
                    Ok(Some(f)) => Some(f),
                    Ok(None) => continue,
                    Err(asked) => return asked,
                }
            } else {
                None
            };
            match self.approvals.answer(p.id, choice, file.as_deref()) {
                Ok(a) => {
                    self.say(&said(&a, &target));
                    return Asked::Answered;
                }
                Err(AnswerError::NotFound(_)) => {
                    self.say(&format!(
                        "netproxy: {target}: answered elsewhere, timed out, or no longer waited for.\n"
                    ));
                    return Asked::Gone;
                }
                // Not saved: nothing changed, the question stands.
                Err(e) => self.say(&format!("netproxy: {e}\n")),
            }
        }
    }

    /// The file `save` writes to: `Ok(None)` to ask the first question again.
    fn ask_file(&mut self, id: u64, rx: &mpsc::Receiver<Msg>) -> Result<Option<PathBuf>, Asked> {
        let default = self.approvals.save_to().map(Path::to_path_buf);
        let shown = default
            .as_ref()
            .map(|d| format!(" [{}]", d.display()))
            .unwrap_or_default();
        self.say(&format!("netproxy: save to which config file?{shown} "));
        let line = match self.read_line(id, rx) {
            Read::Line(l) => l,
            Read::Refuse => {
                self.say("\n");
                return Ok(None);
            }
            Read::Gone => return Err(Asked::Gone),
            Read::Finish => return Err(Asked::Finish),
        };
        let line = line.trim();
        if line.is_empty() {
            if default.is_none() {
                self.say("netproxy: name a file.\n");
            }
            return Ok(default);
        }
        Ok(Some(expand_home(line)))
    }

    /// One line from the terminal, while `id` is pending and CMD runs.
    fn read_line(&mut self, id: u64, rx: &mpsc::Receiver<Msg>) -> Read {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let mut line = Vec::new();
        let tick = Timespec {
            tv_sec: 0,
            tv_nsec: i64::try_from(TICK.as_nanos()).unwrap_or(200_000_000),
        };
        loop {
            while let Ok(m) = rx.try_recv() {
                if matches!(m, Msg::Finish) {
                    return Read::Finish;
                }
            }
            if !self.approvals.is_pending(id) {
                return Read::Gone;
            }
            let mut fds = [PollFd::new(&self.tty, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&tick)) {
                Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                Ok(_) => {}
                Err(_) => return Read::Refuse,
            }
            let mut buf = [0u8; 256];
            match rustix::io::read(&self.tty, &mut buf) {
                Ok(0) | Err(_) => return Read::Refuse,
                Ok(n) => line.extend_from_slice(&buf[..n]),
            }
            if line.contains(&CTRL_C) {
                return Read::Refuse;
            }
            if let Some(end) = line.iter().position(|b| *b == b'\n') {
                line.truncate(end);
                return Read::Line(String::from_utf8_lossy(&line).into_owned());
            }
        }
    }

    /// CMD was stopped (Ctrl-Z, or it touched the terminal from the background): netproxy
    /// stops its own process group likewise, and once continued gives CMD the terminal (when
    /// netproxy is in the foreground again) and continues it. `true` when CMD exited
    /// meanwhile.
    fn relay_stop(&mut self, rx: &mpsc::Receiver<Msg>) -> bool {
        let fg = rustix::termios::tcgetpgrp(&self.tty).ok();
        let theirs_fg = fg.filter(|g| *g != self.own && self.is_childs(*g));
        let theirs = theirs_fg.and_then(|_| rustix::termios::tcgetattr(&self.tty).ok());
        let mut finish = false;
        if stoppable() {
            if theirs_fg.is_some() {
                if let Some(saved) = &self.saved {
                    let _ = rustix::termios::tcsetattr(&self.tty, OptionalActions::Now, saved);
                }
                let _ = rustix::termios::tcsetpgrp(&self.tty, self.own);
            }
            while let Ok(m) = rx.try_recv() {
                finish |= matches!(m, Msg::Finish);
            }
            if !finish {
                let _ = rustix::process::kill_current_process_group(Signal::TSTP);
                // Stopped here until the shell continues the job. Running again without a
                // SIGCONT after a while means the stop never happened (or the signal's news
                // is late): either way netproxy runs, and goes on.
                loop {
                    match rx.recv_timeout(Duration::from_secs(1)) {
                        Ok(Msg::Continued) | Err(mpsc::RecvTimeoutError::Timeout) => break,
                        Ok(Msg::Finish) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                            finish = true;
                            break;
                        }
                        Ok(Msg::Changed) => {}
                    }
                }
            }
        }
        if !finish && rustix::termios::tcgetpgrp(&self.tty).ok() == Some(self.own) {
            if let Some(t) = &theirs {
                let _ = rustix::termios::tcsetattr(&self.tty, OptionalActions::Now, t);
            }
            let _ = rustix::termios::tcsetpgrp(&self.tty, theirs_fg.unwrap_or(self.child));
        }
        let mut groups = vec![self.child];
        groups.extend(theirs_fg.filter(|g| *g != self.child));
        continue_groups(&groups);
        finish
    }

    /// CMD exited: the terminal back to netproxy's process group, with the settings it had
    /// when netproxy started, when CMD's group (or one of its, or a group now empty) has it.
    fn restore(&mut self) {
        let Ok(fg) = rustix::termios::tcgetpgrp(&self.tty) else {
            return;
        };
        if fg == self.own {
            return;
        }
        let gone = rustix::process::test_kill_process_group(fg).is_err();
        if gone || self.is_childs(fg) {
            if let Some(saved) = &self.saved {
                let _ = rustix::termios::tcsetattr(&self.tty, OptionalActions::Now, saved);
            }
            let _ = rustix::termios::tcsetpgrp(&self.tty, self.own);
        }
    }
}

/// Ctrl-C, which ends a line at the questions (`VEOL`) and refuses.
const CTRL_C: u8 = 0x03;

/// What an answer did, as said on the terminal.
fn said(a: &Answered, target: &str) -> String {
    let pattern = a.pattern.as_deref().unwrap_or(target);
    match (a.choice, &a.saved) {
        (Approval::Once, _) => format!("netproxy: allowed {target} once.\n"),
        (Approval::Deny, _) => format!("netproxy: denied {target}.\n"),
        (_, Some(file)) => {
            format!("netproxy: allowed {pattern} for this session and saved it to {file}.\n")
        }
        _ => format!("netproxy: allowed {pattern} for this session.\n"),
    }
}

/// `~/...` from `HOME`; other paths as given.
fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Blocks SIGTTOU and SIGTTIN on this thread: taking the terminal back and changing its
/// settings from the background are then allowed (the kernel stops a process that does it
/// otherwise), and a read from the background fails instead of stopping netproxy.
fn block_terminal_signals() {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal as NixSignal, pthread_sigmask};
    let mut set = SigSet::empty();
    set.add(NixSignal::SIGTTOU);
    set.add(NixSignal::SIGTTIN);
    if let Err(e) = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        tracing::warn!("--ask: cannot block SIGTTOU: {e}");
    }
}

/// The process's state letter in `/proc/PID/stat` (after the command's closing `)`).
fn state_of(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// The parent of `pid`, from `/proc/PID/stat`.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether `pid` is stopped by a signal (not by a tracer).
fn stopped(pid: Pid) -> bool {
    state_of(pid.as_raw_nonzero().get()) == Some('T')
}

/// Continues process groups stopped in the order given, the last first: a shell (CMD)
/// continued after its job never sees the job stopped.
fn continue_groups(groups: &[Pid]) {
    for g in groups.iter().rev() {
        let _ = rustix::process::kill_process_group(*g, Signal::CONT);
    }
}

/// Waits (briefly) until `pid` is stopped, so that nothing it writes lands in a question.
fn wait_stopped(pid: Pid) {
    let begin = Instant::now();
    while !stopped(pid) && begin.elapsed() < Duration::from_millis(200) {
        if state_of(pid.as_raw_nonzero().get()).is_none_or(|s| s == 'Z') {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Whether stopping netproxy's process group can be undone by a shell: its parent is in
/// another process group of the same session (a shell with job control). Otherwise the
/// group is orphaned, the kernel would ignore the stop, and a Ctrl-Z is not relayed.
fn stoppable() -> bool {
    let Some(parent) = rustix::process::getppid() else {
        return false;
    };
    let own = rustix::process::getpgrp();
    let same_session =
        rustix::process::getsid(Some(parent)).ok() == rustix::process::getsid(None).ok();
    same_session && rustix::process::getpgid(Some(parent)).is_ok_and(|g| g != own)
}
