//! `switchyard jobs get | list`: what the store knows about jobs, as a table or JSON.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use switchyard_core::config::Config;
use switchyard_core::contracts::{JobState, ResultDocument, UsageEvent};
use switchyard_core::{JobId, TenantId};
use switchyard_ledger::store::{AnyStore, JobFilter, JobRecord, Store};

#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// One job: its timeline, result and charges.
    Get {
        /// The job id (a ULID).
        job_id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Recently updated jobs, newest first.
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// submitted | routed | started | succeeded | failed | dead_lettered
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Serialize)]
struct JobView<'a> {
    job: &'a JobRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a ResultDocument>,
    usage: &'a [UsageEvent],
}

pub fn run(config: &Config, command: JobsCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let store = AnyStore::open_existing(&config.store)
            .await
            .context("cannot open the store")?;
        match command {
            JobsCommand::Get { job_id, json } => get(&store, &job_id, json).await,
            JobsCommand::List {
                tenant,
                status,
                limit,
                json,
            } => {
                let filter = JobFilter {
                    tenant_id: tenant.map(TenantId::new).transpose().context("--tenant")?,
                    state: status.map(|s| parse_state(&s)).transpose()?,
                    updated_before: None,
                    limit,
                };
                list(&store, &filter, json).await
            }
        }
    })
}

fn parse_state(text: &str) -> anyhow::Result<JobState> {
    // Filterable states: the job's own, not timeline-only entries.
    JobState::parse(text)
        .filter(|s| *s != JobState::WebhookExhausted)
        .with_context(|| {
            let names: Vec<&str> = JobState::ALL
                .iter()
                .filter(|s| **s != JobState::WebhookExhausted)
                .map(|s| s.as_str())
                .collect();
            format!("--status {text}: expected one of {}", names.join(", "))
        })
}

async fn get(store: &AnyStore, job_id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let job_id: JobId = job_id
        .parse()
        .with_context(|| format!("`{job_id}` is not a job id (a ULID)"))?;
    let Some(job) = store.job(job_id).await? else {
        writeln!(std::io::stderr(), "no job {job_id} in the store")?;
        return Ok(ExitCode::FAILURE);
    };
    let result = store.result(job_id).await?;
    let usage = store.usage_of_job(job_id).await?;
    let mut out = std::io::stdout().lock();
    if json {
        let view = JobView {
            job: &job,
            result: result.as_ref(),
            usage: &usage,
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&view)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "job       {}", job.job_id)?;
    writeln!(out, "tenant    {}", job.tenant_id)?;
    writeln!(out, "state     {}", job.state.as_str())?;
    writeln!(out, "attempts  {}", job.attempts)?;
    if let Some(backend) = &job.backend_id {
        writeln!(out, "backend   {backend}")?;
    }
    writeln!(out, "timeline")?;
    for step in &job.history {
        let mut line = format!("  {}  {:<17}", time(step.at), step.state.as_str());
        if let Some(attempt) = step.attempt.filter(|a| *a > 0) {
            line.push_str(&format!(" attempt {attempt}"));
        }
        if let Some(backend) = &step.backend_id {
            line.push_str(&format!(" on {backend}"));
        }
        if let Some(detail) = &step.detail {
            line.push_str(&format!(" — {detail}"));
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    if let Some(result) = &result {
        writeln!(
            out,
            "result    {:?} in {} ms, cost ${}",
            result.status,
            result.latency_ms,
            result.cost_micros.to_usd()
        )?;
        if let Some(error) = &result.error {
            writeln!(out, "error     {}: {}", error.class, error.message)?;
        }
        if let Some(output) = &result.output {
            writeln!(out, "output    {}", serde_json::to_string(output)?)?;
        }
    }
    for event in &usage {
        writeln!(
            out,
            "charge    {}  {} {}  ${}  (rates {})",
            event.event_id,
            event.provider,
            event.model,
            event.cost_micros.to_usd(),
            event.rates_version
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(store: &AnyStore, filter: &JobFilter, json: bool) -> anyhow::Result<ExitCode> {
    let jobs = store.list_jobs(filter).await?;
    let mut out = std::io::stdout().lock();
    if json {
        for job in &jobs {
            writeln!(out, "{}", serde_json::to_string(job)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<24}  {:<26}  {:<16}  {:<13}  {:>8}  BACKEND",
        "UPDATED (UTC)", "JOB ID", "TENANT", "STATE", "ATTEMPTS"
    )?;
    for job in &jobs {
        writeln!(
            out,
            "{:<24}  {:<26}  {:<16}  {:<13}  {:>8}  {}",
            time(job.updated_at),
            job.job_id,
            job.tenant_id,
            job.state.as_str(),
            job.attempts,
            job.backend_id.as_ref().map_or("-", |b| b.as_str())
        )?;
    }
    if jobs.is_empty() {
        writeln!(std::io::stderr(), "no jobs match")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}
