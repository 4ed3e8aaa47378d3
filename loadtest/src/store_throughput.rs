//! Outcomes per second into a real store: `Ledger::finish` (one priced call → usage event and
//! spend, result, status) against a baseline measured in the same run, a bare `put_result` (one
//! document write per job). A third phase finishes every job again, as a redelivery would.
//!
//! `store-throughput --store embedded --outcomes 20000`
//! `store-throughput --store mongo --outcomes 20000` (needs `SWITCHYARD_MONGO_URI`)

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, ValueEnum};
use futures_util::StreamExt as _;
use switchyard_core::contracts::{
    self, JobEnvelope, Output, ResultDocument, ResultStatus, TextOutput,
};
use switchyard_core::rates::{RatesTable, Usage};
use switchyard_core::{BackendId, JobId};
use switchyard_ledger::blobs::LocalBlobs;
use switchyard_ledger::events::NoEvents;
use switchyard_ledger::store::{EmbeddedStore, MongoStore, Store};
use switchyard_ledger::{Call, Ledger, LedgerSettings, Outcome};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum StoreKind {
    Embedded,
    Mongo,
}

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, value_enum)]
    store: StoreKind,
    #[arg(long, default_value_t = 20_000)]
    outcomes: usize,
    /// Outcomes written at once, as a worker's concurrency would.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

const JOB: &[u8] = include_bytes!("../../schemas/examples/valid/job.chat.json");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let name = format!(
        "loadtest_{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    );
    match args.store {
        StoreKind::Embedded => {
            let dir = std::env::temp_dir().join(&name);
            let store = EmbeddedStore::open(&dir.join("store.sqlite3"))?;
            run(store, &args).await?;
            let _ = std::fs::remove_dir_all(dir);
        }
        StoreKind::Mongo => {
            let uri = std::env::var("SWITCHYARD_MONGO_URI")
                .context("SWITCHYARD_MONGO_URI is not set (. deploy/local/env.sh)")?;
            let store = MongoStore::connect(&uri, &name).await?;
            run(store.clone(), &args).await?;
            store.database().drop().await?;
        }
    }
    Ok(())
}

fn jobs(n: usize) -> anyhow::Result<Vec<JobEnvelope>> {
    let template: JobEnvelope = contracts::decode(JOB, 1 << 20)?;
    Ok((0..n)
        .map(|_| {
            let mut job = template.clone();
            job.job_id = JobId::new();
            job
        })
        .collect())
}

fn outcome() -> Outcome {
    let now = Utc::now();
    Outcome {
        status: ResultStatus::Succeeded,
        output: Some(Output::Text(TextOutput {
            text: "A short answer of a few words.".into(),
            finish_reason: "stop".into(),
        })),
        error: None,
        backend_id: BackendId::new("gpt-4o-mini").ok(),
        model: Some("gpt-4o-mini".into()),
        attempts: 1,
        started_at: now,
        finished_at: now,
        calls: vec![Call {
            name: "main".into(),
            backend_id: BackendId::new("gpt-4o-mini").unwrap_or_else(|_| unreachable!()),
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            price: "openai/gpt-4o-mini".into(),
            usage: Usage {
                input_tokens: 1200,
                output_tokens: 300,
                requests: 1,
                ..Usage::default()
            },
            latency_ms: 420,
            occurred_at: now,
        }],
        parent: None,
    }
}

struct Phase {
    name: &'static str,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

async fn timed<F, Fut>(
    name: &'static str,
    n: usize,
    concurrency: usize,
    work: F,
) -> anyhow::Result<Phase>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    let results: Vec<anyhow::Result<Duration>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let call = work(i);
            async move {
                let begun = Instant::now();
                call.await?;
                Ok(begun.elapsed())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut latencies = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    latencies.sort_unstable();
    Ok(Phase {
        name,
        elapsed,
        latencies,
    })
}

async fn run<S: Store>(store: S, args: &Args) -> anyhow::Result<()> {
    store.init().await?;
    let rates = Arc::new(RatesTable::default_table()?);
    let blob_dir = std::env::temp_dir().join(format!("loadtest-blobs-{}", ulid::Ulid::new()));
    let ledger = Ledger::new(
        store.clone(),
        NoEvents,
        LocalBlobs::new(&blob_dir)?,
        rates,
        LedgerSettings::default(),
    );
    let n = args.outcomes;
    let baseline_jobs = jobs(n)?;
    let ledger_jobs = jobs(n)?;
    let template = outcome();
    let results: Vec<ResultDocument> = baseline_jobs
        .iter()
        .map(|job| ResultDocument {
            schema: contracts::ResultSchema,
            job_id: job.job_id,
            tenant_id: job.tenant_id.clone(),
            parent_job_id: None,
            status: ResultStatus::Succeeded,
            task: job.task.kind(),
            backend_id: template.backend_id.clone(),
            model: template.model.clone(),
            output: template.output.clone(),
            error: None,
            attempts: 1,
            started_at: template.started_at,
            finished_at: template.finished_at,
            latency_ms: 420,
            cost_micros: switchyard_core::Micros(615),
        })
        .collect();

    let baseline = timed("baseline: put_result only", n, args.concurrency, |i| {
        let store = store.clone();
        let result = &results[i];
        async move {
            store.put_result(result).await?;
            Ok(())
        }
    })
    .await?;
    let finish_all = |name| {
        timed(name, n, args.concurrency, |i| {
            let ledger = &ledger;
            let job = &ledger_jobs[i];
            async move {
                ledger.finish(job, outcome()).await?;
                Ok(())
            }
        })
    };
    let finish = finish_all("Ledger::finish (usage + spend + result + status)").await?;
    let replay = finish_all("Ledger::finish again (redelivery: nothing new)").await?;
    let _ = std::fs::remove_dir_all(blob_dir);

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "store {:?}, {n} outcomes, concurrency {}",
        args.store, args.concurrency
    )?;
    let base_rate = n as f64 / baseline.elapsed.as_secs_f64();
    for phase in [&baseline, &finish, &replay] {
        let rate = n as f64 / phase.elapsed.as_secs_f64();
        let pct = |p: f64| {
            phase.latencies
                [((phase.latencies.len() as f64 * p) as usize).min(phase.latencies.len() - 1)]
        };
        writeln!(
            out,
            "{:<52} {:>9.0} outcomes/s  ({:.2}× baseline)  p50 {:>7.2} ms  p99 {:>7.2} ms",
            phase.name,
            rate,
            rate / base_rate,
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
        )?;
    }
    Ok(())
}
