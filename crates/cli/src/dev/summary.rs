//! Waiting for the sample to finish, and what it did: jobs per backend, latency percentiles,
//! cost per tenant, the fan-out join, dead letters with reasons, webhooks — read back from the
//! store and the dead-letter queues, not from the workers' own counters.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Write};
use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_core::config::{BackendKind, Config};
use switchyard_core::contracts::{DeadLetter, Output, ResultDocument, ResultStatus};
use switchyard_core::{JobId, Micros};
use switchyard_ledger::store::{AnyStore, Store, WebhookDelivery, WebhookState};
use switchyard_router::worker::child_id;
use tokio_util::sync::CancellationToken;

use super::workload::{Expect, Item, Sample, plan_of};
use super::{Observed, lock};

/// How often the store is read while waiting; progress is printed at most once a second.
const POLL: Duration = Duration::from_millis(100);

/// The dead letter `item` ended in, if it did: by job id, else by the exact body.
fn letter_for<'l>(item: &Item, letters: &'l [DeadLetter]) -> Option<&'l DeadLetter> {
    letters
        .iter()
        .find(|letter| match (item.job_id, &item.letter_body) {
            (Some(job_id), _) => letter.job_id == Some(job_id),
            (None, Some(body)) => &letter.original.body_base64 == body,
            (None, None) => false,
        })
}

/// Whether `item` has ended, as expected or not: a dead letter, or a result in the store.
async fn ended(item: &Item, store: &AnyStore, observed: &Observed) -> bool {
    if letter_for(item, &lock(&observed.letters)).is_some() {
        return true;
    }
    match item.job_id {
        Some(job_id) => matches!(store.result(job_id).await, Ok(Some(_))),
        None => false,
    }
}

/// Waits until every item has ended and every webhook due has been delivered (or given up
/// on); `Err` says what is still missing after `timeout` or on Ctrl-C.
pub async fn wait(
    sample: &Sample,
    store: &AnyStore,
    observed: &Observed,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let started = Instant::now();
    let mut done: HashSet<usize> = HashSet::new();
    // Webhooks already delivered or given up on are not read again.
    let mut settled: HashSet<JobId> = HashSet::new();
    let mut last_print = Instant::now();
    let mut last_line = String::new();
    loop {
        for (index, item) in sample.items.iter().enumerate() {
            if !done.contains(&index) && ended(item, store, observed).await {
                done.insert(index);
            }
        }
        let pending_hooks = pending_webhooks(sample, store, &mut settled).await;
        let letters = lock(&observed.letters).len();
        let hooks = lock(&observed.webhooks).verified;
        let line = format!(
            "{}/{} ended · {letters} dead letters · {hooks} webhooks verified",
            done.len(),
            sample.items.len(),
        );
        let finished = done.len() == sample.items.len() && pending_hooks == 0;
        // On change (at most once a second), and every ten seconds while nothing moves.
        let since = last_print.elapsed();
        if (line != last_line && (finished || since >= Duration::from_secs(1)))
            || since >= Duration::from_secs(10)
        {
            let _ = writeln!(
                io::stderr(),
                "[{:>5.1}s] {line}",
                started.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
            last_line = line;
        }
        if finished {
            return Ok(());
        }
        if started.elapsed() >= timeout || shutdown.is_cancelled() {
            let missing: Vec<String> = sample
                .items
                .iter()
                .enumerate()
                .filter(|(index, _)| !done.contains(index))
                .take(10)
                .map(|(_, item)| match item.job_id {
                    Some(job_id) => format!("{} ({job_id})", item.what),
                    None => item.what.clone(),
                })
                .collect();
            let why = if shutdown.is_cancelled() {
                "stopped"
            } else {
                "timed out"
            };
            return Err(format!(
                "{why} with {} of {} messages not ended [{}] and {pending_hooks} webhooks pending",
                sample.items.len() - done.len(),
                sample.items.len(),
                missing.join("; ")
            ));
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

/// Webhooks queued for the sample's jobs that are still to be delivered; a store that cannot
/// be read counts as pending, so the wait never ends on an error it did not see.
async fn pending_webhooks(
    sample: &Sample,
    store: &AnyStore,
    settled: &mut HashSet<JobId>,
) -> usize {
    let mut pending = 0;
    for job_id in sample.items.iter().filter_map(|item| item.job_id) {
        if settled.contains(&job_id) {
            continue;
        }
        match store.webhook(&WebhookDelivery::id_for(job_id)).await {
            Ok(Some(delivery)) if delivery.state == WebhookState::Pending => pending += 1,
            Ok(Some(_)) => {
                settled.insert(job_id);
            }
            // Not queued (yet, or ever: a dead-lettered job has none).
            Ok(None) => {}
            Err(_) => pending += 1,
        }
    }
    pending
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// LLM replies came from the built-in simulator, not a provider.
    pub llm_simulated: bool,
    pub elapsed_ms: u64,
    pub messages: usize,
    pub jobs: Vec<JobLine>,
    pub backends: Vec<BackendLine>,
    pub tenants: Vec<TenantLine>,
    pub fan_out: Vec<FanOut>,
    pub dead_letters: Vec<LetterLine>,
    pub webhooks: WebhookLine,
}

#[derive(Debug, Serialize)]
pub struct JobLine {
    pub scenario: String,
    pub what: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    pub tier: String,
    pub expected: Expect,
    /// `succeeded`, `failed`, `partial`, `dead_lettered`, or `missing`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    pub cost_micros: i64,
    /// Detections found, or the first words of a reply, or the labels.
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct BackendLine {
    pub backend_id: String,
    pub simulated: bool,
    pub jobs: usize,
    pub p50_ms: u64,
    pub p90_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct TenantLine {
    pub tenant_id: String,
    pub plan: String,
    pub jobs: usize,
    /// Usage events (priced calls) recorded for the tenant's jobs.
    pub charges: usize,
    pub cost_micros: i64,
}

#[derive(Debug, Serialize)]
pub struct FanOut {
    pub job_id: JobId,
    pub status: String,
    pub children: Vec<Child>,
}

#[derive(Debug, Serialize)]
pub struct Child {
    pub name: String,
    pub job_id: JobId,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_id: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct LetterLine {
    pub dead_letter_id: String,
    pub source_queue: String,
    pub error_class: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    pub attempts: u32,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct WebhookLine {
    /// Deliveries the ledger queued for the sample's jobs.
    pub queued: usize,
    /// Of those, how many the store records as delivered.
    pub delivered: usize,
    pub exhausted: usize,
    pub received: u64,
    pub verified: u64,
    pub rejected: u64,
    pub duplicates: u64,
}

impl Report {
    /// The messages that did not end as the sample expects, described.
    pub fn unexpected(&self) -> Vec<String> {
        self.jobs
            .iter()
            .filter(|job| match &job.expected {
                Expect::Result => job.outcome != "succeeded",
                Expect::DeadLetter(class) => {
                    job.outcome != "dead_lettered" || !job.detail.starts_with(class.as_str())
                }
            })
            .map(|job| format!("{} ended {} ({})", job.what, job.outcome, job.detail))
            .collect()
    }
}

fn status_name(status: ResultStatus) -> &'static str {
    match status {
        ResultStatus::Succeeded => "succeeded",
        ResultStatus::Failed => "failed",
        ResultStatus::Partial => "partial",
    }
}

fn detail_of(result: &ResultDocument) -> String {
    match &result.output {
        Some(Output::Detections(found)) => {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for detection in &found.detections {
                *counts.entry(detection.class_name.as_str()).or_default() += 1;
            }
            let mut top: Vec<(&str, usize)> = counts.into_iter().collect();
            top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let named: Vec<String> = top
                .iter()
                .take(3)
                .map(|(name, n)| format!("{n} {name}"))
                .collect();
            format!(
                "{} detections on {}x{}{}",
                found.detections.len(),
                found.image.width,
                found.image.height,
                if named.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", named.join(", "))
                }
            )
        }
        Some(Output::Text(text)) => {
            let words: Vec<&str> = text.text.split_whitespace().take(8).collect();
            format!("\"{}…\"", words.join(" "))
        }
        Some(Output::Classification(labels)) => format!("labels {}", labels.labels.join(", ")),
        Some(Output::Multi(multi)) => format!("{} children joined", multi.children.len()),
        Some(Output::Blob(blob)) => format!("output in {}", blob.uri),
        None => result
            .error
            .as_ref()
            .map(|e| format!("{}: {}", e.class, e.message))
            .unwrap_or_default(),
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // Nearest rank.
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Reads back what became of every item.
pub async fn gather(
    sample: &Sample,
    store: &AnyStore,
    observed: &Observed,
    config: &Config,
    elapsed: Duration,
) -> anyhow::Result<Report> {
    let letters = lock(&observed.letters).clone();
    let mut jobs = Vec::new();
    let mut fan_out = Vec::new();
    let mut latencies: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    // tenant → (jobs, charges, cost)
    let mut tenants: BTreeMap<String, (usize, usize, Micros)> = BTreeMap::new();
    for item in &sample.items {
        let mut line = JobLine {
            scenario: item.scenario.to_owned(),
            what: item.what.clone(),
            job_id: item.job_id,
            tenant_id: item.tenant.map(str::to_owned),
            tier: item.tier.as_str().to_owned(),
            expected: item.expect.clone(),
            outcome: "missing".to_owned(),
            backend_id: None,
            latency_ms: None,
            cost_micros: 0,
            detail: String::new(),
        };
        let letter = letter_for(item, &letters);
        if let Some(letter) = letter {
            line.outcome = "dead_lettered".to_owned();
            line.detail = format!("{}: {}", letter.error_class, first_line(&letter.reason));
        }
        if let Some(job_id) = item.job_id {
            // The calls charged for this job: its own, or its children's for a fan-out.
            let mut charged = vec![job_id];
            charged.extend(item.subtasks.iter().map(|name| child_id(job_id, name)));
            let mut charges = 0;
            let mut cost = Micros::ZERO;
            for id in &charged {
                for event in store.usage_of_job(*id).await? {
                    charges += 1;
                    cost += event.cost_micros;
                }
            }
            line.cost_micros = cost.0;
            if let Some(tenant) = item.tenant {
                let entry = tenants.entry(tenant.to_owned()).or_default();
                entry.0 += 1;
                entry.1 += charges;
                entry.2 += cost;
            }
            if let Some(result) = store.result(job_id).await? {
                line.outcome = status_name(result.status).to_owned();
                line.backend_id = result.backend_id.as_ref().map(|b| b.as_str().to_owned());
                line.latency_ms = Some(result.latency_ms);
                if letter.is_none() {
                    line.detail = detail_of(&result);
                }
                if let Some(backend) = &result.backend_id {
                    latencies
                        .entry(backend.as_str().to_owned())
                        .or_default()
                        .push(result.latency_ms);
                }
                if let Some(Output::Multi(multi)) = &result.output {
                    let mut children = Vec::new();
                    for child in &multi.children {
                        // The children's own results carry their latency.
                        if let (Some(backend), Some(done)) =
                            (&child.backend_id, store.result(child.job_id).await?)
                        {
                            latencies
                                .entry(backend.as_str().to_owned())
                                .or_default()
                                .push(done.latency_ms);
                        }
                        children.push(Child {
                            name: child.name.clone(),
                            job_id: child.job_id,
                            status: status_name(child.status).to_owned(),
                            backend_id: child.backend_id.as_ref().map(|b| b.as_str().to_owned()),
                        });
                    }
                    fan_out.push(FanOut {
                        job_id,
                        status: line.outcome.clone(),
                        children,
                    });
                }
            }
        }
        jobs.push(line);
    }

    let backends = latencies
        .into_iter()
        .map(|(backend_id, mut ms)| {
            ms.sort_unstable();
            let simulated = config
                .backend(&backend_id)
                .is_some_and(|b| b.kind == BackendKind::Llm);
            BackendLine {
                simulated,
                jobs: ms.len(),
                p50_ms: percentile(&ms, 0.50),
                p90_ms: percentile(&ms, 0.90),
                p99_ms: percentile(&ms, 0.99),
                max_ms: ms.last().copied().unwrap_or(0),
                backend_id,
            }
        })
        .collect();
    let tenants = tenants
        .into_iter()
        .map(|(tenant_id, (jobs, charges, cost))| TenantLine {
            plan: plan_of(&tenant_id).unwrap_or("?").to_owned(),
            tenant_id,
            jobs,
            charges,
            cost_micros: cost.0,
        })
        .collect();
    let dead_letters = letters
        .iter()
        .map(|letter| LetterLine {
            dead_letter_id: letter.dead_letter_id.to_string(),
            source_queue: letter.source_queue.as_str().to_owned(),
            error_class: letter.error_class.to_string(),
            job_id: letter.job_id,
            attempts: letter.attempts,
            reason: letter.reason.clone(),
        })
        .collect();

    let mut webhooks = WebhookLine {
        queued: 0,
        delivered: 0,
        exhausted: 0,
        received: 0,
        verified: 0,
        rejected: 0,
        duplicates: 0,
    };
    for job_id in sample.items.iter().filter_map(|item| item.job_id) {
        if let Some(delivery) = store.webhook(&WebhookDelivery::id_for(job_id)).await? {
            webhooks.queued += 1;
            match delivery.state {
                WebhookState::Delivered => webhooks.delivered += 1,
                WebhookState::Exhausted => webhooks.exhausted += 1,
                WebhookState::Pending => {}
            }
        }
    }
    {
        let seen = lock(&observed.webhooks);
        webhooks.received = seen.received;
        webhooks.verified = seen.verified;
        webhooks.rejected = seen.rejected;
        webhooks.duplicates = seen.duplicates;
    }

    Ok(Report {
        llm_simulated: true,
        elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        messages: sample.items.len(),
        jobs,
        backends,
        tenants,
        fan_out,
        dead_letters,
        webhooks,
    })
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let mut clipped: String = text.chars().take(width.saturating_sub(1)).collect();
        clipped.push('…');
        clipped
    }
}

/// The summary as people read it.
pub fn print(out: &mut impl Write, report: &Report, wide: bool) -> io::Result<()> {
    let width = if wide { 60 } else { 48 };
    writeln!(
        out,
        "\nSummary: {} messages in {:.1} s (LLM replies SIMULATED)",
        report.messages,
        report.elapsed_ms as f64 / 1000.0
    )?;
    writeln!(
        out,
        "\n{:<14} {:<9} {:<8} {:<18} {:<13} {:>7}  WHAT → DETAIL",
        "SCENARIO", "TENANT", "TIER", "BACKEND", "OUTCOME", "MS"
    )?;
    for job in &report.jobs {
        writeln!(
            out,
            "{:<14} {:<9} {:<8} {:<18} {:<13} {:>7}  {} → {}",
            job.scenario,
            job.tenant_id.as_deref().unwrap_or("-"),
            job.tier,
            job.backend_id.as_deref().unwrap_or("-"),
            job.outcome,
            job.latency_ms.map_or("-".to_owned(), |ms| ms.to_string()),
            job.what,
            clip(&job.detail, width),
        )?;
    }

    writeln!(
        out,
        "\n{:<24} {:>5} {:>7} {:>7} {:>7} {:>7}",
        "JOBS PER BACKEND", "JOBS", "P50 ms", "P90 ms", "P99 ms", "MAX ms"
    )?;
    for backend in &report.backends {
        let name = if backend.simulated {
            format!("{} (sim)", backend.backend_id)
        } else {
            backend.backend_id.clone()
        };
        writeln!(
            out,
            "{:<24} {:>5} {:>7} {:>7} {:>7} {:>7}",
            name, backend.jobs, backend.p50_ms, backend.p90_ms, backend.p99_ms, backend.max_ms
        )?;
    }

    writeln!(
        out,
        "\n{:<10} {:<11} {:>5} {:>8} {:>12}",
        "TENANT", "PLAN", "JOBS", "CHARGES", "COST (USD)"
    )?;
    for tenant in &report.tenants {
        writeln!(
            out,
            "{:<10} {:<11} {:>5} {:>8} {:>12}",
            tenant.tenant_id,
            tenant.plan,
            tenant.jobs,
            tenant.charges,
            Micros(tenant.cost_micros).to_usd()
        )?;
    }

    for fan in &report.fan_out {
        let children: Vec<String> = fan
            .children
            .iter()
            .map(|c| {
                format!(
                    "{} → {} ({})",
                    c.name,
                    c.backend_id.as_deref().unwrap_or("-"),
                    c.status
                )
            })
            .collect();
        writeln!(
            out,
            "\nFan-out {}: {}; {}",
            fan.job_id,
            fan.status,
            children.join(", ")
        )?;
    }

    writeln!(
        out,
        "\nDead letters ({}), on the in-process DLQs:",
        report.dead_letters.len()
    )?;
    for letter in &report.dead_letters {
        writeln!(
            out,
            "  {:<32} {:<17} {:<26} {}",
            letter.source_queue,
            letter.error_class,
            letter
                .job_id
                .map_or("(no job id)".to_owned(), |id| id.to_string()),
            clip(first_line(&letter.reason), width + 20),
        )?;
    }

    let hooks = &report.webhooks;
    writeln!(
        out,
        "\nWebhooks: {} queued, {} delivered, {} exhausted; the receiver verified {} of {} \
         requests ({} rejected, {} duplicates)",
        hooks.queued,
        hooks.delivered,
        hooks.exhausted,
        hooks.verified,
        hooks.received,
        hooks.rejected,
        hooks.duplicates
    )
}
