//! Unix socket requests (`x-unix-socket`): an allowed entry is resolved to its canonical path
//! once; a request's path is opened once (`O_PATH`) and must reach the very socket now at an
//! allowed entry's canonical path, with no symlink in any component. The route carries that
//! descriptor, so the connection goes to the socket that was judged.

use std::path::{Path, PathBuf};

use proxy_core::{Decision, Failure, Reason, RequestMeta, Target, UpstreamFailure, Via};
use proxy_policy::{Evaluation, Intercept};

use crate::gate::{Explanation, PolicyGate, Snapshot};

/// An allowed entry's canonical path: symlinks resolved when it exists; otherwise the canonical
/// path of its nearest existing folder joined with the rest of the entry (plain names only);
/// otherwise the entry as written.
pub(crate) fn canonical_entry(entry: &Path) -> PathBuf {
    use std::path::Component;
    if let Ok(real) = std::fs::canonicalize(entry) {
        return real;
    }
    for dir in entry.ancestors().skip(1) {
        if let Ok(real) = std::fs::canonicalize(dir) {
            let Ok(rest) = entry.strip_prefix(dir) else {
                break;
            };
            if rest.components().all(|c| matches!(c, Component::Normal(_))) {
                return real.join(rest);
            }
            break;
        }
    }
    entry.to_path_buf()
}

impl PolicyGate {
    /// A unix socket request (`x-unix-socket`). A request that may come from a web page is
    /// refused (`unix_socket_cross_origin`). Otherwise the path must be allowed as written, or
    /// be the same socket (device and inode) as an allowed entry's canonical path. The path is
    /// opened once (`O_PATH`); the socket it reaches must be the socket now at the canonical path
    /// of the entry that allowed it, and that path must still resolve with no symlink in any
    /// component (a daemon that recreated its socket is fine, a path or one of its folders
    /// swapped for a symlink is not). The route
    /// carries that descriptor, so the connection goes to the socket that was judged. Domain
    /// policy and the decider are not consulted.
    pub(crate) async fn judge_unix(
        &self,
        meta: &RequestMeta,
        path: &Path,
        snap: &Snapshot,
    ) -> Explanation {
        let policy = &snap.policy;
        let evaluation = policy.evaluate(meta);
        if let Some(why) = &meta.cross_origin
            && !matches!(&evaluation, Evaluation::Deny(d) if d.reason == Some(Reason::ProxyDisabled))
        {
            let d = Decision::deny(Reason::UnixSocketCrossOrigin).with_detail(why.clone());
            return Explanation::denied(d);
        }
        let allow_all = policy.allows_all_unix_sockets();
        // The entries an opened socket may be matched against: the entry the path is allowed as
        // (`Some` of one), every entry when the path is not allowed as written (`Some` of all,
        // then judged as the entry it matches), or none when every socket is allowed.
        let (decision, entries) = match evaluation {
            Evaluation::Allow { decision, .. }
            | Evaluation::AllowIfAddressesPass { decision, .. } => {
                let entries = if allow_all {
                    None
                } else {
                    let written = path.to_string_lossy();
                    match snap.canonical_unix_socket(&written) {
                        Some(c) => Some(vec![(written.into_owned(), c.to_path_buf())]),
                        None => {
                            let d = Decision::deny(Reason::NotAllowed)
                                .with_detail("unix socket path not in the allowlist");
                            return Explanation::denied(d);
                        }
                    }
                };
                (Ok(decision), entries)
            }
            Evaluation::Deny(d)
                if d.reason == Some(Reason::NotAllowed)
                    && path.is_absolute()
                    && !allow_all
                    && !snap.unix_sockets.is_empty() =>
            {
                (Err(d), Some(snap.unix_sockets.clone()))
            }
            Evaluation::Deny(d) => {
                return Explanation::denied(d);
            }
        };
        let requested = path.to_path_buf();
        let check = tokio::task::spawn_blocking(move || open_checked(&requested, entries)).await;
        let check = check.unwrap_or_else(|e| Checked::Failed(format!("the check failed: {e}")));
        match (decision, check) {
            (Ok(decision), Checked::Socket(socket, _)) => {
                Explanation::allowed(decision, Via::Unix(socket), Intercept::No)
            }
            // Not allowed as written, but the same socket as an allowed entry: judged as that
            // entry (limited mode still applies).
            (Err(_), Checked::Socket(socket, Some(entry))) => {
                let mut judged = meta.clone();
                judged.target = Target::Unix(PathBuf::from(entry));
                match policy.evaluate(&judged) {
                    Evaluation::Allow { decision, .. }
                    | Evaluation::AllowIfAddressesPass { decision, .. } => {
                        Explanation::allowed(decision, Via::Unix(socket), Intercept::No)
                    }
                    Evaluation::Deny(d) => Explanation::denied(d),
                }
            }
            (Err(d), _) => Explanation::denied(d),
            (Ok(decision), Checked::Swapped(detail)) => {
                let d = Decision::deny(Reason::NotAllowed).with_detail(detail);
                let d = match decision.rule {
                    Some(rule) => d.with_rule(rule),
                    None => d,
                };
                Explanation::denied(d)
            }
            (Ok(decision), Checked::Failed(message)) => Explanation::failed(
                decision,
                Failure::new(
                    UpstreamFailure::ConnectFailed,
                    format!("{}: {message}", path.display()),
                ),
            ),
        }
    }
}

/// What opening a requested unix socket path found.
enum Checked {
    /// The socket, opened, and the allowed entry it matched (`None` when every socket is
    /// allowed).
    Socket(proxy_core::UnixSocket, Option<String>),
    /// The path reaches something other than the allowed socket (a refusal, with its detail).
    Swapped(String),
    /// The path could not be opened or examined.
    Failed(String),
}

/// Opens `path` once (`O_PATH`) and checks that it is a socket and, unless `entries` is `None`
/// (every socket allowed), the same device and inode as the socket now at one entry's
/// canonical path, which must resolve with no symlink in any component
/// ([`socket_without_symlinks`]).
#[cfg(target_os = "linux")]
fn open_checked(path: &Path, entries: Option<Vec<(String, PathBuf)>>) -> Checked {
    use rustix::fs::{FileType, Mode, OFlags};
    let fd = match rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => return Checked::Failed(std::io::Error::from(e).to_string()),
    };
    let st = match rustix::fs::fstat(&fd) {
        Ok(st) => st,
        Err(e) => return Checked::Failed(std::io::Error::from(e).to_string()),
    };
    let (dev, ino) = (st.st_dev, st.st_ino);
    if FileType::from_raw_mode(st.st_mode) != FileType::Socket {
        return Checked::Swapped(format!("{} is not a socket", path.display()));
    }
    let socket = |entry| {
        Checked::Socket(
            proxy_core::UnixSocket::new(path.to_path_buf(), fd, dev, ino),
            entry,
        )
    };
    let Some(entries) = entries else {
        return socket(None);
    };
    let matched = entries
        .into_iter()
        .find(|(_, canonical)| socket_without_symlinks(canonical, dev, ino));
    match matched {
        Some((entry, _)) => socket(Some(entry)),
        None => Checked::Swapped(format!(
            "the socket at {} is no longer the allowed socket",
            path.display()
        )),
    }
}

/// Whether `canonical` still resolves with no symlink in any component (a folder swapped for
/// a symlink, or the socket itself, is refused) to a socket with device `dev` and inode `ino`.
/// The path is opened with `openat2(RESOLVE_NO_SYMLINKS)`; where that system call is missing
/// (Linux before 5.6, or filtered), [`socket_without_symlinks_fallback`] judges instead.
#[cfg(target_os = "linux")]
fn socket_without_symlinks(canonical: &Path, dev: u64, ino: u64) -> bool {
    use rustix::fs::{CWD, Mode, OFlags, ResolveFlags};
    use rustix::io::Errno;
    match rustix::fs::openat2(
        CWD,
        canonical,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS,
    ) {
        Ok(fd) => rustix::fs::fstat(&fd).is_ok_and(|st| is_socket(&st, dev, ino)),
        Err(Errno::NOSYS | Errno::PERM) => socket_without_symlinks_fallback(canonical, dev, ino),
        Err(_) => false,
    }
}

/// [`socket_without_symlinks`] without `openat2`: `canonical` must be its own canonical path
/// (no symlink in any component) and, not followed, the socket with device `dev` and inode
/// `ino`.
#[cfg(target_os = "linux")]
fn socket_without_symlinks_fallback(canonical: &Path, dev: u64, ino: u64) -> bool {
    std::fs::canonicalize(canonical).is_ok_and(|real| real == canonical)
        && rustix::fs::lstat(canonical).is_ok_and(|st| is_socket(&st, dev, ino))
}

/// Whether `st` is a socket with device `dev` and inode `ino`.
#[cfg(target_os = "linux")]
fn is_socket(st: &rustix::fs::Stat, dev: u64, ino: u64) -> bool {
    rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Socket
        && st.st_dev == dev
        && st.st_ino == ino
}

/// Both ways of judging a canonical path, on real sockets: the `openat2` one and the one used
/// where `openat2` is missing refuse a folder swapped for a symlink, and the socket itself
/// swapped for one.
#[cfg(all(test, target_os = "linux"))]
mod symlink_tests {
    use std::os::unix::fs::{MetadataExt, symlink};
    use std::os::unix::net::UnixListener;
    use std::path::Path;

    use super::{canonical_entry, socket_without_symlinks, socket_without_symlinks_fallback};

    fn id(path: &Path) -> (u64, u64) {
        let m = std::fs::metadata(path).expect("the socket is there");
        (m.dev(), m.ino())
    }

    #[test]
    fn a_symlink_in_any_component_is_refused_with_and_without_openat2() {
        let dir = tempfile::tempdir().unwrap();
        let t = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(t.join("base/d")).unwrap();
        std::fs::create_dir(t.join("secretdir")).unwrap();
        let allowed = t.join("base/d/allowed.sock");
        let _a = UnixListener::bind(&allowed).unwrap();
        let _s = UnixListener::bind(t.join("secretdir/allowed.sock")).unwrap();
        let canonical = canonical_entry(&allowed);
        assert_eq!(canonical, allowed);
        let (dev, ino) = id(&allowed);
        for judge in [socket_without_symlinks, socket_without_symlinks_fallback] {
            assert!(judge(&canonical, dev, ino));
        }

        // A folder swapped for a symlink: the path reaches SECRET, and is refused.
        std::fs::rename(t.join("base/d"), t.join("base/d.real")).unwrap();
        symlink(t.join("secretdir"), t.join("base/d")).unwrap();
        let (sdev, sino) = id(&allowed);
        assert_ne!((sdev, sino), (dev, ino));
        for judge in [socket_without_symlinks, socket_without_symlinks_fallback] {
            assert!(!judge(&canonical, sdev, sino));
            assert!(!judge(&canonical, dev, ino));
        }

        // The socket itself swapped for a symlink to SECRET: refused too.
        std::fs::remove_file(t.join("base/d")).unwrap();
        std::fs::rename(t.join("base/d.real"), t.join("base/d")).unwrap();
        std::fs::rename(&allowed, t.join("base/d/old.sock")).unwrap();
        symlink(t.join("secretdir/allowed.sock"), &allowed).unwrap();
        for judge in [socket_without_symlinks, socket_without_symlinks_fallback] {
            assert!(!judge(&canonical, sdev, sino));
        }
    }

    #[test]
    fn a_missing_entry_keeps_its_nearest_existing_folder_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let t = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(t.join("run")).unwrap();
        symlink(t.join("run"), t.join("var-run")).unwrap();
        assert_eq!(
            canonical_entry(&t.join("var-run/docker.sock")),
            t.join("run/docker.sock")
        );
        assert_eq!(
            canonical_entry(&t.join("var-run/user/1000/podman.sock")),
            t.join("run/user/1000/podman.sock")
        );
        let odd = t.join("var-run/missing/../x.sock");
        assert_eq!(canonical_entry(&odd), odd);
    }
}

/// Unix sockets are reached through `/proc/self/fd`, which only Linux has.
#[cfg(not(target_os = "linux"))]
fn open_checked(_path: &Path, _entries: Option<Vec<(String, PathBuf)>>) -> Checked {
    Checked::Failed("unix socket requests are supported on Linux only".to_owned())
}
