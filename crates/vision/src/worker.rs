//! The vision worker: the runtime's handler for `switchyard.routed/v1` on vision backends'
//! queues.
//!
//! Per delivery: a job that already has a result is announced again and not run twice;
//! otherwise the image is read (inline base64, the blob store, or `https://` through the SSRF
//! guard, all under `max_image_bytes`), decoded, letterboxed, batched with whatever else is
//! waiting, postprocessed, and finished in the ledger with its share of the batch's compute
//! time. A bad image (unknown format, corrupt, a decompression bomb, too big) is dead-lettered
//! as `invalid_input` at once; a failed inference or an unreachable store is retried.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::Utc;
use switchyard_bus::Rejection;
use switchyard_bus::runtime::{Failure, Handler, JobContext};
use switchyard_core::BackendId;
use switchyard_core::config::{Backend, RawVision};
use switchyard_core::contracts::{
    DetectParams, ErrorClass, Input, Output, ResultStatus, RoutedJob, Task,
};
use switchyard_core::rates::Usage;
use switchyard_ledger::blobs::BlobStore;
use switchyard_ledger::events::EventSink;
use switchyard_ledger::ledger::{Call, Ledger, Outcome};
use switchyard_ledger::serving::{deadline_of, finish_failure, note_dead_letter};
use switchyard_ledger::store::Store;
use switchyard_ledger::webhook::guard::{GuardedResolver, SsrfGuard};
use tracing::debug;

use crate::batcher::BatchSettings;
use crate::model::DetectorSettings;
use crate::nms::NmsParams;
use crate::pipeline::{DetectError, Pipeline};

/// `[vision]`, resolved.
#[derive(Clone, Debug)]
pub struct VisionSettings {
    pub detector: DetectorSettings,
    pub batch: BatchSettings,
    pub max_image_bytes: u64,
    pub max_pixels: u64,
    pub fetch_timeout: Duration,
    pub fetch_allow: Vec<String>,
}

impl VisionSettings {
    pub fn from_config(vision: &RawVision) -> VisionSettings {
        VisionSettings {
            detector: DetectorSettings {
                intra_threads: vision.intra_threads,
                spin: vision.intra_op_spinning,
                device: vision.execution_provider,
                device_id: vision.device_id,
                ort_library: vision.ort_library.clone(),
            },
            batch: BatchSettings {
                max_batch: vision.max_batch,
                max_queue_delay: vision.max_queue_delay,
            },
            max_image_bytes: vision.max_image_bytes,
            max_pixels: vision.max_pixels,
            fetch_timeout: vision.fetch_timeout,
            fetch_allow: vision.fetch_allow.clone(),
        }
    }
}

/// Reads `https://` images: resolved addresses checked against the SSRF guard at connect
/// time, no redirects, no proxy, a whole-request timeout and a byte cap while streaming.
#[derive(Clone, Debug)]
pub struct Fetcher {
    http: reqwest::Client,
    guard: Arc<SsrfGuard>,
}

impl Fetcher {
    pub fn new(timeout: Duration, allow: &[String]) -> Result<Fetcher, String> {
        let guard = Arc::new(
            SsrfGuard::new(allow).map_err(|e| format!("invalid [vision] fetch_allow: {e}"))?,
        );
        let http = reqwest::Client::builder()
            // A redirect is a second request to a host the producer chose, unguarded.
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(GuardedResolver(Arc::clone(&guard)))
            .no_proxy()
            .timeout(timeout)
            .user_agent(concat!("switchyard-vision/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Fetcher { http, guard })
    }

    async fn fetch(&self, url: &url::Url, max_bytes: u64) -> Result<Vec<u8>, Failure> {
        let invalid = |reason: String| Failure::reject(ErrorClass::InvalidInput, reason);
        if url.scheme() != "https" {
            return Err(invalid(format!(
                "`{}` images are not fetched; use https://, s3:// or inline",
                url.scheme()
            )));
        }
        self.guard
            .check_url(url)
            .map_err(|refused| invalid(format!("{url} is refused: {refused}")))?;
        let mut response = self.http.get(url.clone()).send().await.map_err(|error| {
            if error.is_connect() || error.is_timeout() {
                Failure::Retry(format!("cannot fetch {url}: {error}"))
            } else {
                invalid(format!("cannot fetch {url}: {error}"))
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            let message = format!("fetching {url} answered {status}");
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                Failure::Retry(message)
            } else {
                invalid(message)
            });
        }
        if let Some(length) = response.content_length()
            && length > max_bytes
        {
            return Err(invalid(format!(
                "{url} is {length} bytes, over the limit of {max_bytes}"
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| Failure::Retry(format!("reading {url}: {error}")))?
        {
            if (body.len() + chunk.len()) as u64 > max_bytes {
                return Err(invalid(format!(
                    "{url} is over the limit of {max_bytes} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// A backend this worker serves: its catalog entry and its model's pipeline.
#[derive(Debug)]
pub struct Served {
    pub backend: Backend,
    pub pipeline: Pipeline,
}

pub struct VisionWorker<S, E, Bl> {
    ledger: Arc<Ledger<S, E, Bl>>,
    served: HashMap<BackendId, Arc<Served>>,
    fetcher: Fetcher,
    settings: VisionSettings,
}

impl<S, E, Bl> std::fmt::Debug for VisionWorker<S, E, Bl> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VisionWorker")
            .field("served", &self.served.keys().collect::<Vec<_>>())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A job's detection parameters over Ultralytics' defaults, checked.
pub fn nms_params(params: &DetectParams) -> Result<NmsParams, String> {
    let defaults = NmsParams::default();
    let conf = params.conf.unwrap_or(defaults.conf);
    let iou = params.iou.unwrap_or(defaults.iou);
    if !(0.0..=1.0).contains(&conf) {
        return Err(format!("conf {conf} is not between 0 and 1"));
    }
    if !(0.0..=1.0).contains(&iou) {
        return Err(format!("iou {iou} is not between 0 and 1"));
    }
    let max_det = params.max_det.map_or(defaults.max_det, |n| n as usize);
    if !(1..=10_000).contains(&max_det) {
        return Err(format!("max_det {max_det} is not between 1 and 10000"));
    }
    Ok(NmsParams {
        conf,
        iou,
        max_det,
        classes: params.classes.clone(),
    })
}

impl<S: Store, E: EventSink, Bl: BlobStore> VisionWorker<S, E, Bl> {
    pub fn new(
        ledger: Arc<Ledger<S, E, Bl>>,
        served: Vec<Served>,
        fetcher: Fetcher,
        settings: VisionSettings,
    ) -> VisionWorker<S, E, Bl> {
        VisionWorker {
            ledger,
            served: served
                .into_iter()
                .map(|s| (s.backend.id.clone(), Arc::new(s)))
                .collect(),
            fetcher,
            settings,
        }
    }

    /// The queues of the backends this worker serves.
    pub fn queues(&self) -> Vec<switchyard_core::QueueName> {
        let mut queues: Vec<_> = self
            .served
            .values()
            .map(|s| s.backend.queue.clone())
            .collect();
        queues.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        queues
    }

    async fn serve(&self, routed: RoutedJob, context: JobContext) -> Result<(), Failure> {
        let started_at = Utc::now();
        let job = &routed.job;
        let Some(served) = self.served.get(&routed.decision.backend_id) else {
            return Err(Failure::reject(
                ErrorClass::Internal,
                format!(
                    "backend `{}` is not served by this vision worker (queue {})",
                    routed.decision.backend_id.as_str(),
                    context.queue
                ),
            ));
        };
        let Task::Detect(task) = &job.task else {
            return Err(Failure::reject(
                ErrorClass::InvalidInput,
                format!(
                    "a vision backend serves `detect`, not `{}`",
                    job.task.kind().as_str()
                ),
            ));
        };
        // A redelivery of a finished job is announced again; the image is not run twice.
        if let Some(finished) = self
            .ledger
            .finish_existing(job, routed.parent.as_ref())
            .await
            .map_err(|error| finish_failure(&error))?
        {
            debug!(message = "Already finished; announced again.", job_id = %job.job_id, status = ?finished.result.status);
            return Ok(());
        }
        if let Some(deadline) = deadline_of(job)
            && Utc::now() >= deadline
        {
            return Err(Failure::reject(
                ErrorClass::DeadlineExceeded,
                format!("the deadline ({deadline}) passed before inference"),
            ));
        }
        let params =
            nms_params(&task.params).map_err(|e| Failure::reject(ErrorClass::InvalidInput, e))?;
        let bytes = self.image(&task.input).await?;
        let occurred_at = Utc::now();
        let sent = std::time::Instant::now();
        let detected = served
            .pipeline
            .detect(bytes.into(), params)
            .await
            .map_err(|error| match error {
                DetectError::Image(error) => {
                    Failure::reject(ErrorClass::InvalidInput, error.to_string())
                }
                DetectError::Model(error) => Failure::Retry(error.to_string()),
            })?;
        let info = served.pipeline.batcher().info();
        let call = Call {
            name: "main".to_owned(),
            backend_id: served.backend.id.clone(),
            provider: "onnx".to_owned(),
            model: info.name.clone(),
            price: served.backend.price.clone(),
            usage: Usage {
                images: 1,
                compute_us: detected.compute.as_micros() as u64,
                requests: 1,
                ..Usage::default()
            },
            latency_ms: sent.elapsed().as_millis() as u64,
            occurred_at,
        };
        let outcome = Outcome {
            status: ResultStatus::Succeeded,
            output: Some(Output::Detections(detected.detections)),
            error: None,
            backend_id: Some(served.backend.id.clone()),
            model: Some(info.name.clone()),
            attempts: context.attempt,
            started_at,
            finished_at: Utc::now(),
            calls: vec![call],
            parent: routed.parent.clone(),
        };
        let finished = self
            .ledger
            .finish(job, outcome)
            .await
            .map_err(|error| finish_failure(&error))?;
        debug!(
            message = "Job finished.",
            job_id = %job.job_id,
            backend = served.backend.id.as_str(),
            cost_micros = finished.result.cost_micros.0,
        );
        Ok(())
    }

    async fn image(&self, input: &Input) -> Result<Vec<u8>, Failure> {
        let max = self.settings.max_image_bytes;
        let invalid = |reason: String| Failure::reject(ErrorClass::InvalidInput, reason);
        match input {
            Input::Inline { data_base64, .. } => {
                // Base64 is 4/3 of the bytes: refuse before decoding a huge string.
                if (data_base64.len() as u64) / 4 * 3 > max + 3 {
                    return Err(invalid(format!(
                        "the inline image is over the limit of {max} bytes"
                    )));
                }
                base64::engine::general_purpose::STANDARD
                    .decode(data_base64)
                    .map_err(|error| invalid(format!("inline input is not base64: {error}")))
            }
            Input::Text { .. } => Err(invalid("a detect job needs an image, not text".into())),
            Input::Uri {
                uri, size_bytes, ..
            } => {
                if let Some(size) = size_bytes
                    && *size > max
                {
                    return Err(invalid(format!(
                        "{uri} is {size} bytes, over the limit of {max}"
                    )));
                }
                match uri.scheme() {
                    "s3" | "file" => {
                        self.ledger
                            .blobs()
                            .get(uri.as_str(), max)
                            .await
                            .map_err(|error| {
                                if error.is_retryable() {
                                    Failure::Retry(format!("cannot read {uri}: {error}"))
                                } else {
                                    invalid(format!("cannot read {uri}: {error}"))
                                }
                            })
                    }
                    _ => self.fetcher.fetch(uri, max).await,
                }
            }
        }
    }
}

impl<S: Store, E: EventSink, Bl: BlobStore> Handler for VisionWorker<S, E, Bl> {
    type Message = RoutedJob;

    async fn handle(&self, message: RoutedJob, context: JobContext) -> Result<(), Failure> {
        self.serve(message, context).await
    }

    async fn dead_lettered(&self, routed: RoutedJob, rejection: &Rejection, context: &JobContext) {
        note_dead_letter(self.ledger.store(), &routed, rejection, context).await;
    }
}
