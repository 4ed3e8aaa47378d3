//! `switchyard worker vision` as a process on Apache Kafka and FerretDB (from `deploy/local`),
//! running the generated YOLOv8n through ONNX Runtime: a photo is detected and stored with its
//! compute cost, a redelivery is announced again without a second charge, and a corrupt image
//! and inputs the SSRF guard refuses land in the dead-letter topic as `invalid_input`, with the
//! reason. Also `switchyard detect` on the command line, and its error without ONNX Runtime.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: failing loudly is the point"
)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use common::{Process, service_env};
use switchyard_bus::kafka::{KafkaBus, KafkaSettings};
use switchyard_bus::{Bus, Consumer, Delivery, Outgoing};
use switchyard_core::JobId;
use switchyard_core::config::Config;
use switchyard_core::contracts::{
    self, DeadLetter, DetectParams, DetectTask, ErrorClass, Input, Output, ResultDocument,
    RoutedJob, Task,
};
use switchyard_ledger::store::{MongoStore, Store};

fn photos(dir: &Path) -> Vec<PathBuf> {
    let python = Path::new(&service_env("SWITCHYARD_VENV")).join("bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/vision/sample_images.py");
    let out = Command::new(python)
        .arg(script)
        .arg(dir)
        .arg("--photos-only")
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
        .map(PathBuf::from)
        .collect()
}

fn detect_job(config: &Config, input: Input) -> RoutedJob {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/examples/valid/routed.json"
    );
    let mut routed: RoutedJob = contracts::decode(&std::fs::read(path).unwrap(), 1 << 20).unwrap();
    routed.job.job_id = JobId::new();
    routed.job.task = Task::Detect(DetectTask {
        input,
        params: DetectParams::default(),
    });
    routed.job.routing.deadline_ms = None;
    let backend = config.backend("yolo-test").unwrap();
    routed.decision.backend_id = backend.id.clone();
    routed.decision.queue = backend.queue.clone();
    routed.decision.fallbacks.clear();
    routed
}

fn inline(bytes: &[u8]) -> Input {
    Input::Inline {
        data_base64: base64::engine::general_purpose::STANDARD.encode(bytes),
        content_type: None,
    }
}

async fn wait_for_result(store: &MongoStore, job_id: JobId) -> ResultDocument {
    // The store is where the outcome becomes visible; polling it is waiting for that signal.
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            if let Some(result) = store.result(job_id).await.unwrap() {
                return result;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("no result within 120 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vision_worker_process_detects_charges_once_and_dead_letters_bad_images() {
    let (brokers, mongo_uri, model) = (
        service_env("SWITCHYARD_KAFKA_BROKERS"),
        service_env("SWITCHYARD_MONGO_URI"),
        service_env("SWITCHYARD_YOLO_MODEL"),
    );
    let run = ulid::Ulid::new().to_string().to_ascii_lowercase();
    let dir = std::env::temp_dir().join(format!("switchyard-vision-worker-{run}"));
    std::fs::create_dir_all(&dir).unwrap();
    let database = format!("visionworker_{run}");
    let config_text = format!(
        r#"
[bus]
kind = "kafka"
[bus.kafka]
brokers = "{brokers}"
group_id = "test-{run}"
[store]
kind = "mongo"
[store.mongo]
database = "{database}"
[blobs]
kind = "local"
dir = "{blobs}"
[worker]
max_attempts = 2
backoff_initial = "10ms"
backoff_max = "50ms"
[vision]
intra_threads = 2
max_batch = 4

[[backends]]
id = "yolo-test"
kind = "vision"
provider = "onnx"
model = "{model}"
price = "aws/c7i.xlarge"
tasks = ["detect"]
quality = 0.37
latency_prior = "50ms"
queue = "test.vision.{run}"
"#,
        blobs = dir.join("blobs").display(),
    );
    let config_path = dir.join("switchyard.toml");
    std::fs::write(&config_path, &config_text).unwrap();
    let config = Config::from_parts(
        &config_text,
        "test",
        &[("SWITCHYARD_MONGO_URI".to_owned(), mongo_uri.clone())],
        Some(&dir),
    )
    .unwrap();
    let bus = KafkaBus::new(KafkaSettings::new(brokers.clone())).unwrap();
    let queue = config.backend("yolo-test").unwrap().queue.clone();
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();

    let log_path = dir.join("worker.log");
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["worker", "vision", "--no-webhooks", "--config"])
        .arg(&config_path)
        .env("SWITCHYARD_MONGO_URI", &mongo_uri)
        .env("RUST_LOG", "debug")
        .env_remove("SWITCHYARD_CONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let worker = Process::new(child);

    let images = photos(&dir.join("images"));
    let astronaut = images
        .iter()
        .find(|p| p.ends_with("astronaut.png"))
        .unwrap();
    // The JPEG (under 100 KB): the PNG's base64 would not fit Kafka's 1 MB message limit.
    let jpeg = images
        .iter()
        .find(|p| p.ends_with("astronaut_q90.jpg"))
        .unwrap();
    let photo = detect_job(&config, inline(&std::fs::read(jpeg).unwrap()));
    let mut corrupt_bytes = std::fs::read(astronaut).unwrap();
    corrupt_bytes.truncate(2000);
    let corrupt = detect_job(&config, inline(&corrupt_bytes));
    let metadata = detect_job(
        &config,
        Input::Uri {
            uri: "https://169.254.169.254/latest/meta-data/iam"
                .parse()
                .unwrap(),
            content_type: None,
            size_bytes: None,
        },
    );
    let plain_http = detect_job(
        &config,
        Input::Uri {
            uri: "http://example.com/cat.jpg".parse().unwrap(),
            content_type: None,
            size_bytes: None,
        },
    );
    for job in [&photo, &corrupt, &metadata, &plain_http] {
        bus.publish(
            &queue,
            Outgoing::new(contracts::encode(job)).with_key(job.job.tenant_id.as_str()),
        )
        .await
        .unwrap();
    }

    let store = MongoStore::connect(&mongo_uri, &database).await.unwrap();
    let result = wait_for_result(&store, photo.job.job_id).await;
    let Some(Output::Detections(found)) = &result.output else {
        panic!("not detections: {result:?}");
    };
    assert_eq!((found.image.width, found.image.height), (512, 512));
    // The generated model is calibrated to find a few dozen things on this photo.
    assert!(!found.detections.is_empty(), "{found:?}");
    assert!(
        found
            .detections
            .iter()
            .all(|d| d.confidence > 0.25 && !d.class_name.is_empty())
    );
    assert!(found.timings_ms.inference > 0.0);
    assert_eq!(result.model.as_deref(), Some("yolov8n"));
    let usage = store.usage_of_job(photo.job.job_id).await.unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].usage.images, 1);
    assert!(usage[0].usage.compute_us > 0);
    assert!(result.cost_micros.0 > 0, "compute time is priced");

    // Every refusal is a dead letter with its reason.
    let mut letters = bus
        .consume(&queue.dead_letter(), &format!("test-{run}-dlq"))
        .await
        .unwrap();
    let mut reasons: HashMap<JobId, (ErrorClass, String)> = HashMap::new();
    while reasons.len() < 3 {
        let letter = tokio::time::timeout(Duration::from_secs(120), letters.next())
            .await
            .expect("not every dead letter within 120 s")
            .unwrap()
            .unwrap();
        let decoded: DeadLetter = contracts::decode(letter.body(), 1 << 24).unwrap();
        letter.ack().await.unwrap();
        reasons.insert(
            decoded.job_id.unwrap(),
            (decoded.error_class, decoded.reason),
        );
    }
    letters.close().await;
    let (class, reason) = &reasons[&corrupt.job.job_id];
    assert_eq!(*class, ErrorClass::InvalidInput);
    assert!(reason.contains("corrupt PNG"), "{reason}");
    let (class, reason) = &reasons[&metadata.job.job_id];
    assert_eq!(*class, ErrorClass::InvalidInput);
    assert!(reason.contains("refused"), "{reason}");
    // Plain http is refused earlier still: the job schema allows only s3:// and https:// URIs.
    let (class, reason) = &reasons[&plain_http.job.job_id];
    assert_eq!(*class, ErrorClass::SchemaInvalid);
    assert!(reason.contains("uri"), "{reason}");

    // A redelivery (a replay, a crash after finishing) is announced again and not charged.
    bus.publish(
        &queue,
        Outgoing::new(contracts::encode(&photo)).with_key(photo.job.tenant_id.as_str()),
    )
    .await
    .unwrap();
    let announced = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let logs = std::fs::read_to_string(&log_path).unwrap();
            if logs.contains("Already finished; announced again") {
                return logs;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the redelivery was not handled within 60 s");
    assert!(announced.contains("Model loaded"), "{announced}");
    assert_eq!(store.usage_of_job(photo.job.job_id).await.unwrap().len(), 1);

    let status = worker.terminate().await;
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn detect_prints_detections_and_explains_a_missing_runtime() {
    let model = service_env("SWITCHYARD_YOLO_MODEL");
    let dir = std::env::temp_dir().join(format!("switchyard-detect-{}", std::process::id()));
    let images = photos(&dir);
    let astronaut = images
        .iter()
        .find(|p| p.ends_with("astronaut.png"))
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["detect", "--json", "--model", &model])
        .arg(astronaut)
        .arg(dir.join("missing.png"))
        .output()
        .unwrap();
    // One image missing: the other is still answered, and the exit status says so.
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let line: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(line["image"]["width"], 512);
    assert!(!line["detections"].as_array().unwrap().is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.png"));

    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["detect", "--model", &model])
        .arg(astronaut)
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ONNX Runtime library is not available"),
        "{stderr}"
    );
    assert!(stderr.contains("ORT_DYLIB_PATH"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
