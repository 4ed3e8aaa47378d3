//! `switchyard worker llm` as a process on Apache Kafka and FerretDB (from `deploy/local`),
//! calling the simulator: a job is answered and stored with its cost, a job whose backend
//! keeps failing is handed to its fallback and answered there, a refused job lands in the
//! dead-letter topic with the provider's message, the key never reaches the logs, and SIGTERM
//! stops the worker cleanly.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: failing loudly is the point"
)]

use std::net::SocketAddr;
mod common;
mod sim_backed;

use std::process::{Command, Stdio};

use common::{Process, service_env};
use sim_backed::routed;
use std::time::Duration;

use switchyard_bus::kafka::{KafkaBus, KafkaSettings};
use switchyard_bus::{Bus, Consumer, Delivery, Outgoing};
use switchyard_core::config::Config;
use switchyard_core::contracts::{self, DeadLetter, ErrorClass, ResultDocument};
use switchyard_core::{BackendId, JobId};
use switchyard_ledger::store::{MongoStore, Store};
use switchyard_llm_sim::{SimConfig, Simulator};

const KEY: &str = "sk-sim-e2e-do-not-log-me-42";

async fn wait_for_result(store: &MongoStore, job_id: JobId) -> ResultDocument {
    // The store is where the outcome becomes visible; polling it is waiting for that signal.
    tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            if let Some(result) = store.result(job_id).await.unwrap() {
                return result;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("no result within 90 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_llm_worker_process_answers_falls_back_and_dead_letters() {
    let (brokers, mongo_uri) = (
        service_env("SWITCHYARD_KAFKA_BROKERS"),
        service_env("SWITCHYARD_MONGO_URI"),
    );
    let sim = Simulator::new(SimConfig {
        api_key: Some(KEY.to_owned()),
        ..SimConfig::default()
    });
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _stop_sim = shutdown.clone().drop_guard();
    let address = sim
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)), shutdown)
        .await
        .unwrap();

    let run = ulid::Ulid::new().to_string().to_ascii_lowercase();
    let dir = tempfile_dir(&run);
    let database = format!("llmworker_{run}");
    let config_text = format!(
        r#"
[bus]
kind = "kafka"
[bus.kafka]
brokers = "{brokers}"
group_id = "test-{run}"
[store]
kind = "mongo"
[store.mongo]
database = "{database}"
{worker}
[[backends]]
id = "sim-anthropic"
kind = "llm"
provider = "anthropic"
model = "claude-haiku-4-5"
price = "anthropic/claude-haiku-4-5"
tasks = ["chat", "summarize", "classify"]
quality = 0.7
latency_prior = "100ms"
queue = "test.llm.{run}.anthropic"
base_url = "http://{address}"
api_key_env = "SWITCHYARD_TEST_SIM_KEY"
"#,
        worker = sim_backed::worker_config(&dir, &format!("test.llm.{run}.openai"), address),
    );
    let config_path = dir.join("switchyard.toml");
    std::fs::write(&config_path, &config_text).unwrap();
    let config = Config::from_parts(
        &config_text,
        "test",
        &[("SWITCHYARD_MONGO_URI".to_owned(), mongo_uri.clone())],
        Some(&dir),
    )
    .unwrap();
    let bus = KafkaBus::new(KafkaSettings::new(brokers.clone())).unwrap();
    let queues: Vec<_> = config.backends.iter().map(|b| b.queue.clone()).collect();
    bus.ensure(&queues).await.unwrap();

    let log_path = dir.join("worker.log");
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["worker", "llm", "--config"])
        .arg(&config_path)
        .env("SWITCHYARD_TEST_SIM_KEY", KEY)
        .env("SWITCHYARD_MONGO_URI", &mongo_uri)
        .env("RUST_LOG", "debug")
        .env_remove("SWITCHYARD_CONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let worker = Process::new(child);

    let answered = routed(&config, "sim-openai", &[], "hello");
    // The directive fails the first three requests with this prompt: the primary's three
    // calls, so the fallback's call succeeds.
    let moved = routed(
        &config,
        "sim-openai",
        &["sim-anthropic"],
        "[sim:fault=500*3] fall back",
    );
    let refused = routed(
        &config,
        "sim-openai",
        &["sim-anthropic"],
        "[sim:fault=bad_request] no",
    );
    for job in [&answered, &moved, &refused] {
        bus.publish(
            &job.decision.queue,
            Outgoing::new(contracts::encode(job)).with_key(job.job.tenant_id.as_str()),
        )
        .await
        .unwrap();
    }

    let store = MongoStore::connect(&mongo_uri, &database).await.unwrap();
    let result = wait_for_result(&store, answered.job.job_id).await;
    assert_eq!(
        result.backend_id.as_ref().map(BackendId::as_str),
        Some("sim-openai")
    );
    assert!(result.cost_micros.0 > 0);
    assert_eq!(
        store.usage_of_job(answered.job.job_id).await.unwrap().len(),
        1
    );

    let result = wait_for_result(&store, moved.job.job_id).await;
    assert_eq!(
        result.backend_id.as_ref().map(BackendId::as_str),
        Some("sim-anthropic")
    );
    let usage = store.usage_of_job(moved.job.job_id).await.unwrap();
    assert_eq!((usage.len(), usage[0].provider.as_str()), (1, "anthropic"));

    let mut letters = bus
        .consume(
            &answered.decision.queue.dead_letter(),
            &format!("test-{run}-dlq"),
        )
        .await
        .unwrap();
    let letter = tokio::time::timeout(Duration::from_secs(90), letters.next())
        .await
        .expect("no dead letter within 90 s")
        .unwrap()
        .unwrap();
    let letter: DeadLetter = contracts::decode(letter.body(), 1 << 22).unwrap();
    assert_eq!(letter.job_id, Some(refused.job.job_id));
    assert_eq!(letter.error_class, ErrorClass::ProviderRejected);
    assert!(letter.reason.contains("safety system"), "{}", letter.reason);
    letters.close().await;

    let status = worker.terminate().await;
    assert!(status.success(), "{status:?}");
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.contains("Handed over to the fallback backend"),
        "{logs}"
    );
    assert!(!logs.contains(KEY), "the API key reached the logs");
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir(run: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-llm-worker-{run}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
