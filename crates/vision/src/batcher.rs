//! Dynamic micro-batching, as Triton's dynamic batcher does it: the first waiting image opens
//! a batch; the batch runs when it holds `max_batch` images or `max_queue_delay` has passed
//! since it opened, whichever comes first. One thread owns the session; callers preprocess on
//! their own threads and postprocess after, so both overlap with the next batch's inference.

use std::ops::Range;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, mpsc};
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
    /// The whole batch's output, shared by its images rather than copied out for each.
    batch_output: Arc<Vec<f32>>,
    range: Range<usize>,
    pub batch_size: usize,
    /// The whole batch's run.
    pub batch_time: Duration,
    /// From submission to the start of the run.
    pub queued: Duration,
}

impl Inferred {
    /// This image's rows of the output: `(4 + nc) × anchors` floats.
    pub fn output(&self) -> &[f32] {
        &self.batch_output[self.range.clone()]
    }
}

/// Tensor slots handed back once their batch has run. A fresh slot is megabytes of zeroed pages
/// that fault in one by one as the letterbox writes them; a recycled one is already mapped.
#[derive(Debug)]
struct Slots {
    free: Mutex<Vec<Vec<f32>>>,
    keep: usize,
}

impl Slots {
    fn take(&self, len: usize) -> Vec<f32> {
        let recycled = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match recycled {
            Some(slot) if slot.len() == len => slot,
            _ => vec![0.0; len],
        }
    }

    fn give(&self, slot: Vec<f32>) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < self.keep {
            free.push(slot);
        }
    }
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
    slots: Arc<Slots>,
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
        // As many slots as can be queued, in a batch and being written at once.
        let slots = Arc::new(Slots {
            free: Mutex::new(Vec::new()),
            keep: max_batch * 6,
        });
        let returned = slots.clone();
        std::thread::Builder::new()
            .name("switchyard-infer".into())
            .spawn(move || run(detector, &receiver, max_batch, delay, &returned))
            .map_err(|error| {
                ModelError::Inference(format!("cannot start the inference thread: {error}"))
            })?;
        Ok(Batcher {
            sender,
            info,
            max_batch,
            slots,
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

    /// A slot to letterbox one image into, recycled from an earlier image when one is free: its
    /// contents are that image's, so the caller must write every element (the letterbox does).
    pub fn slot(&self) -> Vec<f32> {
        self.slots.take(self.slot_len())
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

fn run(
    mut detector: Detector,
    receiver: &Receiver<Request>,
    max_batch: usize,
    delay: Duration,
    slots: &Slots,
) {
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
        // A batch of one runs on its own slot: copying it would only delay the run.
        let tensor = if let [only] = batch.as_slice() {
            &only.tensor
        } else {
            input.clear();
            for request in &batch {
                input.extend_from_slice(&request.tensor);
            }
            &input
        };
        let started = Instant::now();
        let result = detector.run(tensor, batch.len());
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
                let output = Arc::new(output);
                for (i, request) in batch.drain(..).enumerate() {
                    slots.give(request.tensor);
                    let inferred = Inferred {
                        anchors,
                        batch_output: output.clone(),
                        range: i * per..(i + 1) * per,
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
                    slots.give(request.tensor);
                    let _ = request.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_up_to_the_cap_and_only_at_their_size() {
        let slots = Slots {
            free: Mutex::new(Vec::new()),
            keep: 2,
        };
        let first = slots.take(16);
        assert_eq!(first, vec![0.0; 16]);
        let address = first.as_ptr();
        slots.give(first);
        let again = slots.take(16);
        assert_eq!(
            again.as_ptr(),
            address,
            "a returned slot is handed out again"
        );
        slots.give(again);
        // A slot of another size (a model with another input) is never handed out.
        assert_eq!(slots.take(8).len(), 8);
        for _ in 0..5 {
            slots.give(vec![1.0; 16]);
        }
        assert_eq!(
            slots.free.lock().unwrap().len(),
            2,
            "no more than `keep` are held"
        );
    }
}
