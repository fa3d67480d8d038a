//! Starting the command inside the holder's namespaces: netproxy's own binary, run again with
//! [`ENTER_ARG`](crate::ENTER_ARG) by `run` as its child, and single-threaded, so allowed to:
//!
//! 1. join the holder's user namespace, then its network namespace (its user owns them);
//! 2. make a user namespace of its own inside the holder's (the same uid and gid mapped): a
//!    process in a nested user namespace cannot ptrace, read the memory or `/proc` files of, or
//!    take descriptors from (`pidfd_getfd`) a process of an enclosing one, so the command cannot
//!    take the holder over, nor any process of its user outside;
//! 3. drop the sockets its caller let it inherit (a socket keeps the network namespace it was
//!    made in, so an inherited one would reach outside) and any inherited `io_uring` instance
//!    (which makes sockets in its creator's namespace);
//! 4. install a seccomp filter: `socket(2)` only for Unix, IPv4, IPv6 and netlink sockets
//!    (`AF_VSOCK`, for one, ignores network namespaces and reaches the hypervisor), and no new
//!    `io_uring` (it can make sockets without `socket(2)`);
//! 5. `exec` the command, which keeps this process id and so stays `run`'s direct child.

use std::ffi::OsString;
use std::io;
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
    // Listed first, while this process still sees its caller's network namespace.
    let inherited = inherited_escapes();
    if let Err(refusal) = join(pid).and_then(|()| nest()) {
        eprintln!("netproxy run: --isolate: {refusal}");
        return ExitCode::from(EXIT_REFUSED);
    }
    if !inherited.is_empty() {
        let listed: Vec<String> = inherited
            .iter()
            .map(|(fd, what)| format!("{fd} ({what})"))
            .collect();
        for (fd, _) in &inherited {
            let _ = nix::unistd::close(*fd);
        }
        eprintln!(
            "netproxy run: --isolate: descriptors {} that netproxy's caller passed on would reach outside the command's network namespace: closed before the command starts",
            listed.join(", ")
        );
    }
    if let Err(e) = confine() {
        let refusal = Refusal::diagnose(
            Step::Enter,
            e.raw_os_error(),
            format_args!("installing the seccomp filter: {e}"),
            &KernelSettings::read(),
        );
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

/// Joins the user, then the network namespace of process `pid` (the holder, `run`'s child,
/// which `run` does not reap before the command is gone, so its pid is not reused).
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
                None,
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

/// A user namespace of the command's own inside the holder's, its uid and gid mapped to
/// themselves and `setgroups` denied, as the holder's.
fn nest() -> Result<(), Refusal> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let step = |step: Step, r: io::Result<()>| {
        r.map_err(|e| Refusal::diagnose(step, e.raw_os_error(), &e, &KernelSettings::read()))
    };
    step(
        Step::UserNamespace,
        nix::sched::unshare(CloneFlags::CLONE_NEWUSER).map_err(io::Error::from),
    )?;
    step(
        Step::Setgroups,
        std::fs::write("/proc/self/setgroups", "deny"),
    )?;
    step(
        Step::UidMap,
        std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1\n")),
    )?;
    step(
        Step::GidMap,
        std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1\n")),
    )?;
    Ok(())
}

/// The inherited descriptors above 2 that would reach outside the command's network
/// namespace: sockets other than Unix sockets (those of the caller's namespace, as
/// `/proc/self/net/unix` lists them, are files in effect and stay), and `io_uring` instances.
/// Standard input, output and error are the command's whatever they are.
fn inherited_escapes() -> Vec<(i32, &'static str)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if fd <= 2 {
            continue;
        }
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
        {
            found.push((fd, inode.to_owned()));
        } else if target == "anon_inode:[io_uring]" {
            found.push((fd, String::new()));
        }
    }
    if found.is_empty() {
        return Vec::new();
    }
    let unix = std::fs::read_to_string("/proc/self/net/unix").unwrap_or_default();
    let unix_inodes: std::collections::HashSet<&str> = unix
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(6))
        .collect();
    found
        .into_iter()
        .filter_map(|(fd, inode)| {
            if inode.is_empty() {
                Some((fd, "io_uring"))
            } else if unix_inodes.contains(inode.as_str()) {
                None
            } else {
                Some((fd, "network socket"))
            }
        })
        .collect()
}

/// The seccomp filters of the command (see the module's documentation). Allowed without
/// `no_new_privs`: this process has `CAP_SYS_ADMIN` in its own user namespace.
fn confine() -> io::Result<()> {
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };
    use std::collections::BTreeMap;
    let err = |e: seccompiler::BackendError| io::Error::other(e.to_string());
    let arch: TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| err(e))?;
    let families = [
        libc::AF_UNIX,
        libc::AF_INET,
        libc::AF_INET6,
        libc::AF_NETLINK,
    ];
    let mut other_family = Vec::new();
    for family in families {
        other_family.push(
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Ne,
                u64::from(family.unsigned_abs()),
            )
            .map_err(err)?,
        );
    }
    let sockets = SeccompFilter::new(
        BTreeMap::from([(
            libc::SYS_socket,
            vec![SeccompRule::new(other_family).map_err(err)?],
        )]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EAFNOSUPPORT.unsigned_abs()),
        arch,
    )
    .map_err(err)?;
    let uring = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_io_uring_setup, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS.unsigned_abs()),
        arch,
    )
    .map_err(err)?;
    for filter in [sockets, uring] {
        let program: BpfProgram = filter.try_into().map_err(err)?;
        seccompiler::apply_filter(&program).map_err(|e| match e {
            seccompiler::Error::Seccomp(e) => e,
            other => io::Error::other(other.to_string()),
        })?;
    }
    Ok(())
}
