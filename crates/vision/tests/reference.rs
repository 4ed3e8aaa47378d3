//! The Rust pipeline against the independent Python reference of Ultralytics' (onnxruntime +
//! NumPy + OpenCV, `tools/vision/yolo_ref.py`), on the generated YOLOv8n (`deploy/local/up.sh
//! ort` makes it) and on real photos (scikit-image's) and synthetic odd sizes: the same
//! preprocessed tensor bit for bit, then the same detections (classes equal, scores within
//! 1e-4, boxes within 0.5 px). Then batching: the same images through micro-batches give the
//! same answers as one by one, and the batches really form.
#![expect(clippy::unwrap_used, reason = "tests: failing loudly is the point")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use switchyard_vision::batcher::{BatchSettings, Batcher};
use switchyard_vision::decode;
use switchyard_vision::letterbox::{Geometry, letterbox_into};
use switchyard_vision::model::{Detector, DetectorSettings};
use switchyard_vision::nms::NmsParams;
use switchyard_vision::pipeline::{DetectError, Detected, Pipeline};

const THREADS: usize = 2;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `deploy/local/up.sh && . deploy/local/env.sh`")
    })
}

fn python() -> PathBuf {
    Path::new(&env("SWITCHYARD_VENV")).join("bin/python")
}

fn tool(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools/vision")
        .join(name)
}

/// Writes the sample images into a fresh directory; returns them sorted by name.
fn sample_images(tag: &str) -> (PathBuf, Vec<PathBuf>) {
    let dir = std::env::temp_dir().join(format!("switchyard-vision-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(python())
        .arg(tool("sample_images.py"))
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut images: Vec<PathBuf> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .collect();
    images.sort();
    assert!(images.len() >= 15, "{images:?}");
    (dir, images)
}

fn pipeline(max_batch: usize, delay: Duration) -> Pipeline {
    let model = PathBuf::from(env("SWITCHYARD_YOLO_MODEL"));
    let detector = Detector::load(
        &model,
        &DetectorSettings {
            intra_threads: THREADS,
            ..DetectorSettings::default()
        },
    )
    .unwrap();
    let batcher = Batcher::start(
        detector,
        BatchSettings {
            max_batch,
            max_queue_delay: delay,
        },
    )
    .unwrap();
    Pipeline::new(batcher, 40_000_000)
}

/// A `.npy` file of float32 (NumPy's format: magic, version, header length, header, data).
fn read_npy(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(
        header.contains("'<f4'") && header.contains("False"),
        "{header}"
    );
    bytes[start + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[derive(Debug)]
struct RefDetection {
    class_id: u32,
    confidence: f32,
    bbox: [f32; 4],
}

/// The reference's detections per image file name, and its tensors in `tensors`.
fn reference(images: &[PathBuf], tensors: &Path) -> BTreeMap<String, Vec<RefDetection>> {
    std::fs::create_dir_all(tensors).unwrap();
    let out = Command::new(python())
        .arg(tool("yolo_ref.py"))
        .args([
            "--model",
            &env("SWITCHYARD_YOLO_MODEL"),
            "--threads",
            &THREADS.to_string(),
            "--tensor-dir",
        ])
        .arg(tensors)
        .args(images)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let name = Path::new(v["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let detections = v["detections"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| RefDetection {
                    class_id: d["class_id"].as_u64().unwrap() as u32,
                    confidence: d["confidence"].as_f64().unwrap() as f32,
                    bbox: std::array::from_fn(|k| d["bbox"][k].as_f64().unwrap() as f32),
                })
                .collect();
            (name, detections)
        })
        .collect()
}

fn name_of(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Differences between ours and the reference for one image, as lines (empty: they agree).
fn compare(ours: &Detected, theirs: &[RefDetection]) -> Vec<String> {
    let ours = &ours.detections.detections;
    let mut problems = Vec::new();
    if ours.len() != theirs.len() {
        problems.push(format!(
            "{} detections, the reference {}",
            ours.len(),
            theirs.len()
        ));
    }
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let box_diff = a
            .bbox
            .iter()
            .zip(&b.bbox)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        if a.class_id != b.class_id || (a.confidence - b.confidence).abs() > 1e-4 || box_diff > 0.5
        {
            problems.push(format!(
                "#{i}: ours class {} {:.6} {:?}, theirs class {} {:.6} {:?}",
                a.class_id, a.confidence, a.bbox, b.class_id, b.confidence, b.bbox
            ));
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_the_python_reference_of_ultralytics() {
    let (dir, images) = sample_images("ref");
    let tensors = dir.join("tensors");
    let expected = reference(&images, &tensors);
    assert_eq!(expected.len(), images.len());

    // The letterboxed tensor is the reference's, bit for bit (OpenCV's resize reproduced).
    for path in &images {
        let image = decode::decode(&std::fs::read(path).unwrap(), 40_000_000).unwrap();
        let geometry = Geometry::new((image.width, image.height), (640, 640));
        let mut ours = vec![0.0f32; 3 * 640 * 640];
        letterbox_into(&image.pixels, &geometry, &mut ours);
        let theirs = read_npy(&tensors.join(format!("{}.npy", name_of(path))));
        assert_eq!(theirs.len(), ours.len(), "{}", name_of(path));
        let differing = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
        assert_eq!(
            differing,
            0,
            "{}: {differing} of {} values differ",
            name_of(path),
            ours.len()
        );
    }

    // One at a time, the detections agree.
    let pipeline = pipeline(1, Duration::ZERO);
    let mut with_boxes = 0;
    let mut problems = Vec::new();
    for path in &images {
        let bytes: Arc<[u8]> = std::fs::read(path).unwrap().into();
        let ours = pipeline.detect(bytes, NmsParams::default()).await.unwrap();
        let theirs = &expected[&name_of(path)];
        with_boxes += usize::from(!theirs.is_empty());
        for problem in compare(&ours, theirs) {
            problems.push(format!("{}: {problem}", name_of(path)));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The check means something only if the model finds things.
    assert!(with_boxes >= 5, "only {with_boxes} images had detections");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micro_batches_give_the_same_answers_as_single_runs() {
    let (dir, images) = sample_images("batch");
    let single = pipeline(1, Duration::ZERO);
    let batched = pipeline(4, Duration::from_millis(50));
    let mut alone = Vec::new();
    for path in &images {
        let bytes: Arc<[u8]> = std::fs::read(path).unwrap().into();
        alone.push(single.detect(bytes, NmsParams::default()).await.unwrap());
    }
    // All at once: the batcher groups what arrives within 50 ms, up to 4.
    let together = futures(&batched, &images).await;
    let mut biggest = 0;
    for ((path, one), many) in images.iter().zip(&alone).zip(&together) {
        biggest = biggest.max(many.detections.batch_size);
        assert!(many.detections.batch_size <= 4);
        let a = &one.detections.detections;
        let b = &many.detections.detections;
        assert_eq!(a.len(), b.len(), "{}", name_of(path));
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.class_id, y.class_id, "{}", name_of(path));
            assert!(
                (x.confidence - y.confidence).abs() <= 1e-4,
                "{}",
                name_of(path)
            );
            assert!(
                x.bbox
                    .iter()
                    .zip(&y.bbox)
                    .all(|(p, q)| (p - q).abs() <= 0.5),
                "{}",
                name_of(path)
            );
        }
    }
    assert_eq!(biggest, 4, "no batch filled up");
    // Compute is shared: each image of a batch is charged its share of the run.
    let one = &together[0];
    let share = Duration::from_secs_f64(one.detections.timings_ms.inference / 1000.0)
        / one.detections.batch_size;
    assert!(
        one.compute.abs_diff(share) < Duration::from_millis(1),
        "{:?} vs {share:?}",
        one.compute
    );
    let _ = std::fs::remove_dir_all(dir);
}

async fn futures(pipeline: &Pipeline, images: &[PathBuf]) -> Vec<Detected> {
    let handles: Vec<_> = images
        .iter()
        .map(|path| {
            let pipeline = pipeline.clone();
            let bytes: Arc<[u8]> = std::fs::read(path).unwrap().into();
            tokio::spawn(async move { pipeline.detect(bytes, NmsParams::default()).await.unwrap() })
        })
        .collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_images_are_refused_with_the_reason() {
    let pipeline = pipeline(2, Duration::ZERO);
    let refused = |result: Result<Detected, DetectError>| match result {
        Err(DetectError::Image(error)) => error.to_string(),
        other => panic!("expected an image error, got {other:?}"),
    };
    let text = refused(
        pipeline
            .detect(
                Arc::from(&b"definitely not an image"[..]),
                NmsParams::default(),
            )
            .await,
    );
    assert!(text.contains("not a JPEG, PNG or WebP"), "{text}");
    let text = refused(
        pipeline
            .detect(
                Arc::from(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10][..]),
                NmsParams::default(),
            )
            .await,
    );
    assert!(text.contains("corrupt JPEG"), "{text}");
    // The worker keeps going after refusals.
    let (dir, images) = sample_images("bad");
    let bytes: Arc<[u8]> = std::fs::read(&images[0]).unwrap().into();
    assert!(pipeline.detect(bytes, NmsParams::default()).await.is_ok());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_gpu_provider_this_runtime_lacks_falls_back_to_the_cpu() {
    // The onnxruntime wheel here is CPU-only: asking for CUDA or TensorRT must still load the
    // model, on the CPU, rather than fail (the warning names the provider).
    use switchyard_vision::model::Device;
    for device in [Device::Cuda, Device::TensorRt] {
        let mut detector = Detector::load(
            Path::new(&env("SWITCHYARD_YOLO_MODEL")),
            &DetectorSettings {
                intra_threads: 1,
                device,
                ..DetectorSettings::default()
            },
        )
        .unwrap();
        assert_eq!(detector.device(), Device::Cpu);
        let info = detector.info().clone();
        let input = vec![0.5f32; 3 * info.height as usize * info.width as usize];
        let (anchors, output) = detector.run(&input, 1).unwrap();
        assert_eq!(anchors, 8400);
        assert_eq!(output.len(), (4 + info.classes()) * anchors);
    }
}
