//! `Ledger::finish` and the webhook dispatcher end to end, over both stores: pricing, the
//! exactly-once properties under redelivery, blobs for large outputs, durable signed webhooks
//! with retries, exhaustion and resumption after a restart.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: failing loudly is the point"
)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, TimeZone as _, Utc};
use common::{embedded, mongo, unique};
use switchyard_bus::memory::MemoryBus;
use switchyard_bus::{Bus, Consumer, Delivery};
use switchyard_core::contracts::{
    self, Callback, JobEnvelope, JobState, LifecycleEvent, Output, ResultStatus, TextOutput,
};
use switchyard_core::money::Micros;
use switchyard_core::rates::{RatesTable, Usage};
use switchyard_core::{BackendId, QueueName};
use switchyard_ledger::blobs::LocalBlobs;
use switchyard_ledger::events::BusSink;
use switchyard_ledger::store::{Period, Store, WebhookDelivery, WebhookState, Written};
use switchyard_ledger::webhook::client::WebhookClient;
use switchyard_ledger::webhook::guard::SsrfGuard;
use switchyard_ledger::webhook::sign::{SigningKeys, verify};
use switchyard_ledger::webhook::{DispatchSettings, Dispatcher, KeyLookup};
use switchyard_ledger::{Call, Ledger, LedgerSettings, Outcome};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SECRET: &str = "whsec_c2VjcmV0LW9mLWFub3RoZXItdGVuYW50LTEyMzQ=";

struct Rig<S: Store> {
    ledger: Ledger<S, BusSink<MemoryBus>, LocalBlobs>,
    events: <MemoryBus as Bus>::Consumer,
    blob_dir: std::path::PathBuf,
}

async fn rig<S: Store>(store: S, settings: LedgerSettings) -> Rig<S> {
    let bus = MemoryBus::default();
    let topic = QueueName::new(unique("events").replace('_', "-")).unwrap();
    bus.ensure(std::slice::from_ref(&topic)).await.unwrap();
    let events = bus.consume(&topic, "test").await.unwrap();
    let blob_dir = std::env::temp_dir().join(unique("switchyard-blobs"));
    let ledger = Ledger::new(
        store,
        BusSink::new(bus, topic),
        LocalBlobs::new(&blob_dir).unwrap(),
        Arc::new(RatesTable::default_table().unwrap()),
        settings,
    );
    Rig {
        ledger,
        events,
        blob_dir,
    }
}

fn job(callback: Option<&str>) -> JobEnvelope {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/examples/valid/job.chat.json"
    ))
    .unwrap();
    let mut job: JobEnvelope = contracts::decode(&bytes, 1 << 20).unwrap();
    job.job_id = switchyard_core::JobId::new();
    job.submitted_at = t(0);
    job.callback = callback.map(|url| Callback {
        url: url.parse().unwrap(),
        // Names another tenant's secret: it must not be used.
        secret_id: Some("GLOBEX".into()),
    });
    job
}

fn t(ms: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap() + chrono::Duration::milliseconds(ms)
}

fn outcome(text: &str, input_tokens: u64, attempts: u32) -> Outcome {
    Outcome {
        status: ResultStatus::Succeeded,
        output: Some(Output::Text(TextOutput {
            text: text.into(),
            finish_reason: "stop".into(),
        })),
        error: None,
        backend_id: Some(BackendId::new("gpt-4o-mini").unwrap()),
        model: Some("gpt-4o-mini".into()),
        attempts,
        started_at: t(100),
        finished_at: t(900),
        calls: vec![
            Call {
                name: "classifier".into(),
                backend_id: BackendId::new("gpt-4.1-nano").unwrap(),
                provider: "openai".into(),
                model: "gpt-4.1-nano".into(),
                price: "openai/gpt-4.1-nano".into(),
                usage: Usage {
                    input_tokens: 200,
                    output_tokens: 5,
                    requests: 1,
                    ..Usage::default()
                },
                latency_ms: 80,
                occurred_at: t(150),
            },
            Call {
                name: "main".into(),
                backend_id: BackendId::new("gpt-4o-mini").unwrap(),
                provider: "openai".into(),
                model: "gpt-4o-mini".into(),
                price: "openai/gpt-4o-mini".into(),
                usage: Usage {
                    input_tokens,
                    output_tokens: 500,
                    cached_input_tokens: 1000,
                    requests: 1,
                    ..Usage::default()
                },
                latency_ms: 700,
                occurred_at: t(880),
            },
        ],
        parent: None,
    }
}

async fn next_event(consumer: &mut <MemoryBus as Bus>::Consumer) -> LifecycleEvent {
    let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("no lifecycle event within 5 s")
        .unwrap()
        .unwrap();
    let event = contracts::decode(delivery.body(), 1 << 20).unwrap();
    delivery.ack().await.unwrap();
    event
}

macro_rules! ledger_suite {
    ($($make:ident),+) => {
        $(
        mod $make {
            #[tokio::test]
            async fn a_redelivered_job_is_charged_and_stored_once() {
                super::a_redelivered_job_is_charged_and_stored_once(super::$make().await).await;
            }
            #[tokio::test]
            async fn large_outputs_go_to_the_blob_store_and_webhooks_carry_a_link() {
                super::large_outputs_go_to_the_blob_store_and_webhooks_carry_a_link(super::$make().await).await;
            }
            #[tokio::test]
            async fn webhooks_are_signed_retried_and_resumed_after_a_restart() {
                super::webhooks_are_signed_retried_and_resumed_after_a_restart(super::$make().await).await;
            }
            #[tokio::test]
            async fn a_crash_between_usage_and_result_keeps_the_first_charge() {
                super::a_crash_between_usage_and_result_keeps_the_first_charge(super::$make().await).await;
            }
            #[tokio::test]
            async fn a_multi_job_is_joined_once_every_child_finished() {
                super::a_multi_job_is_joined_once_every_child_finished(super::$make().await).await;
            }
            #[tokio::test]
            async fn a_webhook_that_never_succeeds_is_exhausted_and_announced() {
                super::a_webhook_that_never_succeeds_is_exhausted_and_announced(super::$make().await).await;
            }
        }
        )+
    };
}

ledger_suite!(embedded, mongo);

async fn a_redelivered_job_is_charged_and_stored_once(store: impl Store) {
    let mut rig = rig(store, LedgerSettings::default()).await;
    let job = job(None);
    let first = rig
        .ledger
        .finish(&job, outcome("first", 1200, 1))
        .await
        .unwrap();
    assert_eq!(first.written, Written::New);

    // The cost is the rates table's, per call, rounded once per event.
    let rates = rig.ledger.rates();
    let expected: i64 = outcome("x", 1200, 1)
        .calls
        .iter()
        .map(|c| rates.cost(&c.price, &c.usage).unwrap().micros.0)
        .sum();
    assert!(expected > 0);
    assert_eq!(first.result.cost_micros, Micros(expected));
    assert_eq!(first.result.latency_ms, 900, "from submission to finish");
    let store = rig.ledger.store();
    let usage = store.usage_of_job(job.job_id).await.unwrap();
    assert_eq!(usage.len(), 2);
    assert!(usage.iter().all(|u| u.rates_version == rates.version));
    let day = Period::day_of(t(0));
    assert_eq!(
        store.spend(&job.tenant_id, day).await.unwrap(),
        Micros(expected)
    );
    let event = next_event(&mut rig.events).await;
    assert_eq!(
        (event.state, event.cost_micros),
        (JobState::Succeeded, Some(Micros(expected)))
    );

    // A redelivery (after a crash before the ack) runs the job again, differently: nothing new
    // is written or charged, and the stored result is announced again under the same event id.
    let again = rig
        .ledger
        .finish(&job, outcome("second", 99_999, 2))
        .await
        .unwrap();
    assert_eq!(again.written, Written::Unchanged);
    assert_eq!(again.result, first.result);
    assert_eq!(
        store.spend(&job.tenant_id, day).await.unwrap(),
        Micros(expected)
    );
    assert_eq!(store.usage_of_job(job.job_id).await.unwrap(), usage);
    let repeated = next_event(&mut rig.events).await;
    assert_eq!(repeated.event_id, event.event_id);
    let record = store.job(job.job_id).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Succeeded);
}

async fn large_outputs_go_to_the_blob_store_and_webhooks_carry_a_link(store: impl Store) {
    let settings = LedgerSettings {
        inline_output_limit_bytes: 1024,
        ..LedgerSettings::default()
    };
    let rig = rig(store, settings).await;
    let job = job(Some("https://hooks.example.com/in"));
    let text = "a long summary ".repeat(200);
    let finished = rig
        .ledger
        .finish(&job, outcome(&text, 100, 1))
        .await
        .unwrap();
    let Some(Output::Blob(blob)) = &finished.result.output else {
        panic!("expected a blob, got {:?}", finished.result.output);
    };
    assert!(blob.uri.starts_with("file://"), "{}", blob.uri);
    let stored = std::fs::read(rig.blob_dir.join(format!("outputs/{}.json", job.job_id))).unwrap();
    let output: Output = serde_json::from_slice(&stored).unwrap();
    assert_eq!(output, outcome(&text, 100, 1).output.unwrap());
    assert_eq!(blob.size_bytes, stored.len() as u64);

    let delivery = rig
        .ledger
        .store()
        .webhook(&WebhookDelivery::id_for(job.job_id))
        .await
        .unwrap()
        .unwrap();
    let payload: serde_json::Value = serde_json::from_str(&delivery.payload).unwrap();
    assert_eq!(payload["type"], "job.succeeded");
    assert_eq!(payload["data"]["output"]["type"], "blob");
    assert_eq!(payload["data"]["job_id"], job.job_id.to_string());
    assert!(delivery.payload.len() < 2048, "{}", delivery.payload.len());
}

/// A receiver that answers with the statuses in `script` (then 200) and records requests.
#[derive(Clone, Default)]
struct Receiver {
    script: Arc<Mutex<Vec<u16>>>,
    seen: Arc<Mutex<Vec<(HeaderMap, String)>>>,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    receiver.seen.lock().unwrap().push((headers, body));
    let next = {
        let mut script = receiver.script.lock().unwrap();
        if script.is_empty() {
            200
        } else {
            script.remove(0)
        }
    };
    StatusCode::from_u16(next).unwrap()
}

async fn serve(receiver: Receiver) -> String {
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}/hook")
}

fn dispatcher<S: Store>(
    store: S,
    schedule: &[u64],
) -> Dispatcher<S, switchyard_ledger::events::NoEvents> {
    dispatcher_with(store, switchyard_ledger::events::NoEvents, schedule)
}

fn dispatcher_with<S: Store, E: switchyard_ledger::events::EventSink>(
    store: S,
    events: E,
    schedule: &[u64],
) -> Dispatcher<S, E> {
    let client = WebhookClient::new(
        Duration::from_secs(5),
        SsrfGuard::new(&["127.0.0.1".to_owned()]).unwrap(),
    )
    .unwrap();
    let keys: HashMap<String, String> = HashMap::from([
        // The tenant's own key; a job cannot pick another tenant's.
        (
            "SWITCHYARD_WEBHOOK_SECRET_ACME".to_owned(),
            SECRET.to_owned(),
        ),
        (
            "SWITCHYARD_WEBHOOK_SECRET_GLOBEX".to_owned(),
            OTHER_SECRET.to_owned(),
        ),
    ]);
    let lookup: KeyLookup = Arc::new(move |name| keys.get(name).cloned());
    Dispatcher::new(
        store,
        events,
        client,
        DispatchSettings {
            schedule: schedule
                .iter()
                .map(|ms| Duration::from_millis(*ms))
                .collect(),
            lease: Duration::from_secs(30),
            batch: 8,
            idle_poll: Duration::from_millis(10),
        },
        lookup,
    )
}

/// Runs dispatch rounds until the delivery of `job` is no longer pending.
async fn settle<S: Store>(
    dispatcher: &Dispatcher<S, impl switchyard_ledger::events::EventSink>,
    store: &S,
    webhook_id: &str,
) -> WebhookDelivery {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            dispatcher.round(Utc::now()).await.unwrap();
            let delivery = store.webhook(webhook_id).await.unwrap().unwrap();
            if delivery.state != WebhookState::Pending {
                return delivery;
            }
            // Retries are due a few milliseconds out; wait for the schedule, not a signal.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("delivery did not settle")
}

async fn webhooks_are_signed_retried_and_resumed_after_a_restart(store: impl Store) {
    let receiver = Receiver {
        script: Arc::new(Mutex::new(vec![500, 503])),
        ..Receiver::default()
    };
    let url = serve(receiver.clone()).await;
    let rig = rig(store.clone(), LedgerSettings::default()).await;
    let job = job(Some(&url));
    rig.ledger
        .finish(&job, outcome("hello", 100, 1))
        .await
        .unwrap();
    let webhook_id = WebhookDelivery::id_for(job.job_id);

    // The first dispatcher makes one failing attempt, then "crashes" (is dropped).
    let first = dispatcher(store.clone(), &[0, 1, 1, 1]);
    assert_eq!(first.round(Utc::now()).await.unwrap(), 1);
    drop(first);
    let after_crash = store.webhook(&webhook_id).await.unwrap().unwrap();
    assert_eq!(
        (
            after_crash.state,
            after_crash.attempts,
            after_crash.last_status
        ),
        (WebhookState::Pending, 1, Some(500))
    );

    // A new one resumes from the store: one more failure, then delivered.
    let second = dispatcher(store.clone(), &[0, 1, 1, 1]);
    let done = settle(&second, &store, &webhook_id).await;
    assert_eq!(
        (done.state, done.attempts, done.last_status),
        (WebhookState::Delivered, 3, Some(200))
    );

    let seen = receiver.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    let keys = SigningKeys::parse(SECRET).unwrap();
    for (headers, body) in &seen {
        let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
        // The same id on every attempt: the receiver's idempotency key.
        assert_eq!(header("webhook-id"), webhook_id);
        let timestamp: i64 = header("webhook-timestamp").parse().unwrap();
        assert!(verify(
            &keys,
            &webhook_id,
            timestamp,
            body.as_bytes(),
            &header("webhook-signature")
        ));
        assert_eq!(body, &done.payload);
    }
    let payload: serde_json::Value = serde_json::from_str(&seen[0].1).unwrap();
    assert_eq!(payload["data"]["output"]["text"], "hello");
    // Delivered: a further round sends nothing.
    assert_eq!(second.round(Utc::now()).await.unwrap(), 0);
}

async fn a_webhook_that_never_succeeds_is_exhausted_and_announced(store: impl Store) {
    let receiver = Receiver {
        script: Arc::new(Mutex::new(vec![500; 10])),
        ..Receiver::default()
    };
    let url = serve(receiver.clone()).await;
    let rig = rig(store.clone(), LedgerSettings::default()).await;
    let job = job(Some(&url));
    rig.ledger
        .finish(&job, outcome("hello", 100, 1))
        .await
        .unwrap();
    let webhook_id = WebhookDelivery::id_for(job.job_id);
    let bus = MemoryBus::default();
    let topic = QueueName::new(unique("hook-events").replace('_', "-")).unwrap();
    bus.ensure(std::slice::from_ref(&topic)).await.unwrap();
    let mut announced = bus.consume(&topic, "test").await.unwrap();
    let dispatcher = dispatcher_with(store.clone(), BusSink::new(bus, topic), &[0, 1, 1]);
    let done = settle(&dispatcher, &store, &webhook_id).await;
    let event = next_event(&mut announced).await;
    assert_eq!(
        (event.job_id, event.state),
        (job.job_id, JobState::WebhookExhausted)
    );
    assert_eq!(event.attempt, Some(3));
    assert_eq!((done.state, done.attempts), (WebhookState::Exhausted, 3));
    assert_eq!(receiver.seen.lock().unwrap().len(), 3);
    let record = store.job(job.job_id).await.unwrap().unwrap();
    // Announced in the timeline without changing the job's own state.
    assert_eq!(record.state, JobState::Succeeded);
    let last = record.history.last().unwrap();
    assert_eq!(last.state, JobState::WebhookExhausted);
    assert!(
        last.detail
            .as_deref()
            .unwrap()
            .contains("gave up after 3 attempts"),
        "{last:?}"
    );
}

async fn a_multi_job_is_joined_once_every_child_finished(store: impl Store) {
    use switchyard_core::contracts::{ErrorClass, JobError, ParentRef};
    let rig = rig(store, LedgerSettings::default()).await;
    let parent_job = job(Some("https://hooks.example.com/in"));
    let parent = |subtask: &str| ParentRef {
        job_id: parent_job.job_id,
        subtask: subtask.into(),
        siblings: vec!["objects".into(), "caption".into()],
        callback: parent_job.callback.clone(),
    };
    let child = |subtask: &str| {
        let mut child = parent_job.clone();
        child.job_id = switchyard_core::JobId::new();
        child.callback = None;
        (child, parent(subtask))
    };
    let (caption, caption_parent) = child("caption");
    let (objects, objects_parent) = child("objects");
    let store = rig.ledger.store();

    let mut done = outcome("a shelf of jars", 100, 1);
    done.parent = Some(caption_parent);
    let first = rig.ledger.finish(&caption, done).await.unwrap();
    assert_eq!(first.result.parent_job_id, Some(parent_job.job_id));
    assert_eq!(
        store.result(parent_job.job_id).await.unwrap(),
        None,
        "one child still runs"
    );
    assert_eq!(
        store
            .webhook(&WebhookDelivery::id_for(caption.job_id))
            .await
            .unwrap(),
        None
    );

    let mut failed = outcome("", 100, 3);
    failed.status = ResultStatus::Failed;
    failed.output = None;
    failed.calls.clear();
    failed.error = Some(JobError {
        class: ErrorClass::InvalidInput,
        message: "corrupt JPEG".into(),
    });
    failed.parent = Some(objects_parent.clone());
    rig.ledger.finish(&objects, failed.clone()).await.unwrap();

    let joined = store
        .result(parent_job.job_id)
        .await
        .unwrap()
        .expect("the parent is finished");
    assert_eq!(joined.status, ResultStatus::Partial);
    assert_eq!(
        joined.cost_micros, first.result.cost_micros,
        "the failed child cost nothing"
    );
    assert_eq!(joined.attempts, 3);
    let Some(Output::Multi(multi)) = &joined.output else {
        panic!("{joined:?}")
    };
    let names: Vec<(&str, ResultStatus)> = multi
        .children
        .iter()
        .map(|c| (c.name.as_str(), c.status))
        .collect();
    assert_eq!(
        names,
        [
            ("objects", ResultStatus::Failed),
            ("caption", ResultStatus::Succeeded)
        ]
    );
    assert_eq!(
        multi.children[0].error.as_ref().unwrap().message,
        "corrupt JPEG"
    );
    let hook = store
        .webhook(&WebhookDelivery::id_for(parent_job.job_id))
        .await
        .unwrap()
        .unwrap();
    let payload: serde_json::Value = serde_json::from_str(&hook.payload).unwrap();
    assert_eq!(payload["data"]["output"]["type"], "multi");
    assert_eq!(
        store.job(parent_job.job_id).await.unwrap().unwrap().state,
        JobState::Succeeded
    );

    // A redelivered child changes nothing: same parent, no new charge.
    rig.ledger.finish(&objects, failed).await.unwrap();
    assert_eq!(store.result(parent_job.job_id).await.unwrap(), Some(joined));
    assert_eq!(
        store
            .spend(&parent_job.tenant_id, Period::day_of(t(0)))
            .await
            .unwrap(),
        first.result.cost_micros
    );
}

/// The first delivery priced and recorded its calls, then died before writing the result; the
/// redelivery re-ran the job at another cost. Charged and reported: the first run's.
async fn a_crash_between_usage_and_result_keeps_the_first_charge(store: impl Store) {
    let rig = rig(store, LedgerSettings::default()).await;
    let job = job(None);
    let first_run = outcome("first", 1200, 1);
    let mut charged = 0;
    for call in &first_run.calls {
        let event = rig.ledger.price(&job, call).unwrap();
        charged += event.cost_micros.0;
        rig.ledger.store().record_usage(&event).await.unwrap();
    }
    let finished = rig
        .ledger
        .finish(&job, outcome("second", 99_999, 2))
        .await
        .unwrap();
    assert_eq!(finished.written, Written::New);
    assert_eq!(finished.result.cost_micros, Micros(charged));
    assert_eq!(
        rig.ledger
            .store()
            .spend(&job.tenant_id, Period::day_of(t(0)))
            .await
            .unwrap(),
        Micros(charged)
    );
}
