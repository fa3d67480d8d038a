//! `netproxy serve`: the listeners' addresses from the config and the command line, the ready file,
//! signals (SIGHUP reloads), then `netproxy::start` and its drain.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use netproxy::{AdminOptions, AdminToken, Options, Service, Shutdown, reload_and_log};
use tokio::signal::unix::{SignalKind, signal};

use super::{EXIT_USAGE, ServeArgs, listen_addr, sources, started};

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

async fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let service = match started(Service::new(sources(&args.policy), |k| {
        std::env::var(k).ok()
    })) {
        Ok(s) => Arc::new(s),
        Err(code) => return Ok(code),
    };
    let snap = service.config();
    let config = &*snap;
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let http = match &args.http {
        Some(text) => match listen_addr(text, 3128, "HTTP proxy", config, false) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("netproxy serve: --http: {e}");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
        },
        None => config.listeners().http,
    };
    let socks = if args.no_socks || (!config.enable_socks5() && args.socks.is_none()) {
        None
    } else {
        Some(match &args.socks {
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
        })
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
        Some(AdminOptions {
            addr,
            token: AdminToken::Configured {
                env: std::env::var("NETPROXY_ADMIN_TOKEN").ok(),
            },
        })
    } else {
        None
    };
    raise_descriptor_limit(Needs {
        max_connections: config.max_connections(),
        socks: socks.is_some(),
        udp: config.enable_socks5_udp(),
        admin: admin.is_some(),
    });
    let options = Options {
        http: http.into(),
        socks: socks.map(Into::into),
        admin,
        watch_files: true,
    };
    let running = match netproxy::start(service.clone(), options).await {
        Ok(r) => r,
        Err(e) if e.is_admin() => {
            eprintln!("netproxy serve: {:#}", anyhow::Error::new(e));
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    // The handlers exist before anything says netproxy is ready: a SIGTERM sent as soon as the
    // ready file appears drains, never kills.
    let handlers = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(int), Ok(term), Ok(hup)) => Signals { int, term, hup },
        _ => anyhow::bail!("cannot install the signal handlers"),
    };
    if let Some(path) = &args.ready_file {
        let body = serde_json::json!({
            "http": running.http.to_string(),
            "socks": running.socks.map(|a| a.to_string()),
            "admin": running.admin.map(|a| a.to_string()),
            "pid": std::process::id(),
        });
        crate::files::write_atomically(path, &body.to_string(), 0o644)
            .with_context(|| format!("cannot write the ready file {}", path.display()))?;
    }
    match running.socks {
        Some(socks) => tracing::info!(http = %running.http, socks = %socks, "netproxy listening"),
        None => tracing::info!(http = %running.http, "netproxy listening"),
    }

    let signals = tokio::spawn(handle_signals(
        service.clone(),
        running.shutdown_handle(),
        handlers,
    ));
    if let (Some(admin), Some(source)) = (running.admin, &running.token_source) {
        tracing::info!(admin = %admin, token = %source, "admin API listening");
    }
    running.drain().await;
    signals.abort();
    service.close_audit();
    tracing::info!("netproxy stopped");
    Ok(ExitCode::SUCCESS)
}

/// SIGINT, SIGTERM (drain and stop) and SIGHUP (reopen the audit log, reload).
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

async fn handle_signals(service: Arc<Service>, stop: Shutdown, signals: Signals) {
    let Signals {
        mut int,
        mut term,
        mut hup,
    } = signals;
    loop {
        tokio::select! {
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                service.reopen_audit_log();
                reload_and_log(&service);
            }
        }
    }
    tracing::info!("stopping: no new connections; draining the open ones");
    stop.shutdown();
}

/// What the listeners may hold at once, for the descriptor limit.
struct Needs {
    /// `max_connections`: for the HTTP listener and again for the SOCKS5 one.
    max_connections: u64,
    socks: bool,
    /// SOCKS5 UDP: an association holds four descriptors (its control connection, its relay
    /// socket, the outbound IPv4 and IPv6 sockets), a tunnel two.
    udp: bool,
    admin: bool,
}

/// Descriptors netproxy holds besides its connections: listeners, the runtime, the audit file,
/// the accept loops' reserves, DNS sockets.
const DESCRIPTORS_AT_REST: u64 = 32;

impl Needs {
    /// Descriptors every listener full at once would hold.
    fn descriptors(&self) -> u64 {
        let socks_each = match (self.socks, self.udp) {
            (false, _) => 0,
            (true, false) => 2,
            (true, true) => 4,
        };
        let admin = if self.admin {
            u64::try_from(proxy_admin::MAX_CONNECTIONS).unwrap_or(u64::MAX)
        } else {
            0
        };
        self.max_connections
            .saturating_mul(2 + socks_each)
            .saturating_add(admin)
            .saturating_add(DESCRIPTORS_AT_REST)
    }
}

/// Raises the soft limit on open descriptors to the hard one: a login shell's soft limit
/// (often 1,024) holds about 500 tunnels, far below the default `max_connections` (4,096 for
/// each listener); the hard limit is what the operator allowed. Warns when even that is short
/// of what full listeners would hold: past it, new connections are refused (docs/faults.md).
fn raise_descriptor_limit(needs: Needs) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (limit.current, limit.maximum)
        && soft < hard
    {
        let raised = rustix::process::Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::debug!(from = soft, to = hard, "raised the open-descriptor limit");
                limit = raised;
            }
            Err(e) => tracing::debug!(error = %e, "cannot raise the open-descriptor limit"),
        }
    }
    let needed = needs.descriptors();
    if let Some(soft) = limit.current
        && soft < needed
    {
        tracing::warn!(
            limit = soft,
            needed,
            max_connections = needs.max_connections,
            "the open-descriptor limit is below what full listeners may hold \
             (max_connections each for HTTP and SOCKS5): past it new connections are refused \
             (raise the limit, e.g. LimitNOFILE= or `ulimit -n`, or lower \
             network.limits.max_connections)"
        );
    }
}
