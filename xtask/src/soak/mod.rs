//! `cargo xtask soak --minutes N`: netproxy under a mixed loopback load for N minutes, with a
//! reload and an admin change every 30 s, judged on memory, descriptors, errors and audit
//! events (docs/benchmarks.md, "Soak").
//!
//! It builds the release binary and starts `netproxy serve` with `NETPROXY_HOME` in a temporary
//! folder whose `config.toml` (`judge::config_text`) turns interception on with a hook, writes
//! the audit to a file and over OTLP/HTTP to a collector in this process (`servers`), and
//! resolves every name it uses to 127.0.0.1. The origins (plain HTTP, HTTPS with a test CA,
//! TCP echo, UDP echo) run here too. The load (`load`), at a fixed moderate rate: HTTP
//! keep-alive requests, `CONNECT` churn, SOCKS5 `CONNECT`s and UDP associations, intercepted
//! TLS tunnels with requests inside, some of each refused by the policy; every 30 s the config
//! file is rewritten with a domain toggled, the audit file moved away and SIGHUP sent, and 15 s
//! later `POST /domains` allows or denies another; each change that narrows the policy must
//! close a connection held open to the host it stops allowing.
//!
//! netproxy's RSS and open descriptors are sampled every second (a line every 10 s). At the
//! end the load stops, the audit settles, the metrics are read, netproxy is stopped with
//! SIGTERM; then the decisions the soak caused (counted from the answers it got) are compared
//! key by key with the audit file's lines, the collector's records and the metrics. It fails
//! on any error, on any difference (a lost or extra event, an export dropped), and when RSS or
//! descriptors grew: the last quarter's mean above the first quarter's, after the warm-up, by
//! more than 10%.

mod judge;
mod load;
mod servers;

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rustls::pki_types::{CertificateDer, pem::PemObject};

use judge::{ConfigParams, Counts, Reconciliation};
use load::{Env, Kind, KindStats, PolicyCtl, Ports, Sample, Tally};

const USAGE: &str = "cargo xtask soak --minutes N [--rate X] [--period SECS] [--keep] \
[--netproxy-bin PATH] [--no-build]";

/// The load at `--rate 1`, per second: HTTP requests (over two kept-alive connections),
/// CONNECT tunnels, SOCKS5 CONNECTs, UDP associations, intercepted tunnels. About 40 decisions
/// a second: a percent or two of one core for netproxy, a few for this process, so that the
/// soak runs beside other work on a small machine without saturating it.
const HTTP_PER_S: f64 = 16.0;
const HTTP_CONNECTIONS: u64 = 2;
const CONNECT_PER_S: f64 = 4.0;
const SOCKS_PER_S: f64 = 4.0;
const UDP_PER_S: f64 = 2.0;
const TLS_PER_S: f64 = 1.0;

/// Growth allowed between the first and the last quarter.
const GROWTH_LIMIT: f64 = 0.10;

#[derive(Debug, Clone)]
struct Opts {
    minutes: f64,
    rate: f64,
    period: Duration,
    keep: bool,
    netproxy_bin: Option<PathBuf>,
    build: bool,
}

impl Opts {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut minutes = None;
        let mut o = Opts {
            minutes: 0.0,
            rate: 1.0,
            period: Duration::from_secs(30),
            keep: false,
            netproxy_bin: None,
            build: true,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || {
                it.next()
                    .with_context(|| format!("{a} needs a value (usage: {USAGE})"))
            };
            match a.as_str() {
                "--minutes" => minutes = Some(value()?.parse::<f64>()?),
                "--rate" => o.rate = value()?.parse()?,
                "--period" => o.period = Duration::from_secs_f64(value()?.parse()?),
                "--keep" => o.keep = true,
                "--no-build" => o.build = false,
                "--netproxy-bin" => o.netproxy_bin = Some(value()?.into()),
                other => bail!("unknown option {other:?}; usage: {USAGE}"),
            }
        }
        o.minutes = minutes.with_context(|| format!("--minutes is required; usage: {USAGE}"))?;
        ensure!(
            o.minutes > 0.0 && o.minutes <= 24.0 * 60.0,
            "--minutes must be in (0, 1440]"
        );
        ensure!(o.rate > 0.0 && o.rate <= 20.0, "--rate must be in (0, 20]");
        ensure!(
            o.period >= Duration::from_secs(2) && o.period <= Duration::from_secs(3600),
            "--period must be between 2 and 3600 seconds"
        );
        Ok(o)
    }
}

/// Entry point.
pub(crate) fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let opts = Opts::parse(args)?;
    let bin = match &opts.netproxy_bin {
        Some(b) => b.clone(),
        None => {
            if opts.build {
                crate::build_release()?;
            }
            root.join("target/release/netproxy")
        }
    };
    ensure!(bin.is_file(), "no netproxy binary at {}", bin.display());
    let work = std::env::temp_dir().join(format!(
        "netproxy-soak-{}-{}",
        crate::mitm::timestamp(),
        std::process::id()
    ));
    fs::create_dir_all(work.join("home"))
        .with_context(|| format!("cannot create {}", work.display()))?;
    fs::create_dir_all(work.join("sys"))?;
    println!(
        "==> soak: {} minute(s), work folder {}",
        opts.minutes,
        work.display()
    );
    let result = Soak::new(&opts, &bin, &work).and_then(Soak::run);
    match &result {
        Ok(()) if !opts.keep => {
            let _ = fs::remove_dir_all(&work);
        }
        _ => println!("    the work folder is kept: {}", work.display()),
    }
    result
}

/// A running `netproxy serve`, stopped (SIGKILL) when dropped before [`Netproxy::stop`].
struct Netproxy {
    child: Option<Child>,
    pid: u32,
    http: SocketAddr,
    socks: SocketAddr,
    admin: SocketAddr,
}

impl Netproxy {
    fn start(bin: &Path, work: &Path, origin_ca: &Path, token: &str) -> anyhow::Result<Self> {
        let ready = work.join("ready.json");
        let log = fs::File::create(work.join("netproxy.log"))?;
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--log-format", "json", "--ready-file"])
            .arg(&ready)
            .args([
                "--http",
                "127.0.0.1:0",
                "--socks",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
            ])
            .env("NETPROXY_HOME", work.join("home"))
            .env("NETPROXY_SYSTEM_DIR", work.join("sys"))
            .env("NETPROXY_ADMIN_TOKEN", token)
            // The upstream roots: the HTTPS origin's test CA.
            .env("SSL_CERT_FILE", origin_ca)
            .env_remove("SSL_CERT_DIR")
            // Decisions go to the audit file and the collector; the log keeps the rest.
            .env("RUST_LOG", "info,netproxy::audit=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for v in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "NO_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "no_proxy",
        ] {
            cmd.env_remove(v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut np = Netproxy {
            pid: child.id(),
            child: Some(child),
            http: ([127, 0, 0, 1], 0).into(),
            socks: ([127, 0, 0, 1], 0).into(),
            admin: ([127, 0, 0, 1], 0).into(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let v = loop {
            if let Ok(text) = fs::read_to_string(&ready)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            {
                break v;
            }
            if let Some(c) = np.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!(
                    "netproxy exited at start ({status}); see {}",
                    work.join("netproxy.log").display()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "netproxy wrote no ready file within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let addr = |k: &str| -> anyhow::Result<SocketAddr> {
            let a: SocketAddr = v[k]
                .as_str()
                .with_context(|| format!("no {k} address in the ready file"))?
                .parse()?;
            ensure!(
                a.ip().is_loopback(),
                "netproxy's {k} listener is not on loopback"
            );
            Ok(a)
        };
        np.http = addr("http")?;
        np.socks = addr("socks")?;
        np.admin = addr("admin")?;
        Ok(np)
    }

    /// SIGTERM, then waits (at most 30 s) for the drain; the exit status.
    fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("netproxy already stopped")?;
        let status = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .context("cannot run kill")?;
        ensure!(status.success(), "kill -TERM failed ({status})");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("netproxy did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Netproxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Soak<'a> {
    opts: &'a Opts,
    work: PathBuf,
    servers: servers::Servers,
    ports: Ports,
    params: ConfigParams,
    np: Netproxy,
    token: String,
    ca_pem: Vec<u8>,
    ticks_per_s: f64,
}

impl<'a> Soak<'a> {
    fn new(opts: &'a Opts, bin: &Path, work: &Path) -> anyhow::Result<Self> {
        let certs = crate::mitm::origin::OriginCerts::for_name(judge::TLS_HOST)?;
        let origin_ca = work.join("origin-ca.pem");
        fs::write(&origin_ca, &certs.ca_pem)?;
        let tls_origin = crate::mitm::origin::start(&certs, load::TLS_BODY)?;
        let servers = servers::start()?;
        let ports = Ports {
            http: servers.http.port(),
            echo: servers.echo.port(),
            udp: servers.udp.port(),
            tls: tls_origin.keep.port(),
        };
        let params = ConfigParams {
            audit_log: work.join("audit.jsonl"),
            collector: servers.collector,
        };
        fs::write(
            work.join("home/config.toml"),
            judge::config_text(&params, true),
        )?;
        let token = format!("soak-{}-{}", std::process::id(), crate::mitm::timestamp());
        let np = Netproxy::start(bin, work, &origin_ca, &token)?;
        let ca_pem = fs::read(work.join("home/ca/ca.pem")).context("netproxy's CA certificate")?;
        let ticks_per_s = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0);
        println!(
            "    netproxy pid {} (http {}, socks {}, admin {}); origins http {} tls {} echo {} udp {}; collector {}",
            np.pid,
            np.http,
            np.socks,
            np.admin,
            servers.http,
            tls_origin.keep,
            servers.echo,
            servers.udp,
            servers.collector
        );
        Ok(Self {
            opts,
            work: work.to_path_buf(),
            servers,
            ports,
            params,
            np,
            token,
            ca_pem,
            ticks_per_s,
        })
    }

    fn tls(&self) -> anyhow::Result<tokio_rustls::TlsConnector> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca_pem) {
            roots.add(cert.context("netproxy's CA in PEM")?)?;
        }
        let mut config =
            rustls::ClientConfig::builder_with_provider(crate::mitm::origin::provider())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }

    fn run(mut self) -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let secs = self.opts.minutes * 60.0;
        let start = Instant::now();
        let tally = Arc::new(Tally::new(start));
        let env = Env {
            http_proxy: self.np.http,
            socks_proxy: self.np.socks,
            admin: self.np.admin,
            token: self.token.clone(),
            ports: self.ports,
            tls: self.tls()?,
            tally: tally.clone(),
        };
        let rate = self.opts.rate;
        println!(
            "==> load for {secs:.0} s at rate ×{rate}: per second {} HTTP requests on {HTTP_CONNECTIONS} connections, {} CONNECTs, {} SOCKS5 CONNECTs, {} UDP associations, {} intercepted tunnels; a reload every {:?} and an admin change between",
            HTTP_PER_S * rate,
            CONNECT_PER_S * rate,
            SOCKS_PER_S * rate,
            UDP_PER_S * rate,
            TLS_PER_S * rate,
            self.opts.period
        );
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let ctl = PolicyCtl {
            pid: self.np.pid,
            config: self.work.join("home/config.toml"),
            params: self.params.clone(),
            period: self.opts.period,
        };
        let pid = self.np.pid;
        let ticks = self.ticks_per_s;
        let (samples, metrics, settled) = rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for w in 0..HTTP_CONNECTIONS {
                tasks.spawn(load::http(
                    env.clone(),
                    HTTP_PER_S * rate / HTTP_CONNECTIONS as f64,
                    w * 5,
                    stop.clone(),
                ));
            }
            tasks.spawn(load::connect(
                env.clone(),
                CONNECT_PER_S * rate,
                stop.clone(),
            ));
            tasks.spawn(load::socks_tcp(
                env.clone(),
                SOCKS_PER_S * rate,
                stop.clone(),
            ));
            tasks.spawn(load::socks_udp(env.clone(), UDP_PER_S * rate, stop.clone()));
            tasks.spawn(load::tls(env.clone(), TLS_PER_S * rate, stop.clone()));
            tasks.spawn(load::policy(env.clone(), ctl, start, stop.clone()));
            let sampler = tokio::spawn(load::sampler(
                pid,
                tally.clone(),
                start,
                Duration::from_secs(1),
                10,
                ticks,
                stop.clone(),
            ));
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            println!("==> stopping the load");
            let _ = stop_tx.send(true);
            while let Some(r) = tasks.join_next().await {
                if let Err(e) = r {
                    tally.error(Kind::Policy, format!("a load task failed: {e}"));
                }
            }
            let samples = sampler.await.unwrap_or_default();
            // Let the audit settle: the file and the collector catch up with the metrics.
            let settled = settle(&env, &self.params.audit_log, &self.servers).await;
            let metrics = load::metrics(&env).await;
            (samples, metrics, settled)
        });
        let metrics = metrics.context("the final GET /metrics")?;
        println!("==> SIGTERM to netproxy");
        let status = self.np.stop()?;
        // The collector's handler counts before it answers, and netproxy waits for its last
        // export's answer before exiting: nothing more comes.
        std::thread::sleep(Duration::from_millis(200));
        let report = Report::build(
            self.opts,
            &self.work,
            &tally,
            samples,
            metrics,
            &self.servers,
            status,
            settled,
            self.ticks_per_s,
        )?;
        let text = report.render();
        println!("{text}");
        fs::write(self.work.join("summary.txt"), &text)?;
        if report.failures.is_empty() {
            println!("soak: PASS");
            Ok(())
        } else {
            bail!("soak FAILED:\n  - {}", report.failures.join("\n  - "))
        }
    }
}

/// Waits (at most 15 s) until netproxy has no client connection or tunnel open and the audit
/// file's lines and the collector's records reach the metrics' count of decisions, all staying
/// there for a second; what each held then.
async fn settle(env: &Env, audit: &Path, servers: &servers::Servers) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = None;
    let mut stable_since = Instant::now();
    loop {
        let (decided, active) = load::metrics(env)
            .await
            .map_or((0, u64::MAX), |m| (m.total(), m.active));
        let lines = audit_files(audit)
            .iter()
            .map(|p| fs::read(p).map_or(0, |b| b.iter().filter(|c| **c == b'\n').count() as u64))
            .sum::<u64>();
        let collected = servers.collected.lock().map_or(0, |c| c.total());
        let now = (decided, lines, collected, active);
        if last != Some(now) {
            last = Some(now);
            stable_since = Instant::now();
        }
        let caught_up = lines >= decided && collected >= decided && active == 0;
        if (caught_up && stable_since.elapsed() >= Duration::from_secs(1))
            || Instant::now() > deadline
        {
            return format!(
                "before SIGTERM: {decided} decisions in the metrics, {lines} audit lines, {collected} records at the collector, {active} connections or tunnels open{}",
                if caught_up {
                    ""
                } else {
                    " (not caught up after 15 s)"
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The audit file and the files moved away from it at each reload.
fn audit_files(audit: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (audit.parent(), audit.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy().into_owned();
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .map(|n| n.to_string_lossy())
                        .is_some_and(|n| n == name || n.starts_with(&format!("{name}.")))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Everything the soak found, and its verdict.
struct Report {
    minutes: f64,
    samples: Vec<Sample>,
    warmup: f64,
    kinds: [KindStats; 6],
    expected: Counts,
    file: Counts,
    file_bad: Vec<String>,
    file_bad_count: u64,
    files: usize,
    collector: Counts,
    collector_bad: Vec<String>,
    exports: u64,
    metrics: judge::Metrics,
    reconciliation: Reconciliation,
    errors: (u64, Vec<String>),
    log_errors: Vec<String>,
    log_warnings: usize,
    settled: String,
    exit: std::process::ExitStatus,
    growth: Vec<(&'static str, Option<judge::Growth>)>,
    cpu_secs: f64,
    harness_cpu_secs: f64,
    ticks_per_s: f64,
    failures: Vec<String>,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    fn build(
        opts: &Opts,
        work: &Path,
        tally: &Tally,
        samples: Vec<Sample>,
        metrics: judge::Metrics,
        servers: &servers::Servers,
        exit: std::process::ExitStatus,
        settled: String,
        ticks_per_s: f64,
    ) -> anyhow::Result<Self> {
        let mut file = Counts::new();
        let mut file_bad = Vec::new();
        let mut file_bad_count = 0;
        let files = audit_files(&work.join("audit.jsonl"));
        for p in &files {
            let text =
                fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            for line in text.lines() {
                match judge::audit_line(line) {
                    Ok(k) => *file.entry(k).or_default() += 1,
                    Err(e) => {
                        file_bad_count += 1;
                        if file_bad.len() < 10 {
                            file_bad.push(format!("{}: {e}", p.display()));
                        }
                    }
                }
            }
        }
        let (collector, collector_bad, collector_bad_count, exports) = {
            let c = servers
                .collected
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (c.counts.clone(), c.bad.clone(), c.bad_count, c.exports)
        };
        let expected = tally.expected();
        let reconciliation = judge::reconcile(&expected, &file, &collector, &metrics.decisions);
        let (log_errors, log_warnings) = log_problems(&work.join("netproxy.log"));
        let secs = opts.minutes * 60.0;
        let warmup = judge::warmup_secs(secs);
        let skip = samples.iter().take_while(|s| s.t < warmup).count();
        let rss: Vec<f64> = samples.iter().map(|s| s.rss_kib as f64 / 1024.0).collect();
        let fds: Vec<f64> = samples.iter().map(|s| s.fds as f64).collect();
        let growth = vec![
            ("RSS (MiB)", judge::growth(&rss, skip)),
            ("descriptors", judge::growth(&fds, skip)),
        ];
        let cpu_secs = match (samples.first(), samples.last()) {
            (Some(a), Some(b)) => b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / ticks_per_s,
            _ => 0.0,
        };
        let harness_cpu_secs = own_cpu_ticks().unwrap_or(0) as f64 / ticks_per_s;
        let errors = tally.errors();
        let mut failures = Vec::new();
        if errors.0 > 0 {
            failures.push(format!("{} error(s) (listed above)", errors.0));
        }
        if !exit.success() {
            failures.push(format!("netproxy exited with {exit} after SIGTERM"));
        }
        for (what, g) in &growth {
            match g {
                Some(g) if g.exceeds(GROWTH_LIMIT) => failures.push(format!(
                    "{what} grew: last quarter's mean {:.2} is {:+.1}% over the first quarter's {:.2}",
                    g.last,
                    g.ratio() * 100.0,
                    g.first
                )),
                Some(_) => {}
                None => println!(
                    "    note: the run is too short to judge {what} growth after a {warmup:.0} s warm-up"
                ),
            }
        }
        failures.extend(
            reconciliation
                .problems
                .iter()
                .map(|p| format!("audit: {p}")),
        );
        if metrics.dropped > 0 {
            failures.push(format!(
                "netproxy_audit_export_dropped_total is {}",
                metrics.dropped
            ));
        }
        if metrics.active > 0 {
            failures.push(format!(
                "{} client connection(s) or tunnel(s) still open in netproxy's metrics after the load stopped",
                metrics.active
            ));
        }
        if metrics.reloads_failed > 0 {
            failures.push(format!("{} reload(s) failed", metrics.reloads_failed));
        }
        if file_bad_count > 0 {
            failures.push(format!(
                "{file_bad_count} audit line(s) that are not decision events"
            ));
        }
        if collector_bad_count > 0 {
            failures.push(format!(
                "{collector_bad_count} OTLP export(s) or record(s) that are not decision events"
            ));
        }
        if !log_errors.is_empty() {
            failures.push(format!(
                "{} ERROR line(s) in netproxy's log",
                log_errors.len()
            ));
        }
        if judge::total(&expected) == 0 {
            failures.push("no decision was caused: the load did not run".to_owned());
        }
        Ok(Self {
            minutes: opts.minutes,
            samples,
            warmup,
            kinds: tally.kinds(),
            expected,
            file,
            file_bad,
            file_bad_count,
            files: files.len(),
            collector,
            collector_bad,
            exports,
            metrics,
            reconciliation,
            errors,
            log_errors,
            log_warnings,
            settled,
            exit,
            growth,
            cpu_secs,
            harness_cpu_secs,
            ticks_per_s,
            failures,
        })
    }

    fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "\n==> soak summary ({} minute(s))\n", self.minutes);
        // Over time: a row per minute up to 10 minutes, per 5 minutes beyond.
        let step = if self.minutes <= 10.0 { 60.0 } else { 300.0 };
        let _ = writeln!(
            s,
            "| time | RSS MiB (mean / max) | fds (mean / max) | netproxy CPU | {} | errors |",
            Kind::ALL.map(Kind::name).join(" | ")
        );
        let _ = writeln!(
            s,
            "|---|---|---|---|{}---|",
            "---:|".repeat(Kind::ALL.len())
        );
        if let Some(first) = self.samples.first() {
            let _ = writeln!(
                s,
                "| start ({:.0} s) | {:.1} | {} | | {} | 0 |",
                first.t,
                first.rss_kib as f64 / 1024.0,
                first.fds,
                Kind::ALL.map(|_| "").join(" | ")
            );
        }
        let mut from = 0usize;
        let mut edge = step;
        while from < self.samples.len() {
            let to = self.samples[from..]
                .iter()
                .position(|x| x.t >= edge)
                .map_or(self.samples.len(), |p| from + p + 1);
            let rows = &self.samples[from..to];
            let prev = from.checked_sub(1).map(|i| &self.samples[i]);
            let last = &rows[rows.len() - 1];
            let mean =
                |f: &dyn Fn(&Sample) -> f64| rows.iter().map(f).sum::<f64>() / rows.len() as f64;
            let max = |f: &dyn Fn(&Sample) -> u64| rows.iter().map(f).max().unwrap_or(0);
            let secs = last.t - prev.map_or(rows[0].t, |p| p.t);
            let cpu = last
                .cpu_ticks
                .saturating_sub(prev.map_or(rows[0].cpu_ticks, |p| p.cpu_ticks))
                as f64
                / self.ticks_per_s
                / secs.max(1e-3);
            let ops: Vec<String> = Kind::ALL
                .iter()
                .map(|k| {
                    let i = *k as usize;
                    (last.kinds[i].ops - prev.map_or(0, |p| p.kinds[i].ops)).to_string()
                })
                .collect();
            let errors: u64 = last.kinds.iter().map(|k| k.errors).sum::<u64>()
                - prev.map_or(0, |p| p.kinds.iter().map(|k| k.errors).sum());
            let _ = writeln!(
                s,
                "| {:.0}–{:.0} s | {:.1} / {:.1} | {:.1} / {} | {:.1}% | {} | {errors} |",
                prev.map_or(0.0, |p| p.t),
                last.t,
                mean(&|x| x.rss_kib as f64) / 1024.0,
                max(&|x| x.rss_kib) as f64 / 1024.0,
                mean(&|x| x.fds as f64),
                max(&|x| x.fds),
                cpu * 100.0,
                ops.join(" | ")
            );
            from = to;
            edge += step;
        }
        if let Some(last) = self.samples.last() {
            let _ = writeln!(
                s,
                "| end ({:.0} s) | {:.1} | {} | | {} | |",
                last.t,
                last.rss_kib as f64 / 1024.0,
                last.fds,
                Kind::ALL.map(|_| "").join(" | ")
            );
        }
        let _ = writeln!(
            s,
            "\nCPU over the run (one core = 100%): netproxy {:.1} s ({:.1}%); this process (load, origins, collector) {:.1} s.",
            self.cpu_secs,
            self.cpu_secs / (self.minutes * 60.0) * 100.0,
            self.harness_cpu_secs
        );
        let _ = writeln!(s, "\nWork done:");
        for k in Kind::ALL {
            let st = self.kinds[k as usize];
            let _ = writeln!(
                s,
                "  {:<10} {:>7} {} — decisions: {} allowed, {} refused, {} revoked; {} error(s)",
                k.name(),
                st.ops,
                k.unit(),
                st.allowed,
                st.refused,
                st.revoked,
                st.errors
            );
        }
        let _ = writeln!(
            s,
            "\nGrowth after a {:.0} s warm-up (last quarter's mean over the first's; limit +{:.0}%):",
            self.warmup,
            GROWTH_LIMIT * 100.0
        );
        for (what, g) in &self.growth {
            match g {
                Some(g) => {
                    let _ = writeln!(
                        s,
                        "  {what:<12} first quarter {:.2}, last quarter {:.2}: {:+.1}%",
                        g.first,
                        g.last,
                        g.ratio() * 100.0
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        "  {what:<12} not judged: too few samples after the warm-up"
                    );
                }
            }
        }
        let caused = judge::total(&self.expected);
        let revoked: u64 = self
            .expected
            .iter()
            .filter(|(k, _)| k.revoked)
            .map(|(_, n)| n)
            .sum();
        let allowed: u64 = self
            .expected
            .iter()
            .filter(|(k, _)| k.decision == "allow")
            .map(|(_, n)| n)
            .sum();
        let _ = writeln!(
            s,
            "\nDecisions: {caused} caused ({allowed} allowed, {} refused, {revoked} revoked); {} in the audit file ({} file(s)); {} at the collector ({} exports); {} in the metrics; {} dropped by netproxy's sinks",
            caused - allowed - revoked,
            judge::total(&self.file),
            self.files,
            judge::total(&self.collector),
            self.exports,
            self.metrics.total(),
            self.metrics.dropped
        );
        let _ = writeln!(s, "  {}", self.settled);
        let _ = writeln!(
            s,
            "\n| decision | caused | audit file | collector |\n|---|---:|---:|---:|"
        );
        for r in &self.reconciliation.rows {
            let mark = if r.expected == r.file && r.expected == r.collector {
                ""
            } else {
                " ✗"
            };
            let _ = writeln!(
                s,
                "| {}{mark} | {} | {} | {} |",
                r.key, r.expected, r.file, r.collector
            );
        }
        let _ = writeln!(
            s,
            "\nReloads counted by netproxy: {} ok, {} failed (SIGHUP and the file watcher each reload; admin changes count too)",
            self.metrics.reloads_ok, self.metrics.reloads_failed
        );
        let (n, first) = &self.errors;
        let _ = writeln!(s, "Errors: {n}");
        for e in first {
            let _ = writeln!(s, "  {e}");
        }
        for (what, bad, count) in [
            ("audit file", &self.file_bad, self.file_bad_count),
            (
                "collector",
                &self.collector_bad,
                self.collector_bad.len() as u64,
            ),
        ] {
            if count > 0 {
                let _ = writeln!(s, "Not decision events in the {what}: {count}");
                for b in bad {
                    let _ = writeln!(s, "  {b}");
                }
            }
        }
        let _ = writeln!(
            s,
            "netproxy's log: {} ERROR line(s), {} WARN line(s); exit after SIGTERM: {}",
            self.log_errors.len(),
            self.log_warnings,
            self.exit
        );
        for e in self.log_errors.iter().take(10) {
            let _ = writeln!(s, "  {e}");
        }
        let _ = writeln!(s, "Load average at the end: {}", crate::mitm::loadavg());
        s
    }
}

/// This process's own utime + stime (not its reaped children's: the release build), clock
/// ticks.
fn own_cpu_ticks() -> Option<u64> {
    let s = fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which ends at the last ')'; utime is field 14.
    let f: Vec<&str> = s[s.rfind(')')? + 2..].split_whitespace().collect();
    (11..13).map(|i| f.get(i)?.parse::<u64>().ok()).sum()
}

/// netproxy's ERROR lines (JSON log) and the number of WARN lines.
fn log_problems(path: &Path) -> (Vec<String>, usize) {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut errors = Vec::new();
    let mut warnings = 0;
    for line in text.lines() {
        let level = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v["level"].as_str().map(str::to_owned));
        match level.as_deref() {
            Some("ERROR") => errors.push(line.chars().take(300).collect()),
            Some("WARN") => warnings += 1,
            _ => {}
        }
    }
    (errors, warnings)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options_are_checked() {
        let o = Opts::parse(&args(&["--minutes", "2"])).unwrap();
        assert_eq!(
            (o.minutes, o.rate, o.period),
            (2.0, 1.0, Duration::from_secs(30))
        );
        let o = Opts::parse(&args(&[
            "--minutes",
            "0.5",
            "--rate",
            "2",
            "--period",
            "10",
            "--keep",
        ]))
        .unwrap();
        assert_eq!((o.minutes, o.rate, o.keep), (0.5, 2.0, true));
        assert!(Opts::parse(&args(&[])).is_err());
        assert!(Opts::parse(&args(&["--minutes"])).is_err());
        assert!(Opts::parse(&args(&["--minutes", "0"])).is_err());
        assert!(Opts::parse(&args(&["--minutes", "2", "--rate", "100"])).is_err());
        assert!(Opts::parse(&args(&["--minutes", "2", "--period", "1"])).is_err());
        assert!(Opts::parse(&args(&["--minutes", "2", "--bogus"])).is_err());
    }

    #[test]
    fn the_audit_files_are_the_file_and_its_moved_copies() {
        let dir = std::env::temp_dir().join(format!("soak-files-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        for n in [
            "audit.jsonl",
            "audit.jsonl.1",
            "audit.jsonl.12",
            "audit.jsonlx",
            "other",
        ] {
            fs::write(dir.join(n), "").unwrap();
        }
        let names: Vec<String> = audit_files(&dir.join("audit.jsonl"))
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            names,
            vec!["audit.jsonl", "audit.jsonl.1", "audit.jsonl.12"]
        );
    }
}
