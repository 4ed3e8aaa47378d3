//! `switchyard router`: the router worker on the configured bus.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use switchyard_bus::Bus;
use switchyard_bus::any::AnyBus;
use switchyard_bus::kafka::{KafkaBus, LagReader};
use switchyard_bus::runtime::{self, Counters, Settings};
use switchyard_bus::scheduler::WeightedConsumer;
use switchyard_core::config::{Backend, BackendKind, Config, EventsConfig};
use switchyard_core::contracts::JobEnvelope;
use switchyard_core::rates::RatesTable;
use switchyard_core::{BackendId, QueueName, TenantId, Tier};
use switchyard_ledger::store::{AnyStore, Period, Store};
use switchyard_ledger::{Call, price_call};
use switchyard_llm::classifier::RoutingClassifier;
use switchyard_llm::worker::{Served, http_pool};
use switchyard_router::budget::Spent;
use switchyard_router::classify::{
    Answer, BoxFuture, ChargeSink, Classifier, ClassifyError, ClassifyRequest,
};
use switchyard_router::live::{LiveSettings, LiveState};
use switchyard_router::policy::{Policy, RuleStrategy};
use switchyard_router::policy_file::{DEFAULT_POLICY_TOML, load_policy};
use switchyard_router::worker::{
    self, Classifying, PolicyHandle, Router, RouterSettings, SpendSource, spent_from_micros,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Debug, clap::Args)]
pub struct RouterArgs {
    /// The routing policy (TOML); the built-in default policy when absent. Reloaded when the
    /// file changes or on SIGHUP; an invalid new version is refused and the old one kept.
    #[arg(long, env = "SWITCHYARD_POLICY")]
    pub policy: Option<PathBuf>,
}

/// The ledger's spend totals, as the router's budget check reads them.
struct StoreSpend(AnyStore);

impl SpendSource for StoreSpend {
    async fn spent(&self, tenant: &TenantId) -> Result<Spent, String> {
        let now = Utc::now();
        let (day, month) = tokio::join!(
            self.0.spend(tenant, Period::day_of(now)),
            self.0.spend(tenant, Period::month_of(now)),
        );
        match (day, month) {
            (Ok(day), Ok(month)) => Ok(spent_from_micros(day, month)),
            (Err(error), _) | (_, Err(error)) => Err(error.to_string()),
        }
    }
}

pub async fn run(config: Config, args: RouterArgs) -> anyhow::Result<()> {
    let (bus, store) = crate::bus_and_store(&config).await?;
    let (text, origin) = match &args.policy {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (
            DEFAULT_POLICY_TOML.to_owned(),
            "the built-in default policy".to_owned(),
        ),
    };
    let policy = load_policy(&text, &origin, &config.backends)?;
    info!(message = "Policy loaded.", version = %policy.version, rules = policy.rules.len(), origin = %origin);
    let classifier = classifier_from_env(&config)?;
    warn_unreachable_classifiers(&policy, &classifier);
    let policy = Arc::new(PolicyHandle::new(policy, args.policy.clone()));
    route(
        &config,
        bus,
        store,
        policy,
        classifier,
        runtime::shutdown_on_signals(),
    )
    .await
}

/// A client for every LLM backend whose key is in the environment: a policy reloaded later
/// may name any of them as a classifier. Backends without a key are left out, not fatal; the
/// router may well never classify.
fn classifier_from_env(config: &Config) -> anyhow::Result<RoutingClassifier> {
    let http = http_pool(config).map_err(anyhow::Error::msg)?;
    let served = config
        .backends
        .iter()
        .filter(|b| b.kind == BackendKind::Llm)
        .filter_map(|backend| match Served::from_backend(backend, http.clone()) {
            Ok(served) => Some(Arc::new(served)),
            Err(why) => {
                tracing::debug!(message = "No classifier client for this backend.", backend = %backend.id, reason = %why);
                None
            }
        });
    Ok(RoutingClassifier::new(served))
}

/// Says at start which `llm_classify` rules cannot be asked (no key for their backend), so
/// the operator learns it now rather than from decisions that pass them over.
fn warn_unreachable_classifiers(policy: &Policy, classifier: &RoutingClassifier) {
    let reachable: Vec<&BackendId> = classifier.backends().collect();
    for rule in &policy.rules {
        if let RuleStrategy::Classify(spec) = &rule.strategy
            && !reachable.contains(&&spec.backend)
        {
            warn!(message = "A classifier cannot be called: its backend has no API key in the environment; the rule will be passed over.", rule = %rule.name, backend = %spec.backend);
        }
    }
}

/// The llm crate's classifier as the router's.
struct LlmClassifier(RoutingClassifier);

impl Classifier for LlmClassifier {
    fn classify<'a>(
        &'a self,
        request: &'a ClassifyRequest,
    ) -> BoxFuture<'a, Result<Answer, ClassifyError>> {
        Box::pin(async move {
            let labelled = self
                .0
                .classify(
                    &request.backend,
                    &request.instruction,
                    &request.labels,
                    &request.text,
                    request.deadline,
                )
                .await
                .map_err(|error| ClassifyError {
                    backend_at_fault: error.backend_at_fault(),
                    message: error.to_string(),
                })?;
            Ok(Answer {
                label: labelled.label,
                provider: labelled.provider.to_owned(),
                model: labelled.model,
                usage: labelled.usage,
                latency_ms: labelled.latency_ms,
            })
        })
    }
}

/// Classifier calls charged to the job's tenant as usage events of the job, priced with the
/// rates table like every other call. The event id is fixed by the job and the rule, so a
/// redelivered job is charged once.
struct StoreCharges {
    store: AnyStore,
    rates: Arc<RatesTable>,
    catalog: Arc<[Backend]>,
}

impl ChargeSink for StoreCharges {
    fn charge<'a>(
        &'a self,
        job: &'a JobEnvelope,
        call: &'a str,
        backend: &'a BackendId,
        answer: &'a Answer,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let entry = self
                .catalog
                .iter()
                .find(|b| &b.id == backend)
                .ok_or_else(|| format!("backend {backend} is not in the catalog"))?;
            let call = Call {
                name: call.to_owned(),
                backend_id: backend.clone(),
                provider: answer.provider.clone(),
                model: answer.model.clone(),
                price: entry.price.clone(),
                usage: answer.usage,
                latency_ms: answer.latency_ms,
                occurred_at: Utc::now(),
            };
            let event = price_call(&self.rates, job, &call).map_err(|e| e.to_string())?;
            self.store
                .record_usage(&event)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

/// Routes the tier queues of `bus` until `shutdown` (also what `switchyard dev` runs).
pub async fn route(
    config: &Config,
    bus: AnyBus,
    store: AnyStore,
    policy: Arc<PolicyHandle>,
    classifier: RoutingClassifier,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let catalog: Arc<[Backend]> = config.backends.clone().into();
    let rates = Arc::new(config.rates.clone());
    let live = Arc::new(Mutex::new(LiveState::new(LiveSettings::default())));
    let charges = StoreCharges {
        store: store.clone(),
        rates: rates.clone(),
        catalog: catalog.clone(),
    };
    let router = Router::new(
        bus.clone(),
        catalog.clone(),
        rates,
        policy.clone(),
        live.clone(),
        StoreSpend(store),
        RouterSettings::default(),
    )
    .with_classifier(Classifying::new(
        Arc::new(LlmClassifier(classifier)),
        Arc::new(charges),
    ));
    let mut queues: Vec<QueueName> = Tier::ALL.iter().map(|t| t.queue()).collect();
    queues.extend(router.backend_queues());
    bus.ensure(&queues)
        .await
        .context("cannot create the queues")?;

    let mut background = tokio::task::JoinSet::new();
    background.spawn(worker::watch_policy(
        policy,
        catalog.clone(),
        Duration::from_secs(2),
        shutdown.clone(),
    ));
    // Saturation: on Kafka, the lag of the workers' own groups (a depth needs a reader); on
    // SQS and the in-process bus, the queue's depth.
    let depth_every = Duration::from_secs(5);
    match &bus {
        AnyBus::Kafka(kafka) => {
            let backends = catalog
                .iter()
                .map(|b| {
                    let group = crate::worker::worker_group(b.kind);
                    (b.id.clone(), b.queue.clone(), group)
                })
                .collect();
            background.spawn(watch_kafka_lag(
                kafka.clone(),
                backends,
                live.clone(),
                depth_every,
                shutdown.clone(),
            ));
        }
        AnyBus::Sqs(_) | AnyBus::Memory(_) => {
            let backends = catalog
                .iter()
                .map(|b| (b.id.clone(), b.queue.clone()))
                .collect();
            background.spawn(worker::watch_depths(
                bus.clone(),
                backends,
                live.clone(),
                depth_every,
                shutdown.clone(),
            ));
        }
    }
    if let EventsConfig::Kafka { topic } = &config.events {
        let topic = QueueName::new(topic.clone()).map_err(anyhow::Error::msg)?;
        let (bus, live, shutdown) = (bus.clone(), live.clone(), shutdown.clone());
        background.spawn(async move {
            if let Err(error) =
                worker::watch_outcomes(bus, topic, "router-live", live, shutdown).await
            {
                tracing::warn!(message = "Outcome feed stopped.", %error);
            }
        });
    }

    let mut consumers = Vec::new();
    for tier in Tier::ALL {
        let weight = config.tier_weights.get(&tier).copied().unwrap_or(1);
        consumers.push((weight, bus.consume(&tier.queue(), "router").await?));
    }
    info!(
        message = "Routing.",
        backends = catalog.len(),
        bus = bus.kind()
    );
    let counters = Arc::new(Counters::default());
    runtime::run(
        WeightedConsumer::new(consumers),
        Arc::new(router),
        Settings::from_config(config, AnyBus::lease(config)),
        counters.clone(),
        shutdown.clone(),
    )
    .await?;
    shutdown.cancel();
    while background.join_next().await.is_some() {}
    info!(
        message = "Router stopped.",
        received = Counters::get(&counters.received),
        routed = Counters::get(&counters.acked),
        dead_lettered = Counters::get(&counters.dead_lettered),
    );
    Ok(())
}

/// Feeds each backend's consumer lag into `live` every `every`, until `shutdown`: the lag of
/// the group its workers read in, once that group has committed. Before that the lag says
/// nothing (no worker yet, or one that starts at the topic's end), so it counts as zero. One
/// reader per group is kept for the watcher's life; a backend whose lag cannot be read
/// [`STALE_AFTER`] times running counts as zero again rather than keep its last reading.
async fn watch_kafka_lag(
    bus: KafkaBus,
    backends: Vec<(BackendId, QueueName, &'static str)>,
    live: Arc<Mutex<LiveState>>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut readers: HashMap<&'static str, Arc<LagReader>> = HashMap::new();
    // Failed look-ups in a row, by position in `backends`.
    let mut failures = vec![0u32; backends.len()];
    loop {
        for ((backend, queue, group), failed) in backends.iter().zip(&mut failures) {
            let reader = match readers.entry(group) {
                Entry::Occupied(known) => known.get().clone(),
                Entry::Vacant(slot) => match bus.lag_reader(group) {
                    Ok(reader) => slot.insert(Arc::new(reader)).clone(),
                    Err(error) => {
                        tracing::debug!(message = "Cannot make a lag reader.", %error, group);
                        continue;
                    }
                },
            };
            let topic = queue.clone();
            // Offset and watermark look-ups block, up to their timeouts each: off the async
            // threads, and never in the way of a shutdown.
            let lookup = tokio::task::spawn_blocking(move || reader.active_lag(&topic));
            let lag = tokio::select! {
                () = shutdown.cancelled() => return,
                lag = lookup => lag,
            };
            let observed = match lag {
                Ok(Ok(lag)) => Some(lag.map_or(0, |depth| depth.ready)),
                Ok(Err(error)) => {
                    tracing::debug!(message = "Cannot read consumer lag.", %error, queue = %queue);
                    None
                }
                Err(error) => {
                    tracing::debug!(message = "Consumer lag look-up failed.", %error, queue = %queue);
                    None
                }
            };
            let depth = match observed {
                Some(depth) => {
                    *failed = 0;
                    depth
                }
                None => {
                    *failed += 1;
                    if *failed != STALE_AFTER {
                        continue;
                    }
                    tracing::warn!(message = "Consumer lag unreadable; no longer counting the backend saturated.", backend = %backend, failures = STALE_AFTER);
                    0
                }
            };
            live.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .observe_depth(backend, depth);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Failed lag look-ups in a row after which a backend's last reading is dropped.
const STALE_AFTER: u32 = 3;
