//! `switchyard worker llm`: serve LLM backends' queues.

use std::sync::Arc;

use anyhow::Context as _;
use switchyard_bus::Bus;
use switchyard_bus::any::AnyBus;
use switchyard_bus::runtime::{self, Counters, Settings};
use switchyard_core::BackendId;
use switchyard_core::config::{BackendKind, BlobsConfig, Config, EventsConfig};
use switchyard_ledger::blobs::AnyBlobStore;
use switchyard_ledger::events::AnyEventSink;
use switchyard_ledger::store::AnyStore;
use switchyard_ledger::webhook::client::WebhookClient;
use switchyard_ledger::webhook::guard::SsrfGuard;
use switchyard_ledger::webhook::{DispatchSettings, Dispatcher};
use switchyard_ledger::{Ledger, LedgerSettings};
use switchyard_llm::worker::{LlmSettings, LlmWorker, Served, http_pool};
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Debug, clap::Subcommand)]
pub enum WorkerCommand {
    /// Call OpenAI / Anthropic (or compatible) APIs for the jobs on LLM backends' queues.
    Llm(LlmArgs),
    /// Run YOLO detection (ONNX Runtime, micro-batched) for the jobs on vision backends' queues.
    Vision(VisionArgs),
}

#[derive(Debug, clap::Args)]
pub struct VisionArgs {
    /// Serve only these backends (catalog ids; repeatable). All vision backends when absent.
    #[arg(long = "backend", value_name = "ID")]
    pub backends: Vec<String>,
    /// Leave webhook delivery to other processes.
    #[arg(long)]
    pub no_webhooks: bool,
}

#[derive(Debug, clap::Args)]
pub struct LlmArgs {
    /// Serve only these backends (catalog ids; repeatable). All LLM backends when absent.
    #[arg(long = "backend", value_name = "ID")]
    pub backends: Vec<String>,
    /// Leave webhook delivery to other processes (by default every worker delivers; they
    /// share the work through leases in the store).
    #[arg(long)]
    pub no_webhooks: bool,
}

/// The AWS configuration, only when something configured needs it.
pub async fn aws_if_needed(config: &Config) -> Option<aws_config::SdkConfig> {
    let needed = matches!(config.events, EventsConfig::EventBridge { .. })
        || matches!(config.blobs, BlobsConfig::S3 { .. });
    if needed {
        Some(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .load()
                .await,
        )
    } else {
        None
    }
}

pub async fn run(config: Config, command: WorkerCommand) -> anyhow::Result<()> {
    match command {
        WorkerCommand::Llm(args) => llm(config, args).await,
        WorkerCommand::Vision(args) => vision(config, args).await,
    }
}

/// The catalog's backends of `kind`, or the named ones (which must be of that kind).
fn chosen_backends<'c>(
    config: &'c Config,
    kind: BackendKind,
    named: &[String],
) -> anyhow::Result<Vec<&'c switchyard_core::config::Backend>> {
    let chosen: Vec<_> = if named.is_empty() {
        config.backends.iter().filter(|b| b.kind == kind).collect()
    } else {
        named
            .iter()
            .map(|id| {
                let id = BackendId::new(id.clone()).map_err(anyhow::Error::msg)?;
                let backend = config
                    .backends
                    .iter()
                    .find(|b| b.id == id)
                    .with_context(|| format!("backend `{}` is not in the catalog", id.as_str()))?;
                anyhow::ensure!(
                    backend.kind == kind,
                    "backend `{}` is not a {kind:?} backend",
                    id.as_str()
                );
                Ok(backend)
            })
            .collect::<anyhow::Result<_>>()?
    };
    anyhow::ensure!(
        !chosen.is_empty(),
        "the catalog has no {kind:?} backends to serve"
    );
    Ok(chosen)
}

async fn vision(config: Config, args: VisionArgs) -> anyhow::Result<()> {
    use switchyard_vision::batcher::Batcher;
    use switchyard_vision::model::Detector;
    use switchyard_vision::pipeline::Pipeline;
    use switchyard_vision::worker::{
        Fetcher, Served as VisionServed, VisionSettings, VisionWorker,
    };

    let chosen = chosen_backends(&config, BackendKind::Vision, &args.backends)?;
    let settings = VisionSettings::from_config(&config.vision);
    // Every model loads before anything is consumed: a worker that cannot run its model
    // should fail at start, not dead-letter each job.
    let mut served = Vec::new();
    for backend in &chosen {
        let path = std::path::Path::new(&backend.model);
        let detector = tokio::task::block_in_place(|| Detector::load(path, &settings.detector))
            .with_context(|| format!("backend `{}`", backend.id.as_str()))?;
        let batcher = Batcher::start(detector, settings.batch)?;
        served.push(VisionServed {
            backend: (*backend).clone(),
            pipeline: Pipeline::new(batcher, settings.max_pixels),
        });
    }
    let fetcher =
        Fetcher::new(settings.fetch_timeout, &settings.fetch_allow).map_err(anyhow::Error::msg)?;
    let (bus, store) = crate::bus_and_store(&config).await?;
    let (ledger, events) = ledger_for(&config, &store, &bus).await?;
    let worker = Arc::new(VisionWorker::new(
        Arc::new(ledger),
        served,
        fetcher,
        settings,
    ));
    let queues = worker.queues();
    bus.ensure(&queues)
        .await
        .context("cannot create the queues")?;
    let ids: Vec<_> = chosen.iter().map(|b| b.id.as_str()).collect();
    serve_queues(
        &config,
        bus,
        store,
        events,
        worker,
        queues,
        worker_group(BackendKind::Vision),
        !args.no_webhooks,
        &ids,
        runtime::shutdown_on_signals(),
    )
    .await
}

/// The ledger over the configured store, events and blobs.
pub(crate) async fn ledger_for(
    config: &Config,
    store: &AnyStore,
    bus: &AnyBus,
) -> anyhow::Result<(
    Ledger<AnyStore, AnyEventSink<AnyBus>, AnyBlobStore>,
    AnyEventSink<AnyBus>,
)> {
    let aws = aws_if_needed(config).await;
    let events = AnyEventSink::from_config(&config.events, aws.as_ref(), bus.clone())
        .context("cannot set up lifecycle events")?;
    let blobs = AnyBlobStore::from_config(&config.blobs, aws.as_ref())
        .context("cannot open the blob store")?;
    let ledger = Ledger::new(
        store.clone(),
        events.clone(),
        blobs,
        Arc::new(config.rates.clone()),
        LedgerSettings::from_config(config),
    );
    Ok((ledger, events))
}

/// The consumer group a worker of `kind` reads its backends' queues in (under the bus's
/// group prefix). The router reads these groups' lag to tell a saturated backend.
pub(crate) fn worker_group(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Llm => "llm-worker",
        BackendKind::Vision => "vision-worker",
    }
}

/// Runs `worker` on `queues` (and the webhook dispatcher, unless told not to) until a signal;
/// one queue's loop failing stops the rest, so the process restarts whole.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site per worker kind, all named"
)]
pub(crate) async fn serve_queues<H>(
    config: &Config,
    bus: AnyBus,
    store: AnyStore,
    events: AnyEventSink<AnyBus>,
    worker: Arc<H>,
    queues: Vec<switchyard_core::QueueName>,
    group: &str,
    webhooks: bool,
    backends: &[&str],
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    H: runtime::Handler + Send + Sync + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    if webhooks {
        let client = WebhookClient::new(
            config.webhooks.timeout,
            SsrfGuard::new(&config.webhooks.allow).context("invalid [webhooks] allow")?,
        )
        .context("cannot build the webhook client")?;
        let dispatcher = Dispatcher::new(
            store.clone(),
            events.clone(),
            client,
            DispatchSettings::from_config(&config.webhooks),
            Dispatcher::<AnyStore, AnyEventSink<AnyBus>>::env_keys(),
        );
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            dispatcher.run(shutdown).await;
            Ok(())
        });
    }
    let counters = Arc::new(Counters::default());
    let settings = Settings::from_config(config, AnyBus::lease(config));
    for queue in queues {
        let consumer = bus.consume(&queue, group).await?;
        let (worker, settings, counters, shutdown) = (
            worker.clone(),
            settings.clone(),
            counters.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            runtime::run(consumer, worker, settings, counters, shutdown)
                .await
                .map_err(anyhow::Error::from)
        });
    }
    info!(message = "Serving backends.", group, backends = ?backends, bus = bus.kind(), webhooks);
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(error) = outcome {
            shutdown.cancel();
            first_error.get_or_insert(error);
        }
    }
    info!(
        message = "Worker stopped.",
        group,
        received = Counters::get(&counters.received),
        done = Counters::get(&counters.acked),
        retried = Counters::get(&counters.retried),
        dead_lettered = Counters::get(&counters.dead_lettered),
    );
    first_error.map_or(Ok(()), Err)
}

async fn llm(config: Config, args: LlmArgs) -> anyhow::Result<()> {
    let chosen = chosen_backends(&config, BackendKind::Llm, &args.backends)?;
    let http = http_pool(&config).map_err(anyhow::Error::msg)?;
    // Every key is checked before anything is consumed: a worker that would fail each job
    // for want of a key should not start.
    let served = chosen
        .iter()
        .map(|backend| {
            Served::from_backend(backend, http.clone())
                .map_err(|problem| anyhow::anyhow!("backend `{}`: {problem}", backend.id.as_str()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let (bus, store) = crate::bus_and_store(&config).await?;
    let (ledger, events) = ledger_for(&config, &store, &bus).await?;
    let catalog: Arc<[switchyard_core::config::Backend]> = config.backends.clone().into();
    let worker = Arc::new(LlmWorker::new(
        bus.clone(),
        Arc::new(ledger),
        served,
        catalog.clone(),
        LlmSettings::from_config(&config.llm),
    ));
    // Fallbacks may be served elsewhere, but their queues must exist to receive hand-overs.
    let all: Vec<_> = catalog.iter().map(|b| b.queue.clone()).collect();
    bus.ensure(&all).await.context("cannot create the queues")?;
    let ids: Vec<_> = chosen.iter().map(|b| b.id.as_str()).collect();
    serve_queues(
        &config,
        bus,
        store,
        events,
        worker.clone(),
        worker.queues(),
        worker_group(BackendKind::Llm),
        !args.no_webhooks,
        &ids,
        runtime::shutdown_on_signals(),
    )
    .await
}
