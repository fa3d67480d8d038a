//! The CA directory's rules through the public API: load-or-create, both files or neither, the
//! key's checks, what an error shows.
#![allow(missing_docs, clippy::unwrap_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use proxy_mitm::{CA_COMMON_NAME, CaError, CaStore};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

fn store() -> (tempfile::TempDir, CaStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = CaStore::new(dir.path().join("home/ca"));
    (dir, store)
}

#[test]
fn created_once_with_its_modes_then_loaded_unchanged() {
    let (_dir, store) = store();
    assert!(store.load().unwrap().is_none());
    let first = store.load_or_create().unwrap();
    assert!(first.created);
    assert_eq!(mode(store.dir()), 0o700);
    assert_eq!(mode(&store.cert_path()), 0o644);
    assert_eq!(mode(&store.key_path()), 0o600);
    let info = first.ca.info();
    assert_eq!(info.subject, format!("CN={CA_COMMON_NAME}"));
    assert!(info.not_before < info.not_after);
    assert_eq!(info.fingerprint().len(), 32 * 3 - 1);
    let (cert, key) = (
        std::fs::read(store.cert_path()).unwrap(),
        std::fs::read(store.key_path()).unwrap(),
    );
    assert_eq!(cert, first.ca.cert_pem().as_bytes());

    let second = store.load_or_create().unwrap();
    assert!(!second.created);
    assert_eq!(second.ca.info(), first.ca.info());
    assert_eq!(std::fs::read(store.cert_path()).unwrap(), cert);
    assert_eq!(std::fs::read(store.key_path()).unwrap(), key);
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.cert_der(), first.ca.cert_der());
}

#[test]
fn one_file_without_the_other_is_refused() {
    for missing in ["ca.pem", "ca.key"] {
        let (_dir, store) = store();
        store.load_or_create().unwrap();
        std::fs::remove_file(store.dir().join(missing)).unwrap();
        for err in [
            store.load().unwrap_err(),
            store.load_or_create().unwrap_err(),
        ] {
            assert!(matches!(err, CaError::Incomplete { .. }), "{err}");
            let text = err.to_string();
            assert!(text.contains("both MITM CA files must exist"), "{text}");
            assert!(text.contains(&store.key_path().display().to_string()));
        }
        // Nothing was created in the missing one's place.
        assert!(!store.dir().join(missing).exists());
    }
}

#[test]
fn a_symlinked_key_is_refused() {
    let (dir, store) = store();
    store.load_or_create().unwrap();
    let elsewhere = dir.path().join("elsewhere.key");
    std::fs::rename(store.key_path(), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, store.key_path()).unwrap();
    let err = store.load_or_create().unwrap_err();
    assert!(matches!(err, CaError::Symlink { .. }), "{err}");
    assert!(err.to_string().contains("refusing to use symlink"), "{err}");
    assert!(
        std::fs::symlink_metadata(store.key_path())
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn a_key_its_group_or_others_can_read_is_refused() {
    for bad in [0o640, 0o604, 0o660, 0o700] {
        let (_dir, store) = store();
        store.load_or_create().unwrap();
        std::fs::set_permissions(store.key_path(), std::fs::Permissions::from_mode(bad)).unwrap();
        let result = store.load();
        if bad & 0o077 == 0 {
            // Owner-only bits (even execute) are fine.
            result.unwrap().unwrap();
            continue;
        }
        let err = result.unwrap_err();
        assert!(matches!(err, CaError::Permissive { .. }), "{bad:o}: {err}");
        assert!(
            err.to_string().contains(&format!(
                "must not be group/world accessible (mode=0{bad:o}; expected <= 0600)"
            )),
            "{err}"
        );
    }
}

#[test]
fn a_key_of_another_user_or_not_a_file_is_refused() {
    let (_dir, store) = store();
    store.load_or_create().unwrap();
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(store.key_path(), Some(65534), None).unwrap();
        let err = store.load().unwrap_err();
        assert!(
            matches!(err, CaError::WrongOwner { owner: 65534, .. }),
            "{err}"
        );
        std::fs::remove_file(store.key_path()).unwrap();
    } else {
        std::fs::remove_file(store.key_path()).unwrap();
    }
    std::fs::create_dir(store.key_path()).unwrap();
    let err = store.load().unwrap_err();
    assert!(matches!(err, CaError::NotRegular { .. }), "{err}");
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let (_dir, a) = store();
    let (_dir2, b) = store();
    a.load_or_create().unwrap();
    b.load_or_create().unwrap();
    std::fs::remove_file(a.key_path()).unwrap();
    std::fs::copy(b.key_path(), a.key_path()).unwrap();
    std::fs::set_permissions(a.key_path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = a.load().unwrap_err();
    assert!(
        err.to_string()
            .contains("is not the key of the certificate"),
        "{err}"
    );

    std::fs::write(a.cert_path(), "not a certificate").unwrap();
    let err = a.load().unwrap_err();
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
}

#[test]
fn errors_and_debug_output_never_show_the_key() {
    let (_dir, store) = store();
    let loaded = store.load_or_create().unwrap();
    let key = std::fs::read_to_string(store.key_path()).unwrap();
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!format!("{loaded:?}").contains(&body));
    std::fs::set_permissions(store.key_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = store.load().unwrap_err();
    assert!(!format!("{err} {err:?}").contains(&body));
}

/// Whoever can write the CA's directory or certificate can swap the certificate clients trust:
/// a symlinked or group-writable directory, a symlinked, group-writable or non-regular
/// certificate, and a key with a second name are refused.
#[test]
fn the_directory_the_certificate_and_extra_key_names_are_checked() {
    let refused = |store: &CaStore, needle: &str| {
        let err = store.load().unwrap_err();
        assert!(matches!(err, CaError::Unsafe { .. }), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    };
    // A group-writable directory.
    let (_dir, ca) = store();
    ca.load_or_create().unwrap();
    std::fs::set_permissions(ca.dir(), std::fs::Permissions::from_mode(0o770)).unwrap();
    refused(&ca, "may write it");
    std::fs::set_permissions(ca.dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    // A group-writable certificate, then a certificate that is a symlink, then a FIFO.
    std::fs::set_permissions(ca.cert_path(), std::fs::Permissions::from_mode(0o664)).unwrap();
    refused(&ca, "may write it");
    let real = ca.dir().join("real.pem");
    std::fs::rename(ca.cert_path(), &real).unwrap();
    std::os::unix::fs::symlink(&real, ca.cert_path()).unwrap();
    refused(&ca, "symbolic link");
    std::fs::remove_file(ca.cert_path()).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        ca.cert_path(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    refused(&ca, "not a regular file");
    std::fs::remove_file(ca.cert_path()).unwrap();
    std::fs::rename(&real, ca.cert_path()).unwrap();
    std::fs::set_permissions(ca.cert_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    ca.load().unwrap().unwrap();
    // A second name for the key.
    let copy = ca.dir().join("copy.key");
    std::fs::hard_link(ca.key_path(), &copy).unwrap();
    refused(&ca, "2 names");
    std::fs::remove_file(&copy).unwrap();
    ca.load().unwrap().unwrap();

    // A symlinked CA directory.
    let (dir, ca) = store();
    ca.load_or_create().unwrap();
    let moved = dir.path().join("elsewhere");
    std::fs::rename(ca.dir(), &moved).unwrap();
    std::os::unix::fs::symlink(&moved, ca.dir()).unwrap();
    refused(&ca, "symbolic link");
}
