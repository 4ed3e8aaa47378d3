//! `Ledger::finish`: the one way a worker ends a job.
//!
//! In this order, each step idempotent, all before the worker acknowledges the message:
//! 1. if the job already has a result (a redelivery after a crash, a replayed dead letter),
//!    nothing is priced or written again (the final status only if it is missing): the stored
//!    result is announced once more;
//! 2. every call is priced with the rates table and written as a usage event (deterministic
//!    event id, so the spend totals move once);
//! 3. an output too large to keep inline goes to the blob store and is referenced;
//! 4. the result is written (first write wins) and the job's timeline gains its final state;
//! 5. the webhook is queued in the store (the dispatcher delivers it, durably);
//! 6. the lifecycle event is published (its event id deduplicates a second publish).
//!
//! A failure at any step is returned as retryable or not; the worker nacks and the next
//! delivery resumes where this one stopped, without a second result or charge.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use switchyard_core::contracts::{
    self, BlobRef, Callback, ChildOutcome, ErrorClass, JobEnvelope, JobError, JobState,
    LifecycleEvent, MultiOutput, Output, ParentRef, ResultDocument, ResultSchema, ResultStatus,
    TaskKind, TraceContext, UsageEvent, UsageSchema,
};
use switchyard_core::money::Micros;
use switchyard_core::rates::{RatesError, RatesTable, Usage};
use switchyard_core::{BackendId, JobId};

use crate::blobs::{BlobError, BlobStore};
use crate::events::{EventError, EventSink};
use crate::store::{StatusUpdate, Store, StoreError, WebhookDelivery, WebhookState, Written};

/// One priced call a job made (the main inference, a classifier call, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// Unique within the job and stable across attempts: `main`, `classifier`.
    pub name: String,
    pub backend_id: BackendId,
    pub provider: String,
    pub model: String,
    /// The rates table entry that prices it.
    pub price: String,
    pub usage: Usage,
    pub latency_ms: u64,
    pub occurred_at: DateTime<Utc>,
}

/// How a job ended, as the worker saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub status: ResultStatus,
    pub output: Option<Output>,
    pub error: Option<JobError>,
    pub backend_id: Option<BackendId>,
    pub model: Option<String>,
    pub attempts: u32,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub calls: Vec<Call>,
    /// Set for a child of a `multi` job (the routed job's `parent`).
    pub parent: Option<ParentRef>,
}

/// Who a result is announced for.
struct Announce<'a> {
    job_id: JobId,
    tenant_id: &'a switchyard_core::TenantId,
    callback: Option<&'a Callback>,
    trace: Option<&'a TraceContext>,
}

/// What `finish` did.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// The stored result: this outcome's, or the earlier one's after a redelivery.
    pub result: ResultDocument,
    pub written: Written,
}

#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot price call `{call}` under `{price}`: {source}")]
    Pricing {
        call: String,
        price: String,
        source: RatesError,
    },
    #[error("cannot store the output: {0}")]
    Blob(#[from] BlobError),
    #[error("cannot publish the lifecycle event: {0}")]
    Events(#[from] EventError),
    /// An output or payload that does not serialize: a bug, which no retry fixes.
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
}

impl FinishError {
    /// Whether a redelivery may get further. Pricing failures are configuration errors: no
    /// retry fixes them, and a job must never be charged nothing by accident.
    pub fn is_retryable(&self) -> bool {
        match self {
            FinishError::Store(error) => error.is_retryable(),
            FinishError::Pricing { .. } | FinishError::Encode { .. } => false,
            FinishError::Blob(_) | FinishError::Events(_) => true,
        }
    }
}

/// Limits on what travels inline.
#[derive(Clone, Debug)]
pub struct LedgerSettings {
    /// Outputs whose JSON is larger go to the blob store.
    pub inline_output_limit_bytes: usize,
    /// Webhook bodies larger than this carry a link to the output instead.
    pub webhook_body_limit_bytes: usize,
    /// Lifetime of the links handed out in webhooks.
    pub presign_ttl: Duration,
}

impl LedgerSettings {
    /// From `[blobs]` and `[webhooks]`. Links live at least as long as the webhook schedule
    /// plus an hour, so the last retry still carries a working link (S3 caps presigned links
    /// at seven days).
    pub fn from_config(config: &switchyard_core::config::Config) -> LedgerSettings {
        use switchyard_core::config::BlobsConfig;
        let (inline, ttl) = match &config.blobs {
            BlobsConfig::Local {
                inline_output_limit_bytes,
                ..
            } => (*inline_output_limit_bytes, Duration::ZERO),
            BlobsConfig::S3 {
                inline_output_limit_bytes,
                presign_ttl,
                ..
            } => (*inline_output_limit_bytes, *presign_ttl),
        };
        let schedule: Duration = config.webhooks.schedule.iter().sum();
        let week = Duration::from_secs(7 * 24 * 3600);
        LedgerSettings {
            inline_output_limit_bytes: inline,
            webhook_body_limit_bytes: config.webhooks.max_body_bytes,
            presign_ttl: ttl.max(schedule + Duration::from_secs(3600)).min(week),
        }
    }
}

impl Default for LedgerSettings {
    fn default() -> Self {
        LedgerSettings {
            inline_output_limit_bytes: 64 * 1024,
            webhook_body_limit_bytes: 256 * 1024,
            presign_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// Where outcomes go.
#[derive(Clone, Debug)]
pub struct Ledger<S, E, B> {
    store: S,
    events: E,
    blobs: B,
    rates: Arc<RatesTable>,
    settings: LedgerSettings,
}

/// Prices `call` of `job` under `rates`: the usage event it becomes, whose id is fixed by the
/// job and the call's name, so recording it twice charges once. Also how the router charges
/// its classifier calls, outside any worker's `finish`.
pub fn price_call(
    rates: &RatesTable,
    job: &JobEnvelope,
    call: &Call,
) -> Result<UsageEvent, FinishError> {
    let cost = rates
        .cost(&call.price, &call.usage)
        .map_err(|source| FinishError::Pricing {
            call: call.name.clone(),
            price: call.price.clone(),
            source,
        })?;
    Ok(UsageEvent {
        schema: UsageSchema,
        event_id: UsageEvent::event_id_for(job.job_id, &call.name),
        job_id: job.job_id,
        tenant_id: job.tenant_id.clone(),
        backend_id: call.backend_id.clone(),
        provider: call.provider.clone(),
        model: call.model.clone(),
        usage: call.usage,
        cost_micros: cost.micros,
        rates_version: cost.rates_version,
        latency_ms: call.latency_ms,
        occurred_at: call.occurred_at,
    })
}

/// The Standard Webhooks payload: `{type, timestamp, data}`.
#[derive(Debug, Serialize)]
struct WebhookPayload<'a> {
    r#type: &'static str,
    timestamp: String,
    data: &'a ResultDocument,
}

impl<S: Store, E: EventSink, B: BlobStore> Ledger<S, E, B> {
    pub fn new(
        store: S,
        events: E,
        blobs: B,
        rates: Arc<RatesTable>,
        settings: LedgerSettings,
    ) -> Ledger<S, E, B> {
        Ledger {
            store,
            events,
            blobs,
            rates,
            settings,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn rates(&self) -> &RatesTable {
        &self.rates
    }

    /// Where large inputs and outputs live.
    pub fn blobs(&self) -> &B {
        &self.blobs
    }

    /// Prices a call: the usage event it becomes.
    pub fn price(&self, job: &JobEnvelope, call: &Call) -> Result<UsageEvent, FinishError> {
        price_call(&self.rates, job, call)
    }

    /// Ends `job` with `outcome`; see the module documentation for the steps. A child of a
    /// `multi` job (`outcome.parent`) is also recorded in its parent's join, and the last
    /// child to finish finishes the parent.
    pub async fn finish(
        &self,
        job: &JobEnvelope,
        outcome: Outcome,
    ) -> Result<Finished, FinishError> {
        let parent = outcome.parent.clone();
        if let Some(finished) = self.finish_existing(job, parent.as_ref()).await? {
            return Ok(finished);
        }
        let (result, written) = self.write(job, outcome).await?;
        self.announce_and_join(job, parent.as_ref(), result, written)
            .await
    }

    /// When `job` already has a result (a redelivery after a crash, a replayed dead letter):
    /// announces it again, idempotently, and returns it; `None` when the job has no result
    /// yet. A worker asks this before doing (and paying for) the work a second time.
    pub async fn finish_existing(
        &self,
        job: &JobEnvelope,
        parent: Option<&ParentRef>,
    ) -> Result<Option<Finished>, FinishError> {
        match self.store.result(job.job_id).await? {
            Some(existing) => Ok(Some(
                self.announce_and_join(job, parent, existing, Written::Unchanged)
                    .await?,
            )),
            None => Ok(None),
        }
    }

    async fn announce_and_join(
        &self,
        job: &JobEnvelope,
        parent: Option<&ParentRef>,
        result: ResultDocument,
        written: Written,
    ) -> Result<Finished, FinishError> {
        let announce = Announce {
            job_id: job.job_id,
            tenant_id: &job.tenant_id,
            callback: job.callback.as_ref(),
            trace: job.trace.as_ref(),
        };
        self.announce(&announce, &result, written).await?;
        if let Some(parent) = parent {
            self.join(job, parent, &result).await?;
        }
        Ok(Finished { result, written })
    }

    /// Status, webhook and lifecycle event of a stored result; each idempotent.
    async fn announce(
        &self,
        job: &Announce<'_>,
        result: &ResultDocument,
        written: Written,
    ) -> Result<(), FinishError> {
        let state = match result.status {
            ResultStatus::Succeeded | ResultStatus::Partial => JobState::Succeeded,
            ResultStatus::Failed => JobState::Failed,
        };
        // A redelivery whose timeline already ends in this state writes nothing at all.
        let recorded = match written {
            Written::New => false,
            Written::Unchanged => self
                .store
                .job(job.job_id)
                .await?
                .is_some_and(|record| record.state == state),
        };
        if !recorded {
            self.store
                .record_status(&StatusUpdate {
                    job_id: job.job_id,
                    tenant_id: job.tenant_id.clone(),
                    state,
                    at: result.finished_at,
                    attempt: Some(result.attempts),
                    backend_id: result.backend_id.clone(),
                    detail: result.error.as_ref().map(|e| e.message.clone()),
                })
                .await?;
        }
        if let Some(callback) = job.callback {
            let payload = self.webhook_payload(result, state).await?;
            self.store
                .enqueue_webhook(&WebhookDelivery {
                    webhook_id: WebhookDelivery::id_for(job.job_id),
                    job_id: job.job_id,
                    tenant_id: job.tenant_id.clone(),
                    url: callback.url.clone(),
                    secret_id: callback.secret_id.clone(),
                    payload,
                    state: WebhookState::Pending,
                    attempts: 0,
                    next_attempt_at: result.finished_at,
                    last_status: None,
                    last_error: None,
                    created_at: result.finished_at,
                    updated_at: result.finished_at,
                })
                .await?;
        }
        self.events
            .publish(&[lifecycle_event(job, result, state)])
            .await?;
        Ok(())
    }

    /// Records `child` in its parent's join; when it was the last one, writes and announces
    /// the parent's result. Children finishing at once may both see the join complete: the
    /// parent's result is first-write-wins and every announcement is idempotent.
    async fn join(
        &self,
        child: &JobEnvelope,
        parent: &ParentRef,
        result: &ResultDocument,
    ) -> Result<(), FinishError> {
        let outcome = ChildOutcome {
            name: parent.subtask.clone(),
            job_id: child.job_id,
            status: result.status,
            backend_id: result.backend_id.clone(),
            output: result.output.clone().map(Box::new),
            error: result.error.clone(),
        };
        let Some(children) = self
            .store
            .record_child(parent.job_id, &outcome, &parent.siblings)
            .await?
        else {
            return Ok(());
        };
        let (result, written) = match self.store.result(parent.job_id).await? {
            Some(existing) => (existing, Written::Unchanged),
            None => self.write_parent(child, parent, children).await?,
        };
        let announce = Announce {
            job_id: parent.job_id,
            tenant_id: &child.tenant_id,
            callback: parent.callback.as_ref(),
            trace: child.trace.as_ref(),
        };
        self.announce(&announce, &result, written).await
    }

    async fn write_parent(
        &self,
        child: &JobEnvelope,
        parent: &ParentRef,
        children: Vec<ChildOutcome>,
    ) -> Result<(ResultDocument, Written), FinishError> {
        let mut cost = Micros::ZERO;
        let mut started_at = None::<DateTime<Utc>>;
        let mut finished_at = None::<DateTime<Utc>>;
        let mut attempts = 1;
        for outcome in &children {
            // Children's charges are their own usage events; the parent only reports the sum.
            if let Some(stored) = self.store.result(outcome.job_id).await? {
                cost = cost
                    .checked_add(stored.cost_micros)
                    .unwrap_or(Micros(i64::MAX));
                started_at =
                    Some(started_at.map_or(stored.started_at, |s| s.min(stored.started_at)));
                finished_at =
                    Some(finished_at.map_or(stored.finished_at, |f| f.max(stored.finished_at)));
                attempts = attempts.max(stored.attempts);
            }
        }
        let succeeded = children
            .iter()
            .filter(|c| c.status == ResultStatus::Succeeded)
            .count();
        let status = match succeeded {
            n if n == children.len() => ResultStatus::Succeeded,
            0 => ResultStatus::Failed,
            _ => ResultStatus::Partial,
        };
        let error = (status == ResultStatus::Failed).then(|| JobError {
            class: children
                .iter()
                .find_map(|c| c.error.as_ref().map(|e| e.class))
                .unwrap_or(ErrorClass::Internal),
            message: format!("every one of the {} subtasks failed", children.len()),
        });
        let finished_at = finished_at.unwrap_or_else(Utc::now);
        let output = self
            .maybe_blob(parent.job_id, Output::Multi(MultiOutput { children }))
            .await?;
        let result = ResultDocument {
            schema: ResultSchema,
            job_id: parent.job_id,
            tenant_id: child.tenant_id.clone(),
            parent_job_id: None,
            status,
            task: TaskKind::Multi,
            backend_id: None,
            model: None,
            output: Some(output),
            error,
            attempts,
            started_at: started_at.unwrap_or(finished_at),
            finished_at,
            // Children carry the parent's submission time.
            latency_ms: u64::try_from(
                finished_at
                    .signed_duration_since(child.submitted_at)
                    .num_milliseconds(),
            )
            .unwrap_or(0),
            cost_micros: cost,
        };
        match self.store.put_result(&result).await? {
            Written::New => Ok((result, Written::New)),
            Written::Unchanged => match self.store.result(parent.job_id).await? {
                Some(stored) => Ok((stored, Written::Unchanged)),
                None => Ok((result, Written::Unchanged)),
            },
        }
    }

    async fn write(
        &self,
        job: &JobEnvelope,
        outcome: Outcome,
    ) -> Result<(ResultDocument, Written), FinishError> {
        let mut cost = Micros::ZERO;
        for call in &outcome.calls {
            let event = self.price(job, call)?;
            // A redelivery after a crash between usage and result re-ran the call: the
            // charge is the stored event's, and so is the result's cost.
            let recorded = self.store.record_usage(&event).await?;
            // The total saturates rather than wraps; a job worth 9 trillion dollars is a bug
            // that the per-event records still show exactly.
            cost = cost
                .checked_add(recorded.stored.cost_micros)
                .unwrap_or(Micros(i64::MAX));
        }
        let output = match outcome.output {
            Some(output) => Some(self.maybe_blob(job.job_id, output).await?),
            None => None,
        };
        let latency = outcome.finished_at.signed_duration_since(job.submitted_at);
        let result = ResultDocument {
            schema: ResultSchema,
            job_id: job.job_id,
            tenant_id: job.tenant_id.clone(),
            parent_job_id: outcome.parent.as_ref().map(|p| p.job_id),
            status: outcome.status,
            task: job.task.kind(),
            backend_id: outcome.backend_id,
            model: outcome.model,
            output,
            error: outcome.error,
            attempts: outcome.attempts,
            started_at: outcome.started_at,
            finished_at: outcome.finished_at,
            latency_ms: u64::try_from(latency.num_milliseconds()).unwrap_or(0),
            cost_micros: cost,
        };
        match self.store.put_result(&result).await? {
            Written::New => Ok((result, Written::New)),
            // Another delivery of the same job won the race: announce its result, not ours.
            Written::Unchanged => match self.store.result(job.job_id).await? {
                Some(stored) => Ok((stored, Written::Unchanged)),
                None => Ok((result, Written::Unchanged)),
            },
        }
    }

    async fn maybe_blob(&self, job_id: JobId, output: Output) -> Result<Output, FinishError> {
        let bytes = encode("the output", &output)?;
        if bytes.len() <= self.settings.inline_output_limit_bytes {
            return Ok(output);
        }
        Ok(Output::Blob(self.put_output(job_id, bytes).await?))
    }

    async fn put_output(&self, job_id: JobId, bytes: Vec<u8>) -> Result<BlobRef, FinishError> {
        Ok(self
            .blobs
            .put(&format!("outputs/{job_id}.json"), bytes, "application/json")
            .await?)
    }

    /// The webhook body; an output too large for it is replaced by a link.
    async fn webhook_payload(
        &self,
        result: &ResultDocument,
        state: JobState,
    ) -> Result<String, FinishError> {
        let kind = match state {
            JobState::Failed => "job.failed",
            _ => "job.succeeded",
        };
        let timestamp = result
            .finished_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let body = |data: &ResultDocument| {
            serde_json::to_string(&WebhookPayload {
                r#type: kind,
                timestamp: timestamp.clone(),
                data,
            })
            .map_err(|source| FinishError::Encode {
                what: "the webhook payload",
                source,
            })
        };
        let is_blob = matches!(result.output, Some(Output::Blob(_)));
        let full = body(result)?;
        // A receiver cannot read `s3://`: blobs always travel as a presigned link.
        if !is_blob && full.len() <= self.settings.webhook_body_limit_bytes {
            return Ok(full);
        }
        let blob = match result.output.clone() {
            Some(Output::Blob(blob)) => Some(blob),
            Some(output) => Some(
                self.put_output(result.job_id, encode("the output", &output)?)
                    .await?,
            ),
            None => None,
        };
        let mut slim = result.clone();
        slim.output = match blob {
            Some(blob) => {
                let uri = self.blobs.link(&blob, self.settings.presign_ttl).await?;
                Some(Output::Blob(BlobRef { uri, ..blob }))
            }
            None => None,
        };
        body(&slim)
    }
}

fn encode(what: &'static str, value: &impl Serialize) -> Result<Vec<u8>, FinishError> {
    serde_json::to_vec(value).map_err(|source| FinishError::Encode { what, source })
}

/// The lifecycle event of a finished job.
fn lifecycle_event(job: &Announce<'_>, result: &ResultDocument, state: JobState) -> LifecycleEvent {
    LifecycleEvent {
        schema: contracts::EventSchema,
        event_id: format!("{}:{}", job.job_id, state.as_str()),
        job_id: job.job_id,
        tenant_id: job.tenant_id.clone(),
        state,
        at: result.finished_at,
        backend_id: result.backend_id.clone(),
        attempt: Some(result.attempts),
        error: result.error.clone(),
        cost_micros: Some(result.cost_micros),
        latency_ms: Some(result.latency_ms),
        trace: job.trace.cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_outlive_the_webhook_schedule() {
        let config = switchyard_core::config::Config::from_parts(
            "[blobs]\nkind = \"s3\"\nbucket = \"b\"\npresign_ttl = \"1h\"\n",
            "test",
            &[],
            None,
        )
        .unwrap();
        let settings = LedgerSettings::from_config(&config);
        // The default schedule spans 27 h 35 min 5 s.
        assert_eq!(settings.presign_ttl, Duration::from_secs(99_305 + 3600));
        assert_eq!(settings.webhook_body_limit_bytes, 256 * 1024);
    }
}
