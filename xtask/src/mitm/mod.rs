//! `cargo xtask bench mitm`: TLS-terminated workloads through netproxy (`--mitm`, limited
//! mode) and mitmproxy (intercepting), interleaved in one run, with the direct path as the
//! baseline (docs/benchmarks.md, "HTTPS interception").
//!
//! - `mitm-get`: GET requests per second over kept-alive intercepted tunnels (one `CONNECT`
//!   and one TLS handshake per client connection, then requests back to back);
//! - `mitm-connect`: new intercepted tunnels per second, each a `CONNECT`, a full TLS
//!   handshake (no resumption) and one `GET`;
//! - `mitm-idle`: the memory (PSS and RSS growth of a freshly started proxy) per intercepted
//!   session held idle after one request.
//!
//! The origin (HTTPS on loopback, a certificate from a test CA made for the run) and the load
//! client run in this process, one Tokio thread each, like the shared kit's origin and loadgen.
//! The loops run in a release build: from a debug `cargo xtask`, this builds the release
//! netproxy and xtask and runs the latter.

pub(crate) mod http;
mod load;
pub(crate) mod origin;

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};

use load::{Client, Window};

const USAGE: &str = "cargo xtask bench mitm [--quick] [--reps N] [--secs S] [--warmup S] \
[--peers netproxy,mitmproxy] [--workloads mitm-idle,mitm-get,mitm-connect] [--idle N] [--hold S] \
[--get-conns N] [--connect-conns N] [--body BYTES] [--max-ops N] [--out DIR] \
[--netproxy-bin PATH] [--no-build]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Idle,
    Get,
    Connect,
}

impl Workload {
    const ALL: [Workload; 3] = [Workload::Idle, Workload::Get, Workload::Connect];

    fn name(self) -> &'static str {
        match self {
            Workload::Idle => "mitm-idle",
            Workload::Get => "mitm-get",
            Workload::Connect => "mitm-connect",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Workload::Idle => "KiB/session",
            Workload::Get => "req/s",
            Workload::Connect => "tunnels/s",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Netproxy,
    Mitmproxy,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Netproxy => "netproxy",
            Peer::Mitmproxy => "mitmproxy",
        }
    }
}

#[derive(Debug, Clone)]
struct Opts {
    reps: usize,
    secs: f64,
    warmup: f64,
    idle: usize,
    hold: f64,
    get_conns: usize,
    connect_conns: usize,
    body: usize,
    max_ops: u64,
    peers: Vec<Peer>,
    workloads: Vec<Workload>,
    out: Option<PathBuf>,
    netproxy_bin: Option<PathBuf>,
    build: bool,
}

impl Opts {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let quick = args.iter().any(|a| a == "--quick");
        let mut o = Opts {
            reps: if quick { 1 } else { 3 },
            secs: if quick { 4.0 } else { 10.0 },
            warmup: if quick { 0.5 } else { 1.0 },
            idle: if quick { 500 } else { 1000 },
            hold: 1.0,
            get_conns: 32,
            connect_conns: 16,
            body: 1024,
            max_ops: 5_000_000,
            peers: vec![Peer::Netproxy, Peer::Mitmproxy],
            workloads: Workload::ALL.to_vec(),
            out: None,
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
                "--quick" => {}
                "--no-build" => o.build = false,
                "--reps" => o.reps = value()?.parse()?,
                "--secs" => o.secs = value()?.parse()?,
                "--warmup" => o.warmup = value()?.parse()?,
                "--idle" => o.idle = value()?.parse()?,
                "--hold" => o.hold = value()?.parse()?,
                "--get-conns" => o.get_conns = value()?.parse()?,
                "--connect-conns" => o.connect_conns = value()?.parse()?,
                "--body" => o.body = value()?.parse()?,
                "--max-ops" => o.max_ops = value()?.parse()?,
                "--out" => o.out = Some(value()?.into()),
                "--netproxy-bin" => o.netproxy_bin = Some(value()?.into()),
                "--peers" => {
                    o.peers = value()?
                        .split(',')
                        .map(|p| match p {
                            "netproxy" => Ok(Peer::Netproxy),
                            "mitmproxy" => Ok(Peer::Mitmproxy),
                            _ => bail!("unknown peer {p:?} (netproxy, mitmproxy)"),
                        })
                        .collect::<anyhow::Result<_>>()?;
                }
                "--workloads" => {
                    o.workloads = value()?
                        .split(',')
                        .map(|w| {
                            Workload::ALL
                                .into_iter()
                                .find(|k| k.name() == w)
                                .with_context(|| {
                                    format!(
                                        "unknown workload {w:?} (mitm-idle, mitm-get, mitm-connect)"
                                    )
                                })
                        })
                        .collect::<anyhow::Result<_>>()?;
                }
                other => bail!("unknown option {other:?}; usage: {USAGE}"),
            }
        }
        ensure!(o.reps >= 1, "--reps must be at least 1");
        ensure!(
            o.secs > 0.0 && o.secs <= 600.0 && o.warmup >= 0.0 && o.warmup <= 60.0,
            "--secs must be in (0, 600] and --warmup in [0, 60]"
        );
        ensure!(
            o.hold >= 0.0 && o.hold <= 600.0,
            "--hold must be in [0, 600]"
        );
        ensure!(
            (1..=10_000).contains(&o.idle),
            "--idle must be between 1 and 10000"
        );
        ensure!(
            (1..=1024).contains(&o.get_conns) && (1..=1024).contains(&o.connect_conns),
            "--get-conns and --connect-conns must be between 1 and 1024"
        );
        ensure!(o.body <= 16 << 20, "--body must be at most 16 MiB");
        Ok(o)
    }
}

/// Entry point. In a debug build: builds the release binaries and runs the release xtask.
pub(crate) fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let opts = Opts::parse(args)?;
    if cfg!(debug_assertions) {
        if opts.build && opts.netproxy_bin.is_none() {
            crate::build_release()?;
        }
        crate::step(
            "build xtask",
            "the release build of xtask failed",
            "cargo",
            &["build", "--release", "--locked", "-p", "xtask"],
        )?;
        let status = Command::new(root.join("target/release/xtask"))
            .args(["bench", "mitm"])
            .args(args)
            .arg("--no-build")
            .current_dir(root)
            .status()
            .context("cannot run the release xtask")?;
        if !status.success() {
            bail!("the TLS benchmark failed ({status})");
        }
        return Ok(());
    }
    if opts.build && opts.netproxy_bin.is_none() {
        crate::build_release()?;
    }
    let args = args
        .iter()
        .filter(|a| *a != "--no-build")
        .cloned()
        .collect();
    Bench::new(root, opts, args)?.run()
}

/// A running proxy.
struct Running {
    peer: Peer,
    addr: SocketAddr,
    pid: u32,
    ca_pem: Vec<u8>,
    /// netproxy is our child; mitmproxy is stopped by the kit's `stop.sh`.
    child: Option<Child>,
}

struct Bench {
    root: PathBuf,
    opts: Opts,
    /// The command line's options, for the report.
    args: Vec<String>,
    out: PathBuf,
    origin_ca: PathBuf,
    origin_ca_pem: Vec<u8>,
    origin: origin::Origin,
    rt: tokio::runtime::Runtime,
    ticks_per_s: f64,
    kit: PathBuf,
    started: String,
    runs: Vec<Value>,
    notes: Vec<String>,
}

impl Bench {
    fn new(root: &Path, opts: Opts, args: Vec<String>) -> anyhow::Result<Self> {
        let started = timestamp();
        let out = match &opts.out {
            Some(o) => o.clone(),
            None => root.join("target/bench-mitm").join(&started),
        };
        fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
        let out = out.canonicalize()?;
        let certs = origin::OriginCerts::new()?;
        let origin_ca = out.join("origin-ca.pem");
        fs::write(&origin_ca, &certs.ca_pem)?;
        let origin = origin::start(&certs, opts.body)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let ticks_per_s = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0);
        Ok(Self {
            root: root.to_path_buf(),
            args,
            out,
            origin_ca,
            origin_ca_pem: certs.ca_pem.into_bytes(),
            origin,
            rt,
            ticks_per_s,
            kit: root.join("../shared/bench"),
            started,
            runs: Vec::new(),
            notes: Vec::new(),
            opts,
        })
    }

    fn run(mut self) -> anyhow::Result<()> {
        println!("==> TLS benchmark: results in {}", self.out.display());
        println!("    load average at start: {}", loadavg());
        let load_start = loadavg();
        let mut running: Vec<Running> = Vec::new();
        for peer in self.opts.peers.clone() {
            match self.start(peer) {
                Ok(r) => running.push(r),
                Err(e) => {
                    let note = format!("{}: not run: {e:#}", peer.name());
                    println!("    {note}");
                    self.notes.push(note);
                }
            }
        }
        let result = self.measure(&mut running);
        for r in running {
            self.stop(r);
        }
        // netproxy logs every decision (its default, as in the shared kit): keep the file's
        // first and last MiB only, or a default run leaves half a gigabyte.
        shrink_log(&self.out.join("netproxy.log"), 1 << 20)?;
        result?;
        let load_end = loadavg();
        self.report(&load_start, &load_end)
    }

    fn measure(&mut self, running: &mut [Running]) -> anyhow::Result<()> {
        let reps = self.opts.reps;
        if self.opts.workloads.contains(&Workload::Idle) {
            for rep in 0..reps {
                for i in rotate(running.len(), rep) {
                    let fresh = self.restart(&mut running[i])?;
                    running[i] = fresh;
                    let v = self.idle_run(&running[i], rep)?;
                    self.runs.push(v);
                }
            }
        }
        for rep in 0..reps {
            for w in [Workload::Get, Workload::Connect] {
                if !self.opts.workloads.contains(&w) {
                    continue;
                }
                // Direct, then the proxies, in an order that turns each repetition.
                let v = self.rate_run(w, None, rep)?;
                self.runs.push(v);
                for i in rotate(running.len(), rep) {
                    let v = self.rate_run(w, Some(&running[i]), rep)?;
                    self.runs.push(v);
                }
            }
        }
        Ok(())
    }

    fn start(&self, peer: Peer) -> anyhow::Result<Running> {
        match peer {
            Peer::Netproxy => self.start_netproxy(),
            Peer::Mitmproxy => self.start_mitmproxy(),
        }
    }

    fn restart(&self, r: &mut Running) -> anyhow::Result<Running> {
        let peer = r.peer;
        let old = Running {
            peer,
            addr: r.addr,
            pid: r.pid,
            ca_pem: Vec::new(),
            child: r.child.take(),
        };
        self.stop(old);
        self.start(peer)
    }

    fn start_netproxy(&self) -> anyhow::Result<Running> {
        let bin = self
            .opts
            .netproxy_bin
            .clone()
            .unwrap_or_else(|| self.root.join("target/release/netproxy"));
        ensure!(bin.is_file(), "no netproxy binary at {}", bin.display());
        let dir = self.out.join("netproxy");
        fs::create_dir_all(&dir)?;
        let config = dir.join("netproxy.toml");
        // The shared kit's netproxy.toml (its SOCKS5 and admin listeners aside), in limited
        // mode with interception.
        fs::write(
            &config,
            "[network]\nenable_socks5 = false\nenable_admin = false\nallow_local_binding = true\n\
             mode = \"limited\"\nmitm = true\n\n[network.domains]\n\"127.0.0.1\" = \"allow\"\n",
        )?;
        let ready = dir.join("ready.json");
        let _ = fs::remove_file(&ready);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.out.join("netproxy.log"))?;
        let mut child = Command::new(&bin)
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--ready-file")
            .arg(&ready)
            .args(["--http", "127.0.0.1:0", "--no-socks", "--no-admin"])
            .env("NETPROXY_HOME", dir.join("home"))
            .env("SSL_CERT_FILE", &self.origin_ca)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            if let Ok(text) = fs::read_to_string(&ready)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
                && let Some(http) = v["http"].as_str()
            {
                break http.parse::<SocketAddr>()?;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "netproxy exited ({status}); see {}",
                    self.out.join("netproxy.log").display()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("netproxy wrote no ready file within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        ensure!(
            addr.ip().is_loopback(),
            "netproxy listens on {addr}, not loopback"
        );
        let ca_pem = fs::read(dir.join("home/ca/ca.pem")).context("netproxy's CA certificate")?;
        Ok(Running {
            peer: Peer::Netproxy,
            addr,
            pid: child.id(),
            ca_pem,
            child: Some(child),
        })
    }

    fn start_mitmproxy(&self) -> anyhow::Result<Running> {
        let script = self.root.join("scripts/bench-mitmproxy.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&self.out)
            .arg(&self.origin_ca)
            .env("BENCH_KIT", &self.kit)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", script.display()))?;
        let said = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if !out.status.success() {
            bail!("{} ({}): {said}", script.display(), out.status);
        }
        let v: Value =
            serde_json::from_str(&fs::read_to_string(self.out.join("mitmproxy-tls.json"))?)?;
        let addr: SocketAddr = v["http"]
            .as_str()
            .context("no address in mitmproxy-tls.json")?
            .parse()?;
        ensure!(
            addr.ip().is_loopback(),
            "mitmproxy listens on {addr}, not loopback"
        );
        let pid = v["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .context("no pid in mitmproxy-tls.json")?;
        let ca = self.out.join("mitmproxy-tls/conf/mitmproxy-ca-cert.pem");
        let ca_pem =
            fs::read(&ca).with_context(|| format!("mitmproxy's CA at {}", ca.display()))?;
        Ok(Running {
            peer: Peer::Mitmproxy,
            addr,
            pid,
            ca_pem,
            child: None,
        })
    }

    /// SIGTERM, then SIGKILL after 5 s (netproxy, our child); mitmproxy through the kit's
    /// `stop.sh`, which does the same by its PID file.
    fn stop(&self, r: Running) {
        match r.child {
            Some(mut child) => {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            None => {
                let _ = Command::new("bash")
                    .arg(self.kit.join("peers/stop.sh"))
                    .arg(&self.out)
                    .arg("mitmproxy-tls")
                    .stdout(Stdio::null())
                    .status();
                // stop.sh sends SIGKILL after 5 s without waiting for it (mitmproxy can lose a
                // SIGTERM under load): wait until the process is gone and its port is free, so
                // that a restart can bind it.
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline
                    && (alive(r.pid)
                        || std::net::TcpStream::connect_timeout(
                            &r.addr,
                            Duration::from_millis(100),
                        )
                        .is_ok())
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn client(&self, via: Option<&Running>) -> anyhow::Result<Client> {
        match via {
            Some(r) => Client::new(Some(r.addr), &r.ca_pem, self.opts.body),
            None => Client::new(None, &self.origin_ca_pem, self.opts.body),
        }
    }

    fn rate_run(
        &mut self,
        w: Workload,
        via: Option<&Running>,
        rep: usize,
    ) -> anyhow::Result<Value> {
        let target = via.map_or("direct", |r| r.peer.name());
        let client = self.client(via)?;
        let pid = via.map(|r| r.pid);
        let load = loadavg();
        let start = Instant::now();
        let window = Window {
            from: start + Duration::from_secs_f64(self.opts.warmup),
            until: start + Duration::from_secs_f64(self.opts.warmup + self.opts.secs),
            budget: Arc::new(AtomicU64::new(self.opts.max_ops)),
        };
        let from = window.from;
        let (origin, conns) = match w {
            Workload::Get => (self.origin.keep, self.opts.get_conns),
            _ => (self.origin.close, self.opts.connect_conns),
        };
        let (mut tally, before, after) = self.rt.block_on(async move {
            let snap = tokio::spawn(async move {
                tokio::time::sleep_until(from.into()).await;
                Snapshot::take(pid)
            });
            let tally = match w {
                Workload::Get => load::get_loop(client, origin, conns, window).await,
                _ => load::connect_loop(client, origin, conns, window).await,
            };
            let after = Snapshot::take(pid);
            let before = snap.await.unwrap_or_else(|_| Snapshot::take(pid));
            (tally, before, after)
        });
        let secs = after.at.duration_since(before.at).as_secs_f64().max(1e-3);
        let rate = tally.ops as f64 / secs;
        let ops = tally.ops.max(1) as f64;
        let proxy_cpu = match (before.proxy_ticks, after.proxy_ticks) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / self.ticks_per_s),
            _ => None,
        };
        let own_cpu = after.own_ticks.saturating_sub(before.own_ticks) as f64 / self.ticks_per_s;
        let busy = machine_busy(before.machine, after.machine);
        let v = json!({
            "workload": w.name(),
            "target": target,
            "rep": rep + 1,
            "value": rate,
            "ops": tally.ops,
            "secs": secs,
            "p50_us": tally.quantile(0.5),
            "p99_us": tally.quantile(0.99),
            "errors": tally.errors,
            "first_error": tally.first_error,
            "client_closed": tally.client_closed,
            "proxy_cpu_us_per_op": proxy_cpu.map(|c| c * 1e6 / ops),
            "proxy_cores": proxy_cpu.map(|c| c / secs),
            "harness_cores": own_cpu / secs,
            "machine_busy": busy,
            "loadavg": load,
        });
        println!(
            "    {:<13} {:<10} rep {}: {:>9.0} {:<10} p50 {:>6} µs  p99 {:>6} µs  errors {}  proxy CPU {}  machine busy {:.0}%  (load {})",
            w.name(),
            target,
            rep + 1,
            rate,
            w.unit(),
            v["p50_us"],
            v["p99_us"],
            tally.errors,
            proxy_cpu.map_or("-".to_owned(), |c| format!("{:.1} µs/op", c * 1e6 / ops)),
            busy * 100.0,
            load,
        );
        if let Some(e) = &tally.first_error {
            println!("      first error: {e}");
        }
        Ok(v)
    }

    fn idle_run(&mut self, r: &Running, rep: usize) -> anyhow::Result<Value> {
        let client = self.client(Some(r))?;
        let origin = self.origin.keep;
        std::thread::sleep(Duration::from_millis(500));
        let before = memory(r.pid)?;
        let n = self.opts.idle;
        let hold = Duration::from_secs_f64(self.opts.hold);
        let pid = r.pid;
        let (held, tally, after, alive) = self.rt.block_on(async move {
            let (mut sessions, tally) = load::open_idle(client.clone(), origin, n, 32).await;
            tokio::time::sleep(hold).await;
            let after = memory(pid);
            let alive = load::check_idle(&client, origin, &mut sessions).await;
            (sessions.len(), tally, after, alive)
        });
        let after = after?;
        ensure!(
            held > 0,
            "{}: no idle session could be opened: {:?}",
            r.peer.name(),
            tally.first_error
        );
        let per = |a: u64, b: u64| (b as f64 - a as f64) / held as f64;
        let v = json!({
            "workload": Workload::Idle.name(),
            "target": r.peer.name(),
            "rep": rep + 1,
            "value": per(before.pss_kib, after.pss_kib),
            "rss_kib_per_session": per(before.rss_kib, after.rss_kib),
            "sessions": held,
            "alive_after_hold": alive,
            "errors": tally.errors,
            "first_error": tally.first_error,
            "pss_kib_before": before.pss_kib,
            "pss_kib_after": after.pss_kib,
            "rss_kib_before": before.rss_kib,
            "rss_kib_after": after.rss_kib,
            "loadavg": loadavg(),
        });
        println!(
            "    mitm-idle     {:<10} rep {}: {:>7.1} KiB/session PSS ({:.1} RSS); {} sessions, {} alive after {:?}; PSS {} -> {} KiB",
            r.peer.name(),
            rep + 1,
            v["value"].as_f64().unwrap_or(0.0),
            v["rss_kib_per_session"].as_f64().unwrap_or(0.0),
            held,
            alive,
            hold,
            before.pss_kib,
            after.pss_kib,
        );
        Ok(v)
    }

    fn report(&self, load_start: &str, load_end: &str) -> anyhow::Result<()> {
        let median_of = |w: Workload, target: &str, key: &str| -> Option<f64> {
            let mut v: Vec<f64> = self
                .runs
                .iter()
                .filter(|r| r["workload"] == w.name() && r["target"] == target)
                .filter_map(|r| r[key].as_f64())
                .collect();
            median(&mut v)
        };
        let fmt = |x: Option<f64>, digits: usize| {
            x.map_or_else(|| "—".to_owned(), |x| format!("{x:.digits$}"))
        };
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# TLS interception benchmark ({}, `cargo xtask bench mitm{}`)\n\n{} repetition(s), medians; {} s windows after {} s warm-up; \
             mitm-get {} connections, mitm-connect {} workers, {}-byte bodies; {} idle sessions held {} s.\n\
             Load average at start: {load_start}; at end: {load_end}.\n",
            self.started,
            self.args.iter().fold(String::new(), |s, a| s + " " + a),
            self.opts.reps,
            self.opts.secs,
            self.opts.warmup,
            self.opts.get_conns,
            self.opts.connect_conns,
            self.opts.body,
            self.opts.idle,
            self.opts.hold,
        );
        let _ = writeln!(
            md,
            "| workload | netproxy | mitmproxy | direct | netproxy / mitmproxy | netproxy CPU | mitmproxy CPU |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        let mut summary = serde_json::Map::new();
        for w in Workload::ALL {
            if !self.opts.workloads.contains(&w) {
                continue;
            }
            let n = median_of(w, "netproxy", "value");
            let m = median_of(w, "mitmproxy", "value");
            let d = median_of(w, "direct", "value");
            let ratio = n.zip(m).map(|(n, m)| n / m);
            let digits = if w == Workload::Idle { 1 } else { 0 };
            let cpu = |t: &str| {
                if w == Workload::Idle {
                    "—".to_owned()
                } else {
                    median_of(w, t, "proxy_cpu_us_per_op")
                        .map_or_else(|| "—".to_owned(), |c| format!("{c:.0} µs/op"))
                }
            };
            let _ = writeln!(
                md,
                "| {} ({}) | {} | {} | {} | {} | {} | {} |",
                w.name(),
                w.unit(),
                fmt(n, digits),
                fmt(m, digits),
                fmt(d, 0),
                ratio.map_or_else(|| "—".to_owned(), |r| format!("{r:.2}×")),
                cpu("netproxy"),
                cpu("mitmproxy"),
            );
            summary.insert(
                w.name().to_owned(),
                json!({"netproxy": n, "mitmproxy": m, "direct": d, "ratio": ratio,
                       "netproxy_cpu_us_per_op": median_of(w, "netproxy", "proxy_cpu_us_per_op"),
                       "mitmproxy_cpu_us_per_op": median_of(w, "mitmproxy", "proxy_cpu_us_per_op")}),
            );
        }
        let _ = writeln!(
            md,
            "\nFor mitm-idle lower is better (KiB of PSS per held session over a fresh process)."
        );
        for n in &self.notes {
            let _ = writeln!(md, "\n{n}");
        }
        let _ = writeln!(md, "\n## Runs\n");
        for r in &self.runs {
            let _ = writeln!(md, "- {r}");
        }
        fs::write(self.out.join("results.md"), &md)?;
        fs::write(
            self.out.join("results.json"),
            serde_json::to_string_pretty(&json!({
                "summary": summary,
                "runs": self.runs,
                "notes": self.notes,
                "loadavg_start": load_start,
                "loadavg_end": load_end,
                "options": format!("{:?}", self.opts),
            }))?,
        )?;
        println!("\n{}", md.split("\n## Runs").next().unwrap_or(&md));
        println!("results: {}", self.out.join("results.md").display());
        Ok(())
    }
}

/// Indexes `0..n` starting at `rep % n`: each repetition changes which proxy goes first.
fn rotate(n: usize, rep: usize) -> Vec<usize> {
    (0..n).map(|i| (i + rep) % n.max(1)).collect()
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        f64::midpoint(v[m - 1], v[m])
    })
}

/// Cuts a file longer than `2 * keep` bytes to its first and last `keep` bytes, with a line
/// saying how much was left out.
fn shrink_log(path: &Path, keep: u64) -> anyhow::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let Ok(mut f) = fs::File::open(path) else {
        return Ok(());
    };
    let len = f.metadata()?.len();
    if len <= 2 * keep {
        return Ok(());
    }
    let mut head = vec![0; usize::try_from(keep)?];
    f.read_exact(&mut head)?;
    f.seek(SeekFrom::End(-i64::try_from(keep)?))?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail)?;
    let tmp = path.with_extension("log.tmp");
    let mut out = fs::File::create(&tmp)?;
    out.write_all(&head)?;
    writeln!(
        out,
        "\n[... {} bytes left out by cargo xtask bench mitm ...]",
        len - 2 * keep
    )?;
    out.write_all(&tail)?;
    fs::rename(&tmp, path)?;
    Ok(())
}

pub(crate) fn timestamp() -> String {
    Command::new("date")
        .arg("+%Y%m%d-%H%M%S")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "run".to_owned())
}

pub(crate) fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CPU counters at one instant.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    at: Instant,
    /// The proxy's utime + stime (its reaped children's included), clock ticks.
    proxy_ticks: Option<u64>,
    /// This process's (the load client's and the origin's).
    own_ticks: u64,
    /// The machine's busy and total jiffies.
    machine: (u64, u64),
}

impl Snapshot {
    fn take(pid: Option<u32>) -> Self {
        Self {
            at: Instant::now(),
            proxy_ticks: pid.and_then(|p| cpu_ticks(&format!("/proc/{p}/stat"))),
            own_ticks: cpu_ticks("/proc/self/stat").unwrap_or(0),
            machine: machine_jiffies().unwrap_or((0, 0)),
        }
    }
}

/// Whether the process runs (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rfind(')')
            .and_then(|i| s[i + 1..].trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

pub(crate) fn cpu_ticks(path: &str) -> Option<u64> {
    let s = fs::read_to_string(path).ok()?;
    // Fields after the command name, which ends at the last ')'; utime is field 14.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (11..15).map(|i| f.get(i)?.parse::<u64>().ok()).sum()
}

fn machine_jiffies() -> Option<(u64, u64)> {
    let s = fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = s
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = cpu.iter().take(8).sum();
    let idle = cpu.get(3)? + cpu.get(4)?;
    Some((total - idle, total))
}

fn machine_busy(a: (u64, u64), b: (u64, u64)) -> f64 {
    let total = b.1.saturating_sub(a.1);
    if total == 0 {
        return 0.0;
    }
    b.0.saturating_sub(a.0) as f64 / total as f64
}

#[derive(Debug, Clone, Copy)]
struct Memory {
    pss_kib: u64,
    rss_kib: u64,
}

/// The proxy's PSS and RSS (`smaps_rollup`).
fn memory(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in {path}"))
    };
    Ok(Memory {
        pss_kib: field("Pss:")?,
        rss_kib: field("Rss:")?,
    })
}
