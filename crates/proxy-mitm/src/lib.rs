//! netproxy's HTTPS interception: the MITM certificate authority that netproxy keeps on disk
//! ([`CaStore`], [`Ca`]), the leaf certificates it issues from it for each intercepted host
//! ([`LeafCache`], [`Leaf`]), and the interceptor ([`MitmInterceptor`]): a TLS server for the
//! client, a verified TLS client upstream, and every request inside the tunnel judged by the
//! gate (limited mode and hooks inside TLS), with the header actions of matching hooks applied
//! ([`HookActions`]). docs/mitm.md says when interception happens.
//!
//! The CA is made with rcgen on ring (ECDSA P-256), stored as `ca.pem` (0644) and `ca.key`
//! (0600) under a directory the caller gives, and loaded only when the rules of docs/mitm.md
//! hold (both files or neither, the key a regular file of netproxy's user that nobody else can
//! read). The private key never appears in `Debug` output or in an error.
//!
//! The trust bundle for `netproxy run`'s child ([`CaStore::write_bundle`], [`TrustBundle`]) is
//! the root certificates the caller read and the CA's certificate, in a file of the CA
//! directory named by its content's hash.
#![forbid(unsafe_code)]

mod actions;
mod bundle;
mod ca;
mod files;
mod intercept;
mod leaf;

pub use actions::{Action, ActionError, HookActions};
pub use bundle::{BUNDLE_PREFIX, TrustBundle, bundle_name, bundle_pem};
pub use ca::{CA_COMMON_NAME, Ca, CaInfo, CaStore, Loaded};
pub use intercept::{CLIENT_FIRST_WAIT, MitmError, MitmInterceptor};
pub use leaf::{LEAF_VALIDITY, Leaf, LeafCache, RENEW_MARGIN};
/// The DER certificates [`MitmInterceptor::new`] takes as upstream roots.
pub use rustls::pki_types::CertificateDer;

use std::path::PathBuf;

/// Why the CA could not be created, loaded or used. Every variant names the file it concerns;
/// none carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// A file operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("read", "create", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// Only one of the two CA files exists.
    #[error(
        "both MITM CA files must exist (cert={}, key={}); restore the missing one, or remove the other to create a new CA",
        cert.display(),
        key.display()
    )]
    Incomplete {
        /// The certificate's path.
        cert: PathBuf,
        /// The key's path.
        key: PathBuf,
    },
    /// The key's path is a symbolic link.
    #[error("refusing to use symlink for the MITM CA key {}", path.display())]
    Symlink {
        /// The key's path.
        path: PathBuf,
    },
    /// The key is not a regular file.
    #[error("the MITM CA key {} is not a regular file", path.display())]
    NotRegular {
        /// The key's path.
        path: PathBuf,
    },
    /// The key belongs to another user.
    #[error("the MITM CA key {} is owned by uid {owner}, not by netproxy's user (uid {expected})", path.display())]
    WrongOwner {
        /// The key's path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// netproxy's effective user id.
        expected: u32,
    },
    /// The key can be read or written by its group or by others.
    #[error("the MITM CA key {} must not be group/world accessible (mode={mode:04o}; expected <= 0600)", path.display())]
    Permissive {
        /// The key's path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A new file's name is already taken.
    #[error("refusing to overwrite existing file {}", path.display())]
    Overwrite {
        /// The existing file.
        path: PathBuf,
    },
    /// A CA file or its directory is not safe to trust (a symlink, another owner, writable by
    /// others, more than one name).
    #[error("refusing the MITM CA path {}: {why}", path.display())]
    Unsafe {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A file has the trust bundle's name but not its content.
    #[error(
        "refusing to reuse {}: a file of the trust bundle's name holds other content (remove it and netproxy writes the bundle again)",
        path.display()
    )]
    BundleMismatch {
        /// The file.
        path: PathBuf,
    },
    /// A file's content is not what it must be.
    #[error("invalid MITM CA file {}: {why}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// rcgen could not make or sign a certificate.
    #[error("cannot make a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
}
