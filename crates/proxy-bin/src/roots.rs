//! Root certificates read from disk (docs/mitm.md, "Upstream roots" and "The trust bundle"):
//! the machine's own store, read from its well-known paths, never from what `SSL_CERT_FILE` or
//! `SSL_CERT_DIR` name instead; and the upstream roots, that store plus what those variables
//! of netproxy's own environment add.
//!
//! `rustls_native_certs::load_native_certs` is not used: when either variable is set it reads
//! what they name *instead of* the platform's store, so a corporate root given in
//! `SSL_CERT_FILE` would drop every public root, and the child's bundle would be built from
//! whatever file netproxy happened to inherit. Its path loader is used on the paths it would
//! probe with neither variable set, so the store is the one it reads on a clean machine.

use std::path::Path;

use proxy_mitm::CertificateDer;

/// The system bundle files of Linux distributions; the first that exists is read.
const PLATFORM_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Arch, Gentoo
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // Fedora, RHEL 7+
    "/etc/pki/tls/certs/ca-bundle.crt",   // older Fedora, RHEL 6
    "/etc/ssl/ca-bundle.pem",             // openSUSE
    "/etc/pki/tls/cacert.pem",            // OpenELEC
    "/etc/ssl/cert.pem",                  // Alpine
    "/opt/etc/ssl/certs/ca-certificates.crt", // Entware
    "/etc/ssl/certs/cacert.pem",          // OpenHarmony
];

/// The system certificate directories (OpenSSL's `CApath`); each that exists is read.
const PLATFORM_DIRS: &[&str] = &[
    "/etc/ssl/certs",
    "/etc/pki/tls/certs",
    "/etc/security/certificates",
];

/// Certificates read, each once (sorted by their DER bytes), and what could not be read.
#[derive(Debug, Default)]
pub(crate) struct Roots {
    pub(crate) certs: Vec<CertificateDer<'static>>,
    /// One line per file or directory that could not be read, for the log.
    pub(crate) warnings: Vec<String>,
}

impl Roots {
    fn add(&mut self, what: &str, loaded: rustls_native_certs::CertificateResult) {
        self.certs.extend(loaded.certs);
        self.warnings
            .extend(loaded.errors.iter().map(|e| format!("{what}: {e}")));
    }

    fn dedup(mut self) -> Self {
        self.certs
            .sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
        self.certs.dedup();
        self
    }
}

/// The machine's root store: the first system bundle file that exists and every system
/// certificate directory, whatever netproxy's environment says.
pub(crate) fn platform_roots() -> Roots {
    let files: Vec<&Path> = PLATFORM_FILES.iter().map(Path::new).collect();
    let dirs: Vec<&Path> = PLATFORM_DIRS.iter().map(Path::new).collect();
    read_platform(&files, &dirs)
}

fn read_platform(files: &[&Path], dirs: &[&Path]) -> Roots {
    let mut roots = Roots::default();
    if let Some(file) = files.iter().find(|f| f.is_file()) {
        roots.add(
            "the platform's root store",
            rustls_native_certs::load_certs_from_paths(Some(file), None),
        );
    }
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        roots.add(
            "the platform's root store",
            rustls_native_certs::load_certs_from_paths(None, Some(dir)),
        );
    }
    if roots.certs.is_empty() {
        roots.warnings.push(format!(
            "no platform root certificates found (looked for {} and in {})",
            PLATFORM_FILES.join(", "),
            PLATFORM_DIRS.join(", ")
        ));
    }
    roots.dedup()
}

/// The roots that verify upstream servers: `platform` plus the certificates of the file named
/// by netproxy's own `SSL_CERT_FILE` and of the directories of its `SSL_CERT_DIR` (`:`-separated),
/// as `env` gives them. They add to the platform's store; they never replace it.
pub(crate) fn upstream_roots(platform: Roots, env: &impl Fn(&str) -> Option<String>) -> Roots {
    let mut roots = platform;
    if let Some(file) = env("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
        roots.add(
            "SSL_CERT_FILE",
            rustls_native_certs::load_certs_from_paths(Some(Path::new(&file)), None),
        );
    }
    if let Some(dirs) = env("SSL_CERT_DIR").filter(|d| !d.is_empty()) {
        for dir in std::env::split_paths(&dirs).filter(|d| !d.as_os_str().is_empty()) {
            roots.add(
                "SSL_CERT_DIR",
                rustls_native_certs::load_certs_from_paths(None, Some(&dir)),
            );
        }
    }
    roots.dedup()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn cert() -> (CertificateDer<'static>, String) {
        let ca = proxy_mitm::Ca::generate().unwrap();
        (ca.cert_der().clone(), ca.cert_pem().to_owned())
    }

    #[test]
    fn ssl_cert_file_and_dir_add_to_the_platform_roots() {
        let tmp = tempfile::tempdir().unwrap();
        let (platform, platform_pem) = cert();
        let (corporate, corporate_pem) = cert();
        let (in_dir, in_dir_pem) = cert();
        let store = tmp.path().join("ca-certificates.crt");
        std::fs::write(&store, &platform_pem).unwrap();
        let extra = tmp.path().join("corporate.pem");
        std::fs::write(&extra, format!("{corporate_pem}{platform_pem}")).unwrap();
        let dir = tmp.path().join("dir");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.pem"), &in_dir_pem).unwrap();

        // The first platform file that exists is read.
        let missing = tmp.path().join("missing.crt");
        let base = read_platform(&[&missing, &store], &[]);
        assert_eq!(base.certs, std::slice::from_ref(&platform));
        assert!(base.warnings.is_empty(), "{:?}", base.warnings);

        let (file, dirs) = (extra.display().to_string(), dir.display().to_string());
        let env = |k: &str| match k {
            "SSL_CERT_FILE" => Some(file.clone()),
            "SSL_CERT_DIR" => Some(format!("{dirs}:")),
            _ => None,
        };
        let roots = upstream_roots(base, &env);
        let mut want = vec![platform.clone(), corporate, in_dir];
        want.sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
        assert_eq!(roots.certs, want, "each once, the platform's kept");

        // Without the variables: the platform's roots alone.
        let base = read_platform(&[&store], &[]);
        assert_eq!(upstream_roots(base, &|_: &str| None).certs, [platform]);
    }

    #[test]
    fn an_unreadable_ssl_cert_file_is_a_warning_and_the_platform_roots_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let (platform, pem) = cert();
        let store = tmp.path().join("store.crt");
        std::fs::write(&store, pem).unwrap();
        let base = read_platform(&[&store], &[]);
        let gone = tmp.path().join("gone.pem").display().to_string();
        let roots = upstream_roots(base, &|k: &str| {
            (k == "SSL_CERT_FILE").then(|| gone.clone())
        });
        assert_eq!(roots.certs, [platform]);
        assert_eq!(roots.warnings.len(), 1, "{:?}", roots.warnings);
        assert!(
            roots.warnings[0].starts_with("SSL_CERT_FILE: "),
            "{:?}",
            roots.warnings
        );
    }

    #[test]
    fn no_platform_store_is_a_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let none = read_platform(&[&tmp.path().join("nothing")], &[]);
        assert!(none.certs.is_empty());
        assert!(none.warnings[0].contains("no platform root certificates"));
    }
}
