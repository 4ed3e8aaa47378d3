//! Jobs through the router: publish job envelopes to the tier queues, run the router worker
//! (the same handler and runtime `switchyard router` runs), and time their arrival on the
//! backend queues. Two references in the same run:
//! - baseline (bus only): the same envelopes published to one queue and consumed straight off
//!   it (one hop, decode and validation, no router);
//! - relay (two hops): the same envelopes forwarded from the tier queues to the backend queues
//!   as they came, with no decode and no policy, and read off there by the same sink. This is
//!   the ceiling of any router on the machine. On Kafka it shows what the broker's second hop
//!   costs when the broker shares the cores.
//!
//! `router-throughput --transport memory --jobs 200000`
//! `router-throughput --transport memory --jobs 100000 --rate 10000` (added latency at 10k/s)
//! `router-throughput --transport kafka --jobs 200000` (needs `SWITCHYARD_KAFKA_BROKERS`)
//! `router-throughput --transport kafka --jobs 200000 --prefill` (the drain rate of a backlog)

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, ValueEnum};
use serde::Deserialize;
use switchyard_bus::kafka::{KafkaBus, KafkaSettings};
use switchyard_bus::memory::MemoryBus;
use switchyard_bus::runtime::{self, Counters, Settings};
use switchyard_bus::scheduler::WeightedConsumer;
use switchyard_bus::{Bus, Consumer, Delivery, Outgoing};
use switchyard_core::config::Config;
use switchyard_core::contracts::{self, JobEnvelope};
use switchyard_core::{JobId, QueueName, Tier};
use switchyard_router::live::LiveState;
use switchyard_router::policy_file::{DEFAULT_POLICY_TOML, load_policy};
use switchyard_router::worker::{NoSpend, PolicyHandle, Router, RouterSettings};
use tokio_util::sync::CancellationToken;

// As the switchyard binary: glibc's allocator contends across the runtime's threads on a
// workload that allocates per message (`--no-default-features` measures without it).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Transport {
    Memory,
    Kafka,
}

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, value_enum)]
    transport: Transport,
    #[arg(long, default_value_t = 100_000)]
    jobs: usize,
    /// Jobs per second to publish at; unlimited when absent.
    #[arg(long)]
    rate: Option<u64>,
    /// The router's concurrency (jobs in flight).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Publish batches in flight at once, as many producers' would be: one publisher waiting
    /// for each batch's confirmation would cap the rate at one round trip per batch, and so
    /// measure itself rather than the router.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Publish every job before anything consumes, then time the drain: the rate of the
    /// router (or relay) alone, with the publisher's CPU out of the way and the sink reading
    /// only after the drain. Latencies then include the wait in the backlog and are not
    /// printed.
    #[arg(long)]
    prefill: bool,
    /// The passes to run, in this order; a profile of one pass (`--passes router`) holds only
    /// its work.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Pass::Baseline, Pass::Relay, Pass::Router])]
    passes: Vec<Pass>,
    /// A librdkafka property for every client, as `[bus.kafka.properties]` sets them
    /// (`--kafka-property linger.ms=5`); repeatable.
    #[arg(long, value_parser = key_value)]
    kafka_property: Vec<(String, String)>,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Pass {
    Baseline,
    Relay,
    Router,
}

const RUN: &str = "loadtest_run";
const SINK_GROUP: &str = "loadtest-sink";
const RELAY_SINK_GROUP: &str = "loadtest-relay-sink";
const JOBS: [&str; 4] = [
    "job.chat.json",
    "job.classify.json",
    "job.summarize.json",
    "job.detect-s3.json",
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.transport {
        Transport::Memory => run(MemoryBus::default(), &args, |_, _| Ok(())).await,
        Transport::Kafka => {
            let brokers = std::env::var("SWITCHYARD_KAFKA_BROKERS")
                .context("SWITCHYARD_KAFKA_BROKERS is not set (source deploy/local/env.sh)")?;
            let mut settings = KafkaSettings::new(brokers);
            settings.properties.clone_from(&args.kafka_property);
            settings.group_prefix = format!("loadtest-{}", ulid::Ulid::new());
            let bus = KafkaBus::new(settings)?;
            let resetting = bus.clone();
            // The tier and backend topics outlive a run, and a new group starts at their
            // beginning: without this the router would first route every earlier run's jobs.
            let reset = move |queue: &QueueName, group: &str| {
                resetting
                    .reset_to_end(queue, group)
                    .with_context(|| format!("resetting group {group} on {queue}"))
            };
            run(bus, &args, reset).await
        }
    }
}

fn templates() -> anyhow::Result<Vec<JobEnvelope>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/examples/valid");
    JOBS.iter()
        .map(|name| {
            let bytes = std::fs::read(dir.join(name))?;
            let mut job: JobEnvelope = contracts::decode(&bytes, 1 << 20)?;
            // Unpinned, so the policy decides every one.
            job.routing.backend = None;
            Ok(job)
        })
        .collect()
}

struct Phase {
    elapsed: Duration,
    latencies_us: Vec<u64>,
    /// The router's rate over the second half of a prefilled drain.
    second_half: Option<f64>,
    /// CPU per job over a prefilled drain: this process's, and the whole machine's (the broker
    /// included).
    cpu_per_job: Option<CpuPerJob>,
}

#[derive(Clone, Copy)]
struct CpuPerJob {
    process_us: f64,
    machine_us: f64,
}

/// CPU time used so far, in clock ticks: this process's and every CPU's busy time.
#[derive(Clone, Copy)]
struct CpuTicks {
    process: u64,
    machine: u64,
}

impl CpuTicks {
    /// From /proc; `None` where there is none (the figures are then left out).
    fn now() -> Option<CpuTicks> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces:
        // utime and stime are the 14th and 15th of the whole line.
        let after = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let process = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let all = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = all
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal: busy is what this machine ran, so
        // neither idle and iowait nor steal (the hypervisor running someone else).
        let machine = cpu.iter().take(7).sum::<u64>() - cpu.get(3)? - cpu.get(4)?;
        Some(CpuTicks { process, machine })
    }

    fn per_job(self, until: CpuTicks, jobs: u64) -> CpuPerJob {
        // The kernel's USER_HZ is 100 on every Linux this runs on.
        let us = |ticks: u64| ticks as f64 * 10_000.0 / jobs.max(1) as f64;
        CpuPerJob {
            process_us: us(until.process - self.process),
            machine_us: us(until.machine - self.machine),
        }
    }
}

/// Publishes `n` jobs (tiers and templates round-robin) to `queue_of(job)`, paced by `rate`.
async fn publish<B: Bus>(
    bus: &B,
    args: &Args,
    run_id: &str,
    queue_of: impl Fn(&JobEnvelope) -> QueueName,
) -> anyhow::Result<()> {
    let templates = templates()?;
    let start = Instant::now();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(args.in_flight.max(1)));
    let mut publishing = tokio::task::JoinSet::new();
    let mut published = 0;
    while published < args.jobs {
        let n = args.batch.min(args.jobs - published);
        if let Some(rate) = args.rate {
            let due = Duration::from_secs_f64(published as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        // One batch per tier queue, as producers of each tier would send.
        let mut batches: Vec<(QueueName, Vec<Outgoing>)> = Vec::new();
        for i in 0..n {
            let mut job = templates[(published + i) % templates.len()].clone();
            job.job_id = JobId::new();
            job.priority = Tier::ALL[(published + i) % 3];
            job.metadata.insert(RUN.into(), run_id.into());
            job.submitted_at = Utc::now();
            let queue = queue_of(&job);
            let message = Outgoing::new(contracts::encode(&job)).with_key(job.tenant_id.as_str());
            match batches.iter_mut().find(|(q, _)| *q == queue) {
                Some((_, batch)) => batch.push(message),
                None => batches.push((queue, vec![message])),
            }
        }
        for (queue, batch) in batches {
            let permit = in_flight.clone().acquire_owned().await?;
            let bus = bus.clone();
            publishing.spawn(async move {
                let result = bus.publish_batch(&queue, batch).await;
                drop(permit);
                result
            });
        }
        published += n;
    }
    while let Some(result) = publishing.join_next().await {
        result??;
    }
    Ok(())
}

/// The router's pace over a backlog of `n` jobs: the time from its first delivery to its
/// `n`th settled one, and the rate over the second half, when every tier consumer has joined
/// (the group forms around the first, and the others wait for its next heartbeat). Its
/// counters are the only record of when it read and settled, so they are sampled, every
/// millisecond.
async fn drain_time(counters: &Counters, n: u64) -> (Duration, f64, Option<CpuPerJob>) {
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let settled = || Counters::get(&counters.acked) + Counters::get(&counters.dead_lettered);
    let mut start = None;
    let mut half = None;
    let mut cpu_from = None;
    loop {
        tick.tick().await;
        if start.is_none() && Counters::get(&counters.received) > 0 {
            start = Some(Instant::now());
            cpu_from = CpuTicks::now();
        }
        let done = settled();
        if half.is_none() && done >= n / 2 {
            half = Some((Instant::now(), done));
        }
        if done >= n {
            let total = start.map_or(Duration::ZERO, |s| s.elapsed());
            let steady = half.map_or(0.0, |(at, from)| {
                (done - from) as f64 / at.elapsed().as_secs_f64().max(1e-9)
            });
            let cpu = cpu_from
                .zip(CpuTicks::now())
                .map(|(from, to)| from.per_job(to, done));
            return (total, steady, cpu);
        }
    }
}

/// What the sink reads of a routed job.
#[derive(Deserialize)]
struct Routed {
    job: Arrived,
}

/// How a sink reads what arrives.
#[derive(Clone, Copy)]
enum Arrival {
    /// A job envelope, decoded and validated as the router would (the baseline).
    Validated,
    /// A job envelope as the relay forwarded it: only the fields the sink times.
    Relayed,
    /// A routed job: only the fields the sink times. The workers' decode is their own CPU.
    Routed,
}

impl Arrival {
    fn read(self, body: &[u8]) -> Option<Arrived> {
        match self {
            Arrival::Validated => contracts::decode::<JobEnvelope>(body, 1 << 20)
                .ok()
                .map(|job| Arrived {
                    job_id: job.job_id,
                    submitted_at: job.submitted_at,
                    metadata: job.metadata,
                }),
            Arrival::Relayed => serde_json::from_slice(body).ok(),
            Arrival::Routed => serde_json::from_slice::<Routed>(body).ok().map(|r| r.job),
        }
    }
}

/// The two hops of routing with nothing in between: each delivery's bytes are published to the
/// next of `to` (backends in turn, so the sink reads as many queues as the router's) and
/// acked once that publish is confirmed, `concurrency` at a time, as the runtime does.
async fn relay<B: Bus, C: Consumer>(
    bus: B,
    mut consumer: C,
    to: Vec<QueueName>,
    concurrency: usize,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut turn = 0;
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit?,
        };
        while tasks.try_join_next().is_some() {}
        let delivery = tokio::select! {
            () = shutdown.cancelled() => break,
            next = consumer.next() => match next? {
                Some(delivery) => delivery,
                None => break,
            },
        };
        counters.received.fetch_add(1, Ordering::Relaxed);
        let queue = to[turn % to.len()].clone();
        turn += 1;
        let (bus, counters) = (bus.clone(), counters.clone());
        tasks.spawn(async move {
            let mut message = Outgoing::new(delivery.body());
            if let Some(key) = delivery.key() {
                message = message.with_key(key);
            }
            bus.publish(&queue, message).await?;
            delivery.ack().await?;
            counters.acked.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            anyhow::Ok(())
        });
    }
    while let Some(task) = tasks.join_next().await {
        task??;
    }
    consumer.close().await;
    Ok(())
}

#[derive(Deserialize)]
struct Arrived {
    job_id: JobId,
    submitted_at: DateTime<Utc>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// Reads `queues` until `n` messages of this run arrived; latency = arrival − submitted_at.
/// One reading task per queue: polling a dozen consumers in one `select_all` per message
/// would make the sink, not the router, the bottleneck.
async fn collect<B: Bus>(
    bus: &B,
    queues: &[QueueName],
    group: &str,
    n: usize,
    run_id: &str,
    arrival: Arrival,
) -> anyhow::Result<Phase> {
    let (arrivals, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let mut readers = tokio::task::JoinSet::new();
    for queue in queues {
        let mut consumer = bus.consume(queue, group).await?;
        let (arrivals, stop) = (arrivals.clone(), stop.clone());
        readers.spawn(async move {
            loop {
                let delivery = tokio::select! {
                    () = stop.cancelled() => break,
                    next = consumer.next() => match next? {
                        Some(delivery) => delivery,
                        None => break,
                    },
                };
                let now = Utc::now();
                let job = arrival.read(delivery.body());
                delivery.ack().await?;
                if let Some(job) = job {
                    let _ = arrivals.send((job, now));
                }
            }
            consumer.close().await;
            anyhow::Ok(())
        });
    }
    drop(arrivals);
    let mut latencies_us = Vec::with_capacity(n);
    let mut seen = HashSet::with_capacity(n);
    let mut first: Option<Instant> = None;
    while latencies_us.len() < n {
        let Some((job, now)) = arrived.recv().await else {
            break;
        };
        if job.metadata.get(RUN).map(String::as_str) != Some(run_id) || !seen.insert(job.job_id) {
            continue;
        }
        first.get_or_insert_with(Instant::now);
        let latency = (now - job.submitted_at).num_microseconds().unwrap_or(0);
        latencies_us.push(u64::try_from(latency).unwrap_or(0));
    }
    stop.cancel();
    while let Some(reader) = readers.join_next().await {
        reader??;
    }
    Ok(Phase {
        elapsed: first.map_or(Duration::ZERO, |f| f.elapsed()),
        latencies_us,
        second_half: None,
        cpu_per_job: None,
    })
}

/// One pass through two hops: `start` reads the tier queues as `group` (what it spawns is the
/// router or the relay) and a sink reads the backend queues as `sink_group`. Prefilled, the
/// jobs are published first and `start`'s counters time the drain; otherwise they are
/// published while it runs.
#[expect(
    clippy::too_many_arguments,
    reason = "one call per phase, each argument named"
)]
async fn two_hops<B: Bus>(
    bus: &B,
    args: &Args,
    run_id: &str,
    config: &Config,
    (group, sink_group): (&str, &str),
    arrival: Arrival,
    start_at_end: &impl Fn(&QueueName, &str) -> anyhow::Result<()>,
    start: impl FnOnce(
        WeightedConsumer<B::Consumer>,
        Arc<Counters>,
        CancellationToken,
    ) -> tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<(Phase, Arc<Counters>)> {
    let backend_queues: Vec<QueueName> = config.backends.iter().map(|b| b.queue.clone()).collect();
    for tier in Tier::ALL {
        start_at_end(&tier.queue(), group)?;
    }
    for queue in &backend_queues {
        start_at_end(queue, sink_group)?;
    }
    if args.prefill {
        publish(bus, args, run_id, |job| job.priority.queue()).await?;
    }
    let mut consumers = Vec::new();
    for tier in Tier::ALL {
        let weight = config.tier_weights.get(&tier).copied().unwrap_or(1);
        consumers.push((weight, bus.consume(&tier.queue(), group).await?));
    }
    let shutdown = CancellationToken::new();
    let counters = Arc::new(Counters::default());
    let running = start(
        WeightedConsumer::new(consumers),
        counters.clone(),
        shutdown.clone(),
    );
    let collecting = collect(bus, &backend_queues, sink_group, args.jobs, run_id, arrival);
    let phase = if args.prefill {
        // The counters time the drain, and the sink reads the backend queues only once it is
        // over: read alongside, the sink (and the broker serving its fetches) took a share of
        // the same two cores, and its arrival times would flatter the pass anyway, since the
        // first jobs through wait for it to join. It still checks every job arrived.
        let (drained, steady, cpu) = drain_time(&counters, args.jobs as u64).await;
        Phase {
            elapsed: drained,
            second_half: Some(steady),
            cpu_per_job: cpu,
            ..collecting.await?
        }
    } else {
        let (arrived, published) = tokio::join!(
            collecting,
            publish(bus, args, run_id, |job| job.priority.queue()),
        );
        published?;
        arrived?
    };
    shutdown.cancel();
    running.await??;
    Ok((phase, counters))
}

/// The baseline: the same envelopes, bus transit plus the consumer's decode, no router.
async fn baseline<B: Bus>(
    bus: &B,
    args: &Args,
    run_id: &str,
    direct: &QueueName,
) -> anyhow::Result<Phase> {
    let collecting = collect(
        bus,
        std::slice::from_ref(direct),
        SINK_GROUP,
        args.jobs,
        run_id,
        Arrival::Validated,
    );
    let publishing = publish(bus, args, run_id, |_| direct.clone());
    if args.prefill {
        publishing.await?;
        collecting.await
    } else {
        let (baseline, published) = tokio::join!(collecting, publishing);
        published?;
        baseline
    }
}

/// `start_at_end(queue, group)` makes `group` skip what `queue` already holds.
async fn run<B: Bus>(
    bus: B,
    args: &Args,
    start_at_end: impl Fn(&QueueName, &str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("switchyard.example.toml"))?;
    let config = Config::from_parts(&text, "example", &[], Some(&root))?;
    let run_id = ulid::Ulid::new().to_string();
    let backend_queues: Vec<QueueName> = config.backends.iter().map(|b| b.queue.clone()).collect();
    let direct = QueueName::new(format!("loadtest.direct.{}", run_id.to_ascii_lowercase()))
        .map_err(anyhow::Error::msg)?;
    let mut queues = backend_queues.clone();
    queues.extend(Tier::ALL.iter().map(|t| t.queue()));
    queues.push(direct.clone());
    bus.ensure(&queues).await?;

    let mut passes = Vec::new();
    let mut dead_lettered = 0;
    for pass in &args.passes {
        let phase = match pass {
            Pass::Baseline => baseline(&bus, args, &run_id, &direct).await?,
            Pass::Relay => {
                // Each pass tags its jobs with its own run id, so no sink counts another
                // pass's jobs.
                let relay_run = format!("{run_id}-relay");
                let (relayed, _) = two_hops(
                    &bus,
                    args,
                    &relay_run,
                    &config,
                    ("relay", RELAY_SINK_GROUP),
                    Arrival::Relayed,
                    &start_at_end,
                    |consumer, counters, shutdown| {
                        let (bus, to, concurrency) =
                            (bus.clone(), backend_queues.clone(), args.concurrency);
                        tokio::spawn(relay(bus, consumer, to, concurrency, counters, shutdown))
                    },
                )
                .await?;
                relayed
            }
            Pass::Router => {
                let policy = load_policy(DEFAULT_POLICY_TOML, "default", &config.backends)?;
                let router = Arc::new(Router::new(
                    bus.clone(),
                    config.backends.clone().into(),
                    Arc::new(config.rates.clone()),
                    Arc::new(PolicyHandle::new(policy, None)),
                    Arc::new(Mutex::new(LiveState::default())),
                    NoSpend,
                    RouterSettings::default(),
                ));
                let settings = Settings {
                    concurrency: args.concurrency,
                    ..Settings::default()
                };
                let (routed, counters) = two_hops(
                    &bus,
                    args,
                    &run_id,
                    &config,
                    ("router", SINK_GROUP),
                    Arrival::Routed,
                    &start_at_end,
                    |consumer, counters, shutdown| {
                        tokio::spawn(async move {
                            runtime::run(consumer, router, settings, counters, shutdown).await?;
                            anyhow::Ok(())
                        })
                    },
                )
                .await?;
                dead_lettered = Counters::get(&counters.dead_lettered);
                routed
            }
        };
        passes.push((*pass, phase));
    }

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "transport={:?} jobs={} rate={} router_concurrency={} dead_lettered={}",
        args.transport,
        args.jobs,
        args.rate.map_or("max".to_owned(), |r| r.to_string()),
        args.concurrency,
        dead_lettered,
    )?;
    for (pass, mut phase) in passes {
        let name = match pass {
            Pass::Baseline => "baseline (bus only)",
            Pass::Relay => "relay (two hops)",
            Pass::Router => "through the router",
        };
        phase.latencies_us.sort_unstable();
        let pct = |p: f64| {
            let index = ((phase.latencies_us.len() as f64 - 1.0) * p).round() as usize;
            phase.latencies_us.get(index).copied().unwrap_or(0) as f64 / 1e3
        };
        let rate = phase.latencies_us.len() as f64 / phase.elapsed.as_secs_f64().max(1e-9);
        if args.prefill {
            let cpu = phase.cpu_per_job.map_or(String::new(), |cpu| {
                format!(
                    "; CPU per job {:.1} µs in this process, {:.1} µs on the machine",
                    cpu.process_us, cpu.machine_us
                )
            });
            match phase.second_half {
                Some(steady) => writeln!(
                    out,
                    "{name:<20} {rate:>8.0} jobs/s  (prefilled: its drain, first delivery to last ack; second half {steady:.0} jobs/s{cpu})"
                )?,
                None => writeln!(
                    out,
                    "{name:<20} {rate:>8.0} jobs/s  (prefilled: drain rate)"
                )?,
            }
            continue;
        }
        writeln!(
            out,
            "{name:<20} {rate:>8.0} jobs/s  latency_ms p50={:.3} p90={:.3} p99={:.3} max={:.3}",
            pct(0.50),
            pct(0.90),
            pct(0.99),
            pct(1.0),
        )?;
    }
    Ok(())
}
