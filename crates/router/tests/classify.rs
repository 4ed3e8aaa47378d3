//! `llm_classify` rules in the router worker, with a scripted classifier: a label routes, an
//! answer is cached per tenant and content, every failure passes the rule over to the next
//! one, a failing classifier trips its breaker, and each call is charged exactly once.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: failing loudly is the point"
)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_bus::memory::MemoryBus;
use switchyard_bus::runtime::{Failure, Handler, JobContext};
use switchyard_bus::{Bus, Consumer, Delivery};
use switchyard_core::config::Config;
use switchyard_core::contracts::{
    self, ChatMessage, ChatRole, JobEnvelope, RoutedJob, Strategy, Task,
};
use switchyard_core::rates::Usage;
use switchyard_core::{BackendId, JobId, QueueName, TenantId, Tier};
use switchyard_router::classify::{
    Answer, BoxFuture, ChargeSink, Classifier, ClassifyError, ClassifyRequest,
};
use switchyard_router::live::LiveState;
use switchyard_router::policy_file::load_policy;
use switchyard_router::worker::{Classifying, NoSpend, PolicyHandle, Router, RouterSettings};

const POLICY: &str = r#"
version = "classify-test"

[[rules]]
name = "triage"
match = { tasks = ["chat"] }
strategy = "llm_classify"
classifier = { backend = "gpt-4.1-nano", instruction = "How complex is this request?", timeout_ms = 200 }
routes = { simple = "gpt-4o-mini", complex = "gpt-5" }

[[rules]]
name = "default"
strategy = "cheapest"
"#;

/// Answers by what the text says: `hard` → complex, `[slow]` never answers in time,
/// `[down]` fails like a 503, `[odd]` answers a label it was not offered; else simple.
#[derive(Default)]
struct Scripted {
    calls: AtomicUsize,
    requests: Mutex<Vec<ClassifyRequest>>,
}

impl Classifier for Scripted {
    fn classify<'a>(
        &'a self,
        request: &'a ClassifyRequest,
    ) -> BoxFuture<'a, Result<Answer, ClassifyError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.requests.lock().unwrap().push(request.clone());
            let text = &request.text;
            if text.contains("[slow]") {
                std::future::pending::<()>().await;
            }
            if text.contains("[down]") {
                return Err(ClassifyError {
                    message: "overloaded (503): try later".into(),
                    backend_at_fault: true,
                });
            }
            let label = if text.contains("[odd]") {
                "banana"
            } else if text.contains("hard") {
                "complex"
            } else {
                "simple"
            };
            Ok(Answer {
                label: Ok(label.into()),
                provider: "openai".into(),
                model: "gpt-4.1-nano-2025-04-14".into(),
                usage: Usage {
                    input_tokens: 120,
                    output_tokens: 8,
                    ..Usage::default()
                },
                latency_ms: 30,
            })
        })
    }
}

/// Records every charge; can be made to fail.
#[derive(Default)]
struct Charges {
    made: Mutex<Vec<(JobId, String, String)>>,
    broken: AtomicBool,
}

impl ChargeSink for Charges {
    fn charge<'a>(
        &'a self,
        job: &'a JobEnvelope,
        call: &'a str,
        _backend: &'a BackendId,
        answer: &'a Answer,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if self.broken.load(Ordering::SeqCst) {
                return Err("store unavailable".into());
            }
            self.made.lock().unwrap().push((
                job.job_id,
                call.to_owned(),
                answer.label.clone().unwrap(),
            ));
            Ok(())
        })
    }
}

struct Setup {
    bus: MemoryBus,
    router: Router<MemoryBus, NoSpend>,
    classifier: Arc<Scripted>,
    charges: Arc<Charges>,
}

async fn setup() -> Setup {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("switchyard.example.toml")).unwrap();
    let config = Config::from_parts(&text, "example", &[], Some(&root)).unwrap();
    let policy = load_policy(POLICY, "test", &config.backends).unwrap();
    let bus = MemoryBus::default();
    let classifier = Arc::new(Scripted::default());
    let charges = Arc::new(Charges::default());
    let router = Router::new(
        bus.clone(),
        config.backends.clone().into(),
        Arc::new(config.rates.clone()),
        Arc::new(PolicyHandle::new(policy, None)),
        Arc::new(Mutex::new(LiveState::default())),
        NoSpend,
        RouterSettings::default(),
    )
    .with_classifier(Classifying::new(classifier.clone(), charges.clone()));
    bus.ensure(&router.backend_queues()).await.unwrap();
    Setup {
        bus,
        router,
        classifier,
        charges,
    }
}

fn chat(tenant: &str, text: &str) -> JobEnvelope {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bytes = std::fs::read(root.join("schemas/examples/valid/job.chat.json")).unwrap();
    let mut job: JobEnvelope = contracts::decode(&bytes, 1 << 20).unwrap();
    job.job_id = JobId::new();
    job.tenant_id = TenantId::new(tenant).unwrap();
    job.priority = Tier::Standard;
    job.routing = Default::default();
    job.task = Task::Chat(contracts::ChatTask {
        messages: vec![ChatMessage {
            role: ChatRole::User,
            content: text.into(),
        }],
        params: Default::default(),
    });
    job
}

fn context(job: &JobEnvelope) -> JobContext {
    JobContext {
        queue: Tier::Standard.queue(),
        attempt: 1,
        max_attempts: 5,
        headers: Default::default(),
        body: contracts::encode(job).into(),
    }
}

/// Routes `job` and returns the routed job from the backend queue it went to.
async fn route(setup: &Setup, job: &JobEnvelope) -> RoutedJob {
    setup
        .router
        .handle(job.clone(), context(job))
        .await
        .unwrap();
    for backend in ["gpt-4o-mini", "gpt-5", "gpt-4.1-nano"] {
        let queue = QueueName::backend(&BackendId::new(backend).unwrap());
        if setup.bus.depth(&queue).await.unwrap().ready == 0 {
            continue;
        }
        let mut consumer = setup.bus.consume(&queue, "test").await.unwrap();
        let delivery = consumer.next().await.unwrap().unwrap();
        let routed: RoutedJob = contracts::decode(delivery.body(), 1 << 20).unwrap();
        delivery.ack().await.unwrap();
        assert_eq!(routed.job.job_id, job.job_id);
        return routed;
    }
    panic!("job {} was published nowhere", job.job_id);
}

#[tokio::test]
async fn the_label_picks_the_backend_and_the_answer_is_cached_per_tenant() {
    let setup = setup().await;
    let hard = route(&setup, &chat("acme", "a hard proof about manifolds")).await;
    assert_eq!(hard.decision.backend_id.as_str(), "gpt-5");
    assert_eq!(hard.decision.strategy, Strategy::LlmClassify);
    assert_eq!(hard.decision.rule, "triage");
    assert_eq!(
        hard.decision.reason,
        "rule triage → gpt-5 by classifier gpt-4.1-nano's label `complex`"
    );
    let easy = route(&setup, &chat("acme", "hello there")).await;
    assert_eq!(easy.decision.backend_id.as_str(), "gpt-4o-mini");
    let asked = setup.classifier.requests.lock().unwrap()[0].clone();
    assert_eq!(asked.labels, ["complex", "simple"]);
    assert_eq!(asked.instruction, "How complex is this request?");
    assert_eq!(asked.text, "user: a hard proof about manifolds");

    // The same text for the same tenant: no second call, and no second charge.
    let again = chat("acme", "a hard proof about manifolds");
    let cached = route(&setup, &again).await;
    assert_eq!(cached.decision.backend_id.as_str(), "gpt-5");
    assert!(
        cached.decision.reason.ends_with("(cached)"),
        "{}",
        cached.decision.reason
    );
    assert_eq!(setup.classifier.calls.load(Ordering::SeqCst), 2);
    // Another tenant with the same text is asked on its own.
    let other = route(&setup, &chat("other", "a hard proof about manifolds")).await;
    assert_eq!(setup.classifier.calls.load(Ordering::SeqCst), 3);

    let charges = setup.charges.made.lock().unwrap().clone();
    assert_eq!(
        charges,
        [
            (
                hard.job.job_id,
                "route.classify.triage".to_owned(),
                "complex".to_owned()
            ),
            (
                easy.job.job_id,
                "route.classify.triage".to_owned(),
                "simple".to_owned()
            ),
            (
                other.job.job_id,
                "route.classify.triage".to_owned(),
                "complex".to_owned()
            ),
        ]
    );
}

#[tokio::test]
async fn a_pinned_job_the_rule_serves_is_not_classified() {
    let setup = setup().await;
    let mut pinned = chat("acme", "a hard proof about manifolds");
    pinned.routing.backend = Some(BackendId::new("gpt-4o-mini").unwrap());
    let routed = route(&setup, &pinned).await;
    assert_eq!(
        (
            routed.decision.backend_id.as_str(),
            routed.decision.strategy,
            routed.decision.rule.as_str()
        ),
        ("gpt-4o-mini", Strategy::Pinned, "triage")
    );
    assert_eq!(setup.classifier.calls.load(Ordering::SeqCst), 0);
    assert!(setup.charges.made.lock().unwrap().is_empty());
}

// Paused time: the router's wait on a classifier that overruns is measured on tokio's clock,
// which advances only when every task is idle.
#[tokio::test(start_paused = true)]
async fn without_a_label_the_next_rule_decides() {
    let setup = setup().await;
    // Too slow: the router waits the rule's 200 ms (and a short grace), not the classifier's
    // pleasure.
    let started = tokio::time::Instant::now();
    let slow = route(&setup, &chat("acme", "hard [slow]")).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited <= Duration::from_millis(250),
        "{waited:?}"
    );
    assert_eq!(slow.decision.rule, "default");
    assert_eq!(slow.decision.strategy, Strategy::Cheapest);
    assert!(
        slow.decision
            .reason
            .starts_with("rule triage passed over: classifier gpt-4.1-nano: timed out after 200 ms; rule default → "),
        "{}",
        slow.decision.reason
    );

    let odd = route(&setup, &chat("acme", "hard [odd]")).await;
    assert_eq!(odd.decision.rule, "default");
    assert!(
        odd.decision
            .reason
            .contains("answered `banana`, which is not one of the offered labels"),
        "{}",
        odd.decision.reason
    );
    // The unusable answer was still a paid call; the timed-out one reported no usage.
    let charged: Vec<JobId> = setup
        .charges
        .made
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(charged, [odd.job.job_id]);
    // Answers off the labels, however many, are answers: the breaker stays closed.
    for i in 0..6 {
        route(&setup, &chat("acme", &format!("hard [odd] {i}"))).await;
    }
    let calls = setup.classifier.calls.load(Ordering::SeqCst);
    let asked = route(&setup, &chat("acme", "hard, plainly")).await;
    assert_eq!(setup.classifier.calls.load(Ordering::SeqCst), calls + 1);
    assert_eq!(asked.decision.backend_id.as_str(), "gpt-5");

    // A job with no text is not sent to the classifier at all.
    let mut detect = chat("acme", "unused");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bytes = std::fs::read(root.join("schemas/examples/valid/job.detect-inline.json")).unwrap();
    let example: JobEnvelope = contracts::decode(&bytes, 1 << 20).unwrap();
    detect.task = example.task;
    let calls = setup.classifier.calls.load(Ordering::SeqCst);
    setup
        .router
        .handle(detect.clone(), context(&detect))
        .await
        .unwrap();
    assert_eq!(setup.classifier.calls.load(Ordering::SeqCst), calls);
}

#[tokio::test]
async fn a_failing_classifier_cools_down_and_is_not_asked() {
    let setup = setup().await;
    for i in 0..5 {
        let job = route(&setup, &chat("acme", &format!("hard [down] {i}"))).await;
        assert!(
            job.decision
                .reason
                .contains("classifier gpt-4.1-nano: overloaded (503): try later"),
            "{}",
            job.decision.reason
        );
    }
    assert_eq!(setup.classifier.calls.load(Ordering::SeqCst), 5);
    let cooled = route(&setup, &chat("acme", "hard, and fine now")).await;
    assert_eq!(
        setup.classifier.calls.load(Ordering::SeqCst),
        5,
        "not asked while cooling"
    );
    assert_eq!(cooled.decision.rule, "default");
    assert!(
        cooled
            .decision
            .reason
            .contains("classifier gpt-4.1-nano: is cooling down"),
        "{}",
        cooled.decision.reason
    );
}

#[tokio::test]
async fn a_charge_that_cannot_be_written_retries_the_job_and_caches_nothing() {
    let setup = setup().await;
    let job = chat("acme", "a hard question");
    setup.charges.broken.store(true, Ordering::SeqCst);
    match setup.router.handle(job.clone(), context(&job)).await {
        Err(Failure::Retry(reason)) => {
            assert!(
                reason.contains("cannot charge the classifier call"),
                "{reason}"
            );
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    let gpt5 = QueueName::backend(&BackendId::new("gpt-5").unwrap());
    assert_eq!(
        setup.bus.depth(&gpt5).await.unwrap().ready,
        0,
        "nothing published"
    );
    // The answer was not cached without its charge: the redelivery asks and charges.
    setup.charges.broken.store(false, Ordering::SeqCst);
    let routed = route(&setup, &job).await;
    assert_eq!(routed.decision.backend_id.as_str(), "gpt-5");
    assert_eq!(setup.classifier.calls.load(Ordering::SeqCst), 2);
    assert_eq!(setup.charges.made.lock().unwrap().len(), 1);
}
