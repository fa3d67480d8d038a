//! What the subject modules share: the binary in a clean home of its own, `netproxy serve`
//! started and waited for ([`serve`]), the admin API ([`AdminApi`]), the in-process DNS server
//! with a "public" origin, the audit log, SOCKS5 UDP.

mod admin;
mod serve;
mod socks;

pub(crate) use admin::AdminApi;
pub(crate) use serve::{Serve, serve};
pub(crate) use socks::{datagram, reply, udp_associate, udp_echo};

use std::path::{Path, PathBuf};
use std::process::Command;

use proxy_test_support::{Answer, DnsServer, HttpOrigin, output_within, wait_for};

/// The binary under test.
pub(crate) const NETPROXY: &str = env!("CARGO_BIN_EXE_netproxy");

/// A temporary folder the binary runs from: its home (`NETPROXY_HOME`), system folder
/// (`NETPROXY_SYSTEM_DIR`) and `HOME`, so that no config of this machine's applies.
#[derive(Debug)]
pub(crate) struct Home {
    dir: tempfile::TempDir,
}

/// How a run of the binary ended.
#[derive(Debug)]
pub(crate) struct Ran {
    /// The exit code (-1 when a signal ended it).
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Ran {
    /// Asserts the exit code, and that stderr holds each of `needles`.
    pub(crate) fn assert_err(&self, code: i32, needles: &[&str]) {
        self.assert(code, &self.stderr, needles);
    }

    /// Asserts the exit code, and that stdout holds each of `needles`.
    pub(crate) fn assert_out(&self, code: i32, needles: &[&str]) {
        self.assert(code, &self.stdout, needles);
    }

    fn assert(&self, code: i32, text: &str, needles: &[&str]) {
        assert_eq!(self.code, code, "{}{}", self.stdout, self.stderr);
        for n in needles {
            assert!(text.contains(n), "no {n:?} in:\n{text}");
        }
    }
}

impl Home {
    pub(crate) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The temporary folder.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `NETPROXY_HOME`: user config, admin token file.
    pub(crate) fn user_dir(&self) -> PathBuf {
        self.path().join("home")
    }

    /// `NETPROXY_SYSTEM_DIR`: system config and requirements.
    pub(crate) fn system_dir(&self) -> PathBuf {
        self.path().join("system")
    }

    /// `netproxy ARGS` with an empty environment but for this home and `PATH`.
    pub(crate) fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(NETPROXY);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("NETPROXY_HOME", self.user_dir())
            .env("NETPROXY_SYSTEM_DIR", self.system_dir());
        cmd
    }

    /// Runs `netproxy ARGS` to its end.
    pub(crate) fn run(&self, args: &[&str]) -> Ran {
        ran(self.command(args))
    }
}

/// `inner` (its program, arguments and environment) started through `prefix`: a program and
/// the arguments that go before inner's program (`nsenter ... --`, `sh -c SCRIPT sh`).
pub(crate) fn wrapped<S: AsRef<std::ffi::OsStr>>(prefix: &[S], inner: &Command) -> Command {
    let (program, rest) = prefix.split_first().expect("a program");
    let mut cmd = Command::new(program);
    cmd.args(rest)
        .arg(inner.get_program())
        .args(inner.get_args())
        .env_clear()
        .envs(inner.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
    cmd
}

/// Runs `command` to its end (bounded), stdin empty.
pub(crate) fn ran(command: Command) -> Ran {
    let out = output_within(command);
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `text` as JSON; a test failure naming it otherwise.
pub(crate) fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The in-process DNS server, and an HTTP origin on 127.0.0.2 that each of `names` resolves
/// to: a "public" host once 127.0.0.2 is `treat_as_public` ([`serve::Builder::public`]).
pub(crate) async fn public_origin(names: &[&str]) -> (DnsServer, HttpOrigin) {
    let dns = DnsServer::start().await.unwrap();
    let origin = HttpOrigin::start("origin", "127.0.0.2".parse().unwrap())
        .await
        .unwrap();
    for name in names {
        resolves(&dns, name, "127.0.0.2");
    }
    (dns, origin)
}

/// [`public_origin`], and `netproxy serve` to start in it.
#[derive(Debug)]
pub(crate) struct World {
    pub(crate) dns: DnsServer,
    pub(crate) origin: HttpOrigin,
}

impl World {
    pub(crate) async fn new(names: &[&str]) -> Self {
        let (dns, origin) = public_origin(names).await;
        Self { dns, origin }
    }

    /// `http://HOST:PORT/PATH` on the origin.
    pub(crate) fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}/{path}", self.origin.addr().port())
    }

    /// `netproxy serve` resolving through the DNS server, 127.0.0.2 public.
    pub(crate) fn serve(&self) -> serve::Builder {
        serve().dns(&self.dns).public()
    }
}

/// A file `victim` ("precious") in `dir`, and a symlink to it planted at `dir/name`.
pub(crate) fn planted_symlink(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let link = dir.join(name);
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    (victim, link)
}

/// The audit log's lines (JSON), as far as they are written.
pub(crate) fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(json)
        .collect()
}

/// Waits until the audit log's lines satisfy `done` (the file is written by a thread), and
/// returns them.
pub(crate) fn wait_audit(
    path: &Path,
    what: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    wait_for(what, || {
        let lines = audit_lines(path);
        if done(&lines) {
            Ok(lines)
        } else {
            Err(format!("{lines:#?}"))
        }
    })
}

/// Waits until the audit log has a line for which `pred` holds, and returns it.
pub(crate) fn wait_audit_line(
    path: &Path,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let lines = wait_audit(path, what, |l| l.iter().any(&pred));
    lines.into_iter().find(|v| pred(v)).unwrap()
}

/// The permission bits of `path`.
pub(crate) fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Sets the permission bits of `path`.
pub(crate) fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// How many inotify watches process `pid` holds (Linux: from `/proc/PID/fdinfo`): the files
/// and folders it is told about when they change.
pub(crate) fn inotify_watches(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .filter_map(|fd| std::fs::read_to_string(fd.ok()?.path()).ok())
        .map(|info| {
            info.lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count()
        })
        .sum()
}

/// Makes the DNS server answer `name` with `ip`.
pub(crate) fn resolves(dns: &DnsServer, name: &str, ip: &str) {
    dns.set(name, Answer::Addrs(vec![ip.parse().unwrap()]));
}

/// An HTTPS origin on 127.0.0.2 for `names` (each answered by `dns` with that address), certified
/// by a new test CA, whose certificate is also written to `ca_file` for clients to trust.
pub(crate) async fn tls_origin(
    dns: &DnsServer,
    names: &[&str],
    ca_file: &Path,
) -> proxy_test_support::TlsOrigin {
    let ca = proxy_test_support::TestCa::new().unwrap();
    let origin =
        proxy_test_support::TlsOrigin::start("tls", "127.0.0.2".parse().unwrap(), &ca, names)
            .await
            .unwrap();
    for name in names {
        resolves(dns, name, "127.0.0.2");
    }
    std::fs::write(ca_file, ca.cert_pem()).unwrap();
    origin
}

/// A bare git repository at `repo` served over dumb HTTP (`update-server-info` done), with one
/// commit holding `hello.txt` = `hello`; built in `scratch` (its `src` folder), git kept off
/// every system and user config.
pub(crate) fn dumb_http_repo(scratch: &Path, repo: &Path, hello: &str) {
    let src = scratch.join("src");
    let git = |dir: &Path, args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", scratch)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(repo).unwrap();
    git(&src, &["init", "-q", "-b", "main"]);
    std::fs::write(src.join("hello.txt"), hello).unwrap();
    git(&src, &["add", "hello.txt"]);
    git(&src, &["commit", "-q", "-m", "one"]);
    git(repo, &["init", "-q", "--bare", "-b", "main"]);
    git(&src, &["push", "-q", repo.to_str().unwrap(), "main"]);
    git(repo, &["update-server-info"]);
}

/// A static file server on 127.0.0.2 (python's `http.server`) serving `dir`; stopped on drop.
pub(crate) struct FileServer {
    child: std::process::Child,
    /// Its port.
    pub(crate) port: u16,
}

impl FileServer {
    pub(crate) fn start(dir: &Path) -> Self {
        use std::io::BufRead;
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.2",
                "0",
                "--directory",
            ])
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "Serving HTTP on 127.0.0.2 port N (http://127.0.0.2:N/) ..."
        let port = line
            .split_whitespace()
            .nth(5)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        Self { child, port }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
