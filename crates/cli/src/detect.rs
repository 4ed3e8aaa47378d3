//! `switchyard detect`: the vision worker's pipeline, once, from the command line.

use std::io::{self, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use switchyard_core::contracts::DetectParams;
use switchyard_vision::batcher::{BatchSettings, Batcher};
use switchyard_vision::model::{Detector, DetectorSettings, Device};
use switchyard_vision::pipeline::Pipeline;
use switchyard_vision::worker::nms_params;

#[derive(Debug, clap::Args)]
pub struct DetectArgs {
    /// The ONNX model (an Ultralytics detection export, or tools/vision/make_yolov8n.py's).
    #[arg(long, env = "SWITCHYARD_YOLO_MODEL")]
    pub model: PathBuf,
    /// Images: JPEG, PNG or WebP files.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Minimum confidence (Ultralytics' default 0.25).
    #[arg(long)]
    pub conf: Option<f32>,
    /// NMS IoU threshold (0.7).
    #[arg(long)]
    pub iou: Option<f32>,
    /// Most detections per image (300).
    #[arg(long)]
    pub max_det: Option<u32>,
    /// Keep only these class ids (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub classes: Option<Vec<u32>>,
    /// ONNX Runtime intra-op threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Images per inference run, at most.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// cpu, cuda or tensorrt (falls back to the CPU, with a warning, when unavailable).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Largest image decoded, in pixels.
    #[arg(long, default_value_t = 40_000_000)]
    pub max_pixels: u64,
    /// One JSON object per image (the result's `detections` output, plus `path`).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &DetectArgs) -> anyhow::Result<ExitCode> {
    let device = Device::parse(&args.device).map_err(anyhow::Error::msg)?;
    let params = nms_params(&DetectParams {
        conf: args.conf,
        iou: args.iou,
        max_det: args.max_det,
        classes: args.classes.clone(),
    })
    .map_err(anyhow::Error::msg)?;
    let settings = DetectorSettings {
        intra_threads: args.threads,
        device,
        ..DetectorSettings::default()
    };
    let detector = Detector::load(&args.model, &settings)?;
    let batcher = Batcher::start(
        detector,
        BatchSettings {
            max_batch: args.batch.max(1),
            max_queue_delay: Duration::from_millis(2),
        },
    )?;
    let in_flight = batcher.max_batch() * 2;
    let pipeline = Pipeline::new(batcher, args.max_pixels);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let started = Instant::now();
    let results: Vec<_> = runtime.block_on(
        futures_util::stream::iter(args.images.iter().cloned())
            .map(|path| {
                let (pipeline, params) = (pipeline.clone(), params.clone());
                async move {
                    let bytes = tokio::fs::read(&path)
                        .await
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    pipeline
                        .detect(Arc::from(bytes), params)
                        .await
                        .map_err(anyhow::Error::from)
                }
            })
            .buffered(in_flight)
            .collect(),
    );
    let wall = started.elapsed();
    let mut stdout = io::stdout().lock();
    let mut failed = 0usize;
    for (path, result) in args.images.iter().zip(results) {
        match result {
            Ok(detected) if args.json => {
                let mut value = serde_json::to_value(&detected.detections)?;
                value["path"] = serde_json::Value::String(path.display().to_string());
                writeln!(stdout, "{value}")?;
            }
            Ok(detected) => {
                let d = &detected.detections;
                let t = &d.timings_ms;
                writeln!(
                    stdout,
                    "{}: {}x{}, {} detections (batch {}; decode {:.1} ms, preprocess {:.1} ms, inference {:.1} ms, postprocess {:.1} ms)",
                    path.display(),
                    d.image.width,
                    d.image.height,
                    d.detections.len(),
                    d.batch_size,
                    t.decode,
                    t.preprocess,
                    t.inference,
                    t.postprocess
                )?;
                for det in &d.detections {
                    let [x1, y1, x2, y2] = det.bbox;
                    writeln!(
                        stdout,
                        "  {:>3} {:<16} {:.3}  [{x1:.1}, {y1:.1}, {x2:.1}, {y2:.1}]",
                        det.class_id, det.class_name, det.confidence
                    )?;
                }
            }
            Err(error) => {
                failed += 1;
                writeln!(io::stderr(), "{}: {error:#}", path.display())?;
            }
        }
    }
    if !args.json {
        writeln!(
            stdout,
            "{} images in {:.2} s ({:.1} images/s)",
            args.images.len(),
            wall.as_secs_f64(),
            args.images.len() as f64 / wall.as_secs_f64()
        )?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
