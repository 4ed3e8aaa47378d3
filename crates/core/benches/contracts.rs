//! Decoding and encoding of the job envelope: the one parse every hop pays.
//!
//! `serde_only` is the baseline (typed parse, no validation); `decode` adds the JSON Schema and
//! the contract's own checks, which is what the workers run. Their ratio is the price of
//! validating at every boundary.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard_core::contracts::{
    self, DEFAULT_MAX_MESSAGE_BYTES, Input, JobEnvelope, RoutedJob, Task,
};

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
    routed_encodings(c, &routed);
}

/// The router's output: the routed job encoded whole (the baseline) against the decision
/// written around the job's own bytes, for a small job and one with an inline image near the
/// inline cap.
fn routed_encodings(c: &mut Criterion, routed: &[u8]) {
    let Ok(mut routed) = contracts::decode::<RoutedJob>(routed, DEFAULT_MAX_MESSAGE_BYTES) else {
        return;
    };
    let Ok(large) = contracts::decode::<JobEnvelope>(
        &example("job.detect-inline.json"),
        DEFAULT_MAX_MESSAGE_BYTES,
    ) else {
        return;
    };
    let mut group = c.benchmark_group("routed");
    for (name, job) in [
        ("chat", routed.job.clone()),
        ("detect-inline-150KiB", inline_image(large)),
    ] {
        routed.job = job;
        let job_bytes = contracts::encode(&routed.job);
        group.bench_function(format!("{name}/encode"), |b| {
            b.iter(|| contracts::encode(black_box(&routed)).len());
        });
        group.bench_function(format!("{name}/encode_around"), |b| {
            b.iter(|| {
                RoutedJob::encode_around(
                    black_box(&job_bytes),
                    &routed.decision,
                    routed.parent.as_ref(),
                )
                .len()
            });
        });
    }
    group.finish();
}

/// `job` with 150 KiB of base64 as its inline image (valid base64; the bytes are not an image,
/// which neither encoding looks at).
fn inline_image(mut job: JobEnvelope) -> JobEnvelope {
    if let Task::Detect(detect) = &mut job.task {
        detect.input = Input::Inline {
            data_base64: "QUJD".repeat(150 * 1024 / 4),
            content_type: None,
        };
    }
    job
}

criterion_group!(benches, job_envelopes);
criterion_main!(benches);
