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
use switchyard_llm::worker::{LlmSettings, LlmWorker, Served, http_client};
use tracing::info;

#[derive(Debug, clap::Subcommand)]
pub enum WorkerCommand {
    /// Call OpenAI / Anthropic (or compatible) APIs for the jobs on LLM backends' queues.
    Llm(LlmArgs),
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
    }
}

async fn llm(config: Config, args: LlmArgs) -> anyhow::Result<()> {
    let chosen: Vec<&switchyard_core::config::Backend> = if args.backends.is_empty() {
        config
            .backends
            .iter()
            .filter(|b| b.kind == BackendKind::Llm)
            .collect()
    } else {
        args.backends
            .iter()
            .map(|id| {
                let id = BackendId::new(id.clone()).map_err(anyhow::Error::msg)?;
                config
                    .backends
                    .iter()
                    .find(|b| b.id == id)
                    .with_context(|| format!("backend `{}` is not in the catalog", id.as_str()))
            })
            .collect::<anyhow::Result<_>>()?
    };
    if chosen.is_empty() {
        anyhow::bail!("the catalog has no LLM backends to serve");
    }
    let http = http_client().map_err(anyhow::Error::msg)?;
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
    let aws = aws_if_needed(&config).await;
    let events = AnyEventSink::from_config(&config.events, aws.as_ref(), bus.clone())
        .context("cannot set up lifecycle events")?;
    let blobs = AnyBlobStore::from_config(&config.blobs, aws.as_ref())
        .context("cannot open the blob store")?;
    let ledger = Ledger::new(
        store.clone(),
        events.clone(),
        blobs,
        Arc::new(config.rates.clone()),
        LedgerSettings::from_config(&config),
    );
    let catalog: Arc<[switchyard_core::config::Backend]> = config.backends.clone().into();
    let worker = Arc::new(LlmWorker::new(
        bus.clone(),
        Arc::new(ledger),
        served,
        catalog.clone(),
        LlmSettings::from_config(&config.llm),
    ));
    // Fallbacks may be served elsewhere, but their queues must exist to receive hand-overs.
    let queues: Vec<_> = catalog.iter().map(|b| b.queue.clone()).collect();
    bus.ensure(&queues)
        .await
        .context("cannot create the queues")?;

    let shutdown = runtime::shutdown_on_signals();
    let mut tasks = tokio::task::JoinSet::new();
    if !args.no_webhooks {
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
    let settings = Settings::from_config(&config, AnyBus::lease(&config));
    for queue in worker.queues() {
        let consumer = bus.consume(&queue, "llm-worker").await?;
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
    info!(
        message = "Serving LLM backends.",
        backends = ?chosen.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
        bus = bus.kind(),
        webhooks = !args.no_webhooks,
    );
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(error) = outcome {
            // One queue's loop failing takes the process down, so it restarts whole.
            shutdown.cancel();
            first_error.get_or_insert(error);
        }
    }
    info!(
        message = "LLM worker stopped.",
        received = Counters::get(&counters.received),
        done = Counters::get(&counters.acked),
        retried = Counters::get(&counters.retried),
        dead_lettered = Counters::get(&counters.dead_lettered),
    );
    first_error.map_or(Ok(()), Err)
}
