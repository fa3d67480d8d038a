//! Leaf certificate speed: `cargo bench -p proxy-mitm`.
//! Target (issue 18): issuing a leaf (fresh P-256 key, signed by the CA) under 2 ms; a cached
//! leaf is a lookup; `server_config/build` is what a tunnel paid per handshake before the
//! interceptor cached each host's server configuration.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use proxy_core::Host;
use proxy_mitm::{Ca, LEAF_VALIDITY, LeafCache};
use rustls::sign::CertifiedKey;

fn bench(c: &mut Criterion) {
    let ca = Arc::new(Ca::generate().unwrap());
    let name = Host::parse("api.example.com").unwrap();
    let ip = Host::parse("192.0.2.7").unwrap();
    c.bench_function("issue_leaf/name", |b| {
        b.iter(|| {
            black_box(
                ca.issue_leaf(&name, SystemTime::now(), LEAF_VALIDITY)
                    .unwrap(),
            )
        });
    });
    c.bench_function("issue_leaf/ip", |b| {
        b.iter(|| {
            black_box(
                ca.issue_leaf(&ip, SystemTime::now(), LEAF_VALIDITY)
                    .unwrap(),
            )
        });
    });
    let cache = LeafCache::new(ca, 1024);
    cache.get(&name).unwrap();
    c.bench_function("leaf_cache/hit", |b| {
        b.iter(|| black_box(cache.get(black_box(&name)).unwrap()));
    });
    // What each tunnel paid before the interceptor kept each host's server configuration:
    // loading the leaf's key and copying the configuration (now once per leaf).
    let leaf = cache.get(&name).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let template = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(leaf.chain().to_vec(), leaf.key())
        .unwrap();
    c.bench_function("server_config/build", |b| {
        b.iter(|| {
            let key = provider.key_provider.load_private_key(leaf.key()).unwrap();
            let certified = CertifiedKey::new(leaf.chain().to_vec(), key);
            black_box((template.clone(), Arc::new(certified)))
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
