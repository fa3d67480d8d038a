//! Ten thousand clients at once: idle `CONNECT` tunnels, then idle SOCKS5 tunnels, each held
//! within the memory docs/benchmarks.md predicts per idle tunnel (5 KiB over `CONNECT`, 4 KiB
//! over SOCKS5; the bound is three times that plus a fixed base); then ten thousand slow clients
//! trickling their heads (slowloris), each cut at the head timeout. Meanwhile a new client is
//! served.
//!
//! A tunnel takes two of netproxy's descriptors. Where the hard descriptor limit is below
//! 20,000 plus netproxy's own (a container without `CAP_SYS_RESOURCE` cannot raise it), the
//! idle tunnels are as many as it allows, and the test says so. The origin holding the tunnels'
//! far ends is a process of its own (python), so that this process holds only the clients.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::{bounded, connect, open_fds, rss_kib, socks_connect, thrice};
use crate::support::{Serve, World};

const CLIENTS: usize = 10_000;
/// How many clients connect at once (the listen backlog is far larger).
const PARALLEL: usize = 200;
/// Allowed on top of the per-tunnel figure: the runtime's and allocator's own growth.
const BASE_KIB: u64 = 16 * 1024;

/// The crowd tests run one at a time: each holds ten thousand sockets in this process.
static CROWD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Raises this process's soft descriptor limit to its hard limit (which netproxy, its child,
/// inherits), and returns that limit.
fn raise_nofile() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    let hard = now.maximum.unwrap_or(1 << 20);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: now.maximum,
        },
    )
    .unwrap();
    hard
}

/// A process (python) listening on 127.0.0.2 that accepts every connection and holds it,
/// silent; killed when dropped, which closes them all.
struct Holder {
    child: std::process::Child,
    port: u16,
}

impl Holder {
    fn start() -> Self {
        use std::io::BufRead;
        const SCRIPT: &str = "import socket\n\
            s = socket.socket()\n\
            s.bind(('127.0.0.2', 0))\n\
            s.listen(4096)\n\
            print(s.getsockname()[1], flush=True)\n\
            held = []\n\
            while True:\n    held.append(s.accept()[0])\n";
        let mut child = std::process::Command::new("python3")
            .args(["-c", SCRIPT])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("{line:?}"));
        Self { child, port }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `netproxy serve` for many clients: HTTP and SOCKS5, api.test (the world's origin) and
/// hold.test (127.0.0.2, a static address: no lookup per tunnel) allowed, connections and
/// descriptors for all of them, `extra` settings.
fn start(w: &World, extra: &[&str]) -> Serve {
    w.serve()
        .socks()
        .args(&[
            "--allow",
            "api.test",
            "--allow",
            "hold.test",
            "-c",
            "dns.hosts={\"hold.test\"=[\"127.0.0.2\"]}",
            "-c",
            "limits.max_connections=30000",
            // The in-process DNS server shares the test's runtime with ten thousand clients
            // trickling their heads: on a loaded machine its answer may come after the usual
            // 500 ms, which would fail the new client's lookup, not netproxy.
            "-c",
            "dns.timeout_ms=5000",
        ])
        .args(extra)
        // Ten thousand decisions: not formatted into the log, which no one reads here.
        .env("RUST_LOG", "warn")
        .start()
}

/// Runs `open` `n` times, [`PARALLEL`] at a time, and returns what each gave.
async fn many<T, F, Fut>(n: usize, open: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(PARALLEL));
    let tasks: Vec<_> = (0..n)
        .map(|k| {
            let (slots, fut) = (slots.clone(), open(k));
            tokio::spawn(async move {
                let _slot = slots.acquire_owned().await.unwrap();
                fut.await
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.push(bounded("a client", t).await.unwrap());
    }
    all
}

/// A new client is served meanwhile: a plain request and a `CONNECT` to api.test.
fn new_client_served(s: &Serve, w: &World) {
    let r = s.get(&w.url("api.test", "meanwhile"));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s.curl().arg("-p").get(w.url("api.test", "meanwhile"));
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Holds `n` idle tunnels opened by `open` against netproxy `s` (to `holder`), and checks its
/// memory growth against `kib` per tunnel (times three, plus [`BASE_KIB`]). Then closes them
/// and the holder's ends, and stops netproxy.
async fn idle_tunnels<F, Fut>(
    s: Serve,
    w: &World,
    holder: Holder,
    n: usize,
    what: &str,
    kib: u64,
    open: F,
) where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = TcpStream> + Send + 'static,
{
    let pid = s.process.id();
    // Warm up, so that the baseline has the code and first buffers of both paths.
    for _ in 0..3 {
        new_client_served(&s, w);
    }
    let before = rss_kib(pid);
    let tunnels = many(n, &open).await;
    assert!(open_fds(pid) >= 2 * n, "{} descriptors", open_fds(pid));
    let with = rss_kib(pid);
    let grown = with.saturating_sub(before);
    let per = grown as f64 / n as f64;
    eprintln!("{what}: {n} idle tunnels: RSS {before} -> {with} KiB, {per:.2} KiB per tunnel");
    let bound = 3 * kib * n as u64 + BASE_KIB;
    assert!(
        grown < bound,
        "{what}: {grown} KiB for {n} idle tunnels ({per:.2} KiB each), bound {bound} KiB"
    );
    new_client_served(&s, w);
    drop(tunnels);
    drop(holder);
    let stderr = s.stop();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_tunnels_stay_within_the_predicted_memory() {
    let _one = CROWD.lock().await;
    let limit = raise_nofile();
    // Two descriptors a tunnel, and room for netproxy's own.
    let n = CLIENTS.min(usize::try_from(limit.saturating_sub(200) / 2).unwrap_or(CLIENTS));
    if n < CLIENTS {
        eprintln!("the descriptor limit is {limit}: {n} idle tunnels instead of {CLIENTS}");
    }
    assert!(
        n >= CLIENTS / 2,
        "a descriptor limit of {limit} is too low for this test"
    );
    let w = World::new(&["api.test"]).await;

    let holder = Holder::start();
    let s = start(&w, &[]);
    let proxy = s.http.clone();
    let authority = format!("hold.test:{}", holder.port);
    idle_tunnels(s, &w, holder, n, "CONNECT", 5, |_| {
        let (proxy, authority) = (proxy.clone(), authority.clone());
        async move {
            let (t, head) = connect(&proxy, &authority).await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            t
        }
    })
    .await;

    let holder = Holder::start();
    let s = start(&w, &[]);
    let socks = s.socks.clone().unwrap();
    let port = holder.port;
    idle_tunnels(s, &w, holder, n, "SOCKS5", 4, |_| {
        let socks = socks.clone();
        async move {
            let (t, rep) = socks_connect(&socks, "hold.test", port).await;
            assert_eq!(rep, 0);
            t
        }
    })
    .await;
}

/// The head timeout of the slowloris run: long enough for all the clients to connect before
/// the first is cut, on a busy machine too.
const HEAD_TIMEOUT: Duration = Duration::from_secs(15);

/// A slow client: connects to `proxy` and sends `head` one byte every 250 ms but for its last
/// byte (the head never completes), reading what comes back, until netproxy closes the
/// connection. How long after it began connecting that was.
async fn trickle(proxy: String, head: Vec<u8>, connecting: Arc<Semaphore>) -> Duration {
    // [`PARALLEL`] connecting at once, so that no handshake waits for a SYN to be sent again.
    let permit = connecting.acquire_owned().await.unwrap();
    // Before the connection: netproxy's clock for the head cannot start earlier.
    let begin = Instant::now();
    let mut s = TcpStream::connect(&proxy).await.unwrap();
    drop(permit);
    let mut buf = [0u8; 64];
    let mut next = 0;
    loop {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => return begin.elapsed(),
                Ok(_) => {}
            },
            () = tokio::time::sleep(Duration::from_millis(250)) => {
                if next + 1 < head.len() {
                    if s.write_all(&head[next..=next]).await.is_err() {
                        return begin.elapsed();
                    }
                    next += 1;
                }
                assert!(begin.elapsed() < thrice(HEAD_TIMEOUT), "never cut");
            }
        }
    }
}

/// Ten thousand slow clients, half of them HTTP (a request head), half SOCKS5 (a greeting and
/// a request), each trickled a byte every 250 ms: each is closed between one and three head
/// timeouts after it connected, with its head unfinished, and a new client is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_slow_clients_are_each_cut_at_the_head_timeout() {
    let _one = CROWD.lock().await;
    let limit = raise_nofile();
    assert!(
        limit > CLIENTS as u64 + 1000,
        "a descriptor limit of {limit} is too low"
    );
    let w = World::new(&["api.test"]).await;
    let ms = HEAD_TIMEOUT.as_millis().to_string();
    let s = start(&w, &["-c", &format!("limits.header_timeout_ms={ms}")]);
    let pid = s.process.id();
    let http_head = format!(
        "GET {} HTTP/1.1\r\nHost: api.test\r\n\r\n",
        w.url("api.test", "")
    )
    .into_bytes();
    // Greeting (no authentication), then CONNECT hold.test:80 by name.
    let mut socks_head = vec![5, 1, 0, 5, 1, 0, 3, 9];
    socks_head.extend_from_slice(b"hold.test");
    socks_head.extend_from_slice(&80u16.to_be_bytes());
    let (http, socks) = (s.http.clone(), s.socks.clone().unwrap());
    let connecting = Arc::new(Semaphore::new(PARALLEL));
    // All at once: spawned together, each measuring its own time.
    let base = rss_kib(pid);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (proxy, head) = if i % 2 == 0 {
                (http.clone(), http_head.clone())
            } else {
                (socks.clone(), socks_head.clone())
            };
            tokio::spawn(trickle(proxy, head, connecting.clone()))
        })
        .collect();
    // Wait until they are all connected and trickling, then serve a new client.
    let mut most = 0;
    proxy_test_support::wait_for("the slow clients connected", || {
        let n = open_fds(pid);
        most = most.max(n);
        if n >= CLIENTS + 10 {
            Ok(())
        } else {
            Err(format!("{n} descriptors now, {most} at most"))
        }
    });
    let rss = rss_kib(pid);
    let per = rss.saturating_sub(base) as f64 / CLIENTS as f64;
    eprintln!("slowloris: {CLIENTS} slow clients, netproxy RSS {rss} KiB ({per:.1} KiB each)");
    // A connection waiting for its head holds hyper's (or the SOCKS reader's) buffers: about
    // 20 KiB in a debug build. The bound: 64 KiB each, plus 16 MiB.
    assert!(
        rss.saturating_sub(base) < CLIENTS as u64 * 64 + 16 * 1024,
        "{CLIENTS} slow clients took {} KiB",
        rss.saturating_sub(base)
    );
    new_client_served(&s, &w);
    let mut longest = Duration::ZERO;
    // Each client bounds its own wait (three head timeouts).
    for c in clients {
        let took = c.await.unwrap();
        assert!(took >= HEAD_TIMEOUT, "cut after {took:?}");
        assert!(took < thrice(HEAD_TIMEOUT), "cut after {took:?}");
        longest = longest.max(took);
    }
    eprintln!("slowloris: the last cut {longest:?} after its client connected");
    new_client_served(&s, &w);
    let stderr = s.stop();
    assert!(!stderr.contains("panicked"), "{stderr}");
}
