//! The routing classifier: asks one of the catalog's LLM backends to label a job for the
//! router's `llm_classify` rules, through the same provider clients, templates and rate
//! limits the LLM worker uses.
//!
//! One attempt and no retries: the router bounds the wait and, without an answer, routes by
//! its other rules. A reply that is not one of the offered labels is still a paid call, so it
//! comes back with its usage and the reason it is unusable.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_core::BackendId;
use switchyard_core::contracts::{ClassifyTask, GenerationParams, Input, Output, Task};
use switchyard_core::rates::Usage;

use crate::provider::ProviderError;
use crate::tasks::{self, TaskError};
use crate::worker::{Served, estimate_tokens};

/// A classifier call that reached the provider and was answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Labelled {
    /// The offered label chosen, or why the reply is unusable.
    pub label: Result<String, String>,
    pub provider: &'static str,
    pub model: String,
    pub usage: Usage,
    pub latency_ms: u64,
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ClassifierError {
    #[error("backend {0} is not an LLM backend this router can call")]
    UnknownBackend(BackendId),
    #[error("{0}")]
    Invalid(String),
    /// This router's own rate limits for the backend gave no permit in time: nothing was sent.
    #[error("rate limited locally: no permit within {} ms", .0.as_millis())]
    Throttled(Duration),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

impl ClassifierError {
    /// Whether the failure is the backend's health (5xx, overload, timeouts, resets, broken
    /// bodies), so it counts against its breaker. A 429 is not: it is the backend's account
    /// limit, already honoured by pausing the limits, and tripping the breaker on it would
    /// turn classification off for every tenant.
    pub fn backend_at_fault(&self) -> bool {
        match self {
            ClassifierError::Provider(ProviderError::RateLimited { .. }) => false,
            ClassifierError::Provider(error) => error.is_retryable(),
            ClassifierError::UnknownBackend(_)
            | ClassifierError::Invalid(_)
            | ClassifierError::Throttled(_) => false,
        }
    }
}

/// The LLM backends a router may ask, by id.
#[derive(Debug, Default)]
pub struct RoutingClassifier {
    served: HashMap<BackendId, Arc<Served>>,
    /// A cap on one call; a rule's own timeout is usually shorter and wins.
    timeout: Duration,
}

impl RoutingClassifier {
    pub fn new(served: impl IntoIterator<Item = Arc<Served>>) -> RoutingClassifier {
        RoutingClassifier {
            served: served
                .into_iter()
                .map(|s| (s.backend.id.clone(), s))
                .collect(),
            timeout: Duration::from_secs(10),
        }
    }

    pub fn backends(&self) -> impl Iterator<Item = &BackendId> {
        self.served.keys()
    }

    /// Asks `backend` which of `labels` fits `text`, in the light of `instruction`, within
    /// `deadline` all told: the wait for a rate-limit permit and the call share it.
    pub async fn classify(
        &self,
        backend: &BackendId,
        instruction: &str,
        labels: &[String],
        text: &str,
        deadline: Duration,
    ) -> Result<Labelled, ClassifierError> {
        let started = Instant::now();
        let served = self
            .served
            .get(backend)
            .ok_or_else(|| ClassifierError::UnknownBackend(backend.clone()))?;
        let task = Task::Classify(ClassifyTask {
            input: Input::Text {
                text: text.to_owned(),
            },
            labels: labels.to_vec(),
            multi_label: false,
            params: GenerationParams::default(),
        });
        let mut prepared = tasks::prepare(&task, Some(text), &served.backend.model).map_err(
            |error| match error {
                TaskError::Invalid(why) | TaskError::BadAnswer(why) => {
                    ClassifierError::Invalid(why)
                }
            },
        )?;
        // The rule's question leads; the template's format instructions follow.
        let system = prepared.request.system.take().unwrap_or_default();
        prepared.request.system = Some(format!(
            "You route requests to the right model. {instruction}\n{system}"
        ));
        let permit = tokio::time::timeout(
            deadline,
            served.limits.acquire(estimate_tokens(&prepared.request)),
        )
        .await
        .map_err(|_| ClassifierError::Throttled(deadline))?;
        let left = deadline.saturating_sub(started.elapsed());
        if left.is_zero() {
            served.limits.reconcile(&permit, 0);
            return Err(ClassifierError::Throttled(deadline));
        }
        let sent = Instant::now();
        let result = served
            .client
            .chat(&prepared.request, left.min(self.timeout))
            .await;
        let latency_ms = sent.elapsed().as_millis() as u64;
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                served.limits.reconcile(&permit, 0);
                if let ProviderError::RateLimited {
                    retry_after: Some(wait),
                    ..
                } = &error
                {
                    served.limits.pause_for(*wait);
                }
                return Err(match error {
                    // The call had what was left of the deadline: name the deadline that ran
                    // out.
                    ProviderError::Timeout(_) if left <= self.timeout => {
                        ProviderError::Timeout(deadline)
                    }
                    other => other,
                }
                .into());
            }
        };
        let usage = response.usage;
        served.limits.reconcile(
            &permit,
            usage.input_tokens + usage.cached_input_tokens + usage.output_tokens,
        );
        let label = match tasks::output(&prepared.expect, &response) {
            Ok(Output::Classification(c)) => c
                .labels
                .into_iter()
                .next()
                .ok_or_else(|| "the answer holds no label".to_owned()),
            Ok(_) => Err("the answer is not a classification".to_owned()),
            Err(error) => Err(error.to_string()),
        };
        Ok(Labelled {
            label,
            provider: served.client.name(),
            model: response.model,
            usage,
            latency_ms,
        })
    }
}
