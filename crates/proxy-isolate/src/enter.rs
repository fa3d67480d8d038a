//! Starting the command inside the holder's namespaces: netproxy's own binary, run again with
//! [`ENTER_ARG`](crate::ENTER_ARG) by `run` as its child, joins the holder's user namespace and
//! then its network namespace (allowed: it is single-threaded, and its user owns them), and
//! `exec`s the command, which keeps this process id and so stays `run`'s direct child.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use nix::sched::CloneFlags;

use crate::refusal::{KernelSettings, Refusal, Step};

/// Exit code when the namespaces cannot be joined (as `run --isolate` uses for every refusal).
const EXIT_REFUSED: u8 = 126;
/// Exit code when the command cannot be started (as `run` uses, and a shell).
const EXIT_CANNOT_START: u8 = 127;

#[allow(
    clippy::print_stderr,
    reason = "a process's main: the command's terminal gets the one reason it did not start"
)]
pub(crate) fn main(args: &[OsString]) -> ExitCode {
    let [pid, program, rest @ ..] = args else {
        eprintln!("netproxy: this step is started by `netproxy run --isolate`");
        return ExitCode::from(2);
    };
    let Some(pid) = pid.to_str().and_then(|p| p.parse::<u32>().ok()) else {
        eprintln!("netproxy: this step is started by `netproxy run --isolate`");
        return ExitCode::from(2);
    };
    if let Err(refusal) = join(pid) {
        eprintln!("netproxy run: --isolate: {refusal}");
        return ExitCode::from(EXIT_REFUSED);
    }
    let e = Command::new(program).args(rest).exec();
    eprintln!(
        "netproxy run: cannot start `{}`: {e}",
        program.to_string_lossy()
    );
    ExitCode::from(EXIT_CANNOT_START)
}

/// Joins the user, then the network namespace of process `pid`.
fn join(pid: u32) -> Result<(), Refusal> {
    let fail = |e: &dyn std::fmt::Display, errno: Option<i32>| {
        Refusal::diagnose(Step::Enter, errno, e, &KernelSettings::read())
    };
    // Both opened first: once in the new user namespace, the holder's links may no longer be
    // ours to open.
    let open = |kind: &str| {
        std::fs::File::open(format!("/proc/{pid}/ns/{kind}")).map_err(|e| {
            fail(
                &format_args!("the namespace holder's {kind} namespace: {e}"),
                e.raw_os_error(),
            )
        })
    };
    let user = open("user")?;
    let net = open("net")?;
    nix::sched::setns(&user, CloneFlags::CLONE_NEWUSER)
        .map_err(|e| fail(&format_args!("setns (user): {e}"), Some(e as i32)))?;
    nix::sched::setns(&net, CloneFlags::CLONE_NEWNET)
        .map_err(|e| fail(&format_args!("setns (network): {e}"), Some(e as i32)))?;
    Ok(())
}
