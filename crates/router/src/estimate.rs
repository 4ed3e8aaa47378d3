//! What routing knows before a job runs: its facts, and each backend's estimated cost and
//! latency for it. Estimates are deliberately simple and pure; observed latency and health
//! replace the priors as the router learns them.

use rust_decimal::Decimal;
use switchyard_core::config::{Backend, BackendKind};
use switchyard_core::contracts::{Input, JobEnvelope, Task, TaskKind};
use switchyard_core::rates::{RatesTable, Usage};

use crate::policy::{BackendState, Health, JobFacts};

/// Rough bytes per token of English text, for estimating before the provider counts.
const BYTES_PER_TOKEN: u64 = 4;
/// Output assumed when a job sets no `max_tokens`.
const DEFAULT_OUTPUT_TOKENS: u64 = 256;

impl JobFacts {
    pub fn from_job(job: &JobEnvelope) -> JobFacts {
        let ulid_bits = u128::from(job.job_id.0);
        JobFacts {
            task: job.task.kind(),
            plan: job.plan.clone(),
            tier: job.priority,
            tenant: job.tenant_id.clone(),
            tags: job.tags.clone(),
            input_bytes: input_bytes(&job.task),
            optimize: job.routing.optimize,
            max_cost_usd: job.routing.max_cost_usd,
            deadline_ms: job.routing.deadline_ms,
            pinned: job.routing.backend.clone(),
            // The random part of the ULID: uniform, and stable for the job.
            split_key: (ulid_bits & u128::from(u64::MAX)) as u64,
            verdicts: Vec::new(),
        }
    }
}

/// Input size in bytes, as far as the envelope tells.
pub fn input_bytes(task: &Task) -> u64 {
    fn of(input: &Input) -> u64 {
        match input {
            Input::Inline { data_base64, .. } => data_base64.len() as u64 / 4 * 3,
            Input::Text { text } => text.len() as u64,
            Input::Uri { size_bytes, .. } => size_bytes.unwrap_or(0),
        }
    }
    match task {
        Task::Detect(t) => of(&t.input),
        Task::Chat(t) => t.messages.iter().map(|m| m.content.len() as u64).sum(),
        Task::Summarize(t) => of(&t.input),
        Task::Classify(t) => of(&t.input),
        Task::Multi(t) => t.subtasks.iter().map(|s| input_bytes(&s.task)).sum(),
    }
}

/// The usage a job is expected to cause on `backend`.
pub fn expected_usage(
    backend: &Backend,
    task: TaskKind,
    input_bytes: u64,
    max_tokens: Option<u32>,
) -> Usage {
    match backend.kind {
        BackendKind::Vision => Usage {
            images: 1,
            compute_us: u64::try_from(backend.latency_prior.as_micros()).unwrap_or(u64::MAX),
            requests: 1,
            ..Usage::default()
        },
        BackendKind::Llm => {
            let output_tokens = match (task, max_tokens) {
                (_, Some(max)) => u64::from(max),
                (TaskKind::Classify, None) => 16,
                (_, None) => DEFAULT_OUTPUT_TOKENS,
            };
            Usage {
                input_tokens: input_bytes.div_ceil(BYTES_PER_TOKEN) + 32,
                output_tokens,
                requests: 1,
                ..Usage::default()
            }
        }
    }
}

/// Every catalog backend serving `facts.task`, with estimates for this job; health `Ok` and
/// latency from the prior until live state replaces them.
pub fn backend_states(
    catalog: &[Backend],
    rates: &RatesTable,
    facts: &JobFacts,
    max_tokens: Option<u32>,
) -> Vec<BackendState> {
    catalog
        .iter()
        .filter(|b| b.tasks.contains(&facts.task))
        .map(|b| {
            let usage = expected_usage(b, facts.task, facts.input_bytes, max_tokens);
            // Config validation guarantees the price exists; a missing one must never look free.
            let cost_usd = rates
                .price(&b.price)
                .ok()
                .and_then(|price| price.exact_cost(&usage))
                .unwrap_or(Decimal::MAX);
            BackendState {
                id: b.id.clone(),
                queue: b.queue.clone(),
                tasks: b.tasks.clone(),
                quality: b.quality,
                latency_ms: u64::try_from(b.latency_prior.as_millis()).unwrap_or(u64::MAX),
                cost_usd,
                health: Health::Ok,
            }
        })
        .collect()
}
