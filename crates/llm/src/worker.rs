//! The LLM-caller worker: the runtime's handler for `switchyard.routed/v1` on LLM backends'
//! queues.
//!
//! Per delivery: a job that already has a result is announced again and not called twice;
//! otherwise the task becomes a request (templates in `tasks`), the backend's limits are
//! waited for, and the provider is called up to `call_attempts` times: Retry-After honoured
//! (a 429 pauses the whole backend), 5xx, timeouts and resets retried with backoff and jitter,
//! other 4xx dead-lettered at once with the provider's message. When the calls run out, the
//! job moves to the decision's next fallback backend (republished there, strategy
//! `fallback`); without one it goes back to the queue, and to the dead-letter queue after the
//! runtime's last attempt. Every call is bounded by the request timeout and the job's deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use switchyard_bus::runtime::{Failure, Handler, JobContext};
use switchyard_bus::{Bus, Outgoing, Rejection};
use switchyard_core::BackendId;
use switchyard_core::config::{Backend, BackendKind, Config, RawLlm};
use switchyard_core::contracts::{
    Decision, ErrorClass, Input, ResultStatus, RoutedJob, Strategy, Task,
};
use switchyard_ledger::blobs::BlobStore;
use switchyard_ledger::events::EventSink;
use switchyard_ledger::ledger::{Call, Ledger, Outcome};
use switchyard_ledger::serving::{deadline_of, finish_failure, note_dead_letter};
use switchyard_ledger::store::Store;
use tracing::{debug, info, warn};

use crate::limits::Limits;
use crate::provider::{ChatRequest, ChatResponse, HttpPool, ProviderClient, ProviderError};
use crate::tasks::{self, Prepared, TaskError};

/// `[llm]`, resolved.
#[derive(Clone, Debug)]
pub struct LlmSettings {
    pub request_timeout: Duration,
    pub call_attempts: u32,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub max_input_bytes: u64,
}

impl LlmSettings {
    pub fn from_config(llm: &RawLlm) -> LlmSettings {
        LlmSettings {
            request_timeout: llm.request_timeout,
            call_attempts: llm.call_attempts.max(1),
            retry_initial: llm.retry_initial,
            retry_max: llm.retry_max,
            max_input_bytes: llm.max_input_bytes,
        }
    }
}

impl Default for LlmSettings {
    fn default() -> Self {
        LlmSettings::from_config(&RawLlm::default())
    }
}

/// A backend this worker serves: its catalog entry, client and limits.
#[derive(Debug)]
pub struct Served {
    pub backend: Backend,
    pub client: ProviderClient,
    pub limits: Arc<Limits>,
}

impl Served {
    /// From the catalog entry: the key from its `api_key_env`, limits from its `limits`.
    pub fn from_backend(backend: &Backend, http: HttpPool) -> Result<Served, String> {
        if backend.kind != BackendKind::Llm {
            return Err(format!(
                "backend `{}` is not an LLM backend",
                backend.id.as_str()
            ));
        }
        Ok(Served {
            client: ProviderClient::for_backend(backend, http)?,
            limits: Limits::new(&backend.limits),
            backend: backend.clone(),
        })
    }
}

/// The HTTP clients every provider shares: `[llm] http_version` and `connections`, by
/// default one connection per 100 jobs the worker runs at once (providers allow about 100
/// streams on an HTTP/2 connection), at least 4.
pub fn http_pool(config: &Config) -> Result<HttpPool, String> {
    let connections = config
        .llm
        .connections
        .unwrap_or_else(|| config.worker.concurrency.div_ceil(100).clamp(4, 1024));
    HttpPool::new(config.llm.http_version, connections)
}

pub struct LlmWorker<B, S, E, Bl> {
    bus: B,
    ledger: Arc<Ledger<S, E, Bl>>,
    served: HashMap<BackendId, Arc<Served>>,
    /// The whole catalog: fallbacks may be served by other processes.
    catalog: Arc<[Backend]>,
    settings: LlmSettings,
}

impl<B, S, E, Bl> std::fmt::Debug for LlmWorker<B, S, E, Bl> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmWorker")
            .field("served", &self.served.keys().collect::<Vec<_>>())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A successful call.
struct Answer {
    response: ChatResponse,
    output: switchyard_core::contracts::Output,
    latency_ms: u64,
    occurred_at: DateTime<Utc>,
    /// Answers the provider billed but that were unusable (a label not offered): charged too.
    wasted: Vec<(ChatResponse, u64, DateTime<Utc>)>,
}

enum CallFailure {
    /// The provider refused for good.
    Permanent(String),
    /// The job's deadline passed while calling or waiting.
    Deadline(String),
    /// Every call of this delivery failed retryably.
    Exhausted { calls: u32, last: String },
}

impl<B: Bus, S: Store, E: EventSink, Bl: BlobStore> LlmWorker<B, S, E, Bl> {
    pub fn new(
        bus: B,
        ledger: Arc<Ledger<S, E, Bl>>,
        served: Vec<Served>,
        catalog: Arc<[Backend]>,
        settings: LlmSettings,
    ) -> LlmWorker<B, S, E, Bl> {
        LlmWorker {
            bus,
            ledger,
            served: served
                .into_iter()
                .map(|s| (s.backend.id.clone(), Arc::new(s)))
                .collect(),
            catalog,
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

    pub fn served(&self, backend: &BackendId) -> Option<&Arc<Served>> {
        self.served.get(backend)
    }

    async fn serve(&self, routed: RoutedJob, context: JobContext) -> Result<(), Failure> {
        let started_at = Utc::now();
        let job = &routed.job;
        let Some(served) = self.served.get(&routed.decision.backend_id) else {
            return Err(Failure::reject(
                ErrorClass::Internal,
                format!(
                    "backend `{}` is not served by this LLM worker (queue {})",
                    routed.decision.backend_id.as_str(),
                    context.queue
                ),
            ));
        };
        // A redelivery of a finished job is announced again; the provider is not paid twice.
        if let Some(finished) = self
            .ledger
            .finish_existing(job, routed.parent.as_ref())
            .await
            .map_err(|error| finish_failure(&error))?
        {
            debug!(message = "Already finished; announced again.", job_id = %job.job_id, status = ?finished.result.status);
            return Ok(());
        }
        let deadline = deadline_of(job);
        if let Some(deadline) = deadline
            && Utc::now() >= deadline
        {
            return Err(Failure::reject(
                ErrorClass::DeadlineExceeded,
                format!("the deadline ({deadline}) passed before the call"),
            ));
        }
        let input = self.input_text(&job.task).await?;
        let prepared = tasks::prepare(&job.task, input.as_deref(), &served.backend.model)
            .map_err(|error| Failure::reject(ErrorClass::InvalidInput, error.to_string()))?;
        match self.call(served, &prepared, deadline).await {
            Ok(answer) => {
                self.finish(&routed, served, &context, started_at, answer)
                    .await
            }
            Err(CallFailure::Permanent(reason)) => {
                Err(Failure::reject(ErrorClass::ProviderRejected, reason))
            }
            Err(CallFailure::Deadline(reason)) => {
                Err(Failure::reject(ErrorClass::DeadlineExceeded, reason))
            }
            Err(CallFailure::Exhausted { calls, last }) => {
                if self.hand_over(&routed, &context, calls, &last).await? {
                    Ok(())
                } else {
                    Err(Failure::Retry(format!(
                        "{}: {calls} calls failed; last: {last}",
                        served.backend.id.as_str()
                    )))
                }
            }
        }
    }

    /// The text a summarize or classify job works on; chats carry their own.
    async fn input_text(&self, task: &Task) -> Result<Option<String>, Failure> {
        let input = match task {
            Task::Summarize(summarize) => &summarize.input,
            Task::Classify(classify) => &classify.input,
            Task::Chat(_) | Task::Detect(_) | Task::Multi(_) => return Ok(None),
        };
        let invalid = |reason: String| Failure::reject(ErrorClass::InvalidInput, reason);
        let bytes = match input {
            Input::Text { text } => return Ok(Some(text.clone())),
            Input::Inline { data_base64, .. } => base64::engine::general_purpose::STANDARD
                .decode(data_base64)
                .map_err(|error| invalid(format!("inline input is not base64: {error}")))?,
            Input::Uri { uri, .. } => match uri.scheme() {
                "s3" | "file" => self
                    .ledger
                    .blobs()
                    .get(uri.as_str(), self.settings.max_input_bytes)
                    .await
                    .map_err(|error| {
                        if error.is_retryable() {
                            Failure::Retry(format!("cannot read {uri}: {error}"))
                        } else {
                            invalid(format!("cannot read {uri}: {error}"))
                        }
                    })?,
                // Fetching arbitrary URLs from a worker is an SSRF hole; producers upload.
                scheme => {
                    return Err(invalid(format!(
                        "`{scheme}` inputs are not fetched by the LLM worker; put the text inline or in the blob store"
                    )));
                }
            },
        };
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| invalid("the input is not UTF-8 text".to_owned()))
    }

    async fn call(
        &self,
        served: &Served,
        prepared: &Prepared,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<Answer, CallFailure> {
        let estimate = estimate_tokens(&prepared.request);
        let backend = served.backend.id.as_str();
        let mut wasted = Vec::new();
        let mut last = String::new();
        for call in 1..=self.settings.call_attempts {
            let remaining = match remaining(deadline) {
                Some(remaining) if remaining.is_zero() => {
                    return Err(CallFailure::Deadline(format!(
                        "the deadline passed after {} calls; last: {last}",
                        call - 1
                    )));
                }
                remaining => remaining,
            };
            let permit = match remaining {
                Some(remaining) => tokio::time::timeout(remaining, served.limits.acquire(estimate))
                    .await
                    .map_err(|_| {
                        CallFailure::Deadline(format!(
                            "the deadline passed while waiting for {backend}'s rate limits"
                        ))
                    })?,
                None => served.limits.acquire(estimate).await,
            };
            let timeout = remaining.map_or(self.settings.request_timeout, |r| {
                r.min(self.settings.request_timeout)
            });
            let occurred_at = Utc::now();
            let sent = Instant::now();
            let result = served.client.chat(&prepared.request, timeout).await;
            let latency_ms = sent.elapsed().as_millis() as u64;
            let error = match result {
                Ok(response) => {
                    let usage = &response.usage;
                    served.limits.reconcile(
                        &permit,
                        usage.input_tokens + usage.cached_input_tokens + usage.output_tokens,
                    );
                    match tasks::output(&prepared.expect, &response) {
                        Ok(output) => {
                            return Ok(Answer {
                                response,
                                output,
                                latency_ms,
                                occurred_at,
                                wasted,
                            });
                        }
                        Err(error @ (TaskError::BadAnswer(_) | TaskError::Invalid(_))) => {
                            wasted.push((response, latency_ms, occurred_at));
                            error.to_string()
                        }
                    }
                }
                Err(error) => {
                    served.limits.reconcile(&permit, 0);
                    if !error.is_retryable() {
                        return Err(CallFailure::Permanent(format!("{backend}: {error}")));
                    }
                    if let ProviderError::RateLimited {
                        retry_after: Some(wait),
                        ..
                    } = &error
                    {
                        served.limits.pause_for(*wait);
                    }
                    let wait = error.retry_after();
                    last = error.to_string();
                    if call < self.settings.call_attempts {
                        let delay = wait.unwrap_or_else(|| {
                            switchyard_bus::backoff(
                                call,
                                self.settings.retry_initial,
                                self.settings.retry_max,
                            )
                        });
                        if remaining.is_some_and(|r| delay >= r) {
                            return Err(CallFailure::Deadline(format!(
                                "the deadline comes before the next try ({last})"
                            )));
                        }
                        debug!(message = "Call failed; retrying.", backend, call, delay_ms = delay.as_millis() as u64, error = %last);
                        drop(permit);
                        tokio::time::sleep(delay).await;
                    }
                    continue;
                }
            };
            last = error;
        }
        Err(CallFailure::Exhausted {
            calls: self.settings.call_attempts,
            last,
        })
    }

    async fn finish(
        &self,
        routed: &RoutedJob,
        served: &Served,
        context: &JobContext,
        started_at: DateTime<Utc>,
        answer: Answer,
    ) -> Result<(), Failure> {
        let call = |name: String, response: &ChatResponse, latency_ms, occurred_at| Call {
            name,
            backend_id: served.backend.id.clone(),
            provider: served.client.name().to_owned(),
            model: response.model.clone(),
            price: served.backend.price.clone(),
            usage: response.usage,
            latency_ms,
            occurred_at,
        };
        let mut calls: Vec<Call> = answer
            .wasted
            .iter()
            .enumerate()
            .map(|(index, (response, latency_ms, at))| {
                call(
                    format!("main.unusable.{}", index + 1),
                    response,
                    *latency_ms,
                    *at,
                )
            })
            .collect();
        calls.push(call(
            "main".to_owned(),
            &answer.response,
            answer.latency_ms,
            answer.occurred_at,
        ));
        let outcome = Outcome {
            status: ResultStatus::Succeeded,
            output: Some(answer.output),
            error: None,
            backend_id: Some(served.backend.id.clone()),
            model: Some(answer.response.model.clone()),
            attempts: context.attempt,
            started_at,
            finished_at: Utc::now(),
            calls,
            parent: routed.parent.clone(),
        };
        let finished = self
            .ledger
            .finish(&routed.job, outcome)
            .await
            .map_err(|error| finish_failure(&error))?;
        debug!(
            message = "Job finished.",
            job_id = %routed.job.job_id,
            backend = served.backend.id.as_str(),
            cost_micros = finished.result.cost_micros.0,
            request_id = answer.response.request_id.as_deref().unwrap_or(""),
        );
        Ok(())
    }

    /// Republishes the job for its next fallback backend; `false` when there is none.
    async fn hand_over(
        &self,
        routed: &RoutedJob,
        context: &JobContext,
        calls: u32,
        last: &str,
    ) -> Result<bool, Failure> {
        let from = &routed.decision.backend_id;
        // A fallback missing from this catalog (an older config) is skipped, not fatal.
        let mut rest = routed.decision.fallbacks.iter();
        let next = loop {
            let Some(id) = rest.next() else {
                return Ok(false);
            };
            match self.catalog.iter().find(|b| &b.id == id) {
                Some(backend) => break backend,
                None => warn!(
                    message = "Fallback backend not in the catalog; skipped.",
                    backend = id.as_str()
                ),
            }
        };
        let decision = Decision {
            backend_id: next.id.clone(),
            queue: next.queue.clone(),
            rule: routed.decision.rule.clone(),
            strategy: Strategy::Fallback,
            reason: format!(
                "fallback from {} after {calls} failed calls (last: {last}); earlier: {}",
                from.as_str(),
                routed.decision.reason
            ),
            estimated_cost_usd: routed.decision.estimated_cost_usd,
            estimated_latency_ms: next.latency_prior.as_millis() as u64,
            fallbacks: rest.cloned().collect(),
            policy_version: routed.decision.policy_version.clone(),
            decided_at: Utc::now(),
        };
        let moved = RoutedJob {
            decision,
            ..routed.clone()
        };
        let body = serde_json::to_vec(&moved).map_err(|error| {
            Failure::reject(ErrorClass::Internal, format!("cannot encode: {error}"))
        })?;
        let outgoing = Outgoing {
            key: Some(routed.job.tenant_id.as_str().to_owned()),
            headers: context.outgoing_headers(),
            body,
        };
        self.bus
            .publish(&next.queue, outgoing)
            .await
            .map_err(|error| {
                Failure::Retry(format!("cannot hand over to {}: {error}", next.id.as_str()))
            })?;
        info!(
            message = "Handed over to the fallback backend.",
            job_id = %routed.job.job_id,
            from = from.as_str(),
            to = next.id.as_str(),
            calls,
            error = last,
        );
        Ok(true)
    }
}

impl<B: Bus, S: Store, E: EventSink, Bl: BlobStore> Handler for LlmWorker<B, S, E, Bl> {
    type Message = RoutedJob;

    async fn handle(&self, message: RoutedJob, context: JobContext) -> Result<(), Failure> {
        self.serve(message, context).await
    }

    /// Notes the dead letter in the job's timeline; a replay moves the job on from there.
    async fn dead_lettered(&self, routed: RoutedJob, rejection: &Rejection, context: &JobContext) {
        note_dead_letter(self.ledger.store(), &routed, rejection, context).await;
    }
}

/// Time left before `deadline`: `None` without one, zero once it passed.
fn remaining(deadline: Option<DateTime<Utc>>) -> Option<Duration> {
    deadline.map(|deadline| (deadline - Utc::now()).to_std().unwrap_or(Duration::ZERO))
}

/// What the providers count against a tokens-per-minute limit before a call: the prompt
/// (about four characters a token) plus the most the reply may use.
pub fn estimate_tokens(request: &ChatRequest) -> u64 {
    let chars: usize = request.system.as_deref().map_or(0, str::len)
        + request
            .messages
            .iter()
            .map(|m| m.content.len())
            .sum::<usize>();
    (chars as u64).div_ceil(4) + u64::from(request.max_tokens.unwrap_or(1024))
}
