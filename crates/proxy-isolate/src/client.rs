//! netproxy's side of the namespace holder: start it, wait for `ready`, ask it for sockets, and
//! build the command that starts CMD inside its namespaces.

use std::ffi::{OsStr, OsString};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::refusal::{KernelSettings, Refusal, Step};
use crate::{ENTER_ARG, HOLDER_ARG, wire};

/// How long netproxy waits for one answer of the holder. Setting up takes milliseconds and a
/// socket a few microseconds: a holder this slow is stuck, and what was asked fails.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A running namespace holder: a user and network namespace with only `lo`, kept alive by the
/// holder process, which binds sockets inside it on request. Dropping it ends the holder; the
/// namespace lives on while the command (or a socket in it) does.
#[derive(Debug)]
pub struct Holder {
    process: Mutex<Child>,
    /// The channel, and the number of the last request sent on it.
    channel: Mutex<(OwnedFd, u64)>,
    exe: PathBuf,
    pid: u32,
}

impl Holder {
    /// Starts the holder from `exe` (netproxy's own binary, which dispatches
    /// [`crate::dispatch`] first thing in `main`) and waits until the namespace is ready.
    /// `fault` makes that step fail as if the kernel refused it (for tests). The holder gets
    /// an empty environment.
    pub fn start(exe: &Path, fault: Option<Step>) -> Result<Self, Refusal> {
        let settings = KernelSettings::read();
        let start_failed =
            |e: &dyn std::fmt::Display| Refusal::diagnose(Step::Start, None, e, &settings);
        let (ours, theirs) = wire::pair().map_err(|e| start_failed(&e))?;
        rustix::net::sockopt::set_socket_timeout(
            &ours,
            rustix::net::sockopt::Timeout::Recv,
            Some(ANSWER_TIMEOUT),
        )
        .map_err(|e| start_failed(&e))?;
        let mut cmd = Command::new(exe);
        cmd.arg(HOLDER_ARG);
        if let Some(step) = fault {
            cmd.args(["--fault", step.as_str()]);
        }
        // A process group of its own: a Ctrl-C, Ctrl-Z or Ctrl-\ at the terminal goes to the
        // command's (netproxy's) group, and must not kill or stop the holder.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let process = cmd
            .env_clear()
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| start_failed(&format_args!("{}: {e}", exe.display())))?;
        let pid = process.id();
        let holder = Self {
            process: Mutex::new(process),
            channel: Mutex::new((ours, 0)),
            exe: exe.to_owned(),
            pid,
        };
        match holder.recv().map(|(t, _)| t) {
            Ok(t) if t == "hello" => {}
            Ok(t) => return Err(start_failed(&format_args!("unexpected answer {t:?}"))),
            Err(e) => return Err(holder.gone(e, &settings)),
        }
        match holder.recv().map(|(t, _)| t) {
            Ok(t) if t == "ready" => Ok(holder),
            Ok(t) => Err(refused(&t, &settings)),
            Err(e) => Err(holder.gone(e, &settings)),
        }
    }

    /// The holder's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Ends the holder (killed and reaped): no socket can be asked for after this. The
    /// namespace lives on while the command, or a socket in it, does. Also done on drop.
    pub fn stop(&self) {
        let mut process = self
            .process
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if matches!(process.try_wait(), Ok(None)) {
            let _ = process.kill();
        }
        let _ = process.wait();
    }

    /// A TCP listener bound to `addr` inside the namespace (e.g. `127.0.0.1:0`).
    pub fn tcp_listener(&self, addr: SocketAddr) -> io::Result<std::net::TcpListener> {
        let (_, mut fds) = self.ask(&format!("tcp {addr}"), 1)?;
        Ok(std::net::TcpListener::from(fds.remove(0)))
    }

    /// A UDP socket bound to `addr` inside the namespace.
    pub fn udp_socket(&self, addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
        let (_, mut fds) = self.ask(&format!("udp {addr}"), 1)?;
        Ok(std::net::UdpSocket::from(fds.remove(0)))
    }

    /// A UDP socket and a TCP listener on `ip` port 53 inside the namespace, `ip` put on `lo`
    /// first when it is not a loopback address: where the command's resolver sends its lookups.
    pub fn resolver(&self, ip: IpAddr) -> io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
        let (_, mut fds) = self.ask(&format!("dns {ip}"), 2)?;
        let tcp = fds.pop().map(std::net::TcpListener::from);
        let udp = fds.pop().map(std::net::UdpSocket::from);
        match (udp, tcp) {
            (Some(u), Some(t)) => Ok((u, t)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the namespace holder sent too few sockets",
            )),
        }
    }

    /// Drops the holder's capabilities in its namespace: after this it can still bind
    /// sockets on unprivileged ports (UDP relays), and nothing more.
    pub fn seal(&self) -> io::Result<()> {
        self.ask("seal", 0).map(drop)
    }

    /// The command that starts `program` with `args` inside the namespaces: netproxy's own
    /// binary joins the holder's user and network namespaces and `exec`s the program, which
    /// so stays netproxy's direct child with the same process id. Set its environment,
    /// directory and standard streams as for the program itself. When the namespaces cannot
    /// be joined it exits 126 with the reason; when the program cannot be started, 127.
    pub fn command(&self, program: &OsStr, args: &[OsString]) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg(ENTER_ARG)
            .arg(self.pid().to_string())
            .arg(program)
            .args(args);
        cmd
    }

    /// Sends `request` and returns the answer's address and exactly `fds` descriptors. Each
    /// request is numbered and its answer carries the number: an answer to an earlier request
    /// that timed out is dropped, never taken for this one's.
    fn ask(&self, request: &str, fds: usize) -> io::Result<(String, Vec<OwnedFd>)> {
        let mut channel = self
            .channel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        channel.1 += 1;
        let id = channel.1.to_string();
        wire::send(&channel.0, &format!("{id} {request}"), &[])?;
        let (text, got) = loop {
            let (text, got) = wire::recv(&channel.0)?;
            match text.split_once(' ') {
                Some((n, rest)) if n == id => break (rest.to_owned(), got),
                // A late answer to an earlier request: its descriptors are closed.
                _ => continue,
            }
        };
        drop(channel);
        let (verb, rest) = text.split_once(' ').unwrap_or((&text, ""));
        match verb {
            "ok" if got.len() == fds => Ok((rest.to_owned(), got)),
            "ok" => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the namespace holder sent {} descriptors for {request:?}, not {fds}",
                    got.len()
                ),
            )),
            "err" => {
                let (errno, text) = rest.split_once(' ').unwrap_or((rest, ""));
                match errno.parse::<i32>() {
                    Ok(n) if n > 0 => Err(io::Error::from_raw_os_error(n)),
                    _ => Err(io::Error::other(format!(
                        "the namespace holder refused {request:?}: {text}"
                    ))),
                }
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "an unexpected answer from the namespace holder",
            )),
        }
    }

    fn recv(&self) -> io::Result<(String, Vec<OwnedFd>)> {
        let channel = self
            .channel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        wire::recv(&channel.0)
    }

    /// The refusal for a holder that stopped answering while setting up.
    fn gone(&self, e: io::Error, settings: &KernelSettings) -> Refusal {
        let status = match self
            .process
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .try_wait()
        {
            Ok(Some(s)) => format!("; it exited ({s})"),
            _ => String::new(),
        };
        Refusal::diagnose(
            Step::Start,
            None,
            format_args!("the namespace holder did not answer: {e}{status}"),
            settings,
        )
    }
}

/// The refusal a holder reported: `refused STEP ERRNO TEXT`.
fn refused(text: &str, settings: &KernelSettings) -> Refusal {
    let mut parts = text.splitn(4, ' ');
    let (verb, step, errno, detail) = (
        parts.next(),
        parts.next().and_then(|s| s.parse::<Step>().ok()),
        parts.next().and_then(|s| s.parse::<i32>().ok()),
        parts.next().unwrap_or(""),
    );
    match (verb, step) {
        (Some("refused"), Some(step)) => {
            Refusal::diagnose(step, errno.filter(|n| *n > 0), detail, settings)
        }
        _ => Refusal::diagnose(
            Step::Start,
            None,
            format_args!("unexpected answer {text:?}"),
            settings,
        ),
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Reaped here so that no zombie is left.
        self.stop();
    }
}
