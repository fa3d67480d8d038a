//! The MITM certificate authority: made once, kept in a directory, loaded under the rules of
//! docs/mitm.md.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;

use crate::CaError;
use crate::files::{self, SecretPem};

/// The common name of the CA netproxy makes (what a trust store lists it as).
pub const CA_COMMON_NAME: &str = "netproxy MITM CA";
/// The certificate's file name in the CA directory.
const CERT_FILE: &str = "ca.pem";
/// The key's file name in the CA directory.
const KEY_FILE: &str = "ca.key";
/// How long a new CA is valid: ten years.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How far in the past a new certificate starts, for clients whose clock is behind.
pub(crate) const BACKDATE: Duration = Duration::from_secs(3600);

/// The CA directory: `ca.pem` (the certificate, 0644) and `ca.key` (its private key, 0600).
#[derive(Debug, Clone)]
pub struct CaStore {
    dir: PathBuf,
}

/// A CA from [`CaStore::load_or_create`], and whether it was made by that call.
#[derive(Debug)]
pub struct Loaded {
    /// The CA.
    pub ca: Ca,
    /// Whether the files were created just now (otherwise they were loaded).
    pub created: bool,
}

impl CaStore {
    /// The CA kept in `dir` (netproxy passes `$NETPROXY_HOME/ca`). Nothing is read yet.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The certificate's path (what clients are told to trust).
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CERT_FILE)
    }

    /// The private key's path.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }

    /// The saved CA; `None` when neither file exists. Refused: one file without the other, a
    /// key that is a symlink, not a regular file, owned by another user or accessible to its
    /// group or others, a certificate that is not a CA or does not match the key.
    pub fn load(&self) -> Result<Option<Ca>, CaError> {
        let (cert, key) = (self.cert_path(), self.key_path());
        match (files::exists(&cert)?, files::exists(&key)?) {
            (false, false) => Ok(None),
            (true, true) => {
                files::check_dir(&self.dir)?;
                // The key first: its rules are the ones that protect something.
                let key_pem = files::read_key(&key)?;
                let cert_pem = files::read_cert(&cert)?;
                Ca::from_pem(&cert_pem, &key_pem, &cert, &key).map(Some)
            }
            _ => Err(CaError::Incomplete { cert, key }),
        }
    }

    /// The saved CA, or a new one saved now: the directory is made (0700), the key written
    /// first and then the certificate, each as a new file that never replaces an existing one;
    /// if the certificate cannot be written, the new key is removed.
    pub fn load_or_create(&self) -> Result<Loaded, CaError> {
        let now = SystemTime::now();
        if let Some(ca) = self.load()? {
            if OffsetDateTime::from(now) > ca.info().not_after {
                return Err(CaError::Invalid {
                    path: self.cert_path(),
                    why: format!(
                        "the CA expired on {}; remove {} and {} to create a new one",
                        ca.info().not_after,
                        self.cert_path().display(),
                        self.key_path().display()
                    ),
                });
            }
            return Ok(Loaded { ca, created: false });
        }
        files::create_dir(&self.dir)?;
        files::check_dir(&self.dir)?;
        let (ca, key_pem) = Ca::generate_with_key(now)?;
        match self.save(&ca, &key_pem) {
            Ok(()) => Ok(Loaded { ca, created: true }),
            // Another process created the CA at the same moment: use it.
            Err(CaError::Overwrite { .. }) if matches!(self.load(), Ok(Some(_))) => {
                let ca = self.load()?.ok_or(CaError::Incomplete {
                    cert: self.cert_path(),
                    key: self.key_path(),
                })?;
                Ok(Loaded { ca, created: false })
            }
            Err(e) => Err(e),
        }
    }

    /// Writes a new CA's files: the key, then the certificate; the key is removed again when
    /// the certificate cannot be written.
    fn save(&self, ca: &Ca, key_pem: &SecretPem) -> Result<(), CaError> {
        let key = files::write_new(&self.dir, KEY_FILE, key_pem.expose().as_bytes(), 0o600)?;
        if let Err(e) = files::write_new(&self.dir, CERT_FILE, ca.cert_pem.as_bytes(), 0o644) {
            // The key is ours (just linked): without its certificate it must not stay.
            let _ = files::remove(&self.dir, &key);
            return Err(e);
        }
        Ok(())
    }
}

/// What a CA certificate says about itself, for `netproxy ca show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaInfo {
    /// The subject, e.g. `CN=netproxy MITM CA`.
    pub subject: String,
    /// SHA-256 of the certificate (DER).
    pub sha256: [u8; 32],
    /// Valid from.
    pub not_before: OffsetDateTime,
    /// Valid until.
    pub not_after: OffsetDateTime,
}

impl CaInfo {
    /// The SHA-256 fingerprint as colon-separated uppercase hex (`AB:01:...`), the way
    /// `openssl x509 -fingerprint -sha256` prints it.
    pub fn fingerprint(&self) -> String {
        let mut out = String::with_capacity(32 * 3);
        for (i, b) in self.sha256.iter().enumerate() {
            if i > 0 {
                out.push(':');
            }
            out.push_str(&format!("{b:02X}"));
        }
        out
    }

    fn of(der: &[u8], path: &Path) -> Result<(Self, Vec<u8>, bool), CaError> {
        let invalid = |why: String| CaError::Invalid {
            path: path.to_owned(),
            why,
        };
        let (_, x509) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| invalid(format!("not an X.509 certificate ({e})")))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut sha256 = [0; 32];
        sha256.copy_from_slice(digest.as_ref());
        let validity = x509.validity();
        let info = Self {
            subject: x509.subject().to_string(),
            sha256,
            not_before: unix(validity.not_before.timestamp(), path)?,
            not_after: unix(validity.not_after.timestamp(), path)?,
        };
        Ok((info, x509.public_key().raw.to_vec(), x509.is_ca()))
    }
}

fn unix(seconds: i64, path: &Path) -> Result<OffsetDateTime, CaError> {
    OffsetDateTime::from_unix_timestamp(seconds).map_err(|e| CaError::Invalid {
        path: path.to_owned(),
        why: format!("validity out of range ({e})"),
    })
}

/// A certificate authority that can sign leaf certificates: its certificate and its signing
/// key (which `Debug` never shows).
pub struct Ca {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    info: CaInfo,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("subject", &self.info.subject)
            .field("sha256", &self.info.fingerprint())
            .field("key", &"[redacted]")
            .finish()
    }
}

impl Ca {
    /// A new CA held in memory only (tests, benchmarks); [`CaStore::load_or_create`] makes the
    /// one netproxy saves.
    pub fn generate() -> Result<Self, CaError> {
        Self::generate_with_key(SystemTime::now()).map(|(ca, _)| ca)
    }

    /// A new self-signed CA (ECDSA P-256, CN [`CA_COMMON_NAME`], path length 0, key usages
    /// keyCertSign, digitalSignature and keyEncipherment, valid for ten years from an hour
    /// ago) and its key as PEM.
    fn generate_with_key(now: SystemTime) -> Result<(Self, SecretPem), CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, CA_COMMON_NAME);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_before = OffsetDateTime::from(now - BACKDATE);
        params.not_after = OffsetDateTime::from(now + CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        let der = cert.der().clone();
        let (info, _, _) = CaInfo::of(&der, Path::new("(new CA)"))?;
        let key_pem = SecretPem::new(key.serialize_pem());
        Ok((
            Self {
                cert_pem: cert.pem(),
                cert_der: der,
                info,
                issuer: Issuer::new(params, key),
            },
            key_pem,
        ))
    }

    /// A CA from its saved files' text (paths for the errors).
    fn from_pem(
        cert_pem: &str,
        key_pem: &SecretPem,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<Self, CaError> {
        let invalid = |path: &Path, why: &str| CaError::Invalid {
            path: path.to_owned(),
            why: why.to_owned(),
        };
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| invalid(cert_path, "no PEM certificate in it"))?;
        // rcgen's error for a bad key says nothing of the key's content.
        let key = KeyPair::from_pem(key_pem.expose())
            .map_err(|_| invalid(key_path, "not a PEM private key rcgen can use"))?;
        let (info, public_key, is_ca) = CaInfo::of(&der, cert_path)?;
        if !is_ca {
            return Err(invalid(cert_path, "not a CA certificate"));
        }
        if public_key != key.subject_public_key_info() {
            return Err(invalid(
                key_path,
                &format!(
                    "it is not the key of the certificate {}",
                    cert_path.display()
                ),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&der, key)
            .map_err(|e| invalid(cert_path, &format!("cannot sign with it ({e})")))?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            cert_der: der,
            info,
            issuer,
        })
    }

    /// The certificate, DER (the last element of every leaf's chain).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The certificate, PEM (what clients trust).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Subject, fingerprint and validity.
    pub fn info(&self) -> &CaInfo {
        &self.info
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_key_whose_certificate_cannot_be_written_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = CaStore::new(dir.path());
        std::fs::write(store.cert_path(), "taken").unwrap();
        let (ca, key) = Ca::generate_with_key(SystemTime::now()).unwrap();
        let err = store.save(&ca, &key).unwrap_err();
        assert!(matches!(err, CaError::Overwrite { .. }), "{err}");
        assert!(!store.key_path().exists());
        assert_eq!(std::fs::read_to_string(store.cert_path()).unwrap(), "taken");
        // No temporary file is left behind either.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["ca.pem"]);
    }

    #[test]
    fn debug_output_shows_no_key() {
        let (ca, key) = Ca::generate_with_key(SystemTime::now()).unwrap();
        assert!(key.expose().contains("PRIVATE KEY"));
        for text in [format!("{ca:?}"), format!("{key:?}")] {
            assert!(!text.contains("PRIVATE"), "{text}");
            assert!(text.contains("redacted"), "{text}");
        }
    }
}
