//! `switchyard router` as a process on Apache Kafka (from `deploy/local`): a job published to
//! a tier topic arrives routed on its backend's topic; a job nothing can serve lands in the
//! tier's dead-letter topic with its reason; an `llm_classify` rule asks the simulator and
//! charges the call in FerretDB; SIGTERM stops it cleanly.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: failing loudly is the point"
)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::{Process, service_env};
use std::time::Duration;

use switchyard_bus::kafka::{KafkaBus, KafkaSettings};
use switchyard_bus::{Bus, Consumer, Delivery, Outgoing};
use switchyard_core::contracts::{
    self, ChatMessage, ChatRole, ChatTask, DeadLetter, ErrorClass, JobEnvelope, RoutedJob,
    Strategy, Task,
};
use switchyard_core::{JobId, QueueName, Tier};
use switchyard_ledger::store::{MongoStore, Store};
use switchyard_llm_sim::{SimConfig, Simulator};

/// One router process at a time: both tests' routers read the same tier topics, and each
/// would route (or dead-letter, with its own catalog) the other's jobs.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    let _serial = SERIAL.lock().await;
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

const SIM_KEY: &str = "sk-sim-router-classifier-7";

/// A catalog of three simulated OpenAI backends (a small classifier, a mid and a big model)
/// on topics of this run, and a policy whose `triage` rule lets the small one label tagged
/// chats.
fn classifying_setup(run: &str, brokers: &str, address: SocketAddr) -> (String, String) {
    let backend = |id: &str, model: &str, quality: f64| {
        format!(
            r#"
[[backends]]
id = "{id}"
kind = "llm"
provider = "openai"
model = "{model}"
price = "openai/{model}"
tasks = ["chat", "summarize", "classify"]
quality = {quality}
latency_prior = "100ms"
queue = "test.rc.{run}.{id}"
base_url = "http://{address}/v1"
api_key_env = "SWITCHYARD_TEST_SIM_KEY"
"#
        )
    };
    let config = format!(
        r#"
[bus]
kind = "kafka"
[bus.kafka]
brokers = "{brokers}"
group_id = "test-{run}"
[bus.kafka.properties]
"auto.offset.reset" = "latest"
[store]
kind = "mongo"
[store.mongo]
database = "routerclassify_{run}"
{nano}{mini}{big}"#,
        nano = backend("sim-nano", "gpt-4.1-nano", 0.4),
        mini = backend("sim-mini", "gpt-4o-mini", 0.6),
        big = backend("sim-big", "gpt-5", 0.9),
    );
    let policy = r#"
version = "classify-e2e"

[[rules]]
name = "triage"
match = { tasks = ["chat"], tags_any = ["triage"] }
strategy = "llm_classify"
classifier = { backend = "sim-nano", instruction = "How complex is this request?", timeout_ms = 1000 }
routes = { simple = "sim-mini", complex = "sim-big" }

[[rules]]
name = "default"
strategy = "cheapest"
"#;
    (config, policy.to_owned())
}

fn chat(text: &str, tags: &[&str]) -> JobEnvelope {
    let mut job = job(Tier::Standard);
    job.routing = Default::default();
    job.tags = tags.iter().map(|t| (*t).to_owned()).collect();
    job.task = Task::Chat(ChatTask {
        messages: vec![ChatMessage {
            role: ChatRole::User,
            content: text.to_owned(),
        }],
        params: Default::default(),
    });
    job
}

/// Publishes `jobs` to their tier topics and reads the backend topics until each is routed.
async fn publish_and_collect(
    bus: &KafkaBus,
    jobs: &[JobEnvelope],
    consumers: &mut [switchyard_bus::kafka::KafkaConsumer],
    routed: &mut HashMap<JobId, RoutedJob>,
) {
    for job in jobs {
        bus.publish(
            &job.priority.queue(),
            Outgoing::new(contracts::encode(job)).with_key(job.tenant_id.as_str()),
        )
        .await
        .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(90), async {
        while jobs.iter().any(|j| !routed.contains_key(&j.job_id)) {
            for consumer in consumers.iter_mut() {
                let next = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await;
                if let Ok(next) = next {
                    let delivery = next.unwrap().unwrap();
                    let job: RoutedJob = contracts::decode(delivery.body(), 1 << 20).unwrap();
                    delivery.ack().await.unwrap();
                    routed.insert(job.job.job_id, job);
                }
            }
        }
    })
    .await
    .expect("not every job was routed within 90 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_process_classifies_through_the_simulator_and_charges_once() {
    let _serial = SERIAL.lock().await;
    let (brokers, mongo_uri) = (
        service_env("SWITCHYARD_KAFKA_BROKERS"),
        service_env("SWITCHYARD_MONGO_URI"),
    );
    let sim = Simulator::new(SimConfig {
        api_key: Some(SIM_KEY.to_owned()),
        ..SimConfig::default()
    });
    let stop_sim = tokio_util::sync::CancellationToken::new();
    let _stop_sim = stop_sim.clone().drop_guard();
    let address = sim
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)), stop_sim)
        .await
        .unwrap();
    let run = ulid::Ulid::new().to_string().to_ascii_lowercase();
    let dir = std::env::temp_dir().join(format!("switchyard-router-classify-{run}"));
    std::fs::create_dir_all(&dir).unwrap();
    let (config_text, policy_text) = classifying_setup(&run, &brokers, address);
    let (config_path, policy_path) = (dir.join("switchyard.toml"), dir.join("policy.toml"));
    std::fs::write(&config_path, &config_text).unwrap();
    std::fs::write(&policy_path, &policy_text).unwrap();
    let queue = |id: &str| QueueName::new(format!("test.rc.{run}.{id}")).unwrap();
    let bus = KafkaBus::new(KafkaSettings::new(brokers.clone())).unwrap();
    let mut queues: Vec<QueueName> = Tier::ALL.iter().map(|t| t.queue()).collect();
    queues.extend(["sim-nano", "sim-mini", "sim-big"].map(queue));
    bus.ensure(&queues).await.unwrap();

    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["router", "--config"])
        .arg(&config_path)
        .arg("--policy")
        .arg(&policy_path)
        .env("SWITCHYARD_TEST_SIM_KEY", SIM_KEY)
        .env("SWITCHYARD_MONGO_URI", &mongo_uri)
        .env_remove("SWITCHYARD_CONFIG")
        .env_remove("SWITCHYARD_POLICY")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let router = Process::new(child);

    // An untagged chat takes the default rule (the cheapest: sim-nano); its arrival says the
    // router is subscribed, so what follows is published once.
    let (_, synced): (_, RoutedJob) = probe(
        &bus,
        &chat("hello", &[]),
        &queue("sim-nano"),
        |r: &RoutedJob| Some(r.job.job_id),
    )
    .await;
    assert_eq!(synced.decision.rule, "default");

    let fresh: Vec<JobEnvelope> = (0..8)
        .map(|i| chat(&format!("question number {i} about routing"), &["triage"]))
        .collect();
    let slow = chat("[sim:fault=slow:4000] a question", &["triage"]);
    let mut first = fresh.clone();
    first.push(slow.clone());
    let mut consumers = Vec::new();
    for id in ["sim-nano", "sim-mini", "sim-big"] {
        let mut settings = KafkaSettings::new(brokers.clone());
        settings
            .properties
            .push(("auto.offset.reset".into(), "earliest".into()));
        let reader = KafkaBus::new(settings).unwrap();
        consumers.push(
            reader
                .consume(&queue(id), &format!("test-{run}-read"))
                .await
                .unwrap(),
        );
    }
    let mut routed: HashMap<JobId, RoutedJob> = HashMap::new();
    publish_and_collect(&bus, &first, &mut consumers, &mut routed).await;
    // Only once the first is routed (jobs run concurrently), so the label is in the cache.
    let repeat = chat("question number 0 about routing", &["triage"]);
    publish_and_collect(
        &bus,
        std::slice::from_ref(&repeat),
        &mut consumers,
        &mut routed,
    )
    .await;

    let label_of = |job: &RoutedJob| -> String {
        let reason = &job.decision.reason;
        let start = reason.find("label `").unwrap() + "label `".len();
        reason[start..start + reason[start..].find('`').unwrap()].to_owned()
    };
    let store = MongoStore::connect(&mongo_uri, &format!("routerclassify_{run}"))
        .await
        .unwrap();
    let mut labels = Vec::new();
    for job in &fresh {
        let decision = &routed[&job.job_id].decision;
        assert_eq!(decision.rule, "triage", "{}", decision.reason);
        assert_eq!(decision.strategy, Strategy::LlmClassify);
        let label = label_of(&routed[&job.job_id]);
        let want = if label == "complex" {
            "sim-big"
        } else {
            "sim-mini"
        };
        assert_eq!(decision.backend_id.as_str(), want, "{}", decision.reason);
        labels.push(label);
        // The classifier's call is charged to the job in the store, once.
        let usage = store.usage_of_job(job.job_id).await.unwrap();
        assert_eq!(usage.len(), 1, "{usage:?}");
        assert_eq!(usage[0].backend_id.as_str(), "sim-nano");
        assert!(usage[0].usage.input_tokens > 0 && usage[0].cost_micros.0 > 0);
    }
    labels.sort();
    labels.dedup();
    assert_eq!(
        labels,
        ["complex", "simple"],
        "the simulator's labels vary by prompt"
    );

    // The same text again: the cached label, no second call and no charge.
    let again = &routed[&repeat.job_id];
    assert_eq!(
        again.decision.backend_id,
        routed[&fresh[0].job_id].decision.backend_id
    );
    assert!(
        again.decision.reason.ends_with("(cached)"),
        "{}",
        again.decision.reason
    );
    assert!(store.usage_of_job(repeat.job_id).await.unwrap().is_empty());

    // A classifier slower than the rule's timeout: the next rule decides, nothing is charged.
    let late = &routed[&slow.job_id].decision;
    assert_eq!(
        (late.rule.as_str(), late.backend_id.as_str()),
        ("default", "sim-nano")
    );
    assert!(
        late.reason
            .starts_with("rule triage passed over: classifier sim-nano: timed out after 1000 ms; "),
        "{}",
        late.reason
    );
    assert!(store.usage_of_job(slow.job_id).await.unwrap().is_empty());

    let status = router.terminate().await;
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(dir);
}
