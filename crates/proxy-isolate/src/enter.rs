//! Starting the command inside the holder's namespaces: netproxy's own binary, run again with
//! [`ENTER_ARG`](crate::ENTER_ARG) by `run` as its child, and single-threaded, so allowed to:
//!
//! 1. join the holder's user namespace, then its network namespace (its user owns them);
//! 2. make a user namespace of its own inside the holder's (the same uid and gid mapped): a
//!    process in a nested user namespace cannot ptrace, read the memory or `/proc` files of, or
//!    take descriptors from (`pidfd_getfd`) a process of an enclosing one, so the command cannot
//!    take the holder over, nor any process of its user outside;
//! 3. drop what its caller let it inherit that would reach outside (a socket keeps the network
//!    namespace it was made in; see `inherited_escapes`): network sockets, Unix sockets that
//!    can still reach an abstract address, `io_uring` instances, network devices;
//! 4. install a seccomp filter: `socket(2)` only for Unix, IPv4, IPv6 and netlink sockets
//!    (`AF_VSOCK`, for one, ignores network namespaces and reaches the hypervisor), no new
//!    `io_uring` (it can make sockets without `socket(2)`), and no `TIOCSTI`/`TIOCLINUX`
//!    (typing into the terminal: answering `run --ask`'s questions itself);
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
            .map(|e| format!("{} ({})", e.fd, e.what))
            .collect();
        // Said first: stderr itself may be one of them.
        eprintln!(
            "netproxy run: --isolate: descriptors {} that netproxy's caller passed on would reach outside the command's network namespace: closed before the command starts (a standard stream gets /dev/null)",
            listed.join(", ")
        );
        for e in &inherited {
            if let Err(err) = disarm(e.fd) {
                let refusal = Refusal::diagnose(
                    Step::Enter,
                    err.raw_os_error(),
                    format_args!("closing descriptor {}: {err}", e.fd),
                    &KernelSettings::read(),
                );
                eprintln!("netproxy run: --isolate: {refusal}");
                return ExitCode::from(EXIT_REFUSED);
            }
        }
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

/// An inherited descriptor that would reach outside the command's network namespace, and what
/// it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Escape {
    fd: i32,
    what: &'static str,
}

/// What a socket inherited from netproxy's caller is, from the caller's namespace's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Socket {
    /// A Unix stream or seqpacket socket that is connected (its peer is fixed) or listening
    /// (only others connect to it): it reaches nothing new.
    UnixSettled,
    /// Any other Unix socket: datagram, or unconnected (an abstract address is looked up in the
    /// namespace the socket was made in: the caller's).
    UnixOpen,
    /// An established TCP connection: it talks to its peer only.
    TcpEstablished,
    /// Anything else: an unconnected or listening IP socket, a UDP socket, another family.
    Other,
}

/// The inherited descriptors that would reach outside the command's network namespace (a
/// socket keeps the namespace it was made in): above 2, every socket but a settled Unix one,
/// `io_uring` instances (which make sockets in their creator's namespace) and network devices
/// (`/dev/net/tun`, `/dev/vhost-net`, `/dev/vhost-vsock`); on 0, 1 and 2, the command's own
/// streams, only sockets that are neither settled Unix sockets nor established TCP
/// connections. Read while this process still sees its caller's namespace.
fn inherited_escapes() -> Vec<Escape> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut sockets = Vec::new();
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
        {
            sockets.push((fd, inode.to_owned()));
        } else if fd > 2 && target == "anon_inode:[io_uring]" {
            found.push(Escape {
                fd,
                what: "io_uring",
            });
        } else if fd > 2
            && matches!(
                target.as_str(),
                "/dev/net/tun" | "/dev/vhost-net" | "/dev/vhost-vsock"
            )
        {
            found.push(Escape {
                fd,
                what: "network device",
            });
        }
    }
    if !sockets.is_empty() {
        let tables = SocketTables::read();
        for (fd, inode) in sockets {
            let kind = tables.kind(&inode);
            let keep = if fd > 2 {
                kind == Socket::UnixSettled
            } else {
                matches!(kind, Socket::UnixSettled | Socket::TcpEstablished)
            };
            if !keep {
                let what = match kind {
                    Socket::UnixOpen => "Unix socket that can reach abstract addresses",
                    _ => "network socket",
                };
                found.push(Escape { fd, what });
            }
        }
    }
    found.sort_by_key(|e| e.fd);
    found
}

/// The caller's namespace's socket tables, by inode: `/proc/self/net/unix` (type, state,
/// listening flag) and `/proc/self/net/tcp`, `tcp6` (state).
struct SocketTables {
    unix: std::collections::HashMap<String, Socket>,
    tcp_established: std::collections::HashSet<String>,
}

impl SocketTables {
    fn read() -> Self {
        let read = |name: &str| {
            std::fs::read_to_string(format!("/proc/self/net/{name}")).unwrap_or_default()
        };
        let mut unix = std::collections::HashMap::new();
        // Num RefCount Protocol Flags Type St Inode [Path]
        for line in read("unix").lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(flags), Some(kind), Some(state), Some(inode)) =
                (f.get(3), f.get(4), f.get(5), f.get(6))
            else {
                continue;
            };
            let listening = u32::from_str_radix(flags, 16).is_ok_and(|x| x & 0x1_0000 != 0);
            // SOCK_STREAM 1, SOCK_SEQPACKET 5; SS_CONNECTED 3.
            let settled = matches!(*kind, "0001" | "0005") && (*state == "03" || listening);
            unix.insert(
                (*inode).to_owned(),
                if settled {
                    Socket::UnixSettled
                } else {
                    Socket::UnixOpen
                },
            );
        }
        let mut tcp_established = std::collections::HashSet::new();
        // sl local rem st tx_queue:rx_queue tr:when retrnsmt uid timeout inode
        let (tcp, tcp6) = (read("tcp"), read("tcp6"));
        for line in tcp.lines().skip(1).chain(tcp6.lines().skip(1)) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let (Some(&"01"), Some(inode)) = (f.get(3), f.get(9)) {
                tcp_established.insert((*inode).to_owned());
            }
        }
        Self {
            unix,
            tcp_established,
        }
    }

    fn kind(&self, inode: &str) -> Socket {
        if let Some(k) = self.unix.get(inode) {
            return *k;
        }
        if self.tcp_established.contains(inode) {
            return Socket::TcpEstablished;
        }
        Socket::Other
    }
}

/// Makes `fd` harmless: a descriptor above 2 is closed; a standard stream gets `/dev/null`
/// instead, so that the command still finds it open.
fn disarm(fd: i32) -> io::Result<()> {
    if fd > 2 {
        return nix::unistd::close(fd).map_err(io::Error::from);
    }
    let null = std::fs::OpenOptions::new()
        .read(fd == 0)
        .write(fd != 0)
        .open("/dev/null")?;
    match fd {
        0 => rustix::stdio::dup2_stdin(&null)?,
        1 => rustix::stdio::dup2_stdout(&null)?,
        _ => rustix::stdio::dup2_stderr(&null)?,
    }
    Ok(())
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
    let mut socket_rules = BTreeMap::from([(
        libc::SYS_socket,
        vec![SeccompRule::new(other_family.clone()).map_err(err)?],
    )]);
    let mut uring_rules = BTreeMap::from([(libc::SYS_io_uring_setup, Vec::new())]);
    // On x86-64, the x32 ABI's numbers carry the same architecture tag (bit 30 set): where a
    // kernel enables that ABI, its `socket` and `io_uring_setup` are filtered too.
    if cfg!(target_arch = "x86_64") {
        const X32: i64 = 0x4000_0000;
        socket_rules.insert(
            X32 | libc::SYS_socket,
            vec![SeccompRule::new(other_family).map_err(err)?],
        );
        uring_rules.insert(X32 | libc::SYS_io_uring_setup, Vec::new());
    }
    let sockets = SeccompFilter::new(
        socket_rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EAFNOSUPPORT.unsigned_abs()),
        arch,
    )
    .map_err(err)?;
    let uring = SeccompFilter::new(
        uring_rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS.unsigned_abs()),
        arch,
    )
    .map_err(err)?;
    // TIOCSTI (and TIOCLINUX, whose paste does the same on a console) pushes bytes into the
    // terminal's input as if typed: the command could answer `run --ask`'s questions itself,
    // or type into the shell it was started from.
    let mut typing = Vec::new();
    for request in [libc::TIOCSTI, libc::TIOCLINUX] {
        typing.push(
            SeccompRule::new(vec![
                SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, request)
                    .map_err(err)?,
            ])
            .map_err(err)?,
        );
    }
    let mut ioctl_rules = BTreeMap::from([(libc::SYS_ioctl, typing.clone())]);
    if cfg!(target_arch = "x86_64") {
        ioctl_rules.insert(0x4000_0000 | libc::SYS_ioctl, typing);
    }
    let ioctls = SeccompFilter::new(
        ioctl_rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM.unsigned_abs()),
        arch,
    )
    .map_err(err)?;
    for filter in [sockets, uring, ioctls] {
        let program: BpfProgram = filter.try_into().map_err(err)?;
        seccompiler::apply_filter(&program).map_err(|e| match e {
            seccompiler::Error::Seccomp(e) => e,
            other => io::Error::other(other.to_string()),
        })?;
    }
    Ok(())
}
