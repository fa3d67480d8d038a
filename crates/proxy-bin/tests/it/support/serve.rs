//! `netproxy serve` as a real process: started in a [`Home`] of its own with a config file
//! there, waited for through its ready file, its stderr collected; killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use proxy_test_support::{Curl, CurlOutput, DnsServer, Process};

use super::{AdminApi, Home, Ran, json, ran, wrapped};

/// A `netproxy serve` to start: by default HTTP on an ephemeral loopback port, no SOCKS, no
/// admin API, `RUST_LOG=info`, an empty config file.
#[derive(Debug)]
pub(crate) struct Builder {
    home: Home,
    args: Vec<String>,
    config: String,
    env: Vec<(String, String)>,
    wrap: Vec<String>,
    ready: Option<PathBuf>,
}

/// A `netproxy serve` to configure, then [`Builder::start`].
pub(crate) fn serve() -> Builder {
    Builder {
        home: Home::new(),
        args: Vec::new(),
        config: String::new(),
        env: vec![("RUST_LOG".into(), "info".into())],
        wrap: Vec::new(),
        ready: None,
    }
}

impl Builder {
    /// The folder the process will run from, known before it starts (for a config that names
    /// files in it).
    pub(crate) fn path(&self) -> &Path {
        self.home.path()
    }

    /// Adds arguments.
    pub(crate) fn args<S: AsRef<str>>(mut self, args: &[S]) -> Self {
        self.args.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Resolves through the in-process DNS server (a query unanswered fails in 500 ms).
    pub(crate) fn dns(self, dns: &DnsServer) -> Self {
        let ns = format!("dns.nameservers=[\"{}\"]", dns.addr());
        self.args(&["-c", &ns, "-c", "dns.timeout_ms=500"])
    }

    /// Treats 127.0.0.2, where [`super::public_origin`] listens, as a public address.
    pub(crate) fn public(self) -> Self {
        self.args(&["-c", "treat_as_public=[\"127.0.0.2/32\"]"])
    }

    /// The admin API on an ephemeral loopback port.
    pub(crate) fn admin(self) -> Self {
        self.args(&["--admin", "127.0.0.1:0"])
    }

    /// The SOCKS5 front-end on an ephemeral loopback port.
    pub(crate) fn socks(self) -> Self {
        self.args(&["--socks", "127.0.0.1:0"])
    }

    /// A requirements file (`--requirements`) in its folder, with `text`; its path.
    pub(crate) fn requirements(self, text: &str) -> (Self, PathBuf) {
        let path = self.path().join("requirements.toml");
        std::fs::write(&path, text).unwrap();
        let b = self.args(&["--requirements", &path.display().to_string()]);
        (b, path)
    }

    /// The config file's content (`--config`).
    pub(crate) fn config(mut self, text: &str) -> Self {
        text.clone_into(&mut self.config);
        self
    }

    /// Adds an environment variable.
    pub(crate) fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts the binary through `prefix` (e.g. `nsenter ... --`).
    pub(crate) fn wrap(mut self, prefix: Vec<String>) -> Self {
        self.wrap = prefix;
        self
    }

    /// Where the ready file goes (by default in the home folder).
    pub(crate) fn ready_file(mut self, path: &Path) -> Self {
        self.ready = Some(path.to_owned());
        self
    }

    fn has(&self, arg: &str) -> bool {
        self.args.iter().any(|a| a == arg)
    }

    fn ready_path(&self) -> PathBuf {
        self.ready
            .clone()
            .unwrap_or_else(|| self.path().join("ready.json"))
    }

    fn command(&self) -> Command {
        let cfg = self.path().join("netproxy.toml");
        std::fs::write(&cfg, &self.config).unwrap();
        let mut args: Vec<String> = vec!["serve".into()];
        for (given, absent, default) in [
            ("--http", "", &["--http", "127.0.0.1:0"][..]),
            ("--socks", "--no-socks", &["--no-socks"][..]),
            ("--admin", "--no-admin", &["--no-admin"][..]),
        ] {
            if !self.has(given) && !self.has(absent) {
                args.extend(default.iter().map(|a| (*a).to_owned()));
            }
        }
        args.extend(["--config".into(), cfg.display().to_string()]);
        args.extend([
            "--ready-file".into(),
            self.ready_path().display().to_string(),
        ]);
        args.extend(self.args.iter().cloned());
        let inner = self.home.command(&args);
        let mut cmd = if self.wrap.is_empty() {
            inner
        } else {
            wrapped(&self.wrap, &inner)
        };
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    }

    /// Runs a start that is expected to fail: how it ended. It wrote no ready file.
    pub(crate) fn start_fails(self) -> Ran {
        let r = ran(self.command());
        assert!(!self.ready_path().exists(), "ready after all: {}", r.stderr);
        r
    }

    /// Starts the process and waits until it is ready.
    pub(crate) fn start(self) -> Serve {
        let (process, ready) = Process::spawn_ready(self.command(), &self.ready_path());
        let v = json(&ready);
        if self.wrap.is_empty() {
            assert_eq!(v["pid"], process.id());
        }
        assert_eq!(v["admin"].is_null(), !self.has("--admin"), "{v}");
        assert_eq!(v["socks"].is_null(), !self.has("--socks"), "{v}");
        let addr = |key: &str| v[key].as_str().map(str::to_owned);
        Serve {
            http: addr("http").unwrap(),
            socks: addr("socks"),
            admin: addr("admin"),
            process,
            home: self.home,
        }
    }
}

/// A running `netproxy serve`.
#[derive(Debug)]
pub(crate) struct Serve {
    pub(crate) process: Process,
    /// The HTTP proxy's address.
    pub(crate) http: String,
    pub(crate) socks: Option<String>,
    pub(crate) admin: Option<String>,
    home: Home,
}

impl Serve {
    /// The folder it runs from.
    pub(crate) fn path(&self) -> &Path {
        self.home.path()
    }

    /// Its config file.
    pub(crate) fn config_path(&self) -> PathBuf {
        self.path().join("netproxy.toml")
    }

    /// Writes its config file.
    pub(crate) fn write_config(&self, text: &str) {
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// The admin token it generated (the file `admin.token`, private to its owner).
    pub(crate) fn token(&self) -> String {
        let path = self.home.user_dir().join("admin.token");
        assert_eq!(super::mode(&path), 0o600);
        std::fs::read_to_string(path).unwrap().trim().to_owned()
    }

    /// Its admin API, called with `token`.
    pub(crate) fn api(&self, token: Option<&str>) -> AdminApi {
        AdminApi::new(self.admin.as_deref().expect("an admin API"), token)
    }

    /// curl through its HTTP proxy.
    pub(crate) fn curl(&self) -> Curl {
        Curl::via(format!("http://{}", self.http))
    }

    /// `curl URL` through its HTTP proxy.
    pub(crate) fn get(&self, url: &str) -> CurlOutput {
        self.curl().get(url)
    }

    /// Stops it with SIGTERM; it must exit 0. Its stderr.
    pub(crate) fn stop(self) -> String {
        let (code, stderr) = self.process.stop();
        assert_eq!(code, Some(0), "{stderr}");
        stderr
    }
}
