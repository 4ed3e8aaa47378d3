//! The router worker end to end over the in-process bus: tier queues in, routed jobs out on
//! the backend queues, dead letters for what cannot be routed, budgets and policy reloads.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: failing loudly is the point"
)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_bus::memory::MemoryBus;
use switchyard_bus::runtime::{self, Counters, Settings};
use switchyard_bus::scheduler::WeightedConsumer;
use switchyard_bus::{Bus, Consumer, Delivery, Outgoing, headers};
use switchyard_core::config::Config;
use switchyard_core::contracts::{self, DeadLetter, ErrorClass, JobEnvelope, RoutedJob, Task};
use switchyard_core::{JobId, TenantId, Tier};
use switchyard_router::budget::Spent;
use switchyard_router::estimate::backend_states;
use switchyard_router::live::LiveState;
use switchyard_router::policy::JobFacts;
use switchyard_router::policy_file::{DEFAULT_POLICY_TOML, load_policy};
use switchyard_router::worker::{PolicyHandle, Router, RouterSettings, SpendSource, child_id};
use tokio_util::sync::CancellationToken;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn config() -> Config {
    let text = std::fs::read_to_string(root().join("switchyard.example.toml")).unwrap();
    Config::from_parts(&text, "example", &[], Some(&root())).unwrap()
}

fn example(name: &str) -> JobEnvelope {
    let bytes = std::fs::read(root().join("schemas/examples/valid").join(name)).unwrap();
    let mut job: JobEnvelope = contracts::decode(&bytes, 1 << 20).unwrap();
    job.job_id = JobId::new();
    job
}

/// A spend source that says every tenant spent `day` dollars today.
#[derive(Clone)]
struct FixedSpend(&'static str);

impl SpendSource for FixedSpend {
    async fn spent(&self, _tenant: &TenantId) -> Result<Spent, String> {
        let day = self.0.parse().unwrap();
        Ok(Spent {
            day,
            month: day,
            in_flight: rust_decimal::Decimal::ZERO,
        })
    }
}

struct Running {
    bus: MemoryBus,
    policy: Arc<PolicyHandle>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start(policy_text: &str, policy_file: Option<PathBuf>, spend: FixedSpend) -> Running {
    let config = config();
    let bus = MemoryBus::default();
    let policy = load_policy(policy_text, "test", &config.backends).unwrap();
    let policy = Arc::new(PolicyHandle::new(policy, policy_file));
    let router = Router::new(
        bus.clone(),
        config.backends.clone().into(),
        Arc::new(config.rates.clone()),
        policy.clone(),
        Arc::new(Mutex::new(LiveState::default())),
        spend,
        RouterSettings::default(),
    );
    let mut queues: Vec<_> = Tier::ALL.iter().map(|t| t.queue()).collect();
    queues.extend(router.backend_queues());
    bus.ensure(&queues).await.unwrap();
    let mut consumers = Vec::new();
    for tier in Tier::ALL {
        let weight = config.tier_weights.get(&tier).copied().unwrap_or(1);
        consumers.push((weight, bus.consume(&tier.queue(), "router").await.unwrap()));
    }
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runtime::run(
        WeightedConsumer::new(consumers),
        Arc::new(router),
        Settings::default(),
        Arc::new(Counters::default()),
        shutdown.clone(),
    ));
    let task = tokio::spawn(async move {
        task.await.unwrap().unwrap();
    });
    Running {
        bus,
        policy,
        shutdown,
        task,
    }
}

async fn submit(bus: &MemoryBus, job: &JobEnvelope) {
    let message = Outgoing::new(contracts::encode(job))
        .with_key(job.tenant_id.as_str())
        .with_header(
            headers::TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
    bus.publish(&job.priority.queue(), message).await.unwrap();
}

async fn next_on<T: contracts::Contract>(
    bus: &MemoryBus,
    queue: &switchyard_core::QueueName,
) -> (T, switchyard_bus::Headers) {
    let mut consumer = bus.consume(queue, "test").await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("nothing arrived within 10 s")
        .unwrap()
        .unwrap();
    let message = contracts::decode(delivery.body(), 1 << 20).unwrap();
    let headers = delivery.headers().clone();
    delivery.ack().await.unwrap();
    (message, headers)
}

#[tokio::test]
async fn jobs_are_routed_to_the_backend_the_policy_chooses() {
    let running = start(DEFAULT_POLICY_TOML, None, FixedSpend("0")).await;
    let config = config();
    let policy = load_policy(DEFAULT_POLICY_TOML, "test", &config.backends).unwrap();
    for name in [
        "job.chat.json",
        "job.detect-inline.json",
        "job.classify.json",
    ] {
        let job = example(name);
        // What the pure decision says for the same inputs, with no live state yet.
        let facts = JobFacts::from_job(&job);
        let states = backend_states(&config.backends, &config.rates, &facts, None);
        let expected = switchyard_router::budget::route(&facts, &policy, &states, None).unwrap();
        submit(&running.bus, &job).await;
        let (routed, headers): (RoutedJob, _) = next_on(&running.bus, &expected.queue).await;
        assert_eq!(routed.job, job, "{name}: the job travels unchanged");
        assert_eq!(routed.decision.backend_id, expected.backend_id, "{name}");
        assert_eq!(routed.decision.rule, expected.rule, "{name}");
        assert_eq!(routed.decision.policy_version, policy.version);
        assert!(
            routed
                .decision
                .reason
                .contains(expected.backend_id.as_str())
        );
        assert_eq!(
            headers.get(headers::TRACEPARENT).map(String::as_str),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            "trace context travels on"
        );
    }
    running.shutdown.cancel();
    running.task.await.unwrap();
}

#[tokio::test]
async fn a_job_no_backend_can_serve_is_dead_lettered_with_the_rule_trace() {
    let running = start(DEFAULT_POLICY_TOML, None, FixedSpend("0")).await;
    let mut job = example("job.chat.json");
    job.routing.max_cost_usd = Some("0".parse().unwrap());
    submit(&running.bus, &job).await;
    let dlq = job.priority.queue().dead_letter();
    let (letter, _): (DeadLetter, _) = next_on(&running.bus, &dlq).await;
    assert_eq!(letter.error_class, ErrorClass::NoRoute);
    assert_eq!(letter.job_id, Some(job.job_id));
    assert!(
        letter.reason.contains("rule premium-plans"),
        "{}",
        letter.reason
    );
    assert!(letter.reason.contains("costs $"), "{}", letter.reason);

    // A multi job with one unroutable subtask publishes no child at all.
    let mut multi = example("job.multi.json");
    multi.priority = Tier::Batch;
    multi.routing.max_cost_usd = Some("0".parse().unwrap());
    submit(&running.bus, &multi).await;
    let (letter, _): (DeadLetter, _) =
        next_on(&running.bus, &Tier::Batch.queue().dead_letter()).await;
    assert_eq!(letter.error_class, ErrorClass::NoRoute);
    assert!(
        letter
            .reason
            .starts_with("no subtask was published; subtask objects: rule"),
        "{}",
        letter.reason
    );
    for backend in config().backends {
        let depth = running.bus.depth(&backend.queue).await.unwrap();
        assert_eq!(depth.ready, 0, "{}", backend.id);
    }
    running.shutdown.cancel();
    running.task.await.unwrap();
}

const BUDGETED: &str = r#"
version = "budgeted-1"

[[rules]]
name = "premium"
strategy = "most_accurate"

[[budgets]]
plan = "pro"
daily_usd = "5.00"
on_exceed = "reject"
"#;

#[tokio::test]
async fn an_exhausted_budget_is_refused_with_the_reason() {
    let running = start(BUDGETED, None, FixedSpend("4.999999")).await;
    let job = example("job.chat.json");
    submit(&running.bus, &job).await;
    let (letter, _): (DeadLetter, _) =
        next_on(&running.bus, &job.priority.queue().dead_letter()).await;
    assert_eq!(letter.error_class, ErrorClass::BudgetExceeded);
    assert!(
        letter
            .reason
            .starts_with("tenant acme has $0.000001 left of its daily budget"),
        "{}",
        letter.reason
    );
    running.shutdown.cancel();
    running.task.await.unwrap();
}

/// The ledger shows nothing yet (every job is still in flight): a burst of jobs cannot all
/// pass a budget that pays for two of them.
#[tokio::test]
async fn a_burst_is_held_against_the_budget_before_the_ledger_shows_it() {
    let config = config();
    let job = example("job.chat.json");
    let decided = {
        let policy = load_policy(BUDGETED, "test", &config.backends).unwrap();
        let facts = JobFacts::from_job(&job);
        // The router estimates with what the job asks for at most.
        let Task::Chat(chat) = &job.task else {
            panic!("a chat job")
        };
        let states = backend_states(
            &config.backends,
            &config.rates,
            &facts,
            chat.params.max_tokens,
        );
        switchyard_router::budget::route(&facts, &policy, &states, None).unwrap()
    };
    let cost = decided.estimated_cost_usd;
    let two_and_a_half = cost * rust_decimal::Decimal::new(25, 1);
    let policy = BUDGETED.replace("\"5.00\"", &format!("\"{two_and_a_half}\""));
    let running = start(&policy, None, FixedSpend("0")).await;
    for _ in 0..5 {
        let mut job = job.clone();
        job.job_id = JobId::new();
        submit(&running.bus, &job).await;
    }
    let dlq = job.priority.queue().dead_letter();
    for _ in 0..3 {
        let (letter, _): (DeadLetter, _) = next_on(&running.bus, &dlq).await;
        assert_eq!(letter.error_class, ErrorClass::BudgetExceeded);
        assert!(
            letter.reason.contains(" is held for jobs in flight); "),
            "{}",
            letter.reason
        );
    }
    for _ in 0..2 {
        let (routed, _): (RoutedJob, _) = next_on(&running.bus, &decided.queue).await;
        assert_eq!(routed.decision.estimated_cost_usd, cost);
    }
    // Shutdown finishes what is in flight: nothing else was routed or refused.
    running.shutdown.cancel();
    running.task.await.unwrap();
    let mut left = running.bus.depth(&dlq).await.unwrap().ready;
    for backend in &config.backends {
        left += running.bus.depth(&backend.queue).await.unwrap().ready;
    }
    assert_eq!(
        left, 0,
        "two jobs fit the budget at {cost} each, three did not"
    );
}

#[tokio::test]
async fn an_invalid_policy_is_refused_on_reload_and_a_valid_one_takes_over() {
    let dir = std::env::temp_dir().join(format!("switchyard-policy-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policy.toml");
    std::fs::write(&file, DEFAULT_POLICY_TOML).unwrap();
    let running = start(DEFAULT_POLICY_TOML, Some(file.clone()), FixedSpend("0")).await;
    let catalog = config().backends;

    std::fs::write(
        &file,
        "version = \"broken\"\n[[rules]]\nname = \"x\"\nstrategy = \"pinned\"\n",
    )
    .unwrap();
    let error = running.policy.reload(&catalog).unwrap_err();
    assert!(
        error.to_string().contains("a pinned rule needs `pin`"),
        "{error}"
    );
    assert_eq!(running.policy.current().version, "default-2026-11-24");

    std::fs::write(&file, BUDGETED.replace("budgeted-1", "budgeted-2")).unwrap();
    assert_eq!(
        running.policy.reload(&catalog).unwrap().as_deref(),
        Some("budgeted-2")
    );
    let job = example("job.chat.json");
    submit(&running.bus, &job).await;
    let config = config();
    let policy = running.policy.current();
    let facts = JobFacts::from_job(&job);
    let states = backend_states(&config.backends, &config.rates, &facts, None);
    let expected = switchyard_router::budget::route(&facts, &policy, &states, None).unwrap();
    let (routed, _): (RoutedJob, _) = next_on(&running.bus, &expected.queue).await;
    assert_eq!(routed.decision.policy_version, "budgeted-2");
    assert_eq!(routed.decision.rule, "premium");
    running.shutdown.cancel();
    running.task.await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_multi_job_fans_out_into_children_that_name_their_parent() {
    let running = start(DEFAULT_POLICY_TOML, None, FixedSpend("0")).await;
    let config = config();
    let policy = load_policy(DEFAULT_POLICY_TOML, "test", &config.backends).unwrap();
    let multi = example("job.multi.json");
    let Task::Multi(task) = &multi.task else {
        unreachable!("job.multi.json is a multi job")
    };
    // Delivered twice (a redelivery after a crash): the same children, by id.
    submit(&running.bus, &multi).await;
    submit(&running.bus, &multi).await;
    for subtask in &task.subtasks {
        let mut child = multi.clone();
        child.job_id = child_id(multi.job_id, &subtask.name);
        child.task = subtask.task.clone();
        child.callback = None;
        let facts = JobFacts::from_job(&child);
        let states = backend_states(&config.backends, &config.rates, &facts, None);
        let expected = switchyard_router::budget::route(&facts, &policy, &states, None).unwrap();
        for _ in 0..2 {
            let (routed, _): (RoutedJob, _) = next_on(&running.bus, &expected.queue).await;
            assert_eq!(routed.job.job_id, child.job_id, "{}", subtask.name);
            assert_eq!(routed.job.task, subtask.task);
            assert_eq!(
                routed.job.callback, None,
                "children announce nothing themselves"
            );
            let parent = routed.parent.unwrap();
            assert_eq!(parent.job_id, multi.job_id);
            assert_eq!(parent.subtask, subtask.name);
            assert_eq!(parent.siblings, ["objects", "caption"]);
            assert_eq!(parent.callback, multi.callback);
        }
    }
    assert_ne!(
        child_id(multi.job_id, "objects"),
        child_id(multi.job_id, "caption")
    );
    assert_eq!(
        child_id(multi.job_id, "objects").0.timestamp_ms(),
        multi.job_id.0.timestamp_ms()
    );
    running.shutdown.cancel();
    running.task.await.unwrap();
}

#[tokio::test]
async fn a_job_waits_rather_than_dead_letters_while_its_backends_cool_down() {
    use switchyard_bus::runtime::{Failure, Handler, JobContext};
    let config = config();
    let policy = load_policy(DEFAULT_POLICY_TOML, "test", &config.backends).unwrap();
    let live = Arc::new(Mutex::new(LiveState::default()));
    let router = Router::new(
        MemoryBus::default(),
        config.backends.clone().into(),
        Arc::new(config.rates.clone()),
        Arc::new(PolicyHandle::new(policy, None)),
        live.clone(),
        FixedSpend("0"),
        RouterSettings::default(),
    );
    let mut job = example("job.chat.json");
    job.routing.backend = None;
    let now = std::time::Instant::now();
    for backend in config
        .backends
        .iter()
        .filter(|b| b.tasks.contains(&job.task.kind()))
    {
        for _ in 0..5 {
            live.lock().unwrap().observe(&backend.id, Err(()), now);
        }
    }
    let context = |job: &JobEnvelope| JobContext {
        queue: job.priority.queue(),
        attempt: 1,
        max_attempts: 5,
        headers: switchyard_bus::Headers::new(),
        body: contracts::encode(job).into(),
    };
    match router.handle(job.clone(), context(&job)).await {
        Err(Failure::Retry(reason)) => {
            assert!(
                reason.starts_with("every eligible backend is cooling down"),
                "{reason}"
            );
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    // A job nothing could serve even when healthy is still refused at once.
    job.routing.max_cost_usd = Some("0".parse().unwrap());
    assert!(matches!(
        router.handle(job.clone(), context(&job)).await,
        Err(Failure::Reject(_))
    ));
}
