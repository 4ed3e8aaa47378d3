//! The vision hot paths without ONNX Runtime: letterboxing (OpenCV-exact bilinear resize into
//! the NCHW tensor), postprocessing (best class, NMS, scaling back) and, given real photos,
//! decoding them.
//!
//!     cargo bench -p switchyard-vision --bench vision
//!     SWITCHYARD_BENCH_PHOTOS=DIR cargo bench -p switchyard-vision --bench vision -- decode
//!
//! (`tools/vision/sample_images.py DIR --photos-only` writes the benchmark's photos.)
//!
//! Baselines in the same run: a plain `fill` of the tensor slot (the memory-bandwidth floor of
//! writing 640×640×3 floats), a scan of the class rows without NMS, and a copy of each photo's
//! decoded pixels.

#![expect(
    clippy::expect_used,
    reason = "a benchmark without its photos has nothing to measure"
)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::io::Write as _;
use switchyard_vision::letterbox::{Geometry, letterbox_into};
use switchyard_vision::nms::{NmsParams, postprocess};

fn image(width: u32, height: u32) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    (0..width * height * 3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

fn letterbox(c: &mut Criterion) {
    let mut out = vec![0.0f32; 3 * 640 * 640];
    c.bench_function("baseline: fill 640x640x3 f32", |b| {
        b.iter(|| out.fill(black_box(0.5)));
    });
    for (w, h) in [(640, 480), (1280, 720), (1920, 1080), (512, 512)] {
        let rgb = image(w, h);
        let geometry = Geometry::new((w, h), (640, 640));
        c.bench_function(&format!("letterbox {w}x{h} -> 640"), |b| {
            b.iter(|| letterbox_into(black_box(&rgb), &geometry, &mut out));
        });
    }
}

/// An output like YOLOv8n's on a photo: 8400 anchors, 80 classes, about 60 over 0.25.
fn output(nc: usize, anchors: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; (4 + nc) * anchors];
    let mut state = 0x9e37_79b9_u32;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        f32::from(state as u16) / 65535.0
    };
    for a in 0..anchors {
        out[a] = next() * 640.0;
        out[anchors + a] = next() * 640.0;
        out[2 * anchors + a] = 10.0 + next() * 200.0;
        out[3 * anchors + a] = 10.0 + next() * 200.0;
    }
    // Background scores well under the threshold, then 60 anchors scored high for one class
    // each: about what the generated model gives on a busy photo.
    for c in 0..nc {
        for a in 0..anchors {
            out[(4 + c) * anchors + a] = next() * 0.05;
        }
    }
    for _ in 0..60 {
        let a = (next() * (anchors - 1) as f32) as usize;
        let c = (next() * (nc - 1) as f32) as usize;
        out[(4 + c) * anchors + a] = 0.25 + next() * 0.7;
    }
    out
}

fn nms(c: &mut Criterion) {
    let (nc, anchors) = (80, 8400);
    let out = output(nc, anchors);
    let geometry = Geometry::new((1280, 720), (640, 640));
    let candidates = (0..anchors)
        .filter(|&a| (0..nc).any(|c| out[(4 + c) * anchors + a] > 0.25))
        .count();
    // The figure is only meaningful at a realistic candidate count; say which one it had.
    let _ = writeln!(
        std::io::stderr(),
        "nms bench: {candidates} candidates over 0.25"
    );
    c.bench_function("baseline: max over class rows", |b| {
        b.iter(|| {
            let mut best = vec![0.0f32; anchors];
            for c in 0..nc {
                for (b, &v) in best
                    .iter_mut()
                    .zip(&out[(4 + c) * anchors..(5 + c) * anchors])
                {
                    *b = b.max(v);
                }
            }
            black_box(best)
        });
    });
    let params = NmsParams::default();
    c.bench_function("postprocess 8400x80", |b| {
        b.iter(|| postprocess(black_box(&out), nc, anchors, &params, &geometry));
    });
    // The worst case: every anchor a candidate of one class (NMS is quadratic in it).
    let mut flooded = out.clone();
    flooded[4 * anchors..5 * anchors].fill(0.5);
    c.bench_function("postprocess 8400x80, all 8400 candidates", |b| {
        b.iter(|| postprocess(black_box(&flooded), nc, anchors, &params, &geometry));
    });
}

/// Each photo in `SWITCHYARD_BENCH_PHOTOS`, bytes to upright RGB8 (what the pipeline's decode
/// stage does), against a copy of its decoded pixels.
fn decode(c: &mut Criterion) {
    let Some(dir) = std::env::var_os("SWITCHYARD_BENCH_PHOTOS") else {
        let _ = writeln!(
            std::io::stderr(),
            "decode bench skipped: set SWITCHYARD_BENCH_PHOTOS to a directory of photos"
        );
        return;
    };
    let mut photos: Vec<_> = std::fs::read_dir(dir)
        .expect("SWITCHYARD_BENCH_PHOTOS is readable")
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    photos.sort();
    for path in photos {
        let bytes = std::fs::read(&path).expect("a readable photo");
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let rgb = switchyard_vision::decode::decode(&bytes, u64::MAX).expect("a decodable photo");
        let label = format!("{name} {}x{}", rgb.width, rgb.height);
        c.bench_function(&format!("decode {label}"), |b| {
            b.iter(|| switchyard_vision::decode::decode(black_box(&bytes), u64::MAX));
        });
        c.bench_function(&format!("baseline: copy {label}"), |b| {
            b.iter(|| black_box(&rgb.pixels).clone());
        });
    }
}

criterion_group!(benches, letterbox, nms, decode);
criterion_main!(benches);
