//! The LLM worker against the simulator, in two phases.
//!
//! 1. Overhead per call (in-process simulator, no simulated latency, one call at a time): a
//!    direct HTTP POST of a prepared body (the baseline, same run) against the worker's call
//!    path (template, limits, provider client, reply parsing) and against the whole handler
//!    (that plus `Ledger::finish` into an in-memory SQLite store). p50/p99 of each.
//! 2. Calls in flight: the simulator as its own process (`switchyard-llm-sim`, so its memory is
//!    not counted) with 200 ms latency; the worker runtime over the in-process bus with
//!    `--in-flight` slots, fed 3× that many jobs. Reports the most and the mean calls in flight
//!    the simulator saw, calls per second, and this process's peak RSS.
//!
//! `llm-overhead --calls 3000 --in-flight 5000`

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use switchyard_bus::memory::MemoryBus;
use switchyard_bus::runtime::{self, Counters, Handler, JobContext, Settings};
use switchyard_bus::{Bus, Headers, Outgoing};
use switchyard_core::JobId;
use switchyard_core::config::{Backend, Config, Provider, RawLimits};
use switchyard_core::contracts::{self, RoutedJob};
use switchyard_ledger::blobs::LocalBlobs;
use switchyard_ledger::events::NoEvents;
use switchyard_ledger::store::{EmbeddedStore, Store};
use switchyard_ledger::{Ledger, LedgerSettings};
use switchyard_llm::limits::Limits;
use switchyard_llm::provider::{ApiKey, ProviderClient};
use switchyard_llm::tasks;
use switchyard_llm::worker::{LlmSettings, LlmWorker, Served, http_pool};
use switchyard_llm_sim::{SimConfig, Simulator};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Path,
    Jobs,
}

#[derive(Debug, Parser)]
struct Args {
    /// Calls per path in the overhead phase (0 skips it).
    #[arg(long, default_value_t = 3_000)]
    calls: usize,
    /// Worker slots in the in-flight phase (0 skips it).
    #[arg(long, default_value_t = 5_000)]
    in_flight: usize,
    /// Simulated latency in the in-flight phase.
    #[arg(long, default_value = "200ms")]
    latency: String,
    /// What the in-flight phase runs: the worker's call path in that many concurrent tasks
    /// (`path`: what one process can keep in flight), or whole jobs through the runtime and
    /// the ledger (`jobs`: end to end, bounded by the store's write rate).
    #[arg(long, value_enum, default_value = "path")]
    mode: Mode,
    /// How long the `path` mode keeps its calls going.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The simulator binary; by default next to this one.
    #[arg(long)]
    sim_bin: Option<std::path::PathBuf>,
    /// `[llm] http_version`: auto, http1 or h2_prior_knowledge (the simulator speaks h2c).
    #[arg(long, default_value = "auto")]
    http_version: String,
    /// `[llm] connections`: 64 carry 5,000 calls at the simulator's 200 streams each.
    #[arg(long, default_value_t = 64)]
    connections: usize,
}

const ROUTED: &[u8] = include_bytes!("../../schemas/examples/valid/routed.json");
const EXAMPLE: &str = include_str!("../../switchyard.example.toml");

type Worker = LlmWorker<MemoryBus, EmbeddedStore, NoEvents, LocalBlobs>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let overrides = [
        (
            "SWITCHYARD_LLM__HTTP_VERSION".to_owned(),
            args.http_version.clone(),
        ),
        (
            "SWITCHYARD_LLM__CONNECTIONS".to_owned(),
            args.connections.to_string(),
        ),
    ];
    let config = Config::from_parts(EXAMPLE, "example", &overrides, Some(&repo_root()))?;
    let mut out = String::new();
    out.push_str(&format!(
        "llm-overhead on {} CPUs, http_version {:?}, {} connections\n",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        config.llm.http_version,
        args.connections,
    ));
    if args.calls > 0 {
        overhead(&config, args.calls, &mut out).await?;
    }
    if args.in_flight > 0 {
        in_flight(&config, &args, &mut out).await?;
    }
    use std::io::Write as _;
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(())
}

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn backend(config: &Config, base: &str) -> anyhow::Result<Backend> {
    let mut backend = config
        .backends
        .iter()
        .find(|b| b.provider == Provider::Openai)
        .cloned()
        .context("the example catalog has no OpenAI backend")?;
    backend.base_url = Some(base.parse()?);
    backend.limits = RawLimits::default();
    Ok(backend)
}

async fn worker(
    config: &Config,
    base: &str,
    bus: MemoryBus,
) -> anyhow::Result<(Arc<Worker>, Backend)> {
    let backend = backend(config, base)?;
    let served = Served {
        client: ProviderClient::new(
            backend.provider,
            backend.base_url.clone(),
            ApiKey::new("sk-loadtest"),
            http_pool(config).map_err(anyhow::Error::msg)?,
        )
        .map_err(anyhow::Error::msg)?,
        limits: Limits::unlimited(),
        backend: backend.clone(),
    };
    let store = EmbeddedStore::in_memory()?;
    store.init().await?;
    let blobs = std::env::temp_dir().join(format!("llm-overhead-{}", ulid::Ulid::new()));
    let ledger = Ledger::new(
        store,
        NoEvents,
        LocalBlobs::new(&blobs)?,
        Arc::new(config.rates.clone()),
        LedgerSettings::from_config(config),
    );
    let queues: Vec<_> = config.backends.iter().map(|b| b.queue.clone()).collect();
    bus.ensure(&queues).await?;
    let worker = LlmWorker::new(
        bus,
        Arc::new(ledger),
        vec![served],
        config.backends.clone().into(),
        LlmSettings::default(),
    );
    Ok((Arc::new(worker), backend))
}

fn routed_job(backend: &Backend, index: usize) -> anyhow::Result<RoutedJob> {
    let mut routed: RoutedJob = contracts::decode(ROUTED, 1 << 20)?;
    routed.job.job_id = JobId::new();
    routed.job.task = contracts::Task::Chat(contracts::ChatTask {
        messages: vec![contracts::ChatMessage {
            role: contracts::ChatRole::User,
            content: format!("Summarise the state of the yard, please. Request {index}."),
        }],
        params: Default::default(),
    });
    routed.decision.backend_id = backend.id.clone();
    routed.decision.queue = backend.queue.clone();
    routed.decision.fallbacks.clear();
    Ok(routed)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn overhead(config: &Config, calls: usize, out: &mut String) -> anyhow::Result<()> {
    let sim = Simulator::new(SimConfig {
        reply_tokens: 32..=32,
        ..SimConfig::default()
    });
    let shutdown = CancellationToken::new();
    let address = sim
        .serve(([127, 0, 0, 1], 0).into(), shutdown.clone())
        .await?;
    let base = format!("http://{address}/v1");
    let (worker, backend) = worker(config, &base, MemoryBus::default()).await?;
    let http = http_pool(config).map_err(anyhow::Error::msg)?;
    let direct_body = serde_json::to_vec(&serde_json::json!({
        "model": backend.model,
        "messages": [{"role": "user", "content": "Summarise the state of the yard, please. Request 0."}],
    }))?;
    let url = format!("{base}/chat/completions");
    let client = ProviderClient::new(
        backend.provider,
        backend.base_url.clone(),
        ApiKey::new("sk-loadtest"),
        http.clone(),
    )
    .map_err(anyhow::Error::msg)?;
    let limits = Limits::unlimited();
    let context = |job: &RoutedJob| JobContext {
        queue: backend.queue.clone(),
        attempt: 1,
        max_attempts: 5,
        headers: Headers::new(),
        body: contracts::encode(job).into(),
    };
    let (mut direct, mut path, mut handler) = (Vec::new(), Vec::new(), Vec::new());
    // Warm the connection pools and the allocator before measuring.
    for round in 0..calls + 200 {
        let job = routed_job(&backend, round)?;
        let started = Instant::now();
        let response = http
            .pick()
            .post(&url)
            .bearer_auth("sk-loadtest")
            .header("content-type", "application/json")
            .body(direct_body.clone())
            .send()
            .await?;
        let bytes = response.bytes().await?;
        let _: serde_json::Value = serde_json::from_slice(&bytes)?;
        let direct_time = started.elapsed();

        let started = Instant::now();
        let prepared = tasks::prepare(&job.job.task, None, &backend.model)?;
        let permit = limits
            .acquire(switchyard_llm::worker::estimate_tokens(&prepared.request))
            .await;
        let reply = client
            .chat(&prepared.request, Duration::from_secs(10))
            .await?;
        limits.reconcile(
            &permit,
            reply.usage.input_tokens + reply.usage.output_tokens,
        );
        let _ = tasks::output(&prepared.expect, &reply)?;
        let path_time = started.elapsed();

        // Built before the clock starts: the runtime's copy of the bytes is not the handler's.
        let context = context(&job);
        let started = Instant::now();
        worker
            .handle(job, context)
            .await
            .map_err(|failure| anyhow::anyhow!("{failure:?}"))?;
        let handler_time = started.elapsed();
        if round >= 200 {
            direct.push(direct_time);
            path.push(path_time);
            handler.push(handler_time);
        }
    }
    shutdown.cancel();
    for list in [&mut direct, &mut path, &mut handler] {
        list.sort();
    }
    let line = |name: &str, list: &[Duration]| {
        format!(
            "  {name:<34} p50 {:>8.1} µs   p99 {:>8.1} µs\n",
            micros(percentile(list, 0.5)),
            micros(percentile(list, 0.99))
        )
    };
    out.push_str(&format!(
        "overhead: {calls} sequential calls per path, simulator in process, 0 ms latency\n"
    ));
    out.push_str(&line("direct HTTP call (baseline)", &direct));
    out.push_str(&line("worker call path", &path));
    out.push_str(&line("whole handler (+ ledger, SQLite)", &handler));
    for (name, list) in [("call path", &path), ("whole handler", &handler)] {
        out.push_str(&format!(
            "  overhead of the {name:<14} p50 {:>+8.1} µs   p99 {:>+8.1} µs   ({:.2}× / {:.2}× the baseline)\n",
            micros(percentile(list, 0.5)) - micros(percentile(&direct, 0.5)),
            micros(percentile(list, 0.99)) - micros(percentile(&direct, 0.99)),
            micros(percentile(list, 0.5)) / micros(percentile(&direct, 0.5)),
            micros(percentile(list, 0.99)) / micros(percentile(&direct, 0.99)),
        ));
    }
    Ok(())
}

async fn in_flight(config: &Config, args: &Args, out: &mut String) -> anyhow::Result<()> {
    let sim_bin = match &args.sim_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory above this binary")?
            .join("switchyard-llm-sim"),
    };
    let mut sim = Command::new(&sim_bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--latency",
            &args.latency,
            "--reply-tokens",
            "32..32",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {} (cargo build --release -p switchyard-llm-sim)",
                sim_bin.display()
            )
        })?;
    let stdout = sim.stdout.take().context("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .context("the simulator did not say where it listens")?
        .to_owned();
    let result = match args.mode {
        Mode::Path => drive_path(config, args, &address, out).await,
        Mode::Jobs => drive(config, args, &address, out).await,
    };
    let _ = sim.kill();
    let _ = sim.wait();
    result
}

async fn drive(
    config: &Config,
    args: &Args,
    address: &str,
    out: &mut String,
) -> anyhow::Result<()> {
    let bus = MemoryBus::default();
    let (worker, backend) = worker(config, &format!("http://{address}/v1"), bus.clone()).await?;
    let jobs = args.in_flight * 3;
    let mut batch = Vec::with_capacity(jobs);
    for index in 0..jobs {
        batch.push(Outgoing::new(contracts::encode(&routed_job(
            &backend, index,
        )?)));
    }
    bus.publish_batch(&backend.queue, batch).await?;
    let consumer = bus.consume(&backend.queue, "llm-overhead").await?;
    let settings = Settings {
        concurrency: args.in_flight,
        message_timeout: Duration::from_secs(60),
        ..Settings::default()
    };
    let counters = Arc::new(Counters::default());
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let runner = tokio::spawn(runtime::run(
        consumer,
        worker,
        settings,
        counters.clone(),
        shutdown.clone(),
    ));
    let watched = {
        let counters = counters.clone();
        watch(address, move || {
            Counters::get(&counters.acked) + Counters::get(&counters.dead_lettered) >= jobs as u64
        })
        .await?
    };
    let elapsed = started.elapsed();
    shutdown.cancel();
    runner.await??;
    let (max_seen, mean) = watched;
    out.push_str(&format!(
        "in flight (whole jobs): {jobs} jobs, {} slots, {} simulated latency, simulator in its own process\n",
        args.in_flight, args.latency
    ));
    out.push_str(&format!(
        "  calls in flight at the simulator: max {max_seen}, mean {mean:.0} (middle 60 % of the run)\n"
    ));
    out.push_str(&format!(
        "  {:.0} jobs/s end to end ({} done, {} dead-lettered) in {:.1} s\n",
        jobs as f64 / elapsed.as_secs_f64(),
        Counters::get(&counters.acked),
        Counters::get(&counters.dead_lettered),
        elapsed.as_secs_f64()
    ));
    out.push_str(&format!(
        "  peak RSS of the worker process: {}\n",
        peak_rss()
    ));
    Ok(())
}

/// Polls the simulator's stats until `done`; returns (most in flight, mean of the middle 60 %
/// of the nonzero samples).
async fn watch(address: &str, done: impl Fn() -> bool) -> anyhow::Result<(u64, f64)> {
    let stats_url = format!("http://{address}/_sim/stats");
    let http = reqwest::Client::new();
    let (mut samples, mut max_seen) = (Vec::new(), 0u64);
    let started = Instant::now();
    while !done() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stats: serde_json::Value = http.get(&stats_url).send().await?.json().await?;
        max_seen = stats["max_in_flight"].as_u64().unwrap_or(0).max(max_seen);
        samples.push(stats["in_flight"].as_u64().unwrap_or(0));
        if started.elapsed() > Duration::from_secs(300) {
            anyhow::bail!("not done after 300 s");
        }
    }
    let busy: Vec<u64> = samples.into_iter().filter(|n| *n > 0).collect();
    let middle = &busy[busy.len() / 5..busy.len() * 4 / 5];
    let mean = middle.iter().sum::<u64>() as f64 / middle.len().max(1) as f64;
    Ok((max_seen, mean))
}

async fn drive_path(
    config: &Config,
    args: &Args,
    address: &str,
    out: &mut String,
) -> anyhow::Result<()> {
    let backend = backend(config, &format!("http://{address}/v1"))?;
    let client = ProviderClient::new(
        backend.provider,
        backend.base_url.clone(),
        ApiKey::new("sk-loadtest"),
        http_pool(config).map_err(anyhow::Error::msg)?,
    )
    .map_err(anyhow::Error::msg)?;
    let limits = Limits::unlimited();
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for slot in 0..args.in_flight {
        let (client, limits, calls, failures) = (
            client.clone(),
            limits.clone(),
            calls.clone(),
            failures.clone(),
        );
        let job = routed_job(&backend, slot)?;
        let model = backend.model.clone();
        tasks.spawn(async move {
            while Instant::now() < until {
                let Ok(prepared) = tasks::prepare(&job.job.task, None, &model) else {
                    return;
                };
                let permit = limits
                    .acquire(switchyard_llm::worker::estimate_tokens(&prepared.request))
                    .await;
                match client
                    .chat(&prepared.request, Duration::from_secs(30))
                    .await
                {
                    Ok(reply) => {
                        limits.reconcile(
                            &permit,
                            reply.usage.input_tokens + reply.usage.output_tokens,
                        );
                        if tasks::output(&prepared.expect, &reply).is_ok() {
                            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    Err(error) => {
                        if failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3 {
                            use std::io::Write as _;
                            let _ = writeln!(std::io::stderr(), "call failed: {error}");
                        }
                    }
                }
            }
        });
    }
    let sampled_rss = Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let sampled_rss = sampled_rss.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Ok(mut list) = sampled_rss.lock() {
                    list.push(proc_status("VmRSS:"));
                }
            }
        });
    }
    let watched = {
        let all_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = all_done.clone();
        let watcher = watch(address, move || {
            flag.load(std::sync::atomic::Ordering::Relaxed)
        });
        let joiner = async {
            while tasks.join_next().await.is_some() {}
            all_done.store(true, std::sync::atomic::Ordering::Relaxed);
        };
        let (watched, ()) = tokio::join!(watcher, joiner);
        watched?
    };
    let elapsed = started.elapsed();
    let (max_seen, mean) = watched;
    let done = calls.load(std::sync::atomic::Ordering::Relaxed);
    out.push_str(&format!(
        "in flight (call path): {} concurrent callers for {} s, {} simulated latency, simulator in its own process\n",
        args.in_flight, args.seconds, args.latency
    ));
    out.push_str(&format!(
        "  calls in flight at the simulator: max {max_seen}, mean {mean:.0} (middle 60 % of the run)\n"
    ));
    out.push_str(&format!(
        "  {:.0} calls/s ({done} answered, {} failed)\n",
        done as f64 / elapsed.as_secs_f64(),
        failures.load(std::sync::atomic::Ordering::Relaxed)
    ));
    out.push_str(&format!(
        "  peak RSS of the worker process: {}\n",
        peak_rss()
    ));
    if let Ok(list) = sampled_rss.lock() {
        out.push_str(&format!("  RSS each second: {}\n", list.join(", ")));
    }
    Ok(())
}

/// `VmHWM` from `/proc/self/status`: the most resident memory this process ever had.
fn peak_rss() -> String {
    proc_status("VmHWM:")
}

fn proc_status(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .map(|line| line.trim_start_matches(field).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}
