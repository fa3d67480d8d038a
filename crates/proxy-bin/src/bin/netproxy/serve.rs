//! `netproxy serve`: listeners, ready file, signals, reload, drain.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use netproxy::service::{ReloadError, Service, StartError};
use proxy_config::{clamp_bind, parse_listen_url};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use super::{EXIT_CONFIG, EXIT_USAGE, ServeArgs, sources};

/// How long in-flight connections may take to finish after SIGINT/SIGTERM.
const DRAIN: Duration = Duration::from_secs(10);

pub(crate) fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    super::not_dumpable()?;
    let _flush = super::logging::init("info", args.log_format == "json");
    // One worker per core (tokio's default); NETPROXY_WORKER_THREADS overrides.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = std::env::var("NETPROXY_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        builder.worker_threads(n);
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(args))
}

/// The service, or the exit code after printing why it could not start (3 for a config
/// problem, every diagnostic on its own line; 1 otherwise).
pub(crate) fn started(result: Result<Service, StartError>) -> Result<Service, ExitCode> {
    match result {
        Ok(s) => Ok(s),
        Err(StartError::Config(e)) => {
            for d in &e.diagnostics {
                eprintln!("netproxy: config error: {d}");
            }
            Err(ExitCode::from(EXIT_CONFIG))
        }
        Err(e) => {
            eprintln!("netproxy: {e}");
            Err(ExitCode::from(1))
        }
    }
}

/// Completes when `stop` turns true.
pub(crate) fn stopped(
    stop: &watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + use<> {
    let mut stop = stop.clone();
    async move {
        let _ = stop.wait_for(|s| *s).await;
    }
}

/// Serves the admin API on `listener` until `stop` turns true.
pub(crate) fn spawn_admin(
    listener: TcpListener,
    service: Arc<Service>,
    token: String,
    stop: &watch::Receiver<bool>,
) {
    let stopped = stopped(stop);
    tokio::spawn(async move {
        let router = proxy_admin::router(
            Arc::new(netproxy::control::ServiceControl::new(service)),
            &token,
        );
        if let Err(e) = proxy_admin::serve(listener, router, stopped).await {
            tracing::error!(error = %e, "the admin API stopped");
        }
    });
}

async fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let service = match started(Service::new(sources(&args.policy), |k| {
        std::env::var(k).ok()
    })) {
        Ok(s) => Arc::new(s),
        Err(code) => return Ok(code),
    };
    let snap = service.config();
    let config = &snap.config;
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let http_addr = match &args.http {
        Some(text) => match listen_addr(text, 3128, "HTTP proxy", config, false) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("netproxy serve: --http: {e}");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
        },
        None => config.listeners().http,
    };
    let listener = TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("cannot bind the HTTP proxy listener on {http_addr}"))?;
    let http_bound = listener.local_addr()?;
    let socks_listener = if args.no_socks || (!config.enable_socks5() && args.socks.is_none()) {
        None
    } else {
        let addr = match &args.socks {
            Some(text) => match listen_addr(text, 8081, "SOCKS5 proxy", config, false) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("netproxy serve: --socks: {e}");
                    return Ok(ExitCode::from(EXIT_USAGE));
                }
            },
            // Reached only when SOCKS is enabled in the config, which then has an address.
            None => config
                .listeners()
                .socks
                .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 8081))),
        };
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind the SOCKS5 listener on {addr}"))?;
        Some(l)
    };
    let socks_bound = match &socks_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let admin = if !args.no_admin && (config.enable_admin() || args.admin.is_some()) {
        let addr = match &args.admin {
            Some(text) => match listen_addr(text, 8080, "admin API", config, true) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("netproxy serve: --admin: {e}");
                    return Ok(ExitCode::from(EXIT_USAGE));
                }
            },
            None => config
                .listeners()
                .admin
                .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 8080))),
        };
        match bind_admin(&service, addr).await {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("netproxy serve: {e:#}");
                return Ok(ExitCode::from(1));
            }
        }
    } else {
        None
    };
    let admin_bound = match &admin {
        Some((l, _, _)) => Some(l.local_addr()?),
        None => None,
    };
    if config.allow_upstream_proxy() {
        for w in service.upstream_warnings() {
            tracing::warn!("{w}; connecting directly instead");
        }
    }
    service.set_listeners(vec![http_bound].into_iter().chain(socks_bound).collect());
    if let Some(path) = &args.ready_file {
        let body = serde_json::json!({
            "http": http_bound.to_string(),
            "socks": socks_bound.map(|a| a.to_string()),
            "admin": admin_bound.map(|a| a.to_string()),
            "pid": std::process::id(),
        });
        write_atomically(path, &body.to_string())
            .with_context(|| format!("cannot write the ready file {}", path.display()))?;
    }
    match socks_bound {
        Some(socks) => tracing::info!(http = %http_bound, socks = %socks, "netproxy listening"),
        None => tracing::info!(http = %http_bound, "netproxy listening"),
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let signals = tokio::spawn(handle_signals(service.clone(), stop_tx));
    let _watcher = match watch_files(service.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config files; reload with SIGHUP");
            None
        }
    };
    if let Some((listener, token, source)) = admin {
        tracing::info!(admin = %listener.local_addr()?, token = %source, "admin API listening");
        spawn_admin(listener, service.clone(), token, &stop_rx);
    }
    let http = service.serve_http(listener, stopped(&stop_rx));
    let socks_stopped = stopped(&stop_rx);
    let socks = async {
        if let Some(l) = socks_listener {
            service.serve_socks(l, socks_stopped).await;
        }
    };
    let serve = async { tokio::join!(http, socks) };
    tokio::pin!(serve);
    let drain_stopped = stopped(&stop_rx);
    tokio::select! {
        _ = &mut serve => {}
        () = async {
            drain_stopped.await;
            tokio::time::sleep(DRAIN).await;
        } => {
            tracing::warn!("connections still open after {} s; exiting", DRAIN.as_secs());
        }
    }
    signals.abort();
    service.close_audit();
    tracing::info!("netproxy stopped");
    Ok(ExitCode::SUCCESS)
}

/// Binds the admin API's listener and finds its token.
pub(crate) async fn bind_admin(
    service: &Service,
    addr: std::net::SocketAddr,
) -> anyhow::Result<(TcpListener, String, proxy_admin::TokenSource)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind the admin API listener on {addr}"))?;
    let snap = service.config();
    let (token, source) = proxy_admin::token(
        snap.config.admin_token(),
        std::env::var("NETPROXY_ADMIN_TOKEN").ok(),
        service.sources().home_dir.as_deref(),
    )?;
    Ok((listener, token, source))
}

/// A listener address from the command line, clamped to loopback like the config's.
pub(crate) fn listen_addr(
    text: &str,
    default_port: u16,
    name: &str,
    config: &proxy_config::Config,
    admin: bool,
) -> Result<std::net::SocketAddr, String> {
    let addr = parse_listen_url(text, default_port)?;
    let force = config
        .unix_sockets_enabled()
        .then_some("unix socket proxying is enabled");
    let (allowed, flag) = if admin {
        (
            config.allow_non_loopback_admin(),
            "dangerously_allow_non_loopback_admin",
        )
    } else {
        (
            config.allow_non_loopback_proxy(),
            "dangerously_allow_non_loopback_proxy",
        )
    };
    let (addr, warning) = clamp_bind(name, addr, allowed, flag, force);
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    Ok(addr)
}

async fn handle_signals(service: Arc<Service>, stop: watch::Sender<bool>) {
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                service.reopen_audit_log();
                reload(&service);
            }
        }
    }
    tracing::info!("stopping: no new connections; draining the open ones");
    let _ = stop.send(true);
}

fn reload(service: &Service) {
    match service.reload() {
        Ok(warnings) => {
            for w in warnings {
                tracing::warn!("{w}");
            }
            tracing::info!("config reloaded");
        }
        Err(ReloadError::Config(e)) => {
            for d in &e.diagnostics {
                tracing::error!("reload refused, the previous config stays in force: {d}");
            }
        }
        Err(e) => tracing::error!("reload refused, the previous config stays in force: {e}"),
    }
}

/// Watches the directories of every config layer's file and reloads when one of those files
/// changes (created, written, renamed over, removed). Events are debounced for 200 ms.
pub(crate) fn watch_files(service: Arc<Service>) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let files: Vec<std::path::PathBuf> = service
        .watched_files()
        .into_iter()
        .map(|p| std::path::absolute(&p).unwrap_or(p))
        .collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let wanted = files.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res
            && !event.kind.is_access()
            && event.paths.iter().any(|p| wanted.iter().any(|w| w == p))
        {
            let _ = tx.send(());
        }
    })?;
    let mut dirs: Vec<std::path::PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(std::path::Path::to_path_buf))
        .filter(|d| d.is_dir())
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        watcher.watch(d, notify::RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            while rx.try_recv().is_ok() {}
            tracing::info!("a config file changed; reloading");
            reload(&service);
        }
    });
    Ok(watcher)
}

/// Writes `text` to `path` atomically: into a new file of an unpredictable name in the same
/// folder, created exclusively without following a symlink (mode 0644), then renamed over
/// `path` (a symlink at `path` is replaced, never followed).
fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(std::io::Error::other)?;
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{suffix}.tmp"));
    let tmp = dir.join(tmp_name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits().cast_signed())
        .open(&tmp)?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
