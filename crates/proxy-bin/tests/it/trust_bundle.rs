//! The trust bundle of `netproxy run --mitm` and `netproxy env` with `mitm`: the child's CA
//! variables, the file named by its hash, its reuse and its refusals, and real clients (curl,
//! pip) that trust netproxy's leaves through it with no flag of their own. The origins are
//! loopback TLS servers whose test CA netproxy trusts through its own `SSL_CERT_FILE`, which
//! the child inherits and which the bundle must replace.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use proxy_test_support::{DnsServer, TlsOrigin};

use crate::support::{Home, Ran, json, planted_symlink, ran, tls_origin};

/// The variables that hold the bundle's path (docs/mitm.md).
const CA_KEYS: [&str; 8] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "PIP_CERT",
    "BUNDLE_SSL_CA_CERT",
    "npm_config_cafile",
];

/// The DNS server, a TLS origin for `secure.test` on 127.0.0.2 (treated as public), the file
/// holding its test CA (netproxy's `SSL_CERT_FILE`), and a home.
struct World {
    dns: DnsServer,
    origin: TlsOrigin,
    test_ca: PathBuf,
    home: Home,
}

async fn world() -> World {
    let home = Home::new();
    let dns = DnsServer::start().await.unwrap();
    let test_ca = home.path().join("test-ca.pem");
    let origin = tls_origin(&dns, &["secure.test"], &test_ca).await;
    World {
        dns,
        origin,
        test_ca,
        home,
    }
}

impl World {
    /// `netproxy run` in limited mode with `--mitm`, `secure.test` allowed, netproxy's
    /// `SSL_CERT_FILE` the test CA (and its `SSL_CERT_DIR` an empty folder, `NPM_CONFIG_CAFILE`
    /// something else: what a child would inherit), running `sh -c script`.
    fn run(&self, extra: &[&str], script: &str) -> Command {
        let dns = format!("dns.nameservers=[\"{}\"]", self.dns.addr());
        let mut args = vec![
            "run",
            "-c",
            &dns,
            "-c",
            "treat_as_public=[\"127.0.0.2/32\"]",
            "--mode",
            "limited",
            "--mitm",
            "--allow",
            "secure.test",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sh", "-c", script]);
        let empty = self.home.path().join("empty-cert-dir");
        std::fs::create_dir_all(&empty).unwrap();
        let mut cmd = self.home.command(&args);
        cmd.current_dir(self.home.path())
            .env("SSL_CERT_FILE", &self.test_ca)
            .env("SSL_CERT_DIR", &empty)
            .env("NPM_CONFIG_CAFILE", "/inherited/npm.pem");
        cmd
    }

    fn url(&self, path: &str) -> String {
        format!("https://secure.test:{}/{path}", self.origin.addr().port())
    }

    /// The CA folder.
    fn ca_dir(&self) -> PathBuf {
        self.home.user_dir().join("ca")
    }

    /// Runs `env` in the child: its environment (after the run exited 0).
    fn child_env(&self) -> Vec<(String, String)> {
        let out = ran(self.run(&[], "env"));
        assert_eq!(out.code, 0, "{}", out.stderr);
        env_of(&out.stdout)
    }
}

fn env_of(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The one path every CA key holds.
fn bundle_of(env: &[(String, String)]) -> PathBuf {
    let path = get(env, "SSL_CERT_FILE").expect("SSL_CERT_FILE is set");
    for key in CA_KEYS {
        assert_eq!(get(env, key), Some(path), "{key}");
    }
    PathBuf::from(path)
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The DER certificates of a PEM file.
fn certs_of(path: &Path) -> Vec<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .map(|c| c.unwrap().as_ref().to_vec())
        .collect()
}

fn inode(path: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::symlink_metadata(path).unwrap())
}

/// The child's CA variables all name one bundle in `$NETPROXY_HOME/ca/`, named by its hash, that
/// holds netproxy's CA and the roots netproxy trusts (the machine's store plus the test CA of
/// netproxy's own `SSL_CERT_FILE`); inherited values are replaced, `SSL_CERT_DIR` is kept; a
/// second run reuses the same file as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_child_gets_one_bundle_named_by_its_hash_and_reused() {
    let w = world().await;
    let env = w.child_env();
    let bundle = bundle_of(&env);
    assert_eq!(bundle.parent().unwrap(), w.ca_dir());
    let content = std::fs::read(&bundle).unwrap();
    assert_eq!(
        bundle.file_name().unwrap().to_str().unwrap(),
        format!("ca-bundle-{}.pem", sha256_hex(&content))
    );
    assert_eq!(crate::support::mode(&bundle), 0o644);
    let certs = certs_of(&bundle);
    let ca = certs_of(&w.ca_dir().join("ca.pem"));
    assert_eq!(certs.last(), ca.first(), "netproxy's CA comes last");
    assert_eq!(certs.iter().filter(|c| Some(*c) == ca.first()).count(), 1);
    // netproxy's own SSL_CERT_FILE (a corporate root, say) is kept for the child, once.
    let test_ca = certs_of(&w.test_ca);
    assert_eq!(
        certs.iter().filter(|c| **c == test_ca[0]).count(),
        1,
        "netproxy's own SSL_CERT_FILE is part of the bundle"
    );
    // The inherited values are replaced; SSL_CERT_DIR is left as it was.
    assert!(
        !env.iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("npm_config_cafile") && k != "npm_config_cafile")
    );
    assert_eq!(
        get(&env, "SSL_CERT_DIR"),
        Some(w.home.path().join("empty-cert-dir").to_str().unwrap())
    );

    // A second run: the same file, not written again.
    let before = (
        inode(&bundle),
        std::fs::metadata(&bundle).unwrap().modified().unwrap(),
    );
    let again = bundle_of(&w.child_env());
    assert_eq!(again, bundle);
    let after = (
        inode(&bundle),
        std::fs::metadata(&bundle).unwrap().modified().unwrap(),
    );
    assert_eq!(before, after);
    let bundles = std::fs::read_dir(w.ca_dir())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("ca-bundle-")
        })
        .count();
    assert_eq!(bundles, 1);

    // Without --mitm none of the CA variables is touched.
    let home = Home::new();
    let mut cmd = home.command(&["run", "--", "sh", "-c", "env"]);
    cmd.env("SSL_CERT_FILE", "/inherited/ca.pem")
        .env("NPM_CONFIG_CAFILE", "/inherited/npm.pem");
    let out = ran(cmd);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let env = env_of(&out.stdout);
    assert_eq!(get(&env, "SSL_CERT_FILE"), Some("/inherited/ca.pem"));
    assert_eq!(get(&env, "NPM_CONFIG_CAFILE"), Some("/inherited/npm.pem"));
    for key in CA_KEYS.iter().filter(|k| **k != "SSL_CERT_FILE") {
        assert_eq!(get(&env, key), None, "{key}");
    }
    assert!(!home.user_dir().join("ca").exists());
}

/// A file of the bundle's name with other content, or a symlink there (even to the right
/// content), stops `run` (exit 1, the path and the rule named) before the child starts, and is
/// left as it is; `env` refuses it the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_or_other_content_at_the_bundles_name_is_refused_before_the_child_starts() {
    let w = world().await;
    let bundle = bundle_of(&w.child_env());
    let content = std::fs::read(&bundle).unwrap();
    let marker = w.home.path().join("child-ran");
    let script = format!("touch {}", marker.display());
    let refused = |needle: &str| {
        let out: Ran = ran(w.run(&[], &script));
        out.assert_err(1, &[&bundle.display().to_string(), needle]);
        assert!(!marker.exists(), "the child ran: {}", out.stderr);
        // With the environment `run` had: the same roots, so the same bundle.
        let mut cmd = w
            .home
            .command(&["env", "--mitm", "--http", "127.0.0.1:3128"]);
        cmd.env("SSL_CERT_FILE", &w.test_ca);
        let env = ran(cmd);
        env.assert_err(1, &[&bundle.display().to_string(), needle]);
        assert!(env.stdout.is_empty(), "{}", env.stdout);
    };

    std::fs::write(&bundle, "not the bundle\n").unwrap();
    refused("holds other content");
    assert_eq!(std::fs::read(&bundle).unwrap(), b"not the bundle\n");

    std::fs::remove_file(&bundle).unwrap();
    let (victim, link) = planted_symlink(w.ca_dir().as_path(), "planted");
    std::fs::write(&victim, &content).unwrap();
    std::fs::rename(&link, &bundle).unwrap();
    refused("symbolic link");
    assert!(std::fs::symlink_metadata(&bundle).unwrap().is_symlink());

    // Once the name is free again, the bundle is written anew and the child runs.
    std::fs::remove_file(&bundle).unwrap();
    let out = ran(w.run(&[], &script));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(marker.exists());
    assert_eq!(std::fs::read(&bundle).unwrap(), content);
}

/// Under `run --mitm` in limited mode, curl with no `--cacert` and no `-k` reads a page over
/// HTTPS through the proxy (netproxy's leaf, trusted through the bundle in the inherited
/// variables), and a POST gets the proxy's 403 JSON inside TLS, never reaching the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_trusts_the_proxy_through_the_bundle_and_limited_mode_refuses_a_post() {
    let w = world().await;
    let post = w.home.path().join("post.json");
    let script = format!(
        "curl -sS -w '\\nget %{{http_code}}\\n' {get}; \
         curl -sS -o {post} -w 'post %{{http_code}}\\n' -X POST -d x=1 {write}",
        get = w.url("read"),
        post = post.display(),
        write = w.url("write"),
    );
    let out = ran(w.run(&[], &script));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("GET /read 0\nget 200\n"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout.contains("post 403\n"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let v = json(&std::fs::read_to_string(&post).unwrap());
    assert_eq!(v["status"], "blocked");
    assert_eq!(v["reason"], "method_not_allowed");
    assert_eq!(v["protocol"], "https");
    assert_eq!(v["host"], "secure.test");
    let seen: Vec<String> = w
        .origin
        .seen()
        .into_iter()
        // Over HTTP/2 the origin sees the absolute URI: its path is what counts here.
        .map(|s| {
            let path = s
                .target
                .strip_prefix("https://")
                .and_then(|rest| rest.find('/').map(|i| rest[i..].to_owned()))
                .unwrap_or(s.target);
            format!("{} {path}", s.method)
        })
        .collect();
    assert_eq!(seen, ["GET /read"], "the origin never saw the POST");
}

/// `netproxy env` for a config with `mitm` (`--mitm`, or `[network.mitm] enabled = true` in a
/// config file) prints the CA variables with the bundle `run` gives its child, the CA made
/// first when there is none; without `mitm` it prints none of them and makes no CA.
#[test]
fn env_with_mitm_prints_the_bundle_run_would_give() {
    let home = Home::new();
    let out = ran(home.command(&["env", "--http", "127.0.0.1:3128"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    for key in CA_KEYS {
        assert!(
            !out.stdout.contains(&format!(" {key}=")),
            "{key}: {}",
            out.stdout
        );
    }
    assert!(!home.user_dir().join("ca").exists());

    let cfg = home.path().join("mitm.toml");
    std::fs::write(&cfg, "[network.mitm]\nenabled = true\n").unwrap();
    let out = ran(home.command(&[
        "env",
        "--config",
        cfg.to_str().unwrap(),
        "--http",
        "127.0.0.1:3128",
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let script = format!(
        "{}\nfor k in {}; do eval echo \"$k=\\$$k\"; done",
        out.stdout,
        CA_KEYS.join(" ")
    );
    let sh = Command::new("sh")
        .args(["-c", &script])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap();
    let env = env_of(&String::from_utf8_lossy(&sh.stdout));
    let bundle = bundle_of(&env);
    assert!(
        bundle.starts_with(home.user_dir().join("ca")),
        "{}",
        bundle.display()
    );
    assert!(
        home.user_dir().join("ca/ca.key").exists(),
        "the CA was made"
    );
    let content = std::fs::read(&bundle).unwrap();
    assert!(bundle.ends_with(format!("ca-bundle-{}.pem", sha256_hex(&content))));

    // JSON, and `run --mitm` from the same home: the same bundle.
    let out = ran(home.command(&[
        "env",
        "--mitm",
        "--format",
        "json",
        "--http",
        "127.0.0.1:3128",
    ]));
    let v = json(&out.stdout);
    for key in CA_KEYS {
        assert_eq!(v[key], bundle.to_str().unwrap(), "{key}");
    }
    let out = ran(home.command(&["run", "--mitm", "--", "sh", "-c", "env"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(bundle_of(&env_of(&out.stdout)), bundle);
}

/// The Python interpreter that has pip, as the test process finds it (`python3` on `PATH`,
/// resolved to its real executable so that the child needs no version manager's shims).
fn python_with_pip() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import sys, pip; print(sys.executable)"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Builds, in `root`, a PyPI "simple" index for one small wheel, `tinypkg-0.1`, its link
/// carrying the wheel's SHA-256 (which pip checks).
const MAKE_INDEX: &str = r#"
import hashlib, os, sys, zipfile
root = sys.argv[1]
files = os.path.join(root, "files")
os.makedirs(files)
wheel = os.path.join(files, "tinypkg-0.1-py3-none-any.whl")
entries = {
    "tinypkg/__init__.py": "ANSWER = 42\n",
    "tinypkg-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n",
    "tinypkg-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: netproxy-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = "".join(f"{name},,\n" for name in entries) + "tinypkg-0.1.dist-info/RECORD,,\n"
with zipfile.ZipFile(wheel, "w") as z:
    for name, text in entries.items():
        z.writestr(name, text)
    z.writestr("tinypkg-0.1.dist-info/RECORD", record)
digest = hashlib.sha256(open(wheel, "rb").read()).hexdigest()
page = os.path.join(root, "simple", "tinypkg")
os.makedirs(page)
with open(os.path.join(root, "simple", "index.html"), "w") as f:
    f.write('<!DOCTYPE html><html><body><a href="tinypkg/">tinypkg</a></body></html>\n')
with open(os.path.join(page, "index.html"), "w") as f:
    f.write(f'<!DOCTYPE html><html><body><a href="../../files/tinypkg-0.1-py3-none-any.whl#sha256={digest}">tinypkg-0.1-py3-none-any.whl</a></body></html>\n')
"#;

/// Serves the folder `argv[1]` over HTTPS on 127.0.0.2 (an ephemeral port, printed first) with
/// the certificate and PKCS#8 key of the DER files `argv[2]` and `argv[3]`.
const SERVE_TLS: &str = r#"
import base64, functools, http.server, os, ssl, sys
root, cert, key = sys.argv[1:4]
def pem(label, path):
    der = open(path, "rb").read()
    return f"-----BEGIN {label}-----\n" + base64.encodebytes(der).decode() + f"-----END {label}-----\n"
chain = os.path.join(os.path.dirname(cert), "server.pem")
with open(chain, "w") as f:
    f.write(pem("CERTIFICATE", cert) + pem("PRIVATE KEY", key))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(chain)
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
httpd = http.server.ThreadingHTTPServer(("127.0.0.2", 0), handler)
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
print(httpd.server_address[1], flush=True)
httpd.serve_forever()
"#;

/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Under `run --mitm` in limited mode, `pip download` from a loopback PyPI index over HTTPS
/// works with no flag of its own: pip trusts netproxy's leaves through `PIP_CERT`, its GETs
/// pass limited mode, the wheel's hash checks out. pip is kept off every config file, cache
/// and version check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pip_downloads_through_the_proxy_under_run_mitm() {
    let Some(python) = python_with_pip() else {
        eprintln!("note: skipped: no python3 with pip");
        return;
    };
    let w = world().await;
    let www = w.home.path().join("www");
    let made = Command::new(&python)
        .args(["-c", MAKE_INDEX])
        .arg(&www)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    // The index's TLS server, with a certificate of the test CA netproxy trusts.
    let ca = proxy_test_support::TestCa::new().unwrap();
    let (cert, key) = ca.issue(&["pypi.test"]).unwrap();
    let tls = w.home.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    std::fs::write(tls.join("cert.der"), cert.as_ref()).unwrap();
    std::fs::write(tls.join("key.der"), key.secret_der()).unwrap();
    // netproxy's SSL_CERT_FILE (read when it starts) names this CA too.
    let both = std::fs::read_to_string(&w.test_ca).unwrap() + ca.cert_pem();
    std::fs::write(&w.test_ca, both).unwrap();
    crate::support::resolves(&w.dns, "pypi.test", "127.0.0.2");
    let mut server = Killed(
        Command::new(&python)
            .args(["-u", "-c", SERVE_TLS])
            .arg(&www)
            .arg(tls.join("cert.der"))
            .arg(tls.join("key.der"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("{line:?}"));

    let dest = w.home.path().join("downloads");
    let report = w.home.path().join("report.json");
    let script = format!(
        "PIP_CONFIG_FILE=/dev/null PIP_NO_CACHE_DIR=1 PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
         {python} -m pip download --no-deps --disable-pip-version-check \
         --index-url https://pypi.test:{port}/simple/ tinypkg -d {dest}",
        python = python.display(),
        dest = dest.display(),
    );
    let out = ran(w.run(
        &["--allow", "pypi.test", "--report", report.to_str().unwrap()],
        &script,
    ));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let wheel = dest.join("tinypkg-0.1-py3-none-any.whl");
    assert_eq!(
        std::fs::read(&wheel).unwrap(),
        std::fs::read(www.join("files/tinypkg-0.1-py3-none-any.whl")).unwrap()
    );
    // It went through the proxy: intercepted, and each request judged inside TLS.
    let v = json(&std::fs::read_to_string(&report).unwrap());
    let inner: Vec<&serde_json::Value> = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["protocol"] == "https" && d["host"] == "pypi.test")
        .collect();
    assert!(inner.len() >= 2, "{v:#}");
    assert!(inner.iter().all(|d| d["decision"] == "allow"), "{v:#}");
}

/// Under `run --mitm` in full mode with hooks on the repository's host, `git clone https://`
/// works with no flag of its own: git trusts netproxy's leaves through `GIT_SSL_CAINFO`, and
/// its requests (dumb HTTP: `info/refs`, `HEAD`, objects) are the GETs the hook admits, judged
/// inside TLS; a request no hook matches is refused there, and the hook's secret variable never
/// reaches the child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clones_over_https_through_a_hooked_host_under_run_mitm() {
    let w = world().await;
    let www = w.home.path().join("www");
    let repo = www.join("repo.git");
    crate::support::dumb_http_repo(w.home.path(), &repo, "hello through the hook\n");

    // The repository's TLS server, with a certificate of a test CA netproxy trusts.
    let ca = proxy_test_support::TestCa::new().unwrap();
    let (cert, key) = ca.issue(&["git.test"]).unwrap();
    let tls = w.home.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    std::fs::write(tls.join("cert.der"), cert.as_ref()).unwrap();
    std::fs::write(tls.join("key.der"), key.secret_der()).unwrap();
    let both = std::fs::read_to_string(&w.test_ca).unwrap() + ca.cert_pem();
    std::fs::write(&w.test_ca, both).unwrap();
    crate::support::resolves(&w.dns, "git.test", "127.0.0.2");
    let mut server = Killed(
        Command::new("python3")
            .args(["-u", "-c", SERVE_TLS])
            .arg(&www)
            .arg(tls.join("cert.der"))
            .arg(tls.join("key.der"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("{line:?}"));

    let hooks = w.home.path().join("hooks.toml");
    std::fs::write(
        &hooks,
        r#"
[network.mitm]
enabled = true
[network.mitm.hooks.clone]
host = "git.test"
methods = ["GET"]
path_prefixes = ["/repo.git/"]
action = ["token"]
[network.mitm.actions.token]
inject_request_headers = [{ name = "x-hook-token", secret_env_var = "GIT_HOOK_SECRET" }]
"#,
    )
    .unwrap();
    let dns = format!("dns.nameservers=[\"{}\"]", w.dns.addr());
    let into = w.home.path().join("cloned");
    let report = w.home.path().join("report.json");
    let script = format!(
        "GIT_CONFIG_NOSYSTEM=1 HOME={home} git clone -q https://git.test:{port}/repo.git {into} \
         && echo \"secret=${{GIT_HOOK_SECRET:-unset}}\" \
         && curl -s -o /dev/null -w '%{{http_code}}\\n' https://git.test:{port}/other",
        home = w.home.path().display(),
        into = into.display(),
    );
    let mut cmd = w.home.command(&[
        "run",
        "-c",
        &dns,
        "-c",
        "treat_as_public=[\"127.0.0.2/32\"]",
        "--config",
        hooks.to_str().unwrap(),
        "--mitm",
        "--allow",
        "git.test",
        "--report",
        report.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    cmd.current_dir(w.home.path())
        .env("SSL_CERT_FILE", &w.test_ca)
        .env("GIT_HOOK_SECRET", "hook-secret-for-git")
        .env("RUST_LOG", "netproxy=debug,proxy_mitm=debug");
    let out = ran(cmd);
    assert_eq!(
        out.code,
        0,
        "{}{}\nreport: {}",
        out.stdout,
        out.stderr,
        std::fs::read_to_string(&report).unwrap_or_default()
    );
    assert_eq!(
        std::fs::read_to_string(into.join("hello.txt")).unwrap(),
        "hello through the hook\n"
    );
    assert!(out.stdout.contains("secret=unset"), "{}", out.stdout);
    assert!(out.stdout.trim_end().ends_with("403"), "{}", out.stdout);
    let v = json(&std::fs::read_to_string(&report).unwrap());
    let inner: Vec<&serde_json::Value> = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["protocol"] == "https" && d["host"] == "git.test")
        .collect();
    assert!(
        inner.iter().filter(|d| d["decision"] == "allow").count() >= 2,
        "{v:#}"
    );
    assert!(
        inner
            .iter()
            .any(|d| d["decision"] == "deny" && d["reason"] == "mitm_hook_denied"),
        "{v:#}"
    );
    assert!(
        !out.stderr.contains("hook-secret-for-git"),
        "{}",
        out.stderr
    );
}
