//! The trust bundle that `netproxy run` gives its child when it intercepts HTTPS (docs/mitm.md,
//! "The trust bundle"): root certificates the caller gives (the platform's) and netproxy's CA
//! certificate in one PEM file of the CA directory, named by the SHA-256 of its content. A
//! bundle is never rewritten: other content is another name, and a file that already has the
//! name is reused only when it holds exactly that content.

use std::fmt::Write as _;
use std::path::PathBuf;

use base64::Engine as _;
use rustls::pki_types::CertificateDer;

use crate::files;
use crate::{Ca, CaError, CaStore};

/// What every bundle's file name starts with; the rest is the SHA-256 of its content (lowercase
/// hex) and `.pem`.
pub const BUNDLE_PREFIX: &str = "ca-bundle-";

/// A trust bundle on disk, from [`CaStore::write_bundle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundle {
    /// The file: `DIR/ca-bundle-<sha256 hex of its content>.pem`, mode 0644.
    pub path: PathBuf,
    /// How many root certificates it holds besides netproxy's CA.
    pub roots: usize,
    /// Whether this call wrote it (otherwise an identical file was there and is reused).
    pub created: bool,
}

/// The bundle's text: each of `roots` once, in the order of their DER bytes (so the same set of
/// roots always makes the same file, whatever order it was read in), netproxy's CA `ca` left
/// out of them, then `ca` last; every certificate as a PEM block of 64-character lines. Also
/// how many roots it holds.
pub fn bundle_pem(ca: &CertificateDer<'_>, roots: &[CertificateDer<'_>]) -> (String, usize) {
    let mut sorted: Vec<&[u8]> = roots
        .iter()
        .map(AsRef::as_ref)
        .filter(|der| *der != ca.as_ref())
        .collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut text = String::new();
    for der in &sorted {
        push_pem(&mut text, der);
    }
    push_pem(&mut text, ca.as_ref());
    (text, sorted.len())
}

fn push_pem(out: &mut String, der: &[u8]) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        // Base64 is ASCII: any byte offset is a character boundary.
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str("-----END CERTIFICATE-----\n");
}

/// `ca-bundle-<sha256 hex of text>.pem`.
pub fn bundle_name(text: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text);
    let mut name = String::with_capacity(BUNDLE_PREFIX.len() + 64 + 4);
    name.push_str(BUNDLE_PREFIX);
    for b in digest.as_ref() {
        let _ = write!(name, "{b:02x}");
    }
    name.push_str(".pem");
    name
}

impl CaStore {
    /// The trust bundle of `roots` (the platform's root certificates, as the caller read them)
    /// and `ca`, in this store's directory: written as a new file (mode 0644, under a temporary
    /// name then hard-linked, so nothing is ever overwritten), or, when a file of its name
    /// exists, reused if it is a regular file of netproxy's user that no one else may write and
    /// that holds exactly the bundle's content. A symlink, another file type or owner, or other
    /// content is refused ([`CaError::Unsafe`], [`CaError::BundleMismatch`]) and left as it is.
    pub fn write_bundle(
        &self,
        ca: &Ca,
        roots: &[CertificateDer<'_>],
    ) -> Result<TrustBundle, CaError> {
        let (text, count) = bundle_pem(ca.cert_der(), roots);
        let name = bundle_name(text.as_bytes());
        let dir = self.dir();
        files::check_dir(dir)?;
        let path = dir.join(&name);
        let found = |created| TrustBundle {
            path: path.clone(),
            roots: count,
            created,
        };
        if reuse(&path, text.as_bytes())? {
            return Ok(found(false));
        }
        match files::write_new(dir, &name, text.as_bytes(), 0o644) {
            Ok(_) => Ok(found(true)),
            // Another netproxy wrote it at the same moment: the same checks apply.
            Err(CaError::Overwrite { .. }) if reuse(&path, text.as_bytes())? => Ok(found(false)),
            Err(CaError::Overwrite { .. }) => Err(CaError::BundleMismatch { path }),
            Err(e) => Err(e),
        }
    }
}

/// Whether the file at `path` is there and may be reused as the bundle `text`: `false` when
/// nothing is there; an error when it may not.
fn reuse(path: &std::path::Path, text: &[u8]) -> Result<bool, CaError> {
    match files::read_existing(path, text.len())? {
        None => Ok(false),
        Some(held) if held == text => Ok(true),
        Some(_) => Err(CaError::BundleMismatch {
            path: path.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::MetadataExt;

    use rustls::pki_types::pem::PemObject;

    use super::*;

    fn store() -> (tempfile::TempDir, CaStore, Ca) {
        let dir = tempfile::tempdir().unwrap();
        let store = CaStore::new(dir.path().join("ca"));
        let ca = store.load_or_create().unwrap().ca;
        (dir, store, ca)
    }

    fn root() -> CertificateDer<'static> {
        Ca::generate().unwrap().cert_der().clone()
    }

    #[test]
    fn the_bundle_holds_each_root_once_then_the_ca_and_is_named_by_its_hash() {
        let (_dir, store, ca) = store();
        let (a, b) = (root(), root());
        // Duplicates, netproxy's own CA among the roots, any order: the same file.
        let given = [b.clone(), a.clone(), b.clone(), ca.cert_der().clone()];
        let bundle = store.write_bundle(&ca, &given).unwrap();
        assert!(bundle.created);
        assert_eq!(bundle.roots, 2);
        let text = std::fs::read(&bundle.path).unwrap();
        let name = bundle.path.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, bundle_name(&text));
        assert!(name.starts_with("ca-bundle-") && name.len() == "ca-bundle-.pem".len() + 64);
        let certs: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(&text)
            .collect::<Result<_, _>>()
            .unwrap();
        let mut roots = vec![a.clone(), b.clone()];
        roots.sort_unstable_by(|x, y| x.as_ref().cmp(y.as_ref()));
        roots.push(ca.cert_der().clone());
        assert_eq!(certs, roots);
        assert_eq!(
            std::fs::metadata(&bundle.path).unwrap().mode() & 0o7777,
            0o644
        );

        // The same roots in another order: the same file, reused as it is.
        let before = std::fs::metadata(&bundle.path).unwrap();
        let again = store.write_bundle(&ca, &[a, b]).unwrap();
        assert_eq!(again.path, bundle.path);
        assert!(!again.created);
        let after = std::fs::metadata(&bundle.path).unwrap();
        assert_eq!(before.ino(), after.ino());
        assert_eq!(before.mtime_nsec(), after.mtime_nsec());
    }

    #[test]
    fn pem_lines_are_64_characters() {
        let (text, n) = bundle_pem(&root(), &[]);
        assert_eq!(n, 0);
        let body: Vec<&str> = text.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(body.len() > 1, "{text}");
        assert!(
            body[..body.len() - 1].iter().all(|l| l.len() == 64),
            "{text}"
        );
        assert!(!body.last().unwrap().is_empty());
    }

    #[test]
    fn a_file_of_the_name_with_other_content_or_a_symlink_is_refused_and_kept() {
        let (dir, store, ca) = store();
        let (text, _) = bundle_pem(ca.cert_der(), &[]);
        let path = store.dir().join(bundle_name(text.as_bytes()));

        std::fs::write(&path, "other\n").unwrap();
        let err = store.write_bundle(&ca, &[]).unwrap_err();
        assert!(matches!(err, CaError::BundleMismatch { .. }), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "other\n");
        // A longer file that starts with the bundle's content is other content too.
        std::fs::write(&path, format!("{text}x")).unwrap();
        assert!(matches!(
            store.write_bundle(&ca, &[]),
            Err(CaError::BundleMismatch { .. })
        ));
        std::fs::remove_file(&path).unwrap();

        // A symlink, even to a file with exactly the bundle's content.
        let target = dir.path().join("elsewhere.pem");
        std::fs::write(&target, &text).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = store.write_bundle(&ca, &[]).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_symlink());
        std::fs::remove_file(&path).unwrap();

        // A file others may write: refused although its content is right.
        std::fs::write(&path, &text).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        let err = store.write_bundle(&ca, &[]).unwrap_err();
        assert!(err.to_string().contains("may write it"), "{err}");
        std::fs::remove_file(&path).unwrap();

        // A directory.
        std::fs::create_dir(&path).unwrap();
        let err = store.write_bundle(&ca, &[]).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        std::fs::remove_dir(&path).unwrap();

        // Nothing there: written, and no temporary file is left.
        assert!(store.write_bundle(&ca, &[]).unwrap().created);
        let mut names: Vec<_> = std::fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert!(names[0].starts_with(BUNDLE_PREFIX), "{names:?}");
        assert_eq!(names[1..], ["ca.key", "ca.pem"]);
    }
}
