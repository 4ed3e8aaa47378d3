//! Publish → consume → ack through a real transport, measuring throughput and end-to-end
//! latency percentiles (publish call to delivery in the consumer).
//!
//! `bus-throughput --transport memory --messages 1000000 --in-flight 1`
//! `bus-throughput --transport kafka --messages 200000` (needs `SWITCHYARD_KAFKA_BROKERS`)
//! `bus-throughput --transport kafka --messages 100000 --rate 10000` (latency at a fixed rate)

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use switchyard_bus::kafka::{KafkaBus, KafkaSettings};
use switchyard_bus::memory::MemoryBus;
use switchyard_bus::sqs::{SqsBus, SqsSettings};
use switchyard_bus::{Bus, Consumer, Delivery, Outgoing};
use switchyard_core::QueueName;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Transport {
    Memory,
    Kafka,
    /// Through the local emulator this is a functional figure only (~600 msg/s ceiling).
    Sqs,
}

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, value_enum)]
    transport: Transport,
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Messages per second to publish at; unlimited when absent.
    #[arg(long)]
    rate: Option<u64>,
    /// Body size in bytes.
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// Messages per publish batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Publish batches in flight at once (as several producers would have).
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Acks in flight at once, as a worker with that much concurrency has; 0 acks inline
    /// (right for transports whose ack is local, like Kafka's offset tracking).
    #[arg(long, default_value_t = 0)]
    concurrent_acks: usize,
}

const SENT_AT: &str = "loadtest-sent-at-ns";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.transport {
        Transport::Memory => run(MemoryBus::default(), &args).await,
        Transport::Kafka => {
            let brokers = std::env::var("SWITCHYARD_KAFKA_BROKERS")
                .context("SWITCHYARD_KAFKA_BROKERS is not set (source deploy/local/env.sh)")?;
            let mut settings = KafkaSettings::new(brokers);
            settings.group_prefix = format!("loadtest-{}", ulid::Ulid::new());
            run(KafkaBus::new(settings)?, &args).await
        }
        Transport::Sqs => {
            let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            let settings = SqsSettings {
                wait_time: Duration::from_secs(1),
                ..SqsSettings::default()
            };
            run(SqsBus::new(&aws, settings), &args).await
        }
    }
}

async fn run<B: Bus>(bus: B, args: &Args) -> anyhow::Result<()> {
    let queue = QueueName::new(format!(
        "loadtest.{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    ))
    .map_err(anyhow::Error::msg)?;
    bus.ensure(std::slice::from_ref(&queue)).await?;
    let mut consumer = bus.consume(&queue, "loadtest").await?;
    // Warm up: the first message waits for the consumer group to form, which is not what is
    // being measured.
    bus.publish(&queue, Outgoing::new(b"warm-up".to_vec()))
        .await?;
    if let Some(delivery) = consumer.next().await? {
        delivery.ack().await?;
    }
    let start = Arc::new(Instant::now());
    let total = args.messages;

    let consumer_start = start.clone();
    let concurrent_acks = args.concurrent_acks;
    let consuming = tokio::spawn(async move {
        let acks_in_flight = Arc::new(tokio::sync::Semaphore::new(concurrent_acks.max(1)));
        let mut acking = tokio::task::JoinSet::new();
        let mut latencies_ns = Vec::with_capacity(total);
        while latencies_ns.len() < total {
            let Some(delivery) = consumer.next().await? else {
                break;
            };
            let now = consumer_start.elapsed().as_nanos() as u64;
            let sent: u64 = delivery
                .headers()
                .get(SENT_AT)
                .and_then(|v| v.parse().ok())
                .unwrap_or(now);
            latencies_ns.push(now.saturating_sub(sent));
            if concurrent_acks == 0 {
                delivery.ack().await?;
            } else {
                let permit = acks_in_flight.clone().acquire_owned().await?;
                acking.spawn(async move {
                    let acked = delivery.ack().await;
                    drop(permit);
                    acked
                });
                while let Some(acked) = acking.try_join_next() {
                    acked??;
                }
            }
        }
        while let Some(acked) = acking.join_next().await {
            acked??;
        }
        let finished = consumer_start.elapsed();
        consumer.close().await;
        anyhow::Ok((latencies_ns, finished))
    });

    let body = vec![b'x'; args.size];
    let mut published = 0usize;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(args.in_flight.max(1)));
    let mut publishing = tokio::task::JoinSet::new();
    let publish_start = start.elapsed();
    while published < total {
        let n = args.batch.min(total - published);
        if let Some(rate) = args.rate {
            // Pace by schedule, not by sleeping a fixed amount: no drift.
            let due = Duration::from_secs_f64(published as f64 / rate as f64);
            let now = start.elapsed() - publish_start;
            if due > now {
                tokio::time::sleep(due - now).await;
            }
        }
        let sent_at = start.elapsed().as_nanos().to_string();
        let batch = (0..n)
            .map(|i| {
                Outgoing::new(body.clone())
                    .with_key(format!("k{}", (published + i) % 64))
                    .with_header(SENT_AT, sent_at.clone())
            })
            .collect();
        // Publishes overlap, as many producers' would: a batch in flight does not hold up the
        // schedule of the next.
        let permit = in_flight.clone().acquire_owned().await?;
        let bus = bus.clone();
        let queue = queue.clone();
        publishing.spawn(async move {
            let result = bus.publish_batch(&queue, batch).await;
            drop(permit);
            result
        });
        published += n;
    }
    while let Some(result) = publishing.join_next().await {
        result??;
    }
    let (mut latencies, finished) = consuming.await??;
    let elapsed = finished - publish_start;
    latencies.sort_unstable();
    let pct = |p: f64| {
        let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(index).copied().unwrap_or(0) as f64 / 1e6
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "transport={:?} messages={} size={}B batch={} rate={} elapsed={:.3}s throughput={:.0} msg/s latency_ms p50={:.3} p90={:.3} p99={:.3} max={:.3}",
        args.transport,
        latencies.len(),
        args.size,
        args.batch,
        args.rate.map_or("max".to_owned(), |r| r.to_string()),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0),
    )?;
    Ok(())
}
