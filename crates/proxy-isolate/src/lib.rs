//! `proxy-isolate` is the network isolation of `netproxy run --isolate` on Linux
//! (docs/isolate.md): the command runs in a user and network namespace of its own whose only
//! interface is `lo`, and reaches the network only through the proxy's listeners, which are
//! bound inside that namespace and served by netproxy from outside it.
//!
//! An unprivileged multithreaded process can neither create a user namespace nor enter
//! another network namespace, and the workspace forbids `unsafe` (so no `pre_exec`). Two short
//! helper processes, both netproxy's own binary run again and dispatched by [`dispatch`] before
//! any thread starts, do what netproxy cannot:
//!
//! - the **holder** ([`Holder::start`]) unshares a user namespace (uid and gid mapped to
//!   themselves, `setgroups` denied) and a network namespace, brings `lo` up, and then binds the
//!   sockets netproxy asks for inside the namespace and passes them back over a Unix socket pair
//!   (`SCM_RIGHTS`): the HTTP and SOCKS5 listeners, a socket for each resolver address of
//!   `/etc/resolv.conf`, one UDP relay socket per SOCKS5 association. Once those are bound it
//!   drops its capabilities ([`Holder::seal`]). netproxy accepts and relays on these descriptors
//!   and dials upstream from its own namespace: there is no relay hop and no copy more than
//!   without isolation.
//! - the **entry** ([`Holder::command`]) joins the holder's user and network namespaces and
//!   `exec`s the command, which stays netproxy's direct child.
//!
//! Each step is checked; a refusal ([`Refusal`]) names the step, the cause and the kernel
//! setting that would allow it. netproxy then exits 126 without starting the command.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::net::IpAddr;
use std::process::ExitCode;

mod refusal;

pub use refusal::{KernelSettings, Refusal, Step};

#[cfg(target_os = "linux")]
mod client;
#[cfg(target_os = "linux")]
mod enter;
#[cfg(target_os = "linux")]
mod holder;
#[cfg(target_os = "linux")]
mod netlink;
#[cfg(target_os = "linux")]
mod wire;

#[cfg(target_os = "linux")]
pub use client::Holder;

/// The first argument that makes netproxy's binary the namespace holder.
pub const HOLDER_ARG: &str = "__netproxy-isolate-holder";
/// The first argument that makes netproxy's binary join the holder's namespaces and `exec`
/// the command.
pub const ENTER_ARG: &str = "__netproxy-isolate-enter";

/// Runs the holder or the entry step when this process was started as one of them (its first
/// argument is [`HOLDER_ARG`] or [`ENTER_ARG`]), and returns its exit code; `None` otherwise.
/// Call it first thing in `main`, before any thread starts (a logging thread, a runtime):
/// `unshare(CLONE_NEWUSER)` and `setns` into a user namespace refuse a multithreaded process.
#[cfg_attr(
    not(target_os = "linux"),
    allow(clippy::print_stderr, reason = "the refusal, on the terminal")
)]
pub fn dispatch() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    let first = args.next()?;
    let rest: Vec<OsString> = args.collect();
    #[cfg(target_os = "linux")]
    {
        if first == HOLDER_ARG {
            return Some(holder::main(&rest));
        }
        if first == ENTER_ARG {
            return Some(enter::main(&rest));
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        if first == HOLDER_ARG || first == ENTER_ARG {
            let _ = rest;
            eprintln!("netproxy run: --isolate: {}", Refusal::unsupported());
            return Some(ExitCode::from(126));
        }
    }
    None
}

/// The resolver addresses of a `resolv.conf` text: each `nameserver` line's address (an IPv6
/// address with a `%zone` is left out: it names an interface the namespace does not have).
/// With none, the resolver's default: `127.0.0.1` and `::1`.
///
/// ```
/// use std::net::IpAddr;
/// let text = "# comment\nnameserver 10.0.0.53\nnameserver ::1 \nnameserver fe80::1%eth0\nsearch x\n";
/// let found = proxy_isolate::resolvers(text);
/// assert_eq!(found, vec!["10.0.0.53".parse::<IpAddr>().unwrap(), "::1".parse().unwrap()]);
/// assert_eq!(proxy_isolate::resolvers("").len(), 2);
/// ```
pub fn resolvers(resolv_conf: &str) -> Vec<IpAddr> {
    let mut found: Vec<IpAddr> = Vec::new();
    for line in resolv_conf.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok())
            && !found.contains(&ip)
        {
            found.push(ip);
        }
    }
    if found.is_empty() {
        found.push(IpAddr::from([127, 0, 0, 1]));
        found.push(IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
    }
    found
}
