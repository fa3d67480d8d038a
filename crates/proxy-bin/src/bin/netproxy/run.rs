//! `netproxy run -- CMD`: the proxy on ephemeral loopback ports, bound before CMD starts, and
//! CMD with its traffic pointed at it (interface.md §1 and §6).

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use netproxy::child_env::{ProxyEnv, is_managed};
use netproxy::report::RunRecorder;
use netproxy::service::Service;
use proxy_audit::Audit;
use proxy_core::ProxyCredential;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use super::serve::{spawn_admin, started, stopped};
use super::{RunArgs, sources};

/// Exit code when CMD cannot be started (as a shell does for a missing command).
const EXIT_CANNOT_START: u8 = 127;

pub(crate) fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    // The terminal is the child's: only netproxy's warnings and errors, unless RUST_LOG asks.
    let flush = super::logging::init("warn", false);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let code = runtime.block_on(session(args));
    drop(flush);
    // The child is gone; whatever its own children still have open is cut here.
    runtime.shutdown_background();
    code
}

async fn session(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let recorder = Arc::new(match &args.report {
        Some(path) => match RunRecorder::with_report(path) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("netproxy run: {e}");
                return Ok(ExitCode::from(1));
            }
        },
        None => RunRecorder::new(),
    });
    let audit = Audit::default().with_sink(recorder.clone());
    let credential = if args.proxy_auth {
        Some(ProxyCredential::new("netproxy", session_token()?))
    } else {
        None
    };
    let service = match started(Service::with_audit(
        sources(&args.policy),
        |k| std::env::var(k).ok(),
        audit,
    )) {
        Ok(s) => Arc::new(match &credential {
            Some(c) => s.with_proxy_auth(c.clone()),
            None => s,
        }),
        Err(code) => return Ok(code),
    };
    let snap = service.config();
    let config = &snap.config;
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    // Ephemeral loopback ports, bound now and served as they are: no port race, and two runs
    // side by side get their own.
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let http = TcpListener::bind(loopback)
        .await
        .context("cannot bind the HTTP proxy listener on 127.0.0.1")?;
    let http_addr = http.local_addr()?;
    let socks = if config.enable_socks5() {
        Some(
            TcpListener::bind(loopback)
                .await
                .context("cannot bind the SOCKS5 listener on 127.0.0.1")?,
        )
    } else {
        None
    };
    let socks_addr = match &socks {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    service.set_listeners(std::iter::once(http_addr).chain(socks_addr).collect());
    if config.allow_upstream_proxy() {
        for w in service.upstream_warnings() {
            tracing::warn!("{w}; connecting directly instead");
        }
    }
    let env = ProxyEnv {
        http: http_addr,
        socks: socks_addr,
        allow_local_binding: config.allow_local_binding(),
        credential: credential
            .as_ref()
            .map(|c| format!("{}:{}", c.user(), c.password())),
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let (svc, stop) = (service.clone(), stopped(&stop_rx));
    tokio::spawn(async move { svc.serve_http(http, stop).await });
    if let Some(l) = socks {
        let (svc, stop) = (service.clone(), stopped(&stop_rx));
        tokio::spawn(async move { svc.serve_socks(l, stop).await });
    }
    if let Some(text) = &args.admin {
        let addr = match super::serve::listen_addr(text, 8080, "admin API", config, true) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("netproxy run: --admin: {e}");
                return Ok(ExitCode::from(super::EXIT_USAGE));
            }
        };
        let (listener, token, source) = match super::serve::bind_admin(&service, addr).await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("netproxy run: {e:#}");
                return Ok(ExitCode::from(1));
            }
        };
        eprintln!(
            "netproxy: admin API on http://{} (token: {source})",
            listener.local_addr()?
        );
        spawn_admin(listener, service.clone(), token, &stop_rx);
    }
    let _watcher = match super::serve::watch_files(service.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config files; they are not reloaded");
            None
        }
    };

    let (program, rest) = args.command.split_first().context("no command given")?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(rest);
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(is_managed) {
            cmd.env_remove(&key);
        }
    }
    cmd.envs(env.vars());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("netproxy run: cannot start {}: {e}", shown(program));
            return Ok(ExitCode::from(EXIT_CANNOT_START));
        }
    };
    let status = wait_forwarding_signals(&mut child).await?;
    let _ = stop_tx.send(true);
    service.close_audit();
    let code = exit_code(status);
    if !args.quiet
        && let Some(summary) = recorder.summary()
    {
        eprintln!("{summary}");
    }
    if let Err(e) = recorder.finish(i32::from(code)) {
        eprintln!("netproxy run: {e}");
    }
    Ok(ExitCode::from(code))
}

/// 128 random bits, hex: the `--proxy-auth` password (URL-safe as it is).
fn session_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("no random bytes for --proxy-auth: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Waits for the child, passing SIGINT, SIGTERM and SIGHUP on to it.
async fn wait_forwarding_signals(
    child: &mut tokio::process::Child,
) -> anyhow::Result<std::process::ExitStatus> {
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    loop {
        let sig = tokio::select! {
            status = child.wait() => return status.context("cannot wait for the command"),
            _ = int.recv() => rustix::process::Signal::INT,
            _ = term.recv() => rustix::process::Signal::TERM,
            _ = hup.recv() => rustix::process::Signal::HUP,
        };
        if let Some(pid) = pid
            && let Err(e) = rustix::process::kill_process(pid, sig)
        {
            tracing::debug!(error = %e, "cannot forward a signal to the command");
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
