//! `switchyard router`: the router worker on the configured bus.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use switchyard_bus::Bus;
use switchyard_bus::any::AnyBus;
use switchyard_bus::runtime::{self, Counters, Settings};
use switchyard_bus::scheduler::WeightedConsumer;
use switchyard_core::config::{Config, EventsConfig};
use switchyard_core::{QueueName, TenantId, Tier};
use switchyard_ledger::store::{AnyStore, Period, Store};
use switchyard_router::budget::Spent;
use switchyard_router::live::{LiveSettings, LiveState};
use switchyard_router::policy_file::{DEFAULT_POLICY_TOML, load_policy};
use switchyard_router::worker::{
    self, PolicyHandle, Router, RouterSettings, SpendSource, spent_from_micros,
};
use tokio_util::sync::CancellationToken;
use tracing::info;

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
    let policy = Arc::new(PolicyHandle::new(policy, args.policy.clone()));
    route(&config, bus, store, policy, runtime::shutdown_on_signals()).await
}

/// Routes the tier queues of `bus` until `shutdown` (also what `switchyard dev` runs).
pub async fn route(
    config: &Config,
    bus: AnyBus,
    store: AnyStore,
    policy: Arc<PolicyHandle>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let catalog: Arc<[switchyard_core::config::Backend]> = config.backends.clone().into();
    let live = Arc::new(Mutex::new(LiveState::new(LiveSettings::default())));
    let router = Router::new(
        bus.clone(),
        catalog.clone(),
        Arc::new(config.rates.clone()),
        policy.clone(),
        live.clone(),
        StoreSpend(store),
        RouterSettings::default(),
    );
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
    // Queue depths are not polled yet: Kafka reports lag per consumer group, and the backend
    // queues' groups belong to the workers, which arrive with their issues.
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
