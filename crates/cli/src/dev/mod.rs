//! `switchyard dev`: the whole system in one process, on a sample workload.
//!
//! The in-process bus, the router on the default policy, a vision worker on the generated
//! YOLOv8n, an LLM worker against the built-in (simulated) OpenAI / Anthropic API, the embedded
//! store and local blobs under `--data-dir`, and webhook delivery to a local receiver that
//! checks every signature. The same worker and router code as the standalone commands runs
//! here; only the transports differ.

mod api;
mod prereq;
mod summary;
mod workload;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use switchyard_bus::any::AnyBus;
use switchyard_bus::{Bus, Consumer as _, Delivery as _};
use switchyard_core::config::{BackendKind, BlobsConfig, Config, StoreConfig};
use switchyard_core::contracts::DeadLetter;
use switchyard_core::{QueueName, TenantId, Tier};
use switchyard_ledger::events::AnyEventSink;
use switchyard_ledger::store::AnyStore;
use switchyard_ledger::webhook::client::WebhookClient;
use switchyard_ledger::webhook::guard::SsrfGuard;
use switchyard_ledger::webhook::sign::SigningKeys;
use switchyard_ledger::webhook::{DispatchSettings, Dispatcher, KeyLookup, tenant_secret_var};
use switchyard_llm_sim::{Latency, SimConfig, Simulator};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::worker::{ledger_for, serve_queues};

/// The configuration `dev` runs (see the file for why it ignores the environment).
const DEV_TOML: &str = include_str!("../../../../config/dev.toml");

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Where the embedded store (`store.sqlite`) and the local blobs (`blobs/`) live; kept
    /// between runs, so `switchyard jobs` can read them afterwards.
    #[arg(long, default_value = ".switchyard/dev")]
    pub data_dir: PathBuf,
    /// Exit after the sample workload's summary instead of serving until Ctrl-C.
    #[arg(long)]
    pub once: bool,
    /// Extra jobs on top of the sample, drawn from its scenarios, for load.
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    /// The YOLO detection model (ONNX). Default: the one `deploy/local/up.sh ort` generates.
    #[arg(long, env = "SWITCHYARD_YOLO_MODEL")]
    pub model: Option<PathBuf>,
    /// A directory of sample photos (JPEG, PNG, WebP). Default: those `deploy/local/up.sh ort`
    /// writes.
    #[arg(long, env = "SWITCHYARD_SAMPLE_IMAGES")]
    pub images: Option<PathBuf>,
    /// The local API: `POST /v1/jobs` submits a job, `GET /v1/jobs/{id}` reads it back, and
    /// `/hooks/{tenant}` receives the webhooks. Port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// Print the summary as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Give up waiting for the sample after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
}

/// Resolves what `dev` needs on disk, then runs it.
pub fn run(args: &DevArgs) -> anyhow::Result<std::process::ExitCode> {
    let found = prereq::find(args)?;
    let config = dev_config(args, &found)?;
    // The runtime warns of every dead letter; the sample makes some on purpose and the summary
    // lists them all, so only its errors show (RUST_LOG overrides).
    crate::init_logs("warn,switchyard_bus::runtime=error");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(dev(config, args, found))?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// `config/dev.toml` with the paths only this run knows.
fn dev_config(args: &DevArgs, found: &prereq::Found) -> anyhow::Result<Config> {
    let mut config = Config::from_parts(DEV_TOML, "the built-in dev config", &[], None)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let data_dir = std::path::absolute(&args.data_dir)
        .with_context(|| format!("cannot resolve {}", args.data_dir.display()))?;
    config.store = StoreConfig::Embedded {
        path: data_dir.join("store.sqlite"),
    };
    if let BlobsConfig::Local { dir, .. } = &mut config.blobs {
        *dir = data_dir.join("blobs");
    }
    config.vision.ort_library = Some(found.ort_library.clone());
    for backend in &mut config.backends {
        if backend.kind == BackendKind::Vision {
            backend.model = found.model.display().to_string();
        }
    }
    Ok(config)
}

/// What every part shares: dead letters seen, webhooks received.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    pub letters: Mutex<Vec<DeadLetter>>,
    pub webhooks: Mutex<api::Webhooks>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain records behind the lock: a panic elsewhere leaves them readable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn dev(mut config: Config, args: &DevArgs, found: prereq::Found) -> anyhow::Result<()> {
    let started = Instant::now();
    let shutdown = switchyard_bus::runtime::shutdown_on_signals();
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    let observed = Arc::new(Observed::default());

    // The simulated provider, with a key of its own that only this process knows.
    let sim_key = format!("sk-dev-{}", prereq::random_token(18)?);
    let simulator = Simulator::new(SimConfig {
        latency: Latency::LogNormal {
            median: Duration::from_millis(120),
            sigma: 0.4,
        },
        api_key: Some(sim_key.clone()),
        ..SimConfig::default()
    });
    let sim_address = simulator
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)), shutdown.clone())
        .await
        .context("cannot start the LLM simulator")?;
    let sim_url = format!("http://{sim_address}");
    for backend in &mut config.backends {
        if backend.kind == BackendKind::Llm {
            // Where each provider's paths start, as with the real APIs.
            let base = match backend.provider {
                switchyard_core::config::Provider::Openai => format!("{sim_url}/v1"),
                switchyard_core::config::Provider::Anthropic
                | switchyard_core::config::Provider::Onnx => sim_url.clone(),
            };
            backend.base_url = Some(url::Url::parse(&base)?);
        }
    }

    let (bus, store) = crate::bus_and_store(&config).await?;
    let mut queues: Vec<QueueName> = Tier::ALL.iter().map(|t| t.queue()).collect();
    queues.extend(config.backends.iter().map(|b| b.queue.clone()));
    bus.ensure(&queues)
        .await
        .context("cannot create the queues")?;

    // Signing secrets per sample tenant, generated for this run; the receiver checks with the
    // same ones.
    let mut secrets = HashMap::new();
    let mut receiver_keys = BTreeMap::new();
    for tenant in workload::TENANTS {
        let secret = format!("whsec_{}", prereq::random_base64(32)?);
        let tenant = TenantId::new(tenant.id.to_owned()).map_err(anyhow::Error::msg)?;
        receiver_keys.insert(tenant.as_str().to_owned(), SigningKeys::parse(&secret)?);
        secrets.insert(tenant_secret_var(&tenant), secret);
    }
    let secrets = Arc::new(secrets);
    let keys: KeyLookup = Arc::new(move |var: &str| secrets.get(var).cloned());

    let api = api::Api {
        bus: bus.clone(),
        store: store.clone(),
        observed: observed.clone(),
        keys: Arc::new(receiver_keys),
        max_message_bytes: config.max_message_bytes,
    };
    let listen = api::serve(api, args.listen, shutdown.clone())
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (pass --listen 127.0.0.1:0 for any free port)",
                args.listen
            )
        })?;

    let (ledger, events) = ledger_for(&config, &store, &bus).await?;
    let ledger = Arc::new(ledger);
    start_router(&mut tasks, &config, &bus, &store, &sim_key, &shutdown)?;
    start_vision(
        &mut tasks, &config, &bus, &store, &events, &ledger, &shutdown,
    )?;
    start_llm(
        &mut tasks, &config, &bus, &store, &events, &ledger, &sim_key, &shutdown,
    )?;
    start_webhooks(&mut tasks, &config, &store, &events, keys, &shutdown)?;
    for queue in &queues {
        let (bus, observed, shutdown) = (bus.clone(), observed.clone(), shutdown.clone());
        let dlq = queue.dead_letter();
        tasks.spawn(async move { collect_letters(bus, dlq, observed, shutdown).await });
    }

    let mut out = io::stderr().lock();
    writeln!(
        out,
        "switchyard dev: everything in this process (in-process bus, embedded store).\n\
         \x20 LLM replies are SIMULATED by the built-in OpenAI / Anthropic simulator at {sim_url}\n\
         \x20 model   {} (ONNX Runtime: {})\n\
         \x20 data    {}\n\
         \x20 API     http://{listen}  (POST /v1/jobs, GET /v1/jobs/{{id}}; webhooks land on /hooks/{{tenant}})",
        found.model.display(),
        found.ort_library.display(),
        args.data_dir.display(),
    )?;
    drop(out);

    let hook_base = format!("http://{listen}/hooks");
    let sample = workload::build(&found.images, &hook_base, args.jobs, &ledger)
        .await
        .context("cannot build the sample workload")?;
    writeln!(io::stderr(), "{}", sample.describe())?;
    workload::submit(&bus, &sample).await?;

    let waited = summary::wait(
        &sample,
        &store,
        &observed,
        Duration::from_secs(args.timeout_secs),
        &shutdown,
    )
    .await;
    let report = summary::gather(&sample, &store, &observed, &config, started.elapsed()).await?;
    {
        let mut stdout = io::stdout().lock();
        if args.json {
            serde_json::to_writer_pretty(&mut stdout, &report)?;
            writeln!(stdout)?;
        } else {
            summary::print(&mut stdout, &report, io::stdout().is_terminal())?;
        }
    }
    if let Err(missing) = waited {
        shutdown.cancel();
        drain(&mut tasks).await;
        anyhow::bail!("the sample did not finish: {missing}");
    }
    let unexpected = report.unexpected();
    if !unexpected.is_empty() {
        shutdown.cancel();
        drain(&mut tasks).await;
        anyhow::bail!(
            "{} of the sample's messages did not end as expected: {}",
            unexpected.len(),
            unexpected.join("; ")
        );
    }

    if args.once {
        shutdown.cancel();
    } else {
        writeln!(
            io::stderr(),
            "\nStill serving: submit jobs with `curl -X POST http://{listen}/v1/jobs -d @job.json`; \
             `switchyard jobs list` reads the store (SWITCHYARD_STORE__EMBEDDED__PATH={}). \
             Ctrl-C stops.",
            args.data_dir.join("store.sqlite").display()
        )?;
    }
    let failed = drain(&mut tasks).await;
    failed.map_or(Ok(()), Err)
}

/// Waits for every part to stop; the first failure, if any.
async fn drain(tasks: &mut JoinSet<anyhow::Result<()>>) -> Option<anyhow::Error> {
    let mut first = None;
    while let Some(joined) = tasks.join_next().await {
        if let Err(error) = joined.map_err(anyhow::Error::from).and_then(|r| r) {
            first.get_or_insert(error);
        }
    }
    first
}

fn start_router(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    config: &Config,
    bus: &AnyBus,
    store: &AnyStore,
    sim_key: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    use switchyard_llm::classifier::RoutingClassifier;
    use switchyard_router::policy_file::{DEFAULT_POLICY_TOML, load_policy};
    use switchyard_router::worker::PolicyHandle;

    let policy = load_policy(
        DEFAULT_POLICY_TOML,
        "the built-in default policy",
        &config.backends,
    )?;
    let policy = Arc::new(PolicyHandle::new(policy, None));
    let classifier = RoutingClassifier::new(sim_served(config, sim_key)?.into_iter().map(Arc::new));
    let (config, bus, store, shutdown) =
        (config.clone(), bus.clone(), store.clone(), shutdown.clone());
    tasks.spawn(async move {
        let routed =
            crate::router::route(&config, bus, store, policy, classifier, shutdown.clone()).await;
        // One part failing stops the rest: a half-running demo would only mislead.
        shutdown.cancel();
        routed
    });
    Ok(())
}

type DevLedger = switchyard_ledger::Ledger<
    AnyStore,
    AnyEventSink<AnyBus>,
    switchyard_ledger::blobs::AnyBlobStore,
>;

fn start_vision(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    config: &Config,
    bus: &AnyBus,
    store: &AnyStore,
    events: &AnyEventSink<AnyBus>,
    ledger: &Arc<DevLedger>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    use switchyard_vision::batcher::Batcher;
    use switchyard_vision::model::Detector;
    use switchyard_vision::pipeline::Pipeline;
    use switchyard_vision::worker::{Fetcher, Served, VisionSettings, VisionWorker};

    let settings = VisionSettings::from_config(&config.vision);
    let backends: Vec<_> = config
        .backends
        .iter()
        .filter(|b| b.kind == BackendKind::Vision)
        .collect();
    let Some(first) = backends.first() else {
        return Ok(());
    };
    // Every vision backend here runs the same file on the same CPU: one session serves them
    // all, rather than two competing for two cores.
    let detector = tokio::task::block_in_place(|| {
        Detector::load(std::path::Path::new(&first.model), &settings.detector)
    })
    .context("cannot load the YOLO model")?;
    let pipeline = Pipeline::new(
        Batcher::start(detector, settings.batch)?,
        settings.max_pixels,
    );
    let served = backends
        .iter()
        .map(|backend| Served {
            backend: (*backend).clone(),
            pipeline: pipeline.clone(),
        })
        .collect();
    let fetcher =
        Fetcher::new(settings.fetch_timeout, &settings.fetch_allow).map_err(anyhow::Error::msg)?;
    let worker = Arc::new(VisionWorker::new(ledger.clone(), served, fetcher, settings));
    let queues = worker.queues();
    let ids = backends.iter().map(|b| b.id.as_str().to_owned()).collect();
    let serving = Serving {
        config: config.clone(),
        bus: bus.clone(),
        store: store.clone(),
        events: events.clone(),
        group: crate::worker::worker_group(BackendKind::Vision),
        ids,
    };
    tasks.spawn(serving.run(worker, queues, shutdown.clone()));
    Ok(())
}

/// A client for each LLM backend, on the simulator with its per-run key. The key goes
/// straight to the clients: nothing to export, nothing to leak.
fn sim_served(
    config: &Config,
    sim_key: &str,
) -> anyhow::Result<Vec<switchyard_llm::worker::Served>> {
    use switchyard_llm::limits::Limits;
    use switchyard_llm::provider::{ApiKey, ProviderClient};
    use switchyard_llm::worker::{Served, http_pool};

    let http = http_pool(config).map_err(anyhow::Error::msg)?;
    config
        .backends
        .iter()
        .filter(|b| b.kind == BackendKind::Llm)
        .map(|backend| {
            let client = ProviderClient::new(
                backend.provider,
                backend.base_url.clone(),
                ApiKey::new(sim_key),
                http.clone(),
            )
            .map_err(anyhow::Error::msg)?;
            Ok(Served {
                backend: backend.clone(),
                client,
                limits: Limits::new(&backend.limits),
            })
        })
        .collect()
}

#[expect(
    clippy::too_many_arguments,
    reason = "the shared parts of one process, each named"
)]
fn start_llm(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    config: &Config,
    bus: &AnyBus,
    store: &AnyStore,
    events: &AnyEventSink<AnyBus>,
    ledger: &Arc<DevLedger>,
    sim_key: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    use switchyard_llm::worker::{LlmSettings, LlmWorker};

    let served = sim_served(config, sim_key)?;
    let backends: Vec<_> = served.iter().map(|s| s.backend.clone()).collect();
    let catalog: Arc<[switchyard_core::config::Backend]> = config.backends.clone().into();
    let worker = Arc::new(LlmWorker::new(
        bus.clone(),
        ledger.clone(),
        served,
        catalog,
        LlmSettings::from_config(&config.llm),
    ));
    let queues = worker.queues();
    let ids = backends.iter().map(|b| b.id.as_str().to_owned()).collect();
    let serving = Serving {
        config: config.clone(),
        bus: bus.clone(),
        store: store.clone(),
        events: events.clone(),
        group: crate::worker::worker_group(BackendKind::Llm),
        ids,
    };
    tasks.spawn(serving.run(worker, queues, shutdown.clone()));
    Ok(())
}

/// A worker's queues served on the shared parts; the first to stop stops the rest.
struct Serving {
    config: Config,
    bus: AnyBus,
    store: AnyStore,
    events: AnyEventSink<AnyBus>,
    group: &'static str,
    ids: Vec<String>,
}

impl Serving {
    async fn run<H>(
        self,
        worker: Arc<H>,
        queues: Vec<QueueName>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()>
    where
        H: switchyard_bus::runtime::Handler + Send + Sync + 'static,
    {
        let ids: Vec<&str> = self.ids.iter().map(String::as_str).collect();
        let served = serve_queues(
            &self.config,
            self.bus,
            self.store,
            self.events,
            worker,
            queues,
            self.group,
            false,
            &ids,
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        served
    }
}

fn start_webhooks(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    config: &Config,
    store: &AnyStore,
    events: &AnyEventSink<AnyBus>,
    keys: KeyLookup,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let client = WebhookClient::new(
        config.webhooks.timeout,
        SsrfGuard::new(&config.webhooks.allow).context("invalid [webhooks] allow")?,
    )
    .context("cannot build the webhook client")?;
    let mut settings = DispatchSettings::from_config(&config.webhooks);
    // A demo's webhooks should arrive while people watch.
    settings.idle_poll = Duration::from_millis(100);
    let dispatcher = Dispatcher::new(store.clone(), events.clone(), client, settings, keys);
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        dispatcher.run(shutdown).await;
        Ok(())
    });
    Ok(())
}

/// Reads a dead-letter queue into `observed` (the in-process DLQ lives only as long as the
/// process; the summary lists what reached it).
async fn collect_letters(
    bus: AnyBus,
    dlq: QueueName,
    observed: Arc<Observed>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut consumer = bus.consume(&dlq, "dev-summary").await?;
    loop {
        let delivery = tokio::select! {
            () = shutdown.cancelled() => break,
            next = consumer.next() => match next? {
                Some(delivery) => delivery,
                None => break,
            },
        };
        match serde_json::from_slice::<DeadLetter>(delivery.body()) {
            Ok(letter) => lock(&observed.letters).push(letter),
            Err(error) => {
                warn!(message = "Not a dead letter on a dead-letter queue.", queue = %dlq, %error);
            }
        }
        delivery.ack().await?;
    }
    consumer.close().await;
    Ok(())
}
