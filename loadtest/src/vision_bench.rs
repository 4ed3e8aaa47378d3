//! The vision benchmark: per batch size, ONNX Runtime's own throughput on already-prepared
//! tensors (the physical limit: the model alone) and the whole pipeline (bytes in, detections
//! out: decode, letterbox, micro-batched inference, NMS) with enough images in flight to fill
//! batches, in alternating rounds; the per-stage milliseconds per image; the medians.
//!
//!     vision-bench --model M.onnx --threads 2 --batches 1,2,4,8 IMAGE...
//!
//! `loadtest/vision-bench.sh` runs it and the Python reference (`tools/vision/yolo_ref.py
//! --bench`) in the same run, on the same images and thread budget.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use futures_util::StreamExt as _;
use switchyard_vision::batcher::{BatchSettings, Batcher};
use switchyard_vision::decode;
use switchyard_vision::letterbox::{Geometry, letterbox_into};
use switchyard_vision::model::{Detector, DetectorSettings};
use switchyard_vision::nms::{self, NmsParams};
use switchyard_vision::pipeline::Pipeline;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, env = "SWITCHYARD_YOLO_MODEL")]
    model: PathBuf,
    /// ONNX Runtime intra-op threads (the Python reference gets the same).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    batches: Vec<usize>,
    /// Images per measurement (the files are cycled).
    #[arg(long, default_value_t = 96)]
    images_per_run: usize,
    /// Alternating model-only and pipeline measurements per batch size; the summary line gives
    /// the medians.
    #[arg(long, default_value_t = 5,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    rounds: usize,
    /// The micro-batcher's wait for a batch to fill.
    #[arg(long, default_value = "5ms", value_parser = humantime_parse)]
    max_queue_delay: Duration,
    /// Stop ONNX Runtime's threads spinning in the pipeline runs (`[vision] intra_op_spinning
    /// = false`); the model-only runs always use its default, spinning.
    #[arg(long)]
    no_spin: bool,
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// One round's images per second.
struct Round {
    model_only: f64,
    pipeline: f64,
    steady: f64,
    beside_preparation: f64,
}

fn humantime_parse(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration"))?;
    match unit {
        "us" => Ok(Duration::from_micros(n)),
        "ms" | "" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        _ => Err(format!("`{text}`: use us, ms or s")),
    }
}

fn detector(args: &Args, spin: bool) -> anyhow::Result<Detector> {
    Ok(Detector::load(
        &args.model,
        &DetectorSettings {
            intra_threads: args.threads,
            spin,
            ..DetectorSettings::default()
        },
    )?)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let files: Vec<Arc<[u8]>> = args
        .images
        .iter()
        .map(|p| {
            std::fs::read(p)
                .map(Arc::from)
                .with_context(|| format!("cannot read {}", p.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut out = std::io::stdout().lock();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    // The letterboxed tensors for the model-only runs are made once, outside the clock.
    let (h, w) = {
        let model = detector(&args, true)?;
        (model.info().height, model.info().width)
    };
    let slot = 3 * h as usize * w as usize;
    let tensors: Vec<Vec<f32>> = files
        .iter()
        .map(|bytes| {
            let image = decode::decode(bytes, 100_000_000)?;
            let geometry = Geometry::new((image.width, image.height), (w, h));
            let mut tensor = vec![0.0f32; slot];
            letterbox_into(&image.pixels, &geometry, &mut tensor);
            Ok(tensor)
        })
        .collect::<anyhow::Result<_>>()?;

    for &batch in &args.batches {
        // The model alone (the physical limit) and the whole pipeline, measured in alternating
        // rounds: this VM's speed drifts by more than the gap being measured, so each round's
        // ratio compares two measurements taken seconds apart.
        let mut model = detector(&args, true)?;
        let mut input = Vec::with_capacity(slot * batch);
        for i in 0..batch {
            input.extend_from_slice(&tensors[i % tensors.len()]);
        }
        let batcher = Batcher::start(
            detector(&args, !args.no_spin)?,
            BatchSettings {
                max_batch: batch,
                max_queue_delay: args.max_queue_delay,
            },
        )?;
        let pipeline = Pipeline::new(batcher, 100_000_000);
        let run = |count: usize| {
            let pipeline = pipeline.clone();
            let files = files.clone();
            runtime.block_on(async move {
                futures_util::stream::iter(0..count)
                    .map(|i| {
                        let (pipeline, bytes) = (pipeline.clone(), files[i % files.len()].clone());
                        async move {
                            let detected = pipeline.detect(bytes, NmsParams::default()).await;
                            (detected, Instant::now())
                        }
                    })
                    .buffer_unordered(2 * batch)
                    .collect::<Vec<_>>()
                    .await
            })
        };
        let (anchors, output) = model.run(&input, batch)?; // warm-up
        let one_output = output[..output.len() / batch].to_vec();
        let nc = model.info().classes();
        run(2 * batch); // warm-up
        let mut rounds = Vec::new();
        for round in 0..args.rounds {
            let runs = args.images_per_run.div_ceil(batch);
            let started = Instant::now();
            for _ in 0..runs {
                model.run(&input, batch)?;
            }
            let limit = (runs * batch) as f64 / started.elapsed().as_secs_f64();

            // The model with the pipeline's CPU work beside it on a plain thread (each image's
            // decode, letterbox and NMS, none of the pipeline's machinery): what sharing the
            // two cores costs by itself.
            let shared = std::thread::scope(|scope| -> anyhow::Result<f64> {
                let (next, images) = std::sync::mpsc::channel::<usize>();
                let preparing = scope.spawn(|| -> anyhow::Result<()> {
                    let mut tensor = vec![0.0f32; slot];
                    let params = NmsParams::default();
                    for i in images {
                        let image = decode::decode(&files[i % files.len()], 100_000_000)?;
                        let geometry = Geometry::new((image.width, image.height), (w, h));
                        letterbox_into(&image.pixels, &geometry, &mut tensor);
                        std::hint::black_box(nms::postprocess(
                            &one_output,
                            nc,
                            anchors,
                            &params,
                            &geometry,
                        ));
                    }
                    Ok(())
                });
                let started = Instant::now();
                let mut ran = Ok(());
                for run in 0..runs {
                    // A closed channel means the preparing thread stopped: its error, from the
                    // join below, says why.
                    if (0..batch).any(|k| next.send(run * batch + k).is_err()) {
                        break;
                    }
                    ran = model.run(&input, batch).map(drop);
                    if ran.is_err() {
                        break;
                    }
                }
                drop(next);
                preparing.join().map_err(|panic| {
                    let reason = panic
                        .downcast_ref::<&str>()
                        .copied()
                        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                        .unwrap_or("no message");
                    anyhow::anyhow!("the preparing thread panicked: {reason}")
                })??;
                ran?;
                Ok((runs * batch) as f64 / started.elapsed().as_secs_f64())
            })?;

            let started = Instant::now();
            let results = run(args.images_per_run);
            let wall = started.elapsed().as_secs_f64();
            let mut finished: Vec<Instant> = results.iter().map(|(_, at)| *at).collect();
            finished.sort();
            let done: Vec<_> = results
                .into_iter()
                .map(|(detected, _)| detected)
                .collect::<Result<_, _>>()?;
            let n = done.len() as f64;
            let per_second = n / wall;
            // A worker serving a queue never empties its pipeline: the rate once it is full,
            // from the end of the second batch to the end of the last, leaves out the first
            // batch's unoverlapped decode and the last one's unoverlapped NMS.
            let skip = 2 * batch;
            let steady = if finished.len() > skip + batch {
                let span = finished[finished.len() - 1] - finished[skip - 1];
                (finished.len() - skip) as f64 / span.as_secs_f64()
            } else {
                per_second
            };
            let mean = |f: &dyn Fn(&switchyard_vision::pipeline::Detected) -> f64| {
                done.iter().map(f).sum::<f64>() / n
            };
            writeln!(
                out,
                "{{\"kind\":\"round\",\"batch\":{batch},\"round\":{round},\"model_only\":{limit:.2},\"model_beside_prep\":{shared:.2},\"pipeline\":{per_second:.2},\"of_model_only\":{:.3},\"steady\":{steady:.2},\"steady_of_model_only\":{:.3},\"mean_batch\":{:.2},\"ms_per_image\":{{\"decode\":{:.2},\"preprocess\":{:.2},\"inference\":{:.2},\"postprocess\":{:.2}}}}}",
                per_second / limit,
                steady / limit,
                mean(&|d| f64::from(d.detections.batch_size)),
                mean(&|d| d.detections.timings_ms.decode),
                mean(&|d| d.detections.timings_ms.preprocess),
                mean(&|d| d.compute.as_secs_f64() * 1000.0),
                mean(&|d| d.detections.timings_ms.postprocess),
            )?;
            rounds.push(Round {
                model_only: limit,
                pipeline: per_second,
                steady,
                beside_preparation: shared,
            });
        }
        let median = |f: &dyn Fn(&Round) -> f64| {
            let mut values: Vec<f64> = rounds.iter().map(f).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        writeln!(
            out,
            "{{\"kind\":\"summary\",\"batch\":{batch},\"rounds\":{},\"model_only\":{:.2},\"pipeline\":{:.2},\"of_model_only\":{:.3},\"steady_of_model_only\":{:.3},\"model_beside_prep_of_model_only\":{:.3},\"of_model_only_range\":[{:.3},{:.3}]}}",
            rounds.len(),
            median(&|r| r.model_only),
            median(&|r| r.pipeline),
            median(&|r| r.pipeline / r.model_only),
            median(&|r| r.steady / r.model_only),
            median(&|r| r.beside_preparation / r.model_only),
            rounds
                .iter()
                .map(|r| r.pipeline / r.model_only)
                .fold(f64::INFINITY, f64::min),
            rounds
                .iter()
                .map(|r| r.pipeline / r.model_only)
                .fold(0.0, f64::max),
        )?;
    }
    Ok(())
}
