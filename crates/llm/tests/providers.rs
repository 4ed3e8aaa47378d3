//! The LLM worker's behaviour, written once and run over both providers against the
//! simulator (the only simulated part of the system): success with usage and cost, each
//! failure class leading to its retry / dead letter / fallback, rate limits and concurrency
//! respected (measured at the simulator), deadlines, no secrets in logs.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: failing loudly is the point"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_bus::memory::MemoryBus;
use switchyard_bus::runtime::{Failure, Handler, JobContext};
use switchyard_bus::{Bus, Headers};
use switchyard_core::config::{Backend, Config, Provider, RawLimits};
use switchyard_core::contracts::{
    self, ChatMessage, ChatRole, ChatTask, ClassifyTask, ErrorClass, GenerationParams, Input,
    JobEnvelope, Output, ResultStatus, RoutedJob, Strategy, Task,
};
use switchyard_core::{BackendId, JobId};
use switchyard_ledger::blobs::LocalBlobs;
use switchyard_ledger::events::NoEvents;
use switchyard_ledger::store::{EmbeddedStore, Store};
use switchyard_ledger::{Ledger, LedgerSettings};
use switchyard_llm::classifier::{ClassifierError, RoutingClassifier};
use switchyard_llm::limits::Limits;
use switchyard_llm::provider::{ApiKey, ProviderClient};
use switchyard_llm::worker::{LlmSettings, LlmWorker, Served};
use switchyard_llm_sim::{Fault, Latency, SimConfig, Simulator};
use tokio_util::sync::CancellationToken;

const KEY: &str = "sk-test-0123456789-topsecret";

type Worker = LlmWorker<MemoryBus, EmbeddedStore, NoEvents, LocalBlobs>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn config() -> Config {
    let text = std::fs::read_to_string(root().join("switchyard.example.toml")).unwrap();
    Config::from_parts(&text, "example", &[], Some(&root())).unwrap()
}

/// One simulator, one worker serving one backend of `provider` (and knowing the catalog's
/// others as fallbacks), an in-memory store.
struct Rig {
    sim: Arc<Simulator>,
    worker: Worker,
    bus: MemoryBus,
    store: EmbeddedStore,
    backend: Backend,
    config: Config,
    _blobs: tempfile::TempDir,
    _shutdown: tokio_util::sync::DropGuard,
}

struct Options {
    sim: SimConfig,
    limits: RawLimits,
    settings: LlmSettings,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sim: SimConfig {
                api_key: Some(KEY.to_owned()),
                ..SimConfig::default()
            },
            limits: RawLimits::default(),
            settings: LlmSettings {
                retry_initial: Duration::from_millis(20),
                retry_max: Duration::from_millis(100),
                request_timeout: Duration::from_secs(5),
                ..LlmSettings::default()
            },
        }
    }
}

async fn rig(provider: Provider, options: Options) -> Rig {
    let config = config();
    let sim = Simulator::new(options.sim);
    let shutdown = CancellationToken::new();
    let address = sim
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)), shutdown.clone())
        .await
        .unwrap();
    let mut backend = config
        .backends
        .iter()
        .find(|b| b.provider == provider)
        .unwrap()
        .clone();
    let base = match provider {
        Provider::Openai => format!("http://{address}/v1"),
        _ => format!("http://{address}"),
    };
    backend.base_url = Some(base.parse().unwrap());
    backend.limits = options.limits.clone();
    let http = switchyard_llm::worker::http_pool(&config).unwrap();
    let served = Served {
        client: ProviderClient::new(provider, backend.base_url.clone(), ApiKey::new(KEY), http)
            .unwrap(),
        limits: Limits::new(&options.limits),
        backend: backend.clone(),
    };
    let store = EmbeddedStore::in_memory().unwrap();
    store.init().await.unwrap();
    let blobs = tempfile::tempdir().unwrap();
    let ledger = Ledger::new(
        store.clone(),
        NoEvents,
        LocalBlobs::new(blobs.path()).unwrap(),
        Arc::new(config.rates.clone()),
        LedgerSettings::from_config(&config),
    );
    let bus = MemoryBus::new(Duration::from_secs(30));
    let queues: Vec<_> = config.backends.iter().map(|b| b.queue.clone()).collect();
    bus.ensure(&queues).await.unwrap();
    let catalog: Arc<[Backend]> = config.backends.clone().into();
    let worker = LlmWorker::new(
        bus.clone(),
        Arc::new(ledger),
        vec![served],
        catalog,
        options.settings,
    );
    Rig {
        sim,
        worker,
        bus,
        store,
        backend,
        config,
        _blobs: blobs,
        _shutdown: shutdown.drop_guard(),
    }
}

fn example_job() -> JobEnvelope {
    let bytes = std::fs::read(root().join("schemas/examples/valid/job.chat.json")).unwrap();
    let mut job: JobEnvelope = contracts::decode(&bytes, 1 << 20).unwrap();
    job.job_id = JobId::new();
    job.callback = None;
    job
}

fn chat(prompt: &str) -> JobEnvelope {
    let mut job = example_job();
    job.task = Task::Chat(ChatTask {
        messages: vec![ChatMessage {
            role: ChatRole::User,
            content: prompt.to_owned(),
        }],
        params: GenerationParams::default(),
    });
    job
}

impl Rig {
    fn routed(&self, job: JobEnvelope, fallbacks: &[&str]) -> RoutedJob {
        let bytes = std::fs::read(root().join("schemas/examples/valid/routed.json")).unwrap();
        let mut routed: RoutedJob = contracts::decode(&bytes, 1 << 20).unwrap();
        routed.job = job;
        routed.parent = None;
        routed.decision.backend_id = self.backend.id.clone();
        routed.decision.queue = self.backend.queue.clone();
        routed.decision.fallbacks = fallbacks
            .iter()
            .map(|f| BackendId::new(*f).unwrap())
            .collect();
        routed
    }

    async fn run(&self, job: JobEnvelope) -> Result<(), Failure> {
        self.run_routed(self.routed(job, &[])).await
    }

    async fn run_routed(&self, routed: RoutedJob) -> Result<(), Failure> {
        let context = JobContext {
            queue: self.backend.queue.clone(),
            attempt: 1,
            max_attempts: 5,
            headers: Headers::new(),
            body: contracts::encode(&routed).into(),
        };
        self.worker.handle(routed, context).await
    }

    fn requests(&self) -> u64 {
        self.sim.stats().requests
    }
}

fn rejected(result: Result<(), Failure>) -> (ErrorClass, String) {
    match result {
        Err(Failure::Reject(rejection)) => (rejection.class, rejection.reason),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn text_of(output: Option<&Output>) -> String {
    match output {
        Some(Output::Text(text)) => text.text.clone(),
        other => panic!("expected text, got {other:?}"),
    }
}

macro_rules! provider_suite {
    ($module:ident, $provider:expr) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn succeeds_with_usage_and_cost() {
                let rig = rig($provider, Options::default()).await;
                let (first, second) = (
                    chat("Tell me about rail yards."),
                    chat("Tell me about rail yards."),
                );
                rig.run(first.clone()).await.unwrap();
                rig.run(second.clone()).await.unwrap();
                let result = rig.store.result(first.job_id).await.unwrap().unwrap();
                assert_eq!(result.status, ResultStatus::Succeeded);
                assert_eq!(result.backend_id.as_ref(), Some(&rig.backend.id));
                let text = text_of(result.output.as_ref());
                assert!(!text.is_empty());
                // Deterministic per prompt: another job with the same prompt reads the same.
                let again = rig.store.result(second.job_id).await.unwrap().unwrap();
                assert_eq!(text_of(again.output.as_ref()), text);
                let usage = rig.store.usage_of_job(first.job_id).await.unwrap();
                assert_eq!(usage.len(), 1);
                let event = &usage[0];
                assert_eq!(event.event_id, format!("{}:main", first.job_id));
                assert_eq!(
                    event.usage.output_tokens,
                    u64::from(switchyard_llm_sim::text::tokens(&text))
                );
                assert!(event.usage.input_tokens > 0);
                assert_eq!(event.usage.requests, 1);
                let expected = rig
                    .config
                    .rates
                    .cost(&rig.backend.price, &event.usage)
                    .unwrap();
                assert_eq!(event.cost_micros, expected.micros);
                assert_eq!(result.cost_micros, expected.micros);
                assert!(expected.micros.0 > 0);
            }

            #[tokio::test]
            async fn classify_answers_with_an_offered_label() {
                let rig = rig($provider, Options::default()).await;
                let mut job = example_job();
                let labels = vec![
                    "billing".to_owned(),
                    "technical".to_owned(),
                    "other".to_owned(),
                ];
                job.task = Task::Classify(ClassifyTask {
                    input: Input::Text {
                        text: "I was charged twice.".into(),
                    },
                    labels: labels.clone(),
                    multi_label: false,
                    params: GenerationParams::default(),
                });
                rig.run(job.clone()).await.unwrap();
                let result = rig.store.result(job.job_id).await.unwrap().unwrap();
                match result.output {
                    Some(Output::Classification(c)) => {
                        assert_eq!(c.labels.len(), 1);
                        assert!(labels.contains(&c.labels[0]), "{:?}", c.labels);
                    }
                    other => panic!("{other:?}"),
                }
            }

            #[tokio::test]
            async fn the_routing_classifier_labels_and_fails_by_class() {
                let rig = rig($provider, Options::default()).await;
                let served = rig.worker.served(&rig.backend.id).unwrap().clone();
                let classifier = RoutingClassifier::new([served]);
                let labels = vec!["simple".to_owned(), "complex".to_owned()];
                let ask = |text: String| {
                    let (classifier, labels, id) = (&classifier, &labels, rig.backend.id.clone());
                    async move {
                        classifier
                            .classify(
                                &id,
                                "How complex is this request?",
                                labels,
                                &text,
                                Duration::from_secs(5),
                            )
                            .await
                    }
                };
                let mut seen = Vec::new();
                for i in 0..8 {
                    let text = format!("request number {i}");
                    let first = ask(text.clone()).await.unwrap();
                    let label = first.label.clone().unwrap();
                    assert!(labels.contains(&label), "{label}");
                    assert!(first.usage.input_tokens > 0 && first.usage.output_tokens > 0);
                    assert_eq!(
                        first.provider,
                        rig.worker.served(&rig.backend.id).unwrap().client.name()
                    );
                    // Deterministic per prompt, which the router's cache relies on no more
                    // than the tests do.
                    assert_eq!(ask(text).await.unwrap().label, first.label);
                    seen.push(label);
                }
                seen.sort();
                seen.dedup();
                assert_eq!(seen, ["complex", "simple"]);

                // A broken response body is the backend's fault (its breaker counts it); a
                // refused request is not.
                rig.sim.script([Fault::InvalidJson]);
                let broken = ask("anything".into()).await.unwrap_err();
                assert!(broken.backend_at_fault(), "{broken}");
                rig.sim.script([Fault::BadRequest]);
                let refused = ask("anything".into()).await.unwrap_err();
                assert!(!refused.backend_at_fault(), "{refused}");
                assert!(refused.to_string().contains("rejected (400"), "{refused}");
                // Nor is a 429: the account's limit, not the backend's health.
                rig.sim.script([Fault::RateLimited {
                    retry_after: Duration::from_millis(10),
                }]);
                let limited = ask("anything".into()).await.unwrap_err();
                assert!(!limited.backend_at_fault(), "{limited}");
                assert!(limited.to_string().contains("429"), "{limited}");
                let unknown = classifier
                    .classify(
                        &BackendId::new("ghost").unwrap(),
                        "?",
                        &labels,
                        "x",
                        Duration::from_secs(5),
                    )
                    .await
                    .unwrap_err();
                assert_eq!(
                    unknown.to_string(),
                    "backend ghost is not an LLM backend this router can call"
                );
            }

            #[tokio::test]
            async fn the_routing_classifier_waits_for_a_permit_no_longer_than_its_deadline() {
                let limits = RawLimits {
                    max_concurrency: Some(1),
                    ..RawLimits::default()
                };
                let rig = rig(
                    $provider,
                    Options {
                        limits,
                        ..Options::default()
                    },
                )
                .await;
                let served = rig.worker.served(&rig.backend.id).unwrap().clone();
                let held = served.limits.acquire(0).await;
                let classifier = RoutingClassifier::new([served]);
                let labels = vec!["simple".to_owned(), "complex".to_owned()];
                let id = rig.backend.id.clone();
                let throttled = classifier
                    .classify(&id, "?", &labels, "x", Duration::from_millis(50))
                    .await
                    .unwrap_err();
                assert!(
                    matches!(throttled, ClassifierError::Throttled(_)),
                    "{throttled}"
                );
                assert!(!throttled.backend_at_fault());
                assert_eq!(rig.sim.stats().requests, 0);
                drop(held);
                let answered = classifier
                    .classify(&id, "?", &labels, "x", Duration::from_secs(5))
                    .await
                    .unwrap();
                assert!(answered.label.is_ok(), "{answered:?}");
                assert_eq!(rig.sim.stats().requests, 1);
            }

            #[tokio::test]
            async fn calls_multiplex_over_http2_when_configured() {
                let rig = rig($provider, Options::default()).await;
                let http = switchyard_llm::provider::HttpPool::new(
                    switchyard_core::config::HttpVersion::H2PriorKnowledge,
                    2,
                )
                .unwrap();
                let client = ProviderClient::new(
                    $provider,
                    rig.backend.base_url.clone(),
                    ApiKey::new(KEY),
                    http,
                )
                .unwrap();
                let job = chat("Over one connection, please.");
                let prepared =
                    switchyard_llm::tasks::prepare(&job.task, None, &rig.backend.model).unwrap();
                let calls = (0..40).map(|_| client.chat(&prepared.request, Duration::from_secs(5)));
                for reply in futures_util::future::join_all(calls).await {
                    assert!(reply.unwrap().usage.output_tokens > 0);
                }
                let stats = rig.sim.stats();
                assert_eq!((stats.requests, stats.http2_requests), (40, 40));
                // The default speaks HTTP/1.1 to a plain-HTTP endpoint.
                rig.run(chat("and this one over HTTP/1.1")).await.unwrap();
                assert_eq!(rig.sim.stats().http2_requests, 40);
            }

            #[tokio::test]
            async fn a_redelivered_finished_job_calls_nothing() {
                let rig = rig($provider, Options::default()).await;
                let job = chat("once only");
                rig.run(job.clone()).await.unwrap();
                rig.run(job.clone()).await.unwrap();
                assert_eq!(rig.requests(), 1);
                assert_eq!(rig.store.usage_of_job(job.job_id).await.unwrap().len(), 1);
            }

            #[tokio::test]
            async fn rate_limited_waits_for_retry_after_then_succeeds() {
                let rig = rig($provider, Options::default()).await;
                rig.sim.script([Fault::RateLimited {
                    retry_after: Duration::from_secs(1),
                }]);
                let started = Instant::now();
                let job = chat("patience");
                rig.run(job.clone()).await.unwrap();
                assert!(
                    started.elapsed() >= Duration::from_millis(950),
                    "{:?}",
                    started.elapsed()
                );
                assert_eq!(rig.requests(), 2);
                assert!(rig.store.result(job.job_id).await.unwrap().is_some());
            }

            #[tokio::test]
            async fn server_errors_resets_and_broken_bodies_are_retried() {
                for faults in [
                    vec![Fault::ServerError, Fault::Overloaded],
                    vec![Fault::Reset, Fault::Truncated],
                    vec![Fault::InvalidJson],
                ] {
                    let rig = rig($provider, Options::default()).await;
                    let calls = faults.len() as u64 + 1;
                    rig.sim.script(faults.clone());
                    let job = chat("flaky");
                    rig.run(job.clone())
                        .await
                        .unwrap_or_else(|f| panic!("{faults:?}: {f:?}"));
                    assert_eq!(rig.requests(), calls, "{faults:?}");
                    assert_eq!(rig.store.usage_of_job(job.job_id).await.unwrap().len(), 1);
                }
            }

            #[tokio::test]
            async fn a_slow_call_times_out_and_is_retried() {
                let mut options = Options::default();
                options.settings.request_timeout = Duration::from_millis(300);
                let rig = rig($provider, options).await;
                rig.sim.script([Fault::Slow(Duration::from_secs(3))]);
                let started = Instant::now();
                rig.run(chat("slowly")).await.unwrap();
                assert!(
                    started.elapsed() < Duration::from_secs(2),
                    "{:?}",
                    started.elapsed()
                );
                assert_eq!(rig.requests(), 2);
            }

            #[tokio::test]
            async fn permanent_refusals_dead_letter_with_the_providers_message() {
                let rig = rig($provider, Options::default()).await;
                rig.sim.script([Fault::BadRequest]);
                let job = chat("refuse me");
                let (class, reason) = rejected(rig.run(job.clone()).await);
                assert_eq!(class, ErrorClass::ProviderRejected);
                assert!(
                    reason.contains("safety system") && reason.contains("400"),
                    "{reason}"
                );
                assert_eq!(rig.requests(), 1);
                assert!(rig.store.result(job.job_id).await.unwrap().is_none());
            }

            #[tokio::test]
            async fn a_wrong_key_is_permanent_and_never_echoed() {
                let rig = rig(
                    $provider,
                    Options {
                        sim: SimConfig {
                            api_key: Some("sk-the-other-key-000000".into()),
                            ..SimConfig::default()
                        },
                        ..Options::default()
                    },
                )
                .await;
                let (class, reason) = rejected(rig.run(chat("who am I")).await);
                assert_eq!(class, ErrorClass::ProviderRejected);
                assert!(reason.contains("401"), "{reason}");
                assert!(!reason.contains("topsecret"), "{reason}");
                assert_eq!(rig.requests(), 1);
            }

            #[tokio::test]
            async fn exhausted_calls_go_back_to_the_queue_without_a_fallback() {
                let rig = rig($provider, Options::default()).await;
                rig.sim.script(vec![Fault::ServerError; 3]);
                match rig.run(chat("down")).await {
                    Err(Failure::Retry(reason)) => {
                        assert!(reason.contains("3 calls failed"), "{reason}")
                    }
                    other => panic!("{other:?}"),
                }
                assert_eq!(rig.requests(), 3);
            }

            #[tokio::test]
            async fn exhausted_calls_hand_the_job_to_the_next_fallback() {
                let rig = rig($provider, Options::default()).await;
                let others: Vec<&Backend> = rig
                    .config
                    .backends
                    .iter()
                    .filter(|b| {
                        b.kind == switchyard_core::config::BackendKind::Llm
                            && b.id != rig.backend.id
                    })
                    .collect();
                let (next, after) = (others[0], others[1]);
                let mut consumer = rig.bus.consume(&next.queue, "test").await.unwrap();
                rig.sim.script(vec![Fault::Overloaded; 3]);
                let job = chat("move me");
                let routed = rig.routed(
                    job.clone(),
                    &["no-such-backend", next.id.as_str(), after.id.as_str()],
                );
                rig.run_routed(routed).await.unwrap();
                let delivery = consumer
                    .try_next()
                    .expect("the job on the fallback's queue");
                let moved: RoutedJob =
                    contracts::decode(switchyard_bus::Delivery::body(&delivery), 1 << 20).unwrap();
                assert_eq!(moved.job, job);
                assert_eq!(moved.decision.backend_id, next.id);
                assert_eq!(moved.decision.queue, next.queue);
                assert_eq!(moved.decision.strategy, Strategy::Fallback);
                assert_eq!(moved.decision.fallbacks, vec![after.id.clone()]);
                assert!(
                    moved.decision.reason.contains(rig.backend.id.as_str()),
                    "{}",
                    moved.decision.reason
                );
                assert!(rig.store.result(job.job_id).await.unwrap().is_none());
            }

            #[tokio::test]
            async fn the_jobs_deadline_bounds_every_call() {
                let rig = rig($provider, Options::default()).await;
                rig.sim.script([Fault::Slow(Duration::from_secs(5))]);
                let mut job = chat("hurry");
                job.submitted_at = chrono::Utc::now();
                job.routing.deadline_ms = Some(400);
                let started = Instant::now();
                let (class, _) = rejected(rig.run(job).await);
                assert_eq!(class, ErrorClass::DeadlineExceeded);
                assert!(
                    started.elapsed() < Duration::from_millis(1_500),
                    "{:?}",
                    started.elapsed()
                );
                // A job whose deadline already passed is not even sent.
                let mut late = chat("too late");
                late.submitted_at = chrono::Utc::now() - chrono::Duration::seconds(10);
                late.routing.deadline_ms = Some(1_000);
                let before = rig.requests();
                let (class, _) = rejected(rig.run(late).await);
                assert_eq!(
                    (class, rig.requests()),
                    (ErrorClass::DeadlineExceeded, before)
                );
            }

            #[tokio::test]
            async fn requests_per_minute_hold_at_the_provider() {
                let rig = Arc::new(
                    rig(
                        $provider,
                        Options {
                            limits: RawLimits {
                                requests_per_minute: Some(600),
                                ..RawLimits::default()
                            },
                            ..Options::default()
                        },
                    )
                    .await,
                );
                let started = Instant::now();
                let mut tasks = tokio::task::JoinSet::new();
                for index in 0..30 {
                    let rig = rig.clone();
                    tasks.spawn(
                        async move { rig.run(chat(&format!("paced {index}"))).await.unwrap() },
                    );
                }
                while tasks.join_next().await.transpose().unwrap().is_some() {}
                // 10 a second, bursts of 10: 30 requests need at least 2 s...
                assert!(
                    started.elapsed() >= Duration::from_millis(1_900),
                    "{:?}",
                    started.elapsed()
                );
                // ...and no second at the simulator saw more than the burst plus a second's refill.
                let arrivals = rig.sim.stats().arrivals_ms;
                assert_eq!(arrivals.len(), 30);
                let busiest = arrivals
                    .iter()
                    .map(|start| {
                        arrivals
                            .iter()
                            .filter(|at| **at >= *start && **at < start + 1_000)
                            .count()
                    })
                    .max()
                    .unwrap();
                assert!(busiest <= 20, "{busiest} requests in one second");
            }

            #[tokio::test]
            async fn the_concurrency_cap_holds_at_the_provider() {
                let rig = Arc::new(
                    rig(
                        $provider,
                        Options {
                            sim: SimConfig {
                                api_key: Some(KEY.into()),
                                latency: Latency::Fixed(Duration::from_millis(100)),
                                ..SimConfig::default()
                            },
                            limits: RawLimits {
                                max_concurrency: Some(3),
                                ..RawLimits::default()
                            },
                            ..Options::default()
                        },
                    )
                    .await,
                );
                let mut tasks = tokio::task::JoinSet::new();
                for index in 0..12 {
                    let rig = rig.clone();
                    tasks.spawn(
                        async move { rig.run(chat(&format!("capped {index}"))).await.unwrap() },
                    );
                }
                while tasks.join_next().await.transpose().unwrap().is_some() {}
                let stats = rig.sim.stats();
                assert_eq!((stats.requests, stats.max_in_flight), (12, 3));
            }
        }
    };
}

provider_suite!(openai, Provider::Openai);
provider_suite!(anthropic, Provider::Anthropic);

/// A `Write` into a shared buffer, for capturing logs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn secrets_never_reach_the_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // Process-wide: with a thread-local subscriber, a callsite first hit by a concurrent
    // test (no subscriber there) can be cached as never enabled, and its lines go missing.
    // The other tests' logs are captured too, which the key check covers as well.
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for provider in [Provider::Openai, Provider::Anthropic] {
            let rig = rig(provider, Options::default()).await;
            rig.sim.script([Fault::ServerError, Fault::Unauthorized]);
            let _ = rig.run(chat("log everything")).await;
            rig.run(chat("and succeed")).await.unwrap();
            let routed = rig.routed(chat("fallback"), &["gpt-5"]);
            rig.sim.script(vec![Fault::Reset; 3]);
            rig.run_routed(routed).await.unwrap();
        }
    });
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("retrying"),
        "the test should have logged something: {logs}"
    );
    assert!(!logs.contains(KEY) && !logs.contains("topsecret"), "{logs}");
}
