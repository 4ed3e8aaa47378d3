//! What every worker's handler shares around the ledger: how a failed finish becomes a
//! runtime failure, a job's deadline, and the dead-letter note in a job's timeline.

use chrono::{DateTime, Utc};
use switchyard_bus::Rejection;
use switchyard_bus::runtime::{Failure, JobContext};
use switchyard_core::contracts::{ErrorClass, JobEnvelope, JobState, RoutedJob};
use tracing::warn;

use crate::ledger::FinishError;
use crate::store::{StatusUpdate, Store};

/// A store that is down is retried; anything else is a bug worth a dead letter.
pub fn finish_failure(error: &FinishError) -> Failure {
    if error.is_retryable() {
        Failure::Retry(error.to_string())
    } else {
        Failure::reject(ErrorClass::Internal, error.to_string())
    }
}

/// `submitted_at + deadline_ms`, when the job has a deadline.
pub fn deadline_of(job: &JobEnvelope) -> Option<DateTime<Utc>> {
    let ms = job.routing.deadline_ms?;
    Some(
        job.submitted_at
            + chrono::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX / 2)),
    )
}

/// Notes a dead letter in the job's timeline, so `switchyard jobs get` says where the job went
/// and why; a replay moves the job on from there. A failure to note it is logged, not raised:
/// the letter itself is already durable.
pub async fn note_dead_letter<S: Store>(
    store: &S,
    routed: &RoutedJob,
    rejection: &Rejection,
    context: &JobContext,
) {
    let update = StatusUpdate {
        job_id: routed.job.job_id,
        tenant_id: routed.job.tenant_id.clone(),
        state: JobState::DeadLettered,
        at: Utc::now(),
        attempt: Some(context.attempt),
        backend_id: Some(routed.decision.backend_id.clone()),
        detail: Some(format!(
            "{}: {} (on {})",
            rejection.class,
            rejection.reason,
            context.queue.dead_letter()
        )),
    };
    if let Err(error) = store.record_status(&update).await {
        warn!(message = "Failed to note the dead letter in the job's timeline.", job_id = %routed.job.job_id, %error);
    }
}
