//! The one start path of `serve` and `run`: bind the listeners, report the upstream warnings,
//! start the front-ends and the admin API, optionally watch the config files; then stop and
//! drain.
//!
//! What differs between the two commands is in [`Options`]: the addresses (the config's or the
//! command line's for `serve`, ephemeral loopback ports for `run`), where the admin token comes
//! from, and whether the config files are watched (only `serve`). The caller keeps what is its
//! own: reading the environment, the ready file, the log lines that announce the listeners,
//! signal handling, and `run`'s child.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proxy_admin::{TokenError, TokenSource};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::control::ServiceControl;
use crate::service::{ReloadError, Service};

/// How long open connections may take to finish once shutdown is asked for
/// ([`Running::drain`]).
pub const DRAIN: Duration = Duration::from_secs(10);

/// Where a proxy listener listens.
#[derive(Debug)]
pub enum Listen {
    /// Bound by [`start`] on this address (port 0: an ephemeral one).
    Addr(SocketAddr),
    /// A listener the caller bound, served as it is (`run --isolate` binds its listeners inside
    /// the command's network namespace).
    Bound(std::net::TcpListener),
}

impl From<SocketAddr> for Listen {
    fn from(addr: SocketAddr) -> Self {
        Listen::Addr(addr)
    }
}

/// What [`start`] starts.
#[derive(Debug)]
pub struct Options {
    /// The HTTP proxy's listener.
    pub http: Listen,
    /// The SOCKS5 proxy's listener; none: no SOCKS5 listener.
    pub socks: Option<Listen>,
    /// The admin API; none: not started.
    pub admin: Option<AdminOptions>,
    /// Reload when one of the config files changes (`serve`; `run` reads its files once).
    pub watch_files: bool,
}

/// The admin API's address and token.
#[derive(Debug)]
pub struct AdminOptions {
    /// Where it listens (port 0: an ephemeral one).
    pub addr: SocketAddr,
    /// Its bearer token.
    pub token: AdminToken,
}

/// Where the admin API's token comes from.
pub enum AdminToken {
    /// `admin_token` in the config, else `env` (the caller's `NETPROXY_ADMIN_TOKEN`), else a
    /// new one written to the config home (`proxy_admin::token`), found once the listener is
    /// bound: `serve`.
    Configured {
        /// The value of `NETPROXY_ADMIN_TOKEN`, if set.
        env: Option<String>,
    },
    /// This token: `run`, which draws a fresh one for each session.
    Given(String),
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        match self {
            AdminToken::Configured { env } => f
                .debug_struct("Configured")
                .field("env", &env.as_ref().map(|_| "<set>"))
                .finish(),
            AdminToken::Given(_) => f.write_str("Given(<token>)"),
        }
    }
}

/// One of the listeners [`start`] binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The HTTP proxy.
    Http,
    /// The SOCKS5 proxy.
    Socks,
    /// The admin API.
    Admin,
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Listener::Http => "HTTP proxy",
            Listener::Socks => "SOCKS5",
            Listener::Admin => "admin API",
        })
    }
}

/// Why [`start`] could not start the proxy. Nothing is served then.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// A listener could not be bound.
    #[error("cannot bind the {listener} listener on {addr}")]
    Bind {
        /// Which.
        listener: Listener,
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A bound listener's address could not be read.
    #[error("cannot read the address of the {0} listener")]
    Address(Listener, #[source] std::io::Error),
    /// A listener the caller bound cannot be served.
    #[error("cannot serve the {0} listener")]
    Serve(Listener, #[source] std::io::Error),
    /// The admin API has no usable token.
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl ListenError {
    /// Whether the admin API is what failed (the rest of the proxy could have started).
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            ListenError::Bind {
                listener: Listener::Admin,
                ..
            } | ListenError::Address(Listener::Admin, _)
                | ListenError::Token(_)
        )
    }
}

/// Asks a [`Running`] proxy to stop: no new connections; the open ones drain.
#[derive(Debug, Clone)]
pub struct Shutdown(Arc<watch::Sender<bool>>);

impl Shutdown {
    /// Stops accepting on every listener (the admin API's too).
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

/// A started proxy: its bound addresses, and the handles to stop it and wait for it.
#[derive(Debug)]
pub struct Running {
    /// The HTTP proxy's bound address.
    pub http: SocketAddr,
    /// The SOCKS5 proxy's bound address.
    pub socks: Option<SocketAddr>,
    /// The admin API's bound address.
    pub admin: Option<SocketAddr>,
    /// Where the admin token came from, under [`AdminToken::Configured`].
    pub token_source: Option<TokenSource>,
    stop: Shutdown,
    front_ends: Vec<JoinHandle<()>>,
    /// Reloads on a config file's change while it lives.
    _watcher: Option<notify::RecommendedWatcher>,
}

/// Starts `service`, in this order: binds the HTTP, SOCKS5 and admin listeners (the admin
/// token is found once its listener is bound), reports the upstream proxy variables that
/// cannot be used (when `allow_upstream_proxy` is on), tells the gate its own listener
/// addresses, watches the config files if asked, then serves every listener. Nothing is served
/// unless every listener is bound.
pub async fn start(service: Arc<Service>, options: Options) -> Result<Running, ListenError> {
    let bind = |listener: Listener, addr: SocketAddr| async move {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| ListenError::Bind {
                listener,
                addr,
                source,
            })?;
        let bound = l
            .local_addr()
            .map_err(|e| ListenError::Address(listener, e))?;
        Ok::<_, ListenError>((l, bound))
    };
    let listen = |listener: Listener, on: Listen| async move {
        match on {
            Listen::Addr(addr) => bind(listener, addr).await,
            Listen::Bound(l) => {
                let serve = |e| ListenError::Serve(listener, e);
                l.set_nonblocking(true).map_err(serve)?;
                let l = TcpListener::from_std(l).map_err(serve)?;
                let bound = l
                    .local_addr()
                    .map_err(|e| ListenError::Address(listener, e))?;
                Ok((l, bound))
            }
        }
    };
    let (http, http_addr) = listen(Listener::Http, options.http).await?;
    let socks = match options.socks {
        Some(on) => Some(listen(Listener::Socks, on).await?),
        None => None,
    };
    let socks_addr = socks.as_ref().map(|(_, a)| *a);
    let admin = match options.admin {
        Some(admin) => {
            let (listener, addr) = bind(Listener::Admin, admin.addr).await?;
            let (token, source) = match admin.token {
                AdminToken::Configured { env } => {
                    let snap = service.config();
                    let (token, source) = proxy_admin::token(
                        snap.admin_token(),
                        env,
                        service.sources().home_dir.as_deref(),
                    )?;
                    (token, Some(source))
                }
                AdminToken::Given(token) => (token, None),
            };
            Some((listener, addr, token, source))
        }
        None => None,
    };
    if service.config().allow_upstream_proxy() {
        for w in service.upstream_warnings() {
            tracing::warn!("{w}; connecting directly instead");
        }
    }
    for w in service.broker_warnings() {
        tracing::warn!("{w}");
    }
    service.set_listeners(std::iter::once(http_addr).chain(socks_addr).collect());
    let watcher = if options.watch_files {
        match watch_files(service.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the config files; reload with SIGHUP");
                None
            }
        }
    } else {
        None
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut front_ends = Vec::new();
    let (svc, stop) = (service.clone(), stopped(&stop_rx));
    front_ends.push(tokio::spawn(
        async move { svc.serve_http(http, stop).await },
    ));
    if let Some((l, _)) = socks {
        let (svc, stop) = (service.clone(), stopped(&stop_rx));
        front_ends.push(tokio::spawn(async move { svc.serve_socks(l, stop).await }));
    }
    let (admin_addr, token_source) = match admin {
        Some((listener, addr, token, source)) => {
            let router = proxy_admin::router(Arc::new(ServiceControl::new(service)), &token);
            let stop = stopped(&stop_rx);
            tokio::spawn(async move {
                if let Err(e) = proxy_admin::serve(listener, router, stop).await {
                    tracing::error!(error = %e, "the admin API stopped");
                }
            });
            (Some(addr), source)
        }
        None => (None, None),
    };
    Ok(Running {
        http: http_addr,
        socks: socks_addr,
        admin: admin_addr,
        token_source,
        stop: Shutdown(Arc::new(stop_tx)),
        front_ends,
        _watcher: watcher,
    })
}

impl Running {
    /// A handle that stops the proxy (for a signal handler).
    pub fn shutdown_handle(&self) -> Shutdown {
        self.stop.clone()
    }

    /// Stops accepting on every listener; see [`Running::drain`] to wait for the open
    /// connections.
    pub fn shutdown(&self) {
        self.stop.shutdown();
    }

    /// Completes when the front-ends have finished: after a shutdown, once their open
    /// connections are done, but no later than [`DRAIN`] after the shutdown (a warning then
    /// says connections were still open). A front-end's panic is resumed here.
    pub async fn drain(self) {
        let mut stop = self.stop.0.subscribe();
        let finished = async {
            for handle in self.front_ends {
                if let Err(e) = handle.await
                    && e.is_panic()
                {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        };
        tokio::select! {
            () = finished => {}
            () = async {
                let _ = stop.wait_for(|s| *s).await;
                tokio::time::sleep(DRAIN).await;
            } => {
                tracing::warn!("connections still open after {} s; exiting", DRAIN.as_secs());
            }
        }
    }
}

/// Completes when `stop` turns true.
fn stopped(stop: &watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + use<> {
    let mut stop = stop.clone();
    async move {
        let _ = stop.wait_for(|s| *s).await;
    }
}

/// Re-reads the config files ([`Service::reload`]) and logs the outcome: the new config's
/// warnings and `config reloaded`, or why the reload was refused (the previous config stays in
/// force). For SIGHUP and the file watcher.
pub fn reload_and_log(service: &Service) {
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
fn watch_files(service: Arc<Service>) -> notify::Result<notify::RecommendedWatcher> {
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
            reload_and_log(&service);
        }
    });
    Ok(watcher)
}
