//! Real curl, with the flags every test wants: quiet but with its errors (`-sS`), bounded
//! (`--max-time`), the status code written after the body, and an empty environment so that no
//! proxy variable of the test's own environment applies (only `-x` does). Blocking: from an
//! async test on a multi-thread runtime, call it from the test's body (the runtime's workers
//! keep serving) or through `spawn_blocking`.

use std::ffi::OsStr;
use std::process::{Command, Output};

/// How long one curl may take: generous, as it only bounds a hang.
const MAX_TIME: &str = "20";

/// A curl command being built.
#[derive(Debug)]
pub struct Curl {
    cmd: Command,
}

/// What curl answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurlOutput {
    /// The HTTP status code (`%{http_code}`); 0 when no response came.
    pub status: u16,
    /// What curl wrote before the status code: the body (with `-i`, the head too).
    pub body: String,
    /// curl's stderr: its error, or what `-v` shows.
    pub stderr: String,
}

impl CurlOutput {
    /// Reads curl's output (run with the flags [`Curl`] sets). A `-w` of the caller's own
    /// replaces the status code: then the status is 0 and the body all of stdout.
    pub fn parse(out: &Output) -> Self {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        let (status, body) = match code.parse() {
            Ok(status) => (status, body),
            Err(_) => (0, &*stdout),
        };
        Self {
            status,
            body: body.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The body, then stderr: everything curl said, for assertions and their messages.
    pub fn text(&self) -> String {
        format!("{}{}", self.body, self.stderr)
    }
}

impl Default for Curl {
    fn default() -> Self {
        Self::new()
    }
}

impl Curl {
    /// curl with the common flags and no proxy.
    pub fn new() -> Self {
        Self::inside::<&str>(&[])
    }

    /// curl started through `prefix` (for example `nsenter -t PID -n --`, to run it in another
    /// network namespace).
    pub fn inside<S: AsRef<OsStr>>(prefix: &[S]) -> Self {
        let mut cmd = match prefix.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg("curl");
                cmd
            }
            None => Command::new("curl"),
        };
        cmd.args(["-s", "-S", "--max-time", MAX_TIME, "-w", "\n%{http_code}"])
            .env_clear();
        Self { cmd }
    }

    /// curl through the proxy `url` (`http://127.0.0.1:3128`, `socks5h://...`).
    pub fn via(url: impl AsRef<OsStr>) -> Self {
        Self::new().arg("-x").arg(url)
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.cmd.args(args);
        self
    }

    /// Adds a request header (`Name: value`).
    pub fn header(self, header: impl AsRef<OsStr>) -> Self {
        self.arg("-H").arg(header)
    }

    /// Sends `Authorization: Bearer TOKEN`.
    pub fn bearer(self, token: &str) -> Self {
        self.header(format!("Authorization: Bearer {token}"))
    }

    /// Sends `body` as JSON (so a POST).
    pub fn json(self, body: &str) -> Self {
        self.header("content-type: application/json")
            .arg("--data-binary")
            .arg(body)
    }

    /// Runs curl on `url`.
    pub fn get(self, url: impl AsRef<OsStr>) -> CurlOutput {
        self.arg(url).run()
    }

    /// Runs curl with the arguments given so far.
    pub fn run(mut self) -> CurlOutput {
        let out = self.cmd.output().expect("curl runs");
        CurlOutput::parse(&out)
    }
}
