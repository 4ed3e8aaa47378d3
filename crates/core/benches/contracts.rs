//! Decoding and encoding of the job envelope: the one parse every hop pays.
//!
//! `serde_only` is the baseline (typed parse, no validation); `decode` adds the JSON Schema and
//! the contract's own checks, which is what the workers run. Their ratio is the price of
//! validating at every boundary.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard_core::contracts::{self, DEFAULT_MAX_MESSAGE_BYTES, JobEnvelope, RoutedJob};

fn example(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../schemas/examples/valid")
        .join(name);
    match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) => panic!("{}: {error}", path.display()),
    }
}

fn job_envelopes(c: &mut Criterion) {
    contracts::precompile();
    let mut group = c.benchmark_group("job");
    for name in ["job.chat.json", "job.detect-inline.json", "job.multi.json"] {
        let bytes = example(name);
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{name}/serde_only"), |b| {
            b.iter(|| serde_json::from_slice::<JobEnvelope>(black_box(&bytes)).is_ok());
        });
        group.bench_function(format!("{name}/decode"), |b| {
            b.iter(|| {
                contracts::decode::<JobEnvelope>(black_box(&bytes), DEFAULT_MAX_MESSAGE_BYTES)
                    .is_ok()
            });
        });
        let job: Option<JobEnvelope> = contracts::decode(&bytes, DEFAULT_MAX_MESSAGE_BYTES).ok();
        if let Some(job) = job {
            group.bench_function(format!("{name}/encode"), |b| {
                b.iter(|| contracts::encode(black_box(&job)).len());
            });
        }
    }
    group.finish();

    let routed = example("routed.json");
    c.bench_function("routed/decode", |b| {
        b.iter(|| {
            contracts::decode::<RoutedJob>(black_box(&routed), DEFAULT_MAX_MESSAGE_BYTES).is_ok()
        });
    });
}

criterion_group!(benches, job_envelopes);
criterion_main!(benches);
