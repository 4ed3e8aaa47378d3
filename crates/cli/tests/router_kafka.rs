//! `switchyard router` as a process on Apache Kafka (from `deploy/local`): a job published to
//! a tier topic arrives routed on its backend's topic; a job nothing can serve lands in the
//! tier's dead-letter topic with its reason; SIGTERM stops it cleanly.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: failing loudly is the point"
)]

mod common;

use std::process::{Command, Stdio};

use common::{Process, service_env};
use std::time::Duration;

use switchyard_bus::kafka::{KafkaBus, KafkaSettings};
use switchyard_bus::{Bus, Consumer, Delivery, Outgoing};
use switchyard_core::contracts::{self, DeadLetter, ErrorClass, JobEnvelope, RoutedJob};
use switchyard_core::{JobId, QueueName, Tier};

fn job(tier: Tier) -> JobEnvelope {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/examples/valid/job.chat.json"
    );
    let mut job: JobEnvelope = contracts::decode(&std::fs::read(path).unwrap(), 1 << 20).unwrap();
    job.job_id = JobId::new();
    job.priority = tier;
    job
}

/// Publishes a fresh copy of `job` every second until one arrives on `queue` (read from its
/// end, so what earlier runs left on the shared topics is not read); returns what arrived.
/// Arrival is the signal that the router and the reader are both subscribed.
async fn probe<T: contracts::Contract>(
    bus: &KafkaBus,
    job: &JobEnvelope,
    queue: &QueueName,
    id_of: impl Fn(&T) -> Option<JobId>,
) -> (JobEnvelope, T) {
    let mut consumer = bus
        .consume(queue, &format!("test-{}", ulid::Ulid::new()))
        .await
        .unwrap();
    let mut sent: Vec<JobEnvelope> = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            let mut copy = job.clone();
            copy.job_id = JobId::new();
            bus.publish(
                &copy.priority.queue(),
                Outgoing::new(contracts::encode(&copy)).with_key(copy.tenant_id.as_str()),
            )
            .await
            .unwrap();
            sent.push(copy);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            while let Ok(next) = tokio::time::timeout_at(deadline, consumer.next()).await {
                let delivery = next.unwrap().unwrap();
                let message = contracts::decode::<T>(delivery.body(), 1 << 22);
                delivery.ack().await.unwrap();
                if let Ok(message) = message
                    && let Some(id) = id_of(&message)
                    && let Some(job) = sent.iter().find(|j| j.job_id == id)
                {
                    return (job.clone(), message);
                }
            }
        }
    })
    .await
    .expect("nothing arrived within 90 s");
    consumer.close().await;
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_process_routes_and_dead_letters_through_kafka() {
    let brokers = service_env("SWITCHYARD_KAFKA_BROKERS");
    let data = std::env::temp_dir().join(format!("switchyard-router-{}", ulid::Ulid::new()));
    let config_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../switchyard.example.toml");
    let config =
        switchyard_core::config::Config::load(Some(std::path::Path::new(config_path))).unwrap();
    let mut settings = KafkaSettings::new(brokers.clone());
    settings
        .properties
        .push(("auto.offset.reset".into(), "latest".into()));
    let bus = KafkaBus::new(settings).unwrap();
    let mut queues: Vec<QueueName> = Tier::ALL.iter().map(|t| t.queue()).collect();
    queues.extend(config.backends.iter().map(|b| b.queue.clone()));
    bus.ensure(&queues).await.unwrap();

    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["router", "--config", config_path])
        .env("SWITCHYARD_BUS__KIND", "kafka")
        .env("SWITCHYARD_KAFKA_BROKERS", &brokers)
        // Its own group, from the end of the topics: the shared topics hold earlier runs' jobs.
        .env(
            "SWITCHYARD_BUS__KAFKA__GROUP_ID",
            format!("test-{}", ulid::Ulid::new()),
        )
        .env(
            "SWITCHYARD_BUS__KAFKA__PROPERTIES__AUTO.OFFSET.RESET",
            "latest",
        )
        .env("SWITCHYARD_STORE__KIND", "embedded")
        .env("SWITCHYARD_STORE__EMBEDDED__PATH", &data)
        .env_remove("SWITCHYARD_POLICY")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let router = Process::new(child);

    let backend = config
        .backend("claude-sonnet-4-5")
        .expect("the example catalog has it");
    let (routable, routed): (_, RoutedJob) =
        probe(&bus, &job(Tier::Batch), &backend.queue, |r: &RoutedJob| {
            Some(r.job.job_id)
        })
        .await;
    assert_eq!(
        routed.decision.backend_id.as_str(),
        "claude-sonnet-4-5",
        "pinned by the job"
    );
    assert_eq!(routed.job, routable);

    let mut unroutable = job(Tier::Standard);
    unroutable.routing.max_cost_usd = Some("0".parse().unwrap());
    let dlq = Tier::Standard.queue().dead_letter();
    let (_, letter): (_, DeadLetter) =
        probe(&bus, &unroutable, &dlq, |l: &DeadLetter| l.job_id).await;
    assert_eq!(letter.error_class, ErrorClass::NoRoute);
    assert!(
        letter
            .reason
            .contains("job pinned claude-sonnet-4-5 but it costs $"),
        "{}",
        letter.reason
    );

    let status = router.terminate().await;
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(data);
}
