//! Decision and compilation speed: `cargo bench -p proxy-policy`.
//! Targets (docs/benchmarks.md): one decision against 100,000 patterns under 300 ns median for a
//! hit and a miss; compiling 100,000 patterns under 1 s; a decision against 10 patterns under
//! 100 ns.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use proxy_core::{Protocol, RequestMeta, Target};
use proxy_policy::{Policy, PolicyBuilder};

fn builder(n: usize) -> PolicyBuilder {
    let mut b = Policy::builder();
    for i in 0..n {
        let pattern = match i % 4 {
            0 => format!("host{i}.example{}.com", i % 97),
            1 => format!("*.svc{i}.example.net"),
            2 => format!("**.team{i}.example.org"),
            _ => format!("api{i}.example{}.io:443", i % 13),
        };
        b.allow(&pattern, None).unwrap();
    }
    for i in 0..n / 100 {
        b.deny(&format!("blocked{i}.example.com"), None).unwrap();
    }
    b
}

fn meta(host: &str) -> RequestMeta {
    RequestMeta::new(
        Protocol::HttpsConnect,
        Target::parse_authority(host, 443).unwrap(),
    )
    .with_method("CONNECT")
}

fn bench(c: &mut Criterion) {
    let big = builder(100_000).build().unwrap();
    let hit_exact = meta("host40000.example36.com");
    let hit_wild = meta("a.b.svc50001.example.net");
    let miss = meta("nothing.here.example.edu");
    c.bench_function("decide/100k/hit_exact", |b| {
        b.iter(|| black_box(big.evaluate(black_box(&hit_exact))));
    });
    c.bench_function("decide/100k/hit_wildcard", |b| {
        b.iter(|| black_box(big.evaluate(black_box(&hit_wild))));
    });
    c.bench_function("decide/100k/miss", |b| {
        b.iter(|| black_box(big.evaluate(black_box(&miss))));
    });
    let small = builder(10).build().unwrap();
    let small_hit = meta("x.svc1.example.net");
    c.bench_function("decide/10/hit", |b| {
        b.iter(|| black_box(small.evaluate(black_box(&small_hit))));
    });
    c.bench_function("decide/10/miss", |b| {
        b.iter(|| black_box(small.evaluate(black_box(&miss))));
    });
    // Parsing included: from the pattern strings to a compiled policy.
    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    g.bench_function("100k", |b| {
        b.iter(|| black_box(builder(100_000).build().unwrap()));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
