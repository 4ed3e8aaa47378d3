//! Bytes in, detections out: decode and letterbox on a blocking thread, inference in the
//! micro-batcher, NMS on a blocking thread again, so that with several images in flight each
//! stage overlaps with the others.

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_core::contracts::{Detection, Detections, ImageSize, StageTimings};

use crate::batcher::Batcher;
use crate::decode::{self, DecodeError};
use crate::letterbox::{self, Geometry};
use crate::model::ModelError;
use crate::nms::{self, NmsParams};

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The input is at fault: retrying cannot help.
    #[error(transparent)]
    Image(#[from] DecodeError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// One image's detections and what they cost.
#[derive(Clone, Debug, PartialEq)]
pub struct Detected {
    pub detections: Detections,
    /// This image's share of its batch's inference (what the ledger prices).
    pub compute: Duration,
    /// Time in the batcher's queue before its batch ran.
    pub queued: Duration,
}

#[derive(Clone, Debug)]
pub struct Pipeline {
    batcher: Batcher,
    max_pixels: u64,
    /// Decoding and letterboxing, one image at a time: more at once only takes cores from
    /// inference, whose parallel operators stall on a preempted thread.
    preparing: Arc<tokio::sync::Semaphore>,
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

impl Pipeline {
    pub fn new(batcher: Batcher, max_pixels: u64) -> Pipeline {
        Pipeline {
            batcher,
            max_pixels,
            preparing: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    pub fn batcher(&self) -> &Batcher {
        &self.batcher
    }

    pub async fn detect(
        &self,
        bytes: Arc<[u8]>,
        params: NmsParams,
    ) -> Result<Detected, DetectError> {
        let batcher = self.batcher.clone();
        let max_pixels = self.max_pixels;
        let permit = self
            .preparing
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ModelError::Inference("the pipeline is closed".into()))?;
        let submitted = tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            let image = decode::decode(&bytes, max_pixels)?;
            let t1 = Instant::now();
            let info = batcher.info();
            let geometry = Geometry::new((image.width, image.height), (info.width, info.height));
            let mut tensor = batcher.slot();
            letterbox::letterbox_into(&image.pixels, &geometry, &mut tensor);
            drop(image);
            let t2 = Instant::now();
            drop(permit);
            let reply = batcher.submit(tensor)?;
            Ok::<_, DetectError>((reply, geometry, t1 - t0, t2 - t1))
        })
        .await
        .map_err(|error| ModelError::Inference(format!("preprocessing panicked: {error}")))??;
        let (reply, geometry, decode_time, preprocess_time) = submitted;
        let inferred = reply.await.map_err(|_| {
            ModelError::Inference("the inference thread stopped before answering".into())
        })??;
        let info = self.batcher.info().clone();
        tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            let nc = info.classes();
            let boxes =
                nms::postprocess(inferred.output(), nc, inferred.anchors, &params, &geometry);
            let detections: Vec<Detection> = boxes
                .into_iter()
                .map(|b| Detection {
                    class_id: b.class_id,
                    class_name: info
                        .names
                        .get(b.class_id as usize)
                        .cloned()
                        .unwrap_or_default(),
                    confidence: b.score,
                    bbox: b.xyxy,
                })
                .collect();
            let postprocess_time = t0.elapsed();
            let size = inferred.batch_size.max(1) as u32;
            Ok(Detected {
                detections: Detections {
                    image: ImageSize {
                        width: geometry.src_width,
                        height: geometry.src_height,
                    },
                    detections,
                    timings_ms: StageTimings {
                        decode: ms(decode_time),
                        preprocess: ms(preprocess_time),
                        inference: ms(inferred.batch_time),
                        postprocess: ms(postprocess_time),
                    },
                    batch_size: size,
                },
                compute: inferred.batch_time / size,
                queued: inferred.queued,
            })
        })
        .await
        .map_err(|error| ModelError::Inference(format!("postprocessing panicked: {error}")))?
    }
}
