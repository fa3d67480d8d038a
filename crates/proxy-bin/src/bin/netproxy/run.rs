//! `netproxy run -- CMD`: the proxy on ephemeral loopback ports, bound before CMD starts, and
//! CMD with its traffic pointed at it (docs/run.md).

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use netproxy::suggest::{AllowMisses, Learner};
use netproxy::{AdminOptions, AdminToken, Files, Listen, Options, Service};

use crate::child_env::{ProxyEnv, bundle_path};
use crate::notices::{Notices, Out, print_lines};
use proxy_audit::{Audit, RunRecorder};
use proxy_core::ProxyCredential;
use tokio::signal::unix::{SignalKind, signal};

use super::{RunArgs, listen_addr, sources, started};

/// Exit code when CMD cannot be started (as a shell does for a missing command).
const EXIT_CANNOT_START: u8 = 127;
/// Exit code when `--isolate` cannot isolate CMD: CMD never starts (interface.md §1).
const EXIT_ISOLATION_REFUSED: u8 = 126;

pub(crate) fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    // First, before netproxy opens any descriptor of its own: the one the caller gave for the
    // admin token (a number that netproxy already uses would not be the caller's).
    let token_fd = match args.admin_token_fd.map(take_token_fd).transpose() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("netproxy run: {e}");
            return Ok(ExitCode::from(super::EXIT_USAGE));
        }
    };
    if let Some(w) = token_fd.as_ref().and_then(|fd| fd.readable_file.as_deref()) {
        eprintln!("netproxy: warning: {w}");
    }
    super::not_dumpable()?;
    // The terminal is the child's: only netproxy's warnings and errors, as plain lines, unless
    // RUST_LOG asks for the log.
    let flush = super::logging::init_run();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let code = runtime.block_on(session(args, token_fd));
    drop(flush);
    // The child is gone; whatever its own children still have open is cut here.
    runtime.shutdown_background();
    code
}

async fn session(args: &RunArgs, token_fd: Option<TokenFd>) -> anyhow::Result<ExitCode> {
    let recorder = match &args.report {
        Some(path) => match RunRecorder::with_report(path) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("netproxy run: {e}");
                return Ok(ExitCode::from(1));
            }
        },
        None => RunRecorder::new(),
    };
    // Each refused or failed target told as it happens (docs/run.md, "Notices"), unless
    // --quiet.
    let notices = if args.quiet {
        None
    } else {
        let out = match &args.notices {
            Some(path) => match open_notices(path) {
                Ok(f) => Out::File(f),
                Err(e) => {
                    eprintln!(
                        "netproxy run: cannot open --notices {} ({})",
                        path.display(),
                        proxy_core::io_error_text(&e)
                    );
                    return Ok(ExitCode::from(1));
                }
            },
            None => Out::Stderr,
        };
        Some(Notices::start(out).context("cannot start the notices' writer")?)
    };
    let recorder = Arc::new(match &notices {
        Some(n) => recorder.with_notices(n.sink()),
        None => recorder,
    });
    if let Some((program, rest)) = args.command.split_first() {
        recorder.set_command(&program.to_string_lossy(), rest.len());
    }
    let mut audit = Audit::default().with_sink(recorder.clone());
    // Learn mode: every decision gathered for the suggestion, and marked in the audit.
    let learner = args.learn.as_ref().map(|_| Arc::new(Learner::default()));
    if let Some(l) = &learner {
        audit = audit.with_sink(l.clone()).learning();
    }
    let credential = if args.proxy_auth {
        Some(ProxyCredential::new("netproxy", session_token()?))
    } else {
        None
    };
    // SOCKS5 UDP relay sockets: inside CMD's namespace under --isolate.
    let relays = Arc::new(crate::isolate::Relays::default());
    // The layers are read once: the child must not widen its own policy by writing a config
    // file (docs/run.md). The admin API's runtime layer is the way to change it.
    let decider = learner
        .is_some()
        .then(|| Arc::new(AllowMisses) as Arc<dyn proxy_gate::Decider>);
    let service = match started(Service::with_decider(
        sources(&args.policy),
        |k| std::env::var(k).ok(),
        audit,
        Files::ReadOnce,
        decider,
    )) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    // --ask: misses held for an answer (docs/run.md, "Approvals").
    let (service, ask) = match crate::ask::prepare(args, service) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let service = Arc::new(
        match &credential {
            Some(c) => service.with_proxy_auth(c.clone()),
            None => service,
        }
        .with_relay_sockets(relays.clone()),
    );
    let snap = service.config();
    let config = &*snap;
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    // Said at once, before the command's first line (the log is written in batches).
    for w in start_warnings(args, config) {
        eprintln!("netproxy: warning: {w}");
    }
    if let (Some(file), Some(learner)) = (&args.learn, &learner) {
        if let Some(by) = config.learn_forbidden_by() {
            eprintln!(
                "netproxy run: --learn is not allowed: the managed requirements {} set learn = false",
                by.display()
            );
            return Ok(ExitCode::from(super::EXIT_CONFIG));
        }
        // The suggestion is written at exit: a folder that cannot take it stops the run now.
        if let Err(e) = crate::files::check_writable(file) {
            eprintln!(
                "netproxy run: --learn {}: cannot write the suggestion there: {e}",
                file.display()
            );
            return Ok(ExitCode::from(1));
        }
        learner.set_managed(
            config
                .requirements()
                .iter()
                .map(|r| r.origin.display().to_string())
                .collect(),
        );
        eprintln!(
            "netproxy: learn mode: names outside the allowlist are allowed and recorded; the suggestion goes to {}",
            file.display()
        );
        if let Some(by) = config.allowlist_fixed_by() {
            eprintln!(
                "netproxy: learn mode: the managed requirements {} fix the allowlist: names outside it stay refused",
                by.display()
            );
        }
    }
    // With HTTPS interception, the child's trust bundle, before anything is served: one that
    // cannot be written or reused stops the run before CMD starts.
    let ca_bundle = match service.trust_bundle() {
        Ok(None) => None,
        Ok(Some(b)) => {
            for w in &b.warnings {
                tracing::warn!("trust bundle: {w}");
            }
            match bundle_path(b.bundle.path) {
                Ok(p) => Some(p),
                Err(e) => {
                    eprintln!("netproxy run: {e}");
                    return Ok(ExitCode::from(1));
                }
            }
        }
        Err(e) => {
            eprintln!("netproxy run: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let admin = match &args.admin {
        Some(text) => match listen_addr(text, 8080, "admin API", config, true) {
            // A fresh token for the session: never admin_token, NETPROXY_ADMIN_TOKEN or the
            // token file, which the child may be able to read.
            Ok(addr) => Some((addr, proxy_admin::random_token()?)),
            Err(e) => {
                eprintln!("netproxy run: --admin: {e}");
                return Ok(ExitCode::from(super::EXIT_USAGE));
            }
        },
        None => None,
    };
    // Under --isolate, the listeners are bound inside CMD's network namespace, before anything
    // is served; a refusal stops here, before CMD starts (docs/isolate.md).
    let isolation = if args.isolate || config.isolate() {
        let socks = config.enable_socks5();
        match tokio::task::spawn_blocking(move || crate::isolate::set_up(socks)).await {
            Ok(Ok(i)) => Some(i),
            Ok(Err(refusal)) => {
                eprintln!("netproxy run: --isolate: {refusal}");
                return Ok(ExitCode::from(EXIT_ISOLATION_REFUSED));
            }
            Err(e) => return Err(anyhow::anyhow!("cannot set up --isolate: {e}")),
        }
    } else {
        None
    };
    // Ephemeral loopback ports, bound now and served as they are: no port race, and two runs
    // side by side get their own.
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let (http, socks, holder, resolvers) = match isolation {
        Some(i) => {
            for (ip, e) in &i.unserved {
                // Without IPv6 in the namespace, an IPv6 resolver is as unreachable from
                // inside as from anywhere: nothing to say at the default level.
                if ip.is_ipv6() && e.kind() == std::io::ErrorKind::AddrNotAvailable {
                    tracing::debug!("--isolate: no IPv6 in the namespace for resolver {ip}: {e}");
                } else {
                    tracing::warn!(
                        "--isolate: lookups CMD sends to its resolver {ip} fail but are not recorded: {e}"
                    );
                }
            }
            relays.isolate(i.holder.clone());
            (
                Listen::Bound(i.http),
                i.socks.map(Listen::Bound),
                Some(i.holder),
                i.resolvers,
            )
        }
        None => (
            Listen::Addr(loopback),
            config.enable_socks5().then_some(Listen::Addr(loopback)),
            None,
            Vec::new(),
        ),
    };
    let options = Options {
        http,
        socks,
        admin: admin.as_ref().map(|(addr, token)| AdminOptions {
            addr: *addr,
            token: AdminToken::Given(token.clone()),
        }),
        watch_files: false,
    };
    let running = match netproxy::start(service.clone(), options).await {
        Ok(r) => r,
        Err(e) if e.is_admin() => {
            eprintln!("netproxy run: {:#}", anyhow::Error::new(e));
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    // The lookups CMD sends its resolvers inside the namespace: answered REFUSED at once, and
    // recorded (docs/isolate.md).
    let mut dns = Vec::new();
    for (udp, tcp) in resolvers {
        let served = udp
            .set_nonblocking(true)
            .and_then(|()| tcp.set_nonblocking(true))
            .and_then(|()| {
                Ok((
                    tokio::net::UdpSocket::from_std(udp)?,
                    tokio::net::TcpListener::from_std(tcp)?,
                ))
            });
        match served {
            Ok((udp, tcp)) => {
                let service = service.clone();
                dns.push(tokio::spawn(async move {
                    service
                        .serve_dns(udp, Some(tcp), std::future::pending())
                        .await;
                }));
            }
            Err(e) => tracing::warn!("--isolate: cannot serve a resolver address: {e}"),
        }
    }
    let env = ProxyEnv {
        http: running.http,
        socks: running.socks,
        allow_local_binding: config.allow_local_binding(),
        isolated: holder.is_some(),
        credential: credential
            .as_ref()
            .map(|c| format!("{}:{}", c.user(), c.password())),
        ca_bundle,
    };
    if let (Some(admin_addr), Some((_, token))) = (running.admin, &admin) {
        let given = match token_fd {
            Some(fd) => {
                let number = fd.number;
                if let Err(e) = fd.give(token) {
                    eprintln!("netproxy run: {e}");
                    return Ok(ExitCode::from(super::EXIT_USAGE));
                }
                format!("written to --admin-token-fd {number}")
            }
            None if std::io::IsTerminal::is_terminal(&std::io::stderr()) => token.clone(),
            None => "available only through --admin-token-fd, which was not given".to_owned(),
        };
        eprintln!("netproxy: admin API on http://{admin_addr} (token: {given})");
    }

    let (program, rest) = args.command.split_first().context("no command given")?;
    let mut cmd = match &holder {
        // netproxy's binary joins the namespaces and becomes CMD (same process id).
        Some(h) => tokio::process::Command::from(h.command(program, rest)),
        None => {
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(rest);
            cmd
        }
    };
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| env.removes(k)) {
            cmd.env_remove(&key);
        }
    }
    // The variables holding hook secrets stay with netproxy (docs/mitm.md).
    for key in config.secret_env_vars() {
        cmd.env_remove(key);
    }
    cmd.envs(env.vars());
    // Brokered credentials: the child gets each grant's dummy, never the real value
    // (docs/credentials.md); withheld variables and configured secret variables go.
    if let Some(vault) = service.vault() {
        for (pid, grant) in ancestors_holding(vault) {
            eprintln!(
                "netproxy: warning: process {pid}, which started netproxy, holds the real value of {grant} in its environment, and the child can read it there (/proc/{pid}/environ): start netproxy with `exec`, or give the secret through a file (docs/credentials.md)"
            );
        }
        let child = vault.child_env();
        for key in &child.remove {
            cmd.env_remove(key);
        }
        // A built-in variable that got no dummy (a value netproxy could not read as text, say)
        // never reaches the child as it is.
        for key in proxy_broker::builtin_vars() {
            if !child.set.iter().any(|(k, _)| k == key) {
                cmd.env_remove(key);
            }
        }
        cmd.envs(child.set.iter().map(|(k, v)| (k, v)));
    }
    if let Some(a) = &ask {
        a.configure(&mut cmd);
    }
    // Signal handlers before CMD starts: a signal sent as soon as CMD is up is passed on.
    let signals = Forwarded::install()?;
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("netproxy run: cannot start {}: {e}", shown(program));
            return Ok(ExitCode::from(EXIT_CANNOT_START));
        }
    };
    let asking = ask.map(|a| a.start(&child));
    let status = signals.wait(&mut child).await;
    if let Some(a) = asking {
        a.finish(args.quiet);
    }
    let status = status?;
    running.shutdown();
    // The namespace lives on while CMD's own children do; the holder's work is over (the
    // service's relay source holds it too: stopped here, not on drop).
    if let Some(h) = holder {
        h.stop();
    }
    for task in dns {
        task.abort();
    }
    service.close_audit();
    let code = exit_code(status);
    // The notices that waited for a terminal in raw mode, then the summary (which --quiet
    // keeps).
    let mut lines = notices.map(Notices::finish).unwrap_or_default();
    if let Some(summary) = recorder.summary() {
        lines.extend(summary.lines().map(str::to_owned));
    }
    print_lines(&lines);
    // A report that cannot be written is said so; the exit code stays the command's.
    if let Err(e) = recorder.finish(i32::from(code)) {
        eprintln!("netproxy: error: {e}");
    }
    if let (Some(file), Some(learner)) = (&args.learn, &learner) {
        write_suggestion(file, learner, program);
    }
    Ok(ExitCode::from(code))
}

/// Writes learn mode's suggestion to `file` (atomically, mode 0600, a symlink at its name
/// replaced, never followed) and says so; a failure is said too, and leaves the exit code
/// the command's.
fn write_suggestion(file: &std::path::Path, learner: &Learner, program: &OsString) {
    let origin = format!("in learn mode, while {} ran", shown(program));
    let s = learner.suggestion(&origin);
    match crate::files::write_atomically(file, &s.toml, 0o600) {
        Ok(()) => {
            let patterns = if s.patterns == 1 {
                "1 pattern".to_owned()
            } else {
                format!("{} patterns", s.patterns)
            };
            eprintln!(
                "netproxy: learn mode: wrote a suggested policy with {patterns} to {}",
                file.display()
            );
            if s.folded > 0 {
                eprintln!(
                    "netproxy: learn mode: the suggestion is incomplete: {} decisions about targets past the first {} are not in it",
                    s.folded,
                    netproxy::suggest::MAX_TARGETS
                );
            }
        }
        Err(e) => eprintln!(
            "netproxy run: --learn: cannot write the suggestion to {}: {e}",
            file.display()
        ),
    }
}

/// The file of `--notices FILE`: appended to, created with mode 0600.
fn open_notices(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.append(true).create(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)
}

/// The descriptor of `--admin-token-fd`: a duplicate netproxy owns (close-on-exec), the
/// caller's number being closed as soon as it is taken.
struct TokenFd {
    number: i32,
    fd: std::os::fd::OwnedFd,
    /// The warning to print when the descriptor is a file with a name that netproxy's user
    /// can read: CMD, the same user, can read the token there too.
    readable_file: Option<String>,
}

/// Takes descriptor `n` from the caller: duplicates it (close-on-exec) and closes `n`, so that
/// CMD never inherits it. Must run before netproxy opens any descriptor of its own.
fn take_token_fd(n: i32) -> Result<TokenFd, String> {
    let flag = format!("--admin-token-fd {n}");
    if n < 3 {
        return Err(format!(
            "{flag}: give a descriptor of 3 or more (0, 1 and 2 are the command's standard streams)"
        ));
    }
    let not_open = || format!("{flag}: descriptor {n} is not open (pass it, e.g. `3>FILE`)");
    let me = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    );
    let dup = me.and_then(|me| {
        rustix::process::pidfd_getfd(&me, n, rustix::process::PidfdGetfdFlags::empty())
    });
    let fd = match dup {
        Ok(fd) => fd,
        Err(rustix::io::Errno::BADF) => return Err(not_open()),
        // pidfd_getfd refused (an old kernel, seccomp): the same file opened again.
        Err(_) => std::fs::OpenOptions::new()
            .append(true)
            .open(format!("/proc/self/fd/{n}"))
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => not_open(),
                _ => format!("{flag}: cannot use descriptor {n}: {e}"),
            })?
            .into(),
    };
    // The caller's number is closed now: nothing of netproxy's owns it.
    nix::unistd::close(n).map_err(|e| format!("{flag}: cannot close descriptor {n}: {e}"))?;
    // A zero-byte write fails on a descriptor not open for writing.
    rustix::io::write(&fd, &[])
        .map_err(|e| format!("{flag}: descriptor {n} is not open for writing ({e})"))?;
    let readable_file = readable_file(&flag, &fd);
    Ok(TokenFd {
        number: n,
        fd,
        readable_file,
    })
}

/// When `fd` is a regular file that still has a name and that netproxy's user can open for
/// reading, the warning that says so: CMD runs as the same user and could read the token
/// there. A pipe (or a file already unlinked) gets none.
fn readable_file(flag: &str, fd: &std::os::fd::OwnedFd) -> Option<String> {
    use std::os::fd::AsRawFd;
    let st = rustix::fs::fstat(fd).ok()?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile
        || st.st_nlink == 0
    {
        return None;
    }
    // Opened again, by its own descriptor, with netproxy's (and so CMD's) credentials: a
    // regular file, so opening it has no effect of its own.
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    std::fs::File::open(&link).ok()?;
    let name = std::fs::read_link(&link).map_or_else(
        |_| "a file".to_owned(),
        |p| format!("the file {}", p.display()),
    );
    Some(format!(
        "{flag} is {name}, which CMD, running as the same user, can read: it would hold the admin token and could change its own policy; pass a pipe that the caller reads instead (docs/run.md)"
    ))
}

impl TokenFd {
    /// Writes `token` and a newline, and closes the descriptor.
    fn give(self, token: &str) -> Result<(), String> {
        use std::io::Write;
        let mut f = std::fs::File::from(self.fd);
        f.write_all(format!("{token}\n").as_bytes()).map_err(|e| {
            format!(
                "--admin-token-fd {}: cannot write the token: {e}",
                self.number
            )
        })
    }
}

/// 128 random bits, hex: the `--proxy-auth` password (URL-safe as it is).
fn session_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("no random bytes for --proxy-auth: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// SIGINT, SIGTERM and SIGHUP, caught to be passed on to the child.
struct Forwarded {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Forwarded {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            hup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        })
    }

    /// Waits for the child, passing SIGINT, SIGTERM and SIGHUP on to it.
    async fn wait(
        mut self,
        child: &mut tokio::process::Child,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw);
        loop {
            let sig = tokio::select! {
                status = child.wait() => return status.context("cannot wait for the command"),
                _ = self.int.recv() => rustix::process::Signal::INT,
                _ = self.term.recv() => rustix::process::Signal::TERM,
                _ = self.hup.recv() => rustix::process::Signal::HUP,
            };
            if let Some(pid) = pid
                && let Err(e) = rustix::process::kill_process(pid, sig)
            {
                tracing::debug!(error = %e, "cannot forward a signal to the command");
            }
        }
    }
}

/// The child's exit code, or 128 + N when signal N killed it.
fn exit_code(status: std::process::ExitStatus) -> u8 {
    if let Some(c) = status.code() {
        return u8::try_from(c & 0xff).unwrap_or(1);
    }
    status
        .signal()
        .and_then(|s| u8::try_from(128 + s).ok())
        .unwrap_or(1)
}

fn shown(program: &OsString) -> String {
    format!("`{}`", program.to_string_lossy())
}

/// The processes above netproxy (its parent, theirs, ...) of the same user whose environment
/// holds a grant's real value, which the child (of the same user) could read through `/proc`;
/// with the grant's name.
fn ancestors_holding(vault: &proxy_broker::Vault) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let mut pid = std::process::id();
    for _ in 0..8 {
        let Some(parent) = parent_of(pid) else { break };
        if parent <= 1 {
            break;
        }
        // Another user's process: the child cannot read it either.
        if let Ok(environ) = std::fs::read(format!("/proc/{parent}/environ"))
            && let Some(grant) = vault.grant_with_value_in(&environ)
        {
            found.push((parent, grant.to_owned()));
        }
        pid = parent;
    }
    found
}

/// The parent process id of `pid`, from `/proc/PID/stat` (after the command's closing `)`).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// What `run` says at start about a session that cannot go as the user likely expects: an
/// allowlist that allows nothing (every request refused), limited mode without interception
/// (every HTTPS request refused), a Node old enough that its built-in `fetch` ignores the proxy
/// variables. Not said under `--learn` or `--ask`, which exist for an allowlist that misses.
fn start_warnings(args: &RunArgs, config: &proxy_config::Config) -> Vec<String> {
    let mut out = Vec::new();
    let allows_something = config
        .domains()
        .iter()
        .any(|d| d.action == proxy_config::Action::Allow)
        || !config.unix_sockets().is_empty()
        || config.credential_broker();
    if !config.enabled() {
        out.push(
            "the proxy is disabled (enabled = false): every request will be refused (503 proxy_disabled)"
                .to_owned(),
        );
    } else if !allows_something && args.learn.is_none() && !args.ask {
        out.push(
            "the allowlist is empty: every request will be refused (allow with --allow HOST, or find out what the command needs with --learn FILE)"
                .to_owned(),
        );
    }
    if config.mode() == proxy_core::Mode::Limited && !config.mitm() {
        out.push(
            "limited mode without HTTPS interception refuses every HTTPS request (CONNECT, and SOCKS5 to port 443): add --mitm to judge them inside TLS, or use --mode full"
                .to_owned(),
        );
    }
    // Under --isolate the check is not made: it would run the command's `node` outside the
    // namespace, and inside it such fetch calls fail anyway.
    if !(args.isolate || config.isolate())
        && let Some(program) = args.command.first()
        && let Some(major) = old_node(program)
    {
        out.push(format!(
            "Node {major}'s built-in fetch ignores the proxy variables (NODE_USE_ENV_PROXY needs a newer Node): its fetch() calls go direct, past the policy (under --isolate they fail); use a newer Node or an HTTP client that honours HTTP_PROXY"
        ));
    }
    out
}

/// The major version of the Node that `program` starts, when it is `node` (or `nodejs`) and
/// 20 or older: its `fetch` does not read the proxy variables. `node --version` runs with
/// nothing of netproxy's environment but `PATH` (no secret of the broker or of a hook, no
/// admin token) and is given 2 s; a program that says nothing usable is not warned about.
fn old_node(program: &OsString) -> Option<u32> {
    let name = std::path::Path::new(program).file_name()?.to_str()?;
    if name != "node" && name != "nodejs" {
        return None;
    }
    let mut probe = std::process::Command::new(program);
    probe
        .arg("--version")
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    if let Some(path) = std::env::var_os("PATH") {
        probe.env("PATH", path);
    }
    let mut child = probe.spawn().ok()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(child.stdout.take()?, 64),
        &mut text,
    )
    .ok()?;
    // `v20.20.2`
    let major: u32 = text
        .trim()
        .strip_prefix('v')?
        .split('.')
        .next()?
        .parse()
        .ok()?;
    (major <= 20).then_some(major)
}
