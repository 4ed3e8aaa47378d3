//! Dynamic micro-batching, as Triton's dynamic batcher does it: the first waiting image opens
//! a batch; the batch runs when it holds `max_batch` images or `max_queue_delay` has passed
//! since it opened, whichever comes first. One thread owns the session; callers preprocess on
//! their own threads and postprocess after, so both overlap with the next batch's inference.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::model::{Detector, ModelError, ModelInfo};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSettings {
    pub max_batch: usize,
    pub max_queue_delay: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_batch: 8,
            max_queue_delay: Duration::from_micros(2000),
        }
    }
}

/// One image's share of a batch run.
#[derive(Debug)]
pub struct Inferred {
    pub anchors: usize,
    /// `(4 + nc) × anchors`.
    pub output: Vec<f32>,
    pub batch_size: usize,
    /// The whole batch's run.
    pub batch_time: Duration,
    /// From submission to the start of the run.
    pub queued: Duration,
}

struct Request {
    tensor: Vec<f32>,
    submitted: Instant,
    reply: oneshot::Sender<Result<Inferred, ModelError>>,
}

/// A handle to the inference thread; cheap to clone. The thread ends when the last handle is
/// dropped.
#[derive(Clone, Debug)]
pub struct Batcher {
    sender: SyncSender<Request>,
    info: Arc<ModelInfo>,
    max_batch: usize,
}

impl Batcher {
    /// Starts the inference thread. A model with a fixed batch axis caps `max_batch` at it.
    pub fn start(detector: Detector, settings: BatchSettings) -> Result<Batcher, ModelError> {
        let info = Arc::new(detector.info().clone());
        let max_batch = match info.max_batch {
            Some(fixed) if fixed < settings.max_batch.max(1) => {
                warn!(
                    message = "The model's batch axis is fixed; batches are capped at it.",
                    fixed,
                    configured = settings.max_batch
                );
                fixed
            }
            _ => settings.max_batch.max(1),
        };
        // Room for a few batches: producers wait (backpressure) rather than pile up tensors.
        let (sender, receiver) = mpsc::sync_channel(max_batch * 4);
        let delay = settings.max_queue_delay;
        std::thread::Builder::new()
            .name("switchyard-infer".into())
            .spawn(move || run(detector, &receiver, max_batch, delay))
            .map_err(|error| {
                ModelError::Inference(format!("cannot start the inference thread: {error}"))
            })?;
        Ok(Batcher {
            sender,
            info,
            max_batch,
        })
    }

    pub fn info(&self) -> &Arc<ModelInfo> {
        &self.info
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// The floats one image's slot takes.
    pub fn slot_len(&self) -> usize {
        3 * self.info.height as usize * self.info.width as usize
    }

    /// Queues one letterboxed image; blocks while the queue is full (call it from a blocking
    /// thread). The reply arrives when its batch has run.
    pub fn submit(
        &self,
        tensor: Vec<f32>,
    ) -> Result<oneshot::Receiver<Result<Inferred, ModelError>>, ModelError> {
        if tensor.len() != self.slot_len() {
            return Err(ModelError::Inference(format!(
                "a tensor of {} floats does not fit the model's {}",
                tensor.len(),
                self.slot_len()
            )));
        }
        let (reply, receiver) = oneshot::channel();
        let request = Request {
            tensor,
            submitted: Instant::now(),
            reply,
        };
        let request = match self.sender.try_send(request) {
            Ok(()) => return Ok(receiver),
            Err(TrySendError::Full(request)) => request,
            Err(TrySendError::Disconnected(_)) => return Err(stopped()),
        };
        self.sender.send(request).map_err(|_| stopped())?;
        Ok(receiver)
    }
}

fn stopped() -> ModelError {
    ModelError::Inference("the inference thread has stopped".into())
}

fn run(mut detector: Detector, receiver: &Receiver<Request>, max_batch: usize, delay: Duration) {
    let slot = {
        let info = detector.info();
        3 * info.height as usize * info.width as usize
    };
    let mut input: Vec<f32> = Vec::with_capacity(slot * max_batch);
    let mut batch: Vec<Request> = Vec::with_capacity(max_batch);
    // The first request of a batch blocks; the rest are taken until the batch is full or the
    // delay since the first has passed.
    while let Ok(first) = receiver.recv() {
        let opened = Instant::now();
        batch.push(first);
        while batch.len() < max_batch {
            let left = delay.saturating_sub(opened.elapsed());
            let next = if left.is_zero() {
                receiver.try_recv().map_err(|_| RecvTimeoutError::Timeout)
            } else {
                receiver.recv_timeout(left)
            };
            match next {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        input.clear();
        for request in &batch {
            input.extend_from_slice(&request.tensor);
        }
        let started = Instant::now();
        let result = detector.run(&input, batch.len());
        let batch_time = started.elapsed();
        let size = batch.len();
        debug!(
            message = "Batch ran.",
            size,
            ms = batch_time.as_secs_f64() * 1000.0
        );
        match result {
            Ok((anchors, output)) => {
                let per = output.len() / size;
                for (i, request) in batch.drain(..).enumerate() {
                    let inferred = Inferred {
                        anchors,
                        output: output[i * per..(i + 1) * per].to_vec(),
                        batch_size: size,
                        batch_time,
                        queued: started.saturating_duration_since(request.submitted),
                    };
                    // A caller that gave up (shutdown, deadline) no longer listens; that is fine.
                    let _ = request.reply.send(Ok(inferred));
                }
            }
            Err(error) => {
                warn!(message = "Inference failed.", %error, size);
                for request in batch.drain(..) {
                    let _ = request.reply.send(Err(error.clone()));
                }
            }
        }
    }
}
