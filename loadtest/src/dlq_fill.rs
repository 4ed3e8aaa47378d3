//! Fills a dead-letter queue with `--count` letters of chat jobs, so that `switchyard dlq` can
//! be measured on a queue of a realistic size (see `docs/benchmarks.md`).
//!
//! `dlq-fill --config bench.toml --queue bench.src --count 5000 --tenant bench`

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use switchyard_bus::any::AnyBus;
use switchyard_bus::{Bus, Headers, Rejection, dead_letter_message};
use switchyard_core::config::Config;
use switchyard_core::contracts::{self, ErrorClass, JobEnvelope};
use switchyard_core::{JobId, QueueName, TenantId};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    config: PathBuf,
    /// The source queue whose dead-letter queue gets the letters.
    #[arg(long)]
    queue: String,
    #[arg(long, default_value_t = 5_000)]
    count: usize,
    #[arg(long, default_value = "bench")]
    tenant: String,
}

const JOB: &[u8] = include_bytes!("../../schemas/examples/valid/job.chat.json");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config::load(Some(&args.config))?;
    let bus = AnyBus::from_config(&config).await?;
    let queue = QueueName::new(args.queue.as_str()).map_err(|e| anyhow::anyhow!(e))?;
    bus.ensure(std::slice::from_ref(&queue)).await?;
    let template: JobEnvelope = contracts::decode(JOB, 1 << 20).context("the example job")?;
    let tenant = TenantId::new(args.tenant.as_str()).context("--tenant")?;
    let rejection = Rejection {
        class: ErrorClass::NoRoute,
        reason: "no backend serves chat for plan basic (dlq-fill)".into(),
    };
    let started = Instant::now();
    let mut letters = Vec::with_capacity(500);
    for index in 0..args.count {
        let mut job = template.clone();
        job.job_id = JobId::new();
        job.tenant_id = tenant.clone();
        letters.push(dead_letter_message(
            &queue,
            &contracts::encode(&job),
            &Headers::new(),
            Some(tenant.as_str()),
            1,
            None,
            &rejection,
        ));
        if letters.len() == 500 || index + 1 == args.count {
            bus.publish_batch(&queue.dead_letter(), std::mem::take(&mut letters))
                .await?;
        }
    }
    writeln!(
        std::io::stdout(),
        "filled {} with {} letters in {:.1} s",
        queue.dead_letter(),
        args.count,
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}
