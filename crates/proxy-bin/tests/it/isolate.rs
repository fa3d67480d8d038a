//! `netproxy run --isolate` (docs/isolate.md), end to end with netproxy and the command running
//! as an unprivileged user (uid 65534 through `setpriv`; these tests run as root): the child
//! reaches the network only through the proxy, its own lookups fail at once and are recorded,
//! SOCKS5 UDP works from inside, exit codes, signals, a terminal and file ownership are as
//! without isolation, and a kernel refusal exits 126 without running the command.
//!
//! Where user namespaces are not available to an unprivileged user, these tests fail with the
//! reason: they never skip.
//!
//! Network safety: the only non-loopback address dialled is from inside the command's
//! namespace, and only after the command has checked that `lo` is its only interface and that
//! it has no IPv4 route: the connection fails at the route lookup, before any packet exists.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use proxy_test_support::{DnsServer, Process};

use crate::support::{Home, json, public_origin, ran, wrapped};

/// The unprivileged user and group the tests run netproxy as.
const NOBODY: u32 = 65534;
const AS_NOBODY: [&str; 4] = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
];

/// A home the unprivileged user can use: the temporary folder opened up, netproxy's config
/// home and a work folder owned by that user.
struct Unprivileged {
    home: Home,
}

impl Unprivileged {
    fn new() -> Self {
        assert!(
            rustix::process::geteuid().is_root(),
            "the isolation tests run netproxy as uid {NOBODY} through setpriv, which needs root"
        );
        let home = Home::new();
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for dir in [home.user_dir(), home.path().join("work")] {
            std::fs::create_dir(&dir).unwrap();
            std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        Self { home }
    }

    /// Where the command may write.
    fn work(&self) -> PathBuf {
        self.home.path().join("work")
    }

    /// `netproxy ARGS` as the unprivileged user.
    fn command(&self, args: &[&str]) -> Command {
        wrapped(&AS_NOBODY, &self.home.command(args))
    }

    /// `netproxy run --isolate` as the unprivileged user, names resolved by `dns` and
    /// 127.0.0.2 treated as public, `allow` allowed, `extra` options, then `cmd`.
    fn isolated(&self, dns: &DnsServer, allow: &str, extra: &[&str], cmd: &[&str]) -> Command {
        let dns_arg = format!("dns.nameservers=[\"{}\"]", dns.addr());
        let mut args = vec![
            "run",
            "--isolate",
            "-c",
            &dns_arg,
            "-c",
            "treat_as_public=[\"127.0.0.2/32\"]",
            "--allow",
            allow,
        ];
        args.extend_from_slice(extra);
        args.push("--");
        args.extend_from_slice(cmd);
        self.command(&args)
    }
}

/// Fails the test with the reason when an unprivileged user cannot make a user and network
/// namespace here (the kernel's setting, or a container's policy).
fn user_namespaces_available() {
    let out = Command::new("setpriv")
        .args(&AS_NOBODY[1..])
        .args(["unshare", "--user", "--net", "--map-current-user", "true"])
        .output()
        .expect("setpriv and unshare (util-linux) are needed");
    assert!(
        out.status.success(),
        "an unprivileged user cannot create user and network namespaces on this machine, so \
         `run --isolate` cannot be tested: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The script that dials outside the namespace only after checking that it cannot leave it:
/// `lo` is the only interface and there is no IPv4 route.
const ISOLATED_OR_SAY: &str = r#"ifaces=$(tail -n +3 /proc/self/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')
routes=$(tail -n +2 /proc/self/net/route | wc -l)
echo "interfaces $ifaces"
echo "routes $routes""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_isolated_child_reaches_only_the_proxy() {
    user_namespaces_available();
    let u = Unprivileged::new();
    let (dns, origin) = public_origin(&["api.test"]).await;
    let port = origin.addr().port();
    // A service on the host's loopback that a child without isolation could reach directly,
    // and the admin API's port.
    let host_service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let admin_arg = admin.to_string();
    let script = format!(
        r#"{ISOLATED_OR_SAY}
curl -s -o /dev/null -w 'proxied %{{http_code}}\n' http://api.test:{port}/through
curl -s -o /dev/null -w 'tunnel %{{http_code}}\n' -p http://api.test:{port}/tunnel
curl -s --noproxy '*' -m 5 -o /dev/null http://127.0.0.2:{port}/direct; echo "direct $?"
curl -s --noproxy '*' -m 5 -o /dev/null http://127.0.0.1:{host}/; echo "host $?"
curl -s --noproxy '*' -m 5 -o /dev/null http://{admin}/patterns; echo "admin $?"
if [ "$ifaces" = "lo " ] && [ "$routes" = 0 ]; then
  curl -s --noproxy '*' -m 5 -o /dev/null http://192.0.2.1/; echo "outside $?"
else
  echo "not isolated: not dialling outside"
fi
echo "no_proxy [$NO_PROXY]"
id -u; id -g
touch {work}/made-inside
"#,
        host = host_service.local_addr().unwrap().port(),
        work = u.work().display(),
    );
    let cmd = u.isolated(
        &dns,
        "api.test",
        &["-c", "allow_local_binding=true", "--admin", &admin_arg],
        &["sh", "-c", &script],
    );
    host_service.set_nonblocking(true).unwrap();
    let out = ran(cmd);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "interfaces lo ",
            "routes 0",
            "proxied 200",
            "tunnel 200",
            // curl's 7: could not connect.
            "direct 7",
            "host 7",
            "admin 7",
            "outside 7",
            // Even with allow_local_binding, nothing bypasses the proxy.
            "no_proxy []",
            "65534",
            "65534",
        ],
        "{}",
        out.stderr
    );
    // The origin saw only what came through the proxy; the host's service saw nothing.
    let seen: Vec<String> = origin.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(seen, ["/through", "/tunnel"]);
    assert!(
        host_service.accept().is_err(),
        "the host's service was reached"
    );
    // Files the child makes belong to the invoking user, as seen from outside.
    let made = std::fs::metadata(u.work().join("made-inside")).unwrap();
    assert_eq!((made.uid(), made.gid()), (NOBODY, NOBODY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clones_through_the_proxy_from_inside() {
    user_namespaces_available();
    let u = Unprivileged::new();
    let (dns, _origin) = public_origin(&["git.test"]).await;
    let www = u.home.path().join("www");
    let repo = www.join("repo.git");
    crate::support::dumb_http_repo(u.home.path(), &repo, "hello from inside\n");
    let server = crate::support::FileServer::start(&www);
    let port = server.port;
    let into = u.work().join("clone");
    let script = format!(
        "GIT_CONFIG_NOSYSTEM=1 HOME={work} git clone -q http://git.test:{port}/repo.git {into}",
        work = u.work().display(),
        into = into.display()
    );
    let out = ran(u.isolated(&dns, "git.test", &[], &["sh", "-c", &script]));
    drop(server);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        std::fs::read_to_string(into.join("hello.txt")).unwrap(),
        "hello from inside\n"
    );
}

#[test]
fn the_childs_own_lookups_fail_at_once_and_are_recorded() {
    user_namespaces_available();
    let u = Unprivileged::new();
    let report = u.work().join("report.json");
    // The command's resolver is the machine's (/etc/resolv.conf): netproxy answers there
    // inside the namespace, and serves no names.
    let script = r#"start=$(date +%s%N)
getent hosts lookup-from-inside.example; echo "getent $?"
end=$(date +%s%N)
echo "ms $(( (end - start) / 1000000 ))""#;
    let out = ran(u.command(&[
        "run",
        "--isolate",
        "--report",
        report.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        script,
    ]));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let mut lines = out.stdout.lines();
    // 2: not found.
    assert_eq!(lines.next(), Some("getent 2"), "{}", out.stdout);
    let ms: u64 = lines
        .next()
        .and_then(|l| l.strip_prefix("ms "))
        .and_then(|n| n.parse().ok())
        .unwrap();
    // The resolver's own timeout is 5 s per try: a lookup that waited for it would take 10 s
    // or more. Refused at once, it takes milliseconds; 3 s is a generous bound.
    assert!(ms < 3000, "the lookup took {ms} ms");
    assert!(
        out.stderr
            .contains("lookup-from-inside.example:53 (dns_not_served)"),
        "{}",
        out.stderr
    );
    let v = json(&std::fs::read_to_string(&report).unwrap());
    let dns: Vec<&serde_json::Value> = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["protocol"] == "dns")
        .collect();
    assert!(!dns.is_empty(), "{v}");
    for d in dns {
        assert_eq!(d["host"], "lookup-from-inside.example");
        assert_eq!(d["reason"], "dns_not_served");
        assert_eq!(d["decision"], "deny");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_udp_works_from_inside() {
    user_namespaces_available();
    let u = Unprivileged::new();
    let dns = DnsServer::start().await.unwrap();
    crate::support::resolves(&dns, "udp.test", "127.0.0.2");
    let (echo, received) = crate::support::udp_echo("127.0.0.2:0").await;
    let client = udp_client(echo.port(), "");
    let out = ran(u.isolated(&dns, "udp.test", &[], &["/usr/bin/python3", "-c", &client]));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["relay 127.0.0.1", "reply ping"],
        "{}",
        out.stderr
    );
    assert_eq!(received.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A SOCKS5 UDP client (RFC 1928) for inside the namespace, in Python: `prelude` first, then
/// ASSOCIATE over `$ALL_PROXY`, one datagram to `udp.test:PORT` through the relay, and the
/// echo back.
fn udp_client(port: u16, prelude: &str) -> String {
    format!(
        r#"{prelude}
import os, socket, struct
host, port = os.environ["ALL_PROXY"].split("//")[1].rsplit(":", 1)
c = socket.create_connection((host, int(port)), timeout=10)
c.sendall(b"\x05\x01\x00"); assert c.recv(2) == b"\x05\x00"
c.sendall(b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00")
r = c.recv(10); assert r[1] == 0, r
relay = (socket.inet_ntoa(r[4:8]), struct.unpack(">H", r[8:10])[0])
print("relay", relay[0])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(10)
name = b"udp.test"
u.sendto(b"\x00\x00\x00\x03" + bytes([len(name)]) + name + struct.pack(">H", {port}) + b"ping", relay)
data, _ = u.recvfrom(65535)
print("reply", data[10:].decode())
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ctrl_c_reaches_the_command_and_spares_the_namespace_holder() {
    user_namespaces_available();
    let u = Unprivileged::new();
    let dns = DnsServer::start().await.unwrap();
    crate::support::resolves(&dns, "udp.test", "127.0.0.2");
    let (echo, _) = crate::support::udp_echo("127.0.0.2:0").await;
    // The command waits for SIGINT, then needs the holder (a SOCKS5 UDP association).
    let prelude = r#"
import signal, sys, threading
got = threading.Event()
signal.signal(signal.SIGINT, lambda *a: got.set())
print("ready", flush=True)
got.wait(30)
print("interrupted", got.is_set(), flush=True)"#;
    let mut cmd = u.isolated(
        &dns,
        "udp.test",
        &[],
        &["/usr/bin/python3", "-c", &udp_client(echo.port(), prelude)],
    );
    // netproxy leads a process group of its own here, as a shell's foreground job does.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut p = Process::spawn(cmd);
    let mut out = BufReader::new(p.child().stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // What a Ctrl-C at the terminal does: SIGINT to the whole foreground group.
    let group = format!("-{}", p.id());
    assert!(
        Command::new("kill")
            .args(["-INT", "--", &group])
            .status()
            .unwrap()
            .success()
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(p.wait_exit(), Some(0), "{rest}");
    assert_eq!(rest, "interrupted True\nrelay 127.0.0.1\nreply ping\n");
}

#[test]
fn exit_codes_and_signals_pass_through() {
    user_namespaces_available();
    let u = Unprivileged::new();
    let code = |args: &[&str]| {
        let mut all = vec!["run", "--isolate", "--"];
        all.extend_from_slice(args);
        let out = ran(u.command(&all));
        (out.code, out.stderr)
    };
    assert_eq!(code(&["sh", "-c", "exit 7"]).0, 7);
    assert_eq!(code(&["sh", "-c", "kill -TERM $$"]).0, 128 + 15);
    let (c, err) = code(&["/nonexistent/command"]);
    assert_eq!(c, 127, "{err}");
    assert!(err.contains("cannot start `/nonexistent/command`"), "{err}");

    // A signal sent to netproxy reaches the command inside.
    let script = "trap 'echo got TERM; exit 12' TERM; echo ready; while :; do sleep 0.05; done";
    let mut cmd = u.command(&["run", "--isolate", "--", "sh", "-c", script]);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut p = Process::spawn(cmd);
    let mut out = BufReader::new(p.child().stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    p.signal("TERM");
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "got TERM\n");
    assert_eq!(p.wait_exit(), Some(12));
}

#[test]
fn an_interactive_shell_keeps_its_terminal_and_job_control() {
    user_namespaces_available();
    let u = Unprivileged::new();
    // `script` gives netproxy a pseudo-terminal; the shell inside runs a job in the
    // background, lists it, kills it, collects its status, and exits with 3.
    let inner = u.home.command(&[
        "run",
        "--isolate",
        "--",
        "bash",
        "--norc",
        "--noprofile",
        "-i",
    ]);
    let line = std::iter::once(inner.get_program())
        .chain(inner.get_args())
        .map(|a| a.to_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new("setpriv");
    cmd.args(&AS_NOBODY[1..])
        .args(["script", "-qec", &line, "/dev/null"])
        .env_clear()
        .envs(inner.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut p = Process::spawn(cmd);
    {
        use std::io::Write;
        let mut stdin = p.child().stdin.take().unwrap();
        stdin
            .write_all(b"tty\nsleep 30 &\njobs\nkill %1\nwait $!\necho done-$?\nexit 3\n")
            .unwrap();
    }
    let code = p.wait_exit();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut p.child().stdout.take().unwrap(), &mut stdout).unwrap();
    assert_eq!(code, Some(3), "{stdout}");
    assert!(stdout.contains("/dev/pts/"), "{stdout}");
    assert!(stdout.contains("Running"), "{stdout}");
    // `wait $!` reports the job's status whether or not the shell has already
    // reaped it and printed "Terminated" (that notice depends on when SIGCHLD
    // arrives): 143 is 128 + SIGTERM, so the kill reached the job.
    assert!(stdout.contains("done-143"), "{stdout}");
    assert!(!stdout.contains("no job control"), "{stdout}");
    assert!(
        !stdout.contains("cannot set terminal process group"),
        "{stdout}"
    );
}

#[test]
fn a_refused_namespace_exits_126_and_never_runs_the_command() {
    user_namespaces_available();
    let u = Unprivileged::new();
    let marker = u.work().join("ran");
    let touch = ["touch", marker.to_str().unwrap()];
    // Through the seam: a step after unshare fails as under AppArmor's restriction.
    for step in ["uid_map", "loopback", "network_namespace"] {
        let mut args = vec!["run", "--isolate", "--allow", "a.test", "--"];
        args.extend_from_slice(&touch);
        let mut cmd = u.command(&args);
        cmd.env("NETPROXY_ISOLATE_FAULT", step);
        let out = ran(cmd);
        assert_eq!(out.code, 126, "{step}: {}", out.stderr);
        assert!(
            out.stderr
                .starts_with("netproxy run: --isolate: cannot isolate the command: "),
            "{}",
            out.stderr
        );
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(!marker.exists(), "{step}: the command ran");
    }
    // For real: user namespaces disabled by the sysctl, in a user namespace of the test's own
    // (the setting is per namespace, so nothing else on the machine sees it).
    let inner = u
        .home
        .command(&["run", "--isolate", "--", "touch", marker.to_str().unwrap()]);
    let line = std::iter::once(inner.get_program())
        .chain(inner.get_args())
        .map(|a| a.to_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--user",
        "--map-root-user",
        "sh",
        "-c",
        &format!("echo 0 > /proc/sys/user/max_user_namespaces && exec {line}"),
    ])
    .env_clear()
    .envs(inner.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
    let out = ran(cmd);
    assert_eq!(out.code, 126, "{}", out.stderr);
    assert!(
        out.stderr.contains("user.max_user_namespaces"),
        "{}",
        out.stderr
    );
    assert!(!marker.exists());
}

#[test]
fn isolate_in_the_config_isolates_and_a_requirement_pins_it() {
    user_namespaces_available();
    let u = Unprivileged::new();
    let interfaces = "tail -n +3 /proc/self/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ' '";
    // Without isolation the child sees the host's interfaces (at least lo and another, or the
    // test would prove nothing): then `isolate = true` in the user's config leaves only lo.
    let out = ran(u.command(&["run", "--", "sh", "-c", interfaces]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let host = out.stdout.clone();
    assert_ne!(
        host, "lo ",
        "this machine has no interface but lo: nothing to isolate from"
    );
    std::fs::write(
        u.home.user_dir().join("config.toml"),
        "[network]\nisolate = true\n",
    )
    .unwrap();
    let out = ran(u.command(&["run", "--", "sh", "-c", interfaces]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "lo ", "without isolation: {host:?}");
    // A requirement of isolate = true: a user layer's false is refused (exit 3), and the
    // command never runs.
    std::fs::create_dir_all(u.home.system_dir()).unwrap();
    std::fs::write(
        u.home.system_dir().join("requirements.toml"),
        "[network]\nisolate = true\n",
    )
    .unwrap();
    std::fs::write(
        u.home.user_dir().join("config.toml"),
        "[network]\nisolate = false\n",
    )
    .unwrap();
    let marker = u.work().join("ran");
    let out = ran(u.command(&["run", "--", "touch", marker.to_str().unwrap()]));
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("isolate"), "{}", out.stderr);
    assert!(!marker.exists());
    // Without the user's false, the requirement isolates.
    std::fs::remove_file(u.home.user_dir().join("config.toml")).unwrap();
    let out = ran(u.command(&["run", "--", "sh", "-c", interfaces]));
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "lo "),
        "{}",
        out.stderr
    );
}

#[test]
fn nothing_inherited_or_made_inside_reaches_around_the_namespace() {
    user_namespaces_available();
    let u = Unprivileged::new();
    // A service of the host's loopback, to which netproxy's caller passes a connected socket
    // (descriptor 50), one end of a Unix socket pair (51), an unconnected Unix datagram socket
    // (52: it could send to the caller's abstract addresses) and, as standard input, an
    // unconnected UDP socket.
    let host_service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let launcher = format!(
        r#"
import os, socket, sys
t = socket.create_connection(("127.0.0.1", {port}))
a, b = socket.socketpair()
d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
os.dup2(t.fileno(), 50)
os.dup2(a.fileno(), 51)
os.dup2(d.fileno(), 52)
os.dup2(u.fileno(), 0)
os.execvp(sys.argv[1], sys.argv[1:])
"#,
        port = host_service.local_addr().unwrap().port()
    );
    let inside = r#"
import os, socket
for fd in (50, 51, 52):
    print(fd, "open" if os.path.exists(f"/proc/self/fd/{fd}") else "closed")
print("stdin", os.readlink("/proc/self/fd/0"))
try:
    socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    print("vsock made")
except OSError as e:
    print("vsock", e.errno)
import fcntl, termios
try:
    fcntl.ioctl(1, termios.TIOCSTI, b"o")
    print("tiocsti passed")
except OSError as e:
    print("tiocsti", e.errno)
# netproxy's own holder: a child of netproxy (the parent of this process) run as the holder.
holder = []
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    ppid = int(stat[stat.rindex(")") + 2:].split()[1])
    if cmdline[1:2] == [b"__netproxy-isolate-holder"] and ppid == os.getppid():
        holder.append(pid)
for pid in holder:
    try:
        open(f"/proc/{pid}/environ", "rb").read()
        print("holder environ readable")
    except OSError as e:
        print("holder environ", e.errno)
print("holders", len(holder))
"#;
    let inner = u
        .home
        .command(&["run", "--isolate", "--", "/usr/bin/python3", "-c", inside]);
    let mut cmd = Command::new("setpriv");
    cmd.args(&AS_NOBODY[1..])
        .args(["/usr/bin/python3", "-c", &launcher])
        .arg(inner.get_program())
        .args(inner.get_args())
        .env_clear()
        .envs(inner.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
    let out = ran(cmd);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(
            "descriptors 0 (network socket), 50 (network socket), 52 (Unix socket that can reach abstract addresses)"
        ),
        "{}",
        out.stderr
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "50 closed",
            "51 open",
            "52 closed",
            "stdin /dev/null",
            // EAFNOSUPPORT: the seccomp filter.
            "vsock 97",
            // EPERM from the filter (without it, ENOTTY on this pipe, or typed input on a
            // terminal).
            "tiocsti 1",
            // EACCES: a nested user namespace cannot read the holder's /proc files.
            "holder environ 13",
            "holders 1",
        ],
        "{}",
        out.stderr
    );
}
