//! The `netproxy` command: a thin clap CLI over the `netproxy` library (README.md, docs/run.md, docs/config.md).
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod ask;
mod ca;
mod child_env;
mod cli_docs;
mod files;
mod isolate;
mod logging;
mod notices;
mod run;
mod serve;
mod suggest;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use clap::{Args, CommandFactory, Parser, Subcommand};
use netproxy::{CheckRequest, Service, StartError, explain};
use proxy_config::{CliOverrides, Sources};
use proxy_core::{Mode, Protocol};

/// `netproxy --version`: the version, the commit it was built from and the build profile
/// (`netproxy 0.1.0 (1a2b3c4, release)`; the commit is `unknown` when built outside a git
/// checkout; both come from build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("NETPROXY_COMMIT"),
    ", ",
    env!("NETPROXY_PROFILE"),
    ")"
);

/// Exit code for a usage error.
const EXIT_USAGE: u8 = 2;
/// Exit code for an invalid config or one that violates managed constraints.
const EXIT_CONFIG: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "netproxy",
    version = VERSION,
    // Colour in help and usage errors only on a terminal, and never with NO_COLOR set
    // (clap's `auto`; the log follows the same rule: logging.rs).
    color = clap::ColorChoice::Auto,
    about = "A local network-policy egress proxy: lets through what the policy allows, refuses the rest with a clear reason, records every decision",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy until SIGINT/SIGTERM
    Serve(ServeArgs),
    /// Run CMD with its traffic pointed at a proxy on ephemeral loopback ports; exits with CMD's code
    Run(RunArgs),
    /// Explain one decision without serving; exit 0 allowed, 1 denied
    Check(CheckArgs),
    /// Print a policy that covers what a run used, from its --report file or an audit log
    /// (the suggestion `run --learn` writes)
    Suggest(suggest::SuggestArgs),
    /// The effective config
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The MITM certificate authority: init, path, show
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Print the environment a child should get, for a proxy started with `serve` (with `mitm`,
    /// the trust bundle too)
    Env(EnvArgs),
    /// Print shell completions for SHELL (e.g. `netproxy completions bash > /etc/bash_completion.d/netproxy`)
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff: `netproxy man | man -l -`)
    Man {
        /// Instead, write one page per command into DIR (netproxy.1, netproxy-serve.1, ...)
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    policy: PolicyOptions,
    /// HTTP proxy listener (e.g. 127.0.0.1:3128; port 0 = ephemeral)
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// SOCKS5 listener (default from socks_url; port 0 = ephemeral)
    #[arg(long, value_name = "ADDR")]
    socks: Option<String>,
    /// Admin API listener (default from admin_url; port 0 = ephemeral)
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// Do not start the SOCKS5 listener
    #[arg(long)]
    no_socks: bool,
    /// Do not start the admin API
    #[arg(long)]
    no_admin: bool,
    /// Write the bound addresses here (atomically) once every listener is bound
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// Log format on stderr
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    policy: PolicyOptions,
    /// Give the child a random per-session credential in its proxy URLs and refuse clients
    /// without it (HTTP 407, SOCKS5 username/password)
    #[arg(long)]
    proxy_auth: bool,
    /// Also open the admin API on this address (e.g. 127.0.0.1:0), with a fresh token for the
    /// session
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// Write the admin API's token, and a newline, to descriptor N (inherited from the caller,
    /// 3 or more), then close it before CMD starts
    #[arg(long, value_name = "N", requires = "admin")]
    admin_token_fd: Option<i32>,
    /// Do not print the live notices of refused and failed requests (the summary at exit
    /// stays)
    #[arg(long)]
    quiet: bool,
    /// Write the live notices of refused and failed requests to FILE (appended) instead of
    /// stderr
    #[arg(long, value_name = "FILE", conflicts_with = "quiet")]
    notices: Option<PathBuf>,
    /// Write every decision to FILE as JSON
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Run CMD in a network namespace of its own (Linux): it reaches the network only through
    /// the proxy (docs/isolate.md); exit 126 when the kernel refuses
    #[arg(long)]
    isolate: bool,
    /// Learn mode: allow names outside the allowlist and record them (deny entries, local
    /// protection and managed constraints still refuse); at exit, write to FILE a suggested
    /// policy that --config loads
    #[arg(long, value_name = "FILE")]
    learn: Option<PathBuf>,
    /// Hold a request outside the allowlist and ask whether to allow it: on the terminal, or
    /// through the admin API (GET /pending, POST /pending/ID); refused after 60 s without an
    /// answer (docs/run.md, "Approvals")
    #[arg(long, conflicts_with = "learn")]
    ask: bool,
    /// The command and its arguments
    #[arg(value_name = "CMD", required = true, trailing_var_arg = true)]
    command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("proxy").required(true).args(["http", "ready_file"])))]
struct EnvArgs {
    #[command(flatten)]
    policy: PolicyOptions,
    /// sh (sourceable `export` lines) or json (one object)
    #[arg(long, value_name = "FORMAT", default_value = "sh", value_parser = ["sh", "json"])]
    format: String,
    /// The HTTP proxy's address (as `serve` printed it)
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// The SOCKS5 proxy's address, if there is one
    #[arg(long, value_name = "ADDR", conflicts_with = "ready_file")]
    socks: Option<String>,
    /// The addresses from the ready file a running `serve --ready-file FILE` wrote
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
}

/// The policy options (docs/config.md, "Layers").
#[derive(Debug, Args, Default)]
struct PolicyOptions {
    /// A config file (repeatable; later wins)
    #[arg(long = "config", value_name = "FILE")]
    config: Vec<PathBuf>,
    /// A managed requirements file (repeatable)
    #[arg(long = "requirements", value_name = "FILE")]
    requirements: Vec<PathBuf>,
    /// Set a key under `network` to a TOML value (a plain word for a string key), e.g.
    /// -c mode=limited, -c limits.idle_timeout_s=60 (repeatable)
    #[arg(short = 'c', value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Allow a domain pattern (repeatable)
    #[arg(long = "allow", value_name = "PATTERN")]
    allow: Vec<String>,
    /// Deny a domain pattern (repeatable)
    #[arg(long = "deny", value_name = "PATTERN")]
    deny: Vec<String>,
    /// full or limited (GET, HEAD, OPTIONS only)
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    mode: Option<Mode>,
    /// Let local and private targets through when the allowlist admits them
    #[arg(long)]
    allow_local_binding: bool,
    /// Intercept HTTPS: limited mode is judged inside TLS (docs/mitm.md)
    #[arg(long)]
    mitm: bool,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
        .map_err(|e: proxy_core::UnknownMode| e.to_string())
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    s.parse()
        .map_err(|e: proxy_core::UnknownProtocol| e.to_string())
}

#[derive(Debug, Args)]
struct CheckArgs {
    #[command(flatten)]
    policy: PolicyOptions,
    /// The request method (default GET for http, CONNECT for https_connect)
    #[arg(long, value_name = "M")]
    method: Option<String>,
    /// http, https_connect, socks5_tcp or socks5_udp (default from the URL scheme, else https_connect)
    #[arg(long, value_name = "P", value_parser = parse_protocol)]
    protocol: Option<Protocol>,
    /// Print the decision as JSON
    #[arg(long)]
    json: bool,
    /// Do not resolve an allowed name (by default it is resolved and every address checked, as `serve` does)
    #[arg(long)]
    no_resolve: bool,
    /// Say which brokered credential would be injected at TARGET (a URL), or why none
    #[arg(long)]
    credentials: bool,
    /// A URL, host, host:port or [v6]:port
    target: String,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// The effective config after all layers, and which layer set each value
    Show {
        #[command(flatten)]
        policy: PolicyOptions,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Check config files (or, with none, the effective config); every diagnostic at once
    Validate {
        #[command(flatten)]
        policy: PolicyOptions,
        /// Files to check on their own
        files: Vec<PathBuf>,
    },
}

/// netproxy's home: `$NETPROXY_HOME`, else `$HOME/.netproxy`.
fn home_dir() -> Option<PathBuf> {
    std::env::var_os("NETPROXY_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".netproxy")))
}

fn sources(p: &PolicyOptions) -> Sources {
    let system_dir = std::env::var_os("NETPROXY_SYSTEM_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/etc/netproxy"), PathBuf::from);
    Sources {
        system_dir: Some(system_dir),
        home_dir: home_dir(),
        config_files: p.config.clone(),
        requirement_files: p.requirements.clone(),
        system_requirements: None,
        cli: CliOverrides {
            set: p.set.clone(),
            allow: p.allow.clone(),
            deny: p.deny.clone(),
            mode: p.mode,
            allow_local_binding: p.allow_local_binding,
            mitm: p.mitm,
        },
    }
}

/// The service, or the exit code after printing why it could not start (3 for a config
/// problem, every diagnostic on its own line; 1 otherwise).
fn started(result: Result<Service, StartError>) -> Result<Service, ExitCode> {
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

/// A listener address from the command line, clamped to loopback like the config's.
fn listen_addr(
    text: &str,
    default_port: u16,
    name: &str,
    config: &proxy_config::Config,
    admin: bool,
) -> Result<std::net::SocketAddr, String> {
    let addr = proxy_config::parse_listen_url(text, default_port)?;
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
    let (addr, warning) = proxy_config::clamp_bind(name, addr, allowed, flag, force);
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    Ok(addr)
}

/// Loads the config, printing every diagnostic; `Err(exit code)` when it is invalid.
fn load(p: &PolicyOptions) -> Result<proxy_config::Config, ExitCode> {
    match proxy_config::load(&sources(p)) {
        Ok(c) => {
            for w in c.warnings() {
                eprintln!("netproxy: warning: {w}");
            }
            Ok(c)
        }
        Err(e) => {
            for d in &e.diagnostics {
                eprintln!("netproxy: config error: {d}");
            }
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    if args.credentials {
        let config = match load(&args.policy) {
            Ok(c) => c,
            Err(code) => return Ok(code),
        };
        return Ok(
            match netproxy::broker::explain_credentials(
                &config,
                &|k| std::env::var(k).ok(),
                &args.target,
            ) {
                Ok(r) => {
                    if args.json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&r.json).context("rendering JSON")?
                        );
                    } else {
                        print!("{}", r.text);
                    }
                    ExitCode::from(if r.injected { 0 } else { 1 })
                }
                Err(e) => {
                    eprintln!("netproxy check: {e}");
                    ExitCode::from(EXIT_USAGE)
                }
            },
        );
    }
    let req = match CheckRequest::parse(&args.target, args.protocol, args.method.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("netproxy check: {e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let config = match load(&args.policy) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let policy = match config.policy() {
        Ok(p) => p,
        Err(e) => {
            for d in &e.diagnostics {
                eprintln!("netproxy: config error: {d}");
            }
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    // The machine's own addresses, as the gate of `serve` would judge them (one dump).
    let own = match proxy_gate::dump_own_addrs() {
        Ok(own) => Arc::new(ArcSwap::from_pointee(own)),
        Err(e) => {
            eprintln!("netproxy check: cannot list the machine's own addresses: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let settings = proxy_gate::Settings {
        allow_upstream_proxy: config.allow_upstream_proxy(),
        verify_sni: config.verify_sni(),
    };
    let state = Arc::new(ArcSwap::from_pointee(
        proxy_gate::Snapshot::new(policy, settings).with_managed(netproxy::managed_of(&config)),
    ));
    // The gate `serve` would build, judging through the same code; it records nothing here.
    let (upstream, _) = proxy_gate::UpstreamProxies::from_env(|k| std::env::var(k).ok());
    let gate = |resolver| {
        proxy_gate::PolicyGate::new(state.clone(), resolver, Arc::new(NoAudit), own.clone())
            .with_upstream(upstream.clone())
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // First without any lookup (a resolver with no nameserver); then, when the answer depends
    // on the name's addresses and resolving is wanted, with the resolver `serve` would use.
    let offline = proxy_gate::Resolver::new(Some(&[]), Default::default(), config.dns_timeout())
        .context("cannot build the DNS resolver")?;
    let mut report = runtime.block_on(explain(&gate(offline), &req, proxy_gate::Lookup::Skip));
    // A name to look up: the target's, or the upstream proxy's when it is given by name (the
    // first pass names it without a route).
    let upstream_by_name = report.upstream.as_deref().is_some_and(|u| {
        proxy_core::split_authority(u)
            .ok()
            .and_then(|(host, _)| proxy_core::Host::parse(host).ok())
            .is_some_and(|h| h.ip().is_none())
    });
    let needs_lookup = report.addresses_checked_at_connect
        || (upstream_by_name && report.failure.is_none() && report.decision.is_allowed());
    if needs_lookup && !args.no_resolve {
        let resolver = match proxy_gate::Resolver::new(
            config.dns_nameservers().as_deref(),
            config.dns_hosts(),
            config.dns_timeout(),
        ) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("netproxy check: {e}");
                return Ok(ExitCode::from(1));
            }
        };
        report = runtime.block_on(explain(&gate(resolver), &req, proxy_gate::Lookup::Resolve));
    }
    if args.json {
        let text = serde_json::to_string_pretty(&report.to_json()).context("rendering JSON")?;
        println!("{text}");
    } else {
        print!("{}", report.to_text());
    }
    Ok(ExitCode::from(
        u8::try_from(report.exit_code()).unwrap_or(1),
    ))
}

fn env_command(args: &EnvArgs) -> anyhow::Result<ExitCode> {
    let addr = |flag: &str, text: &str| -> Result<std::net::SocketAddr, String> {
        let a = proxy_config::parse_listen_url(text, 0).map_err(|e| format!("--{flag}: {e}"))?;
        if a.port() == 0 {
            return Err(format!(
                "--{flag}: {text}: give the port the proxy listens on"
            ));
        }
        Ok(a)
    };
    let (http, socks) = match &args.ready_file {
        Some(path) => match read_ready_file(path) {
            Ok(addrs) => addrs,
            Err(e) => {
                eprintln!("netproxy env: {e}");
                return Ok(ExitCode::from(1));
            }
        },
        None => match (
            args.http.as_deref().map(|h| addr("http", h)).transpose(),
            args.socks.as_deref().map(|s| addr("socks", s)).transpose(),
        ) {
            (Ok(Some(h)), Ok(s)) => (h, s),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("netproxy env: {e}");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
            (Ok(None), _) => {
                eprintln!("netproxy env: give --http ADDR or --ready-file FILE");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
        },
    };
    let config = match load(&args.policy) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    if config.credential_broker() {
        eprintln!(
            "netproxy env: note: brokered credentials need `netproxy run`: the dummies a child gets are made by the proxy that serves it (docs/credentials.md); these variables carry none"
        );
    }
    // With `mitm`, the trust bundle `run` would give its child (the CA made first if needed).
    let ca_bundle = if config.mitm() || config.credential_broker() {
        let made = netproxy::load_trust_bundle(home_dir().as_deref(), &|k| std::env::var(k).ok())
            .map_err(|e| e.to_string())
            .and_then(|b| {
                for w in &b.warnings {
                    eprintln!("netproxy: warning: trust bundle: {w}");
                }
                crate::child_env::bundle_path(b.bundle.path)
            });
        match made {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("netproxy env: {e}");
                return Ok(ExitCode::from(1));
            }
        }
    } else {
        None
    };
    let env = crate::child_env::ProxyEnv {
        http,
        socks,
        allow_local_binding: config.allow_local_binding(),
        isolated: false,
        credential: None,
        ca_bundle,
    };
    let vars = env.vars();
    if args.format == "json" {
        let map: serde_json::Map<String, serde_json::Value> = vars
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        println!("{}", serde_json::Value::Object(map));
    } else {
        print!("{}", crate::child_env::to_sh(&vars));
    }
    Ok(ExitCode::SUCCESS)
}

/// The most a ready file may hold: `serve` writes about a hundred bytes.
const READY_FILE_MAX: u64 = 64 * 1024;

/// The HTTP and SOCKS5 addresses from the ready file a running `serve --ready-file FILE`
/// wrote (`{"http":ADDR,"socks":ADDR|null,"admin":ADDR|null,"pid":N}`); the error names the
/// file and says what is wrong with it. A file whose `pid` is no longer running gets a warning
/// on stderr: its addresses are probably stale.
fn read_ready_file(
    path: &std::path::Path,
) -> Result<(std::net::SocketAddr, Option<std::net::SocketAddr>), String> {
    use std::io::Read as _;
    let shown = path.display();
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(READY_FILE_MAX + 1).read_to_string(&mut text))
        .map_err(|e| {
            format!(
                "cannot read the ready file {shown}: {e} (is `netproxy serve --ready-file {shown}` running, and ready?)"
            )
        })?;
    let malformed = |why: &str| {
        format!(
            "{shown} is not a ready file of `netproxy serve` ({why}); expected {{\"http\":\"127.0.0.1:PORT\",\"socks\":\"127.0.0.1:PORT\"|null,\"admin\":...,\"pid\":N}}"
        )
    };
    if text.len() as u64 > READY_FILE_MAX {
        return Err(malformed("it is larger than 64 KiB"));
    }
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| malformed(&format!("not JSON: {e}")))?;
    let Some(doc) = v.as_object() else {
        return Err(malformed("not a JSON object"));
    };
    let address = |key: &str| -> Result<Option<std::net::SocketAddr>, String> {
        match doc.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => match s.parse::<std::net::SocketAddr>() {
                Ok(a) if a.port() != 0 => Ok(Some(a)),
                _ => Err(malformed(&format!(
                    "\"{key}\" is {s:?}, not an IP:PORT address"
                ))),
            },
            Some(other) => Err(malformed(&format!("\"{key}\" is {other}, not an address"))),
        }
    };
    let http = address("http")?.ok_or_else(|| malformed("it has no \"http\" address"))?;
    let socks = address("socks")?;
    if let Some(pid) = doc
        .get("pid")
        .and_then(serde_json::Value::as_i64)
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
        && rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH)
    {
        eprintln!(
            "netproxy env: warning: process {} that wrote {shown} is no longer running: these addresses are probably stale",
            pid.as_raw_nonzero()
        );
    }
    Ok((http, socks))
}

fn config_command(cmd: &ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Show { policy, json } => {
            let config = match load(policy) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            if *json {
                let text = serde_json::to_string_pretty(&netproxy::config_json(&config))
                    .context("rendering JSON")?;
                println!("{text}");
            } else {
                print!("{}", netproxy::config_text(&config));
            }
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::Validate { policy, files } => {
            let result = if files.is_empty() {
                proxy_config::load(&sources(policy)).map(|_| ())
            } else {
                proxy_config::validate_files(files)
            };
            match result {
                Ok(()) => {
                    println!("ok");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    for d in &e.diagnostics {
                        eprintln!("{d}");
                    }
                    let n = e.diagnostics.len();
                    let s = if n == 1 { "" } else { "s" };
                    eprintln!("netproxy: {n} problem{s} found");
                    Ok(ExitCode::from(EXIT_CONFIG))
                }
            }
        }
    }
}

/// Makes netproxy non-dumpable (for `serve` and `run`): a process of the same user, such as
/// `run`'s child, can then read neither `/proc/<netproxy>/environ` nor its memory, nor ptrace
/// it. Root still can (perf and strace of netproxy need root).
fn not_dumpable() -> anyhow::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .context("cannot make netproxy non-dumpable (prctl PR_SET_DUMPABLE)")
}

fn main() -> ExitCode {
    // `run --isolate`'s helper processes (this binary, run again): before anything else, and
    // above all before any thread starts (docs/isolate.md).
    if let Some(code) = proxy_isolate::dispatch() {
        return code;
    }
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Run(args) => run::run(args),
        Command::Ca(cmd) => Ok(ca::ca(cmd, home_dir())),
        Command::Env(args) => env_command(args),
        Command::Check(args) => check(args),
        Command::Suggest(args) => Ok(suggest::suggest(args)),
        Command::Config(cmd) => config_command(cmd),
        Command::Completions { shell } => cli_docs::completions(*shell, Cli::command()),
        Command::Man { out_dir } => cli_docs::man(Cli::command(), out_dir.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netproxy: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `check` judges without recording: its gate's audit sink keeps nothing.
#[derive(Debug)]
struct NoAudit;

impl proxy_core::AuditSink for NoAudit {
    fn record(&self, _event: &proxy_core::AuditEvent) {}
}
