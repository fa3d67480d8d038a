//! Leaf certificates for intercepted hosts, issued by the [`Ca`] on demand and cached per host.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use proxy_core::Host;
use quick_cache::sync::Cache;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::CaError;
use crate::ca::{BACKDATE, Ca};

/// How long a new leaf certificate is valid after its issuance (it starts an hour before, for
/// clients whose clock is behind).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// A cached leaf with less than this left is issued again.
pub const RENEW_MARGIN: Duration = Duration::from_secs(3600);
/// The longest common name a certificate may carry (RFC 5280's upper bound); a longer host
/// name is only in the subject alternative name.
const MAX_CN: usize = 64;

/// A leaf certificate for one host, what a rustls server presents: the chain (leaf, then the
/// CA) and the leaf's private key (which `Debug` never shows).
pub struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
    not_after: SystemTime,
}

impl fmt::Debug for Leaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leaf")
            .field("chain", &self.chain.len())
            .field("not_after", &self.not_after)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl Leaf {
    /// The certificate chain: the leaf, then the CA's certificate.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The leaf's private key (PKCS#8), a copy for `rustls::ServerConfig::with_single_cert` or
    /// a signing key provider.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    /// When the certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Whether it is still valid `margin` after `now`.
    pub fn fresh_at(&self, now: SystemTime, margin: Duration) -> bool {
        now.checked_add(margin)
            .is_some_and(|later| later < self.not_after)
    }
}

impl Ca {
    /// Signs a new leaf certificate for `host`: a fresh ECDSA P-256 key, the host as a DNS
    /// name or, for an IP literal, an IP address subject alternative name (the zone id of a
    /// scoped IPv6 literal is not part of it), extended key usage serverAuth, key usages
    /// digitalSignature and keyEncipherment, valid from an hour before `now` for `validity`.
    pub fn issue_leaf(
        &self,
        host: &Host,
        now: SystemTime,
        validity: Duration,
    ) -> Result<Leaf, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        let text = host.to_string();
        params.subject_alt_names = vec![match host.ip() {
            Some(ip) => SanType::IpAddress(ip),
            None => SanType::DnsName(text.as_str().try_into()?),
        }];
        if text.len() <= MAX_CN {
            name.push(DnType::CommonName, text);
        }
        params.distinguished_name = name;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
        let not_after = now + validity;
        params.not_before = OffsetDateTime::from(now - BACKDATE);
        params.not_after = OffsetDateTime::from(not_after);
        let cert = params.signed_by(&key, self.issuer())?;
        Ok(Leaf {
            chain: vec![cert.der().clone(), self.cert_der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            not_after,
        })
    }
}

/// Leaf certificates by host: bounded (least recently and least frequently used go first), an
/// entry with less than the renewal margin left issued again, and one issuance for a host that
/// several callers ask for at once.
pub struct LeafCache {
    ca: Arc<Ca>,
    cache: Cache<Host, Arc<Leaf>>,
    validity: Duration,
    margin: Duration,
    issued: AtomicU64,
}

impl fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafCache")
            .field("ca", &self.ca)
            .field("len", &self.cache.len())
            .field("capacity", &self.cache.capacity())
            .field("issued", &self.issued())
            .finish()
    }
}

impl LeafCache {
    /// A cache of at most `capacity` hosts' leaves signed by `ca`, valid [`LEAF_VALIDITY`] and
    /// renewed [`RENEW_MARGIN`] before they expire.
    pub fn new(ca: Arc<Ca>, capacity: usize) -> Self {
        Self {
            ca,
            cache: Cache::new(capacity.max(1)),
            validity: LEAF_VALIDITY,
            margin: RENEW_MARGIN,
            issued: AtomicU64::new(0),
        }
    }

    /// The same with another validity and renewal margin (a margin at least as long as the
    /// validity issues a new leaf every time).
    pub fn with_validity(mut self, validity: Duration, margin: Duration) -> Self {
        self.validity = validity;
        self.margin = margin;
        self
    }

    /// The CA that signs the leaves.
    pub fn ca(&self) -> &Arc<Ca> {
        &self.ca
    }

    /// The leaf for `host`, from the cache or issued now.
    pub fn get(&self, host: &Host) -> Result<Arc<Leaf>, CaError> {
        self.get_at(host, SystemTime::now())
    }

    /// [`get`](Self::get) as if the time were `now` (a cached leaf is judged, and a new one
    /// dated, by it).
    pub fn get_at(&self, host: &Host, now: SystemTime) -> Result<Arc<Leaf>, CaError> {
        let fresh = |leaf: &Arc<Leaf>| leaf.fresh_at(now, self.margin);
        if let Some(leaf) = self.cache.get(host) {
            if fresh(&leaf) {
                return Ok(leaf);
            }
            // Only the stale entry: one that another caller renewed meanwhile stays.
            self.cache.remove_if(host, |leaf| !fresh(leaf));
        }
        self.cache.get_or_insert_with(host, || {
            let leaf = self.ca.issue_leaf(host, now, self.validity)?;
            self.issued.fetch_add(1, Ordering::Relaxed);
            Ok(Arc::new(leaf))
        })
    }

    /// How many leaves this cache has signed.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    /// How many hosts' leaves it keeps at most.
    pub fn capacity(&self) -> usize {
        usize::try_from(self.cache.capacity()).unwrap_or(usize::MAX)
    }

    /// How many hosts' leaves it holds.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}
