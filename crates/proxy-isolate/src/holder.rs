//! The namespace holder: netproxy's own binary, run again with [`HOLDER_ARG`](crate::HOLDER_ARG)
//! and dispatched before any thread starts. It makes a user namespace (the invoking uid and gid
//! mapped to themselves, `setgroups` denied) and a network namespace in it with only `lo` up,
//! tells netproxy `ready` (or which step the kernel refused), then binds the sockets netproxy
//! asks for inside the namespace and passes them out (`SCM_RIGHTS`) until netproxy closes the
//! channel (its descriptor 0). It never serves a byte itself.

use std::ffi::OsString;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;

use nix::sched::CloneFlags;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

use crate::refusal::Step;
use crate::{netlink, wire};

/// The port resolvers listen on.
const DNS_PORT: u16 = 53;
/// The listen backlog of the proxy's listeners inside the namespace.
const BACKLOG: i32 = 1024;

#[allow(clippy::print_stderr, reason = "a process's main: its one usage line")]
pub(crate) fn main(args: &[OsString]) -> ExitCode {
    // `--fault STEP`: that step fails as if the kernel refused it (the tests' seam for the
    // refusals a test machine cannot produce, such as AppArmor's).
    let fault = match args {
        [] => None,
        [flag, step] if flag == "--fault" => step.to_str().and_then(|s| s.parse::<Step>().ok()),
        _ => {
            eprintln!("netproxy: the namespace holder is started by `netproxy run --isolate`");
            return ExitCode::from(2);
        }
    };
    let Ok(channel) = io::stdin().as_fd().try_clone_to_owned() else {
        return ExitCode::from(1);
    };
    if wire::send(&channel, "hello", &[]).is_err() {
        return ExitCode::from(1);
    }
    if let Err((step, e)) = set_up(fault) {
        let errno = e.raw_os_error().unwrap_or(0);
        let _ = wire::send(
            &channel,
            &truncated(format!("refused {} {errno} {e}", step.as_str())),
            &[],
        );
        return ExitCode::from(1);
    }
    if wire::send(&channel, "ready", &[]).is_err() {
        return ExitCode::from(1);
    }
    serve(&channel);
    ExitCode::SUCCESS
}

/// The user and network namespaces, each step checked.
fn set_up(fault: Option<Step>) -> Result<(), (Step, io::Error)> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let step = |step: Step, f: &dyn Fn() -> io::Result<()>| {
        if fault == Some(step) {
            return Err((step, io::Error::from(rustix::io::Errno::PERM)));
        }
        f().map_err(|e| (step, e))
    };
    step(Step::UserNamespace, &|| {
        nix::sched::unshare(CloneFlags::CLONE_NEWUSER).map_err(io::Error::from)
    })?;
    step(Step::Setgroups, &|| {
        std::fs::write("/proc/self/setgroups", "deny")
    })?;
    step(Step::UidMap, &|| {
        std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1\n"))
    })?;
    step(Step::GidMap, &|| {
        std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1\n"))
    })?;
    step(Step::NetworkNamespace, &|| {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
    })?;
    step(Step::Loopback, &netlink::loopback_up)?;
    Ok(())
}

/// Answers netproxy's requests until it closes the channel.
fn serve(channel: &OwnedFd) {
    loop {
        let (message, fds) = match wire::recv(channel) {
            Ok(m) => m,
            // An unreadable message has no number to answer to.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) =>
            {
                continue;
            }
            // netproxy is gone (or the channel broke): the holder's work is over.
            Err(_) => return,
        };
        drop(fds);
        // `ID REQUEST`: the answer carries the same number.
        let (id, request) = message.split_once(' ').unwrap_or(("0", &message));
        let sent = match answer(request) {
            Ok((addr, sockets)) => {
                let borrowed: Vec<_> = sockets.iter().map(AsFd::as_fd).collect();
                wire::send(channel, &format!("{id} ok {addr}"), &borrowed)
            }
            Err(e) => wire::send(
                channel,
                &truncated(format!("{id} err {} {e}", e.raw_os_error().unwrap_or(0))),
                &[],
            ),
        };
        if sent.is_err() {
            return;
        }
    }
}

/// One request's sockets and the address they are bound to.
fn answer(request: &str) -> io::Result<(String, Vec<OwnedFd>)> {
    let invalid = || io::Error::from_raw_os_error(22);
    let (verb, arg) = request.split_once(' ').unwrap_or((request, ""));
    match verb {
        "tcp" => {
            let addr: SocketAddr = arg.parse().map_err(|_| invalid())?;
            let l = tcp_listener(addr)?;
            Ok((local(&l)?, vec![l]))
        }
        "udp" => {
            let addr: SocketAddr = arg.parse().map_err(|_| invalid())?;
            let s = std::net::UdpSocket::bind(addr)?;
            let bound = s.local_addr()?.to_string();
            Ok((bound, vec![OwnedFd::from(s)]))
        }
        "dns" => {
            let ip: IpAddr = arg.parse().map_err(|_| invalid())?;
            if !ip.is_loopback() {
                netlink::add_to_loopback(ip)?;
            }
            let at = SocketAddr::new(ip, DNS_PORT);
            let udp = std::net::UdpSocket::bind(at)?;
            let tcp = tcp_listener(at)?;
            Ok((at.to_string(), vec![OwnedFd::from(udp), tcp]))
        }
        "seal" => {
            // Nothing more needs a capability: sockets on ephemeral ports do not. Should the
            // command ever take this process over, it gets no capability in its namespace.
            let none = rustix::thread::CapabilitySet::empty();
            rustix::thread::set_capabilities(
                None,
                rustix::thread::CapabilitySets {
                    effective: none,
                    permitted: none,
                    inheritable: none,
                },
            )?;
            Ok(("-".to_owned(), Vec::new()))
        }
        _ => Err(invalid()),
    }
}

/// A TCP listener on `addr` (close-on-exec, `SO_REUSEADDR`, a backlog of [`BACKLOG`]).
fn tcp_listener(addr: SocketAddr) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, BACKLOG)?;
    Ok(fd)
}

fn local(fd: &OwnedFd) -> io::Result<String> {
    let addr = rustix::net::getsockname(fd)?;
    let addr = SocketAddr::try_from(addr).map_err(|_| io::Error::from_raw_os_error(22))?;
    Ok(addr.to_string())
}

/// A message cut to what the channel carries (at a character boundary).
fn truncated(mut s: String) -> String {
    if s.len() > wire::MAX_MESSAGE {
        let mut end = wire::MAX_MESSAGE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
