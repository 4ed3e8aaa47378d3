//! The behaviour every transport must have, written once. Each transport's test file
//! instantiates it with `bus_suite!` and a factory making a bus whose leases last `lease`.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "the shared test suite: failing loudly is the point"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use switchyard_bus::runtime::{self, Counters, Failure, Handler, JobContext, Settings};
use switchyard_bus::{Bus, Consumer, Delivery, Outgoing, Rejection, headers};
use switchyard_core::QueueName;
use switchyard_core::contracts::{self, DeadLetter, ErrorClass, JobEnvelope};
use tokio_util::sync::CancellationToken;

/// Longest any step may wait on the transport before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn unique_queue(prefix: &str) -> QueueName {
    QueueName::new(format!(
        "test.{prefix}.{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    ))
    .unwrap()
}

pub async fn next<C: Consumer>(consumer: &mut C) -> C::Delivery {
    tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("no delivery within the wait")
        .unwrap()
        .expect("consumer ended")
}

/// A valid job envelope, as bytes.
pub fn job_bytes(tenant: &str) -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/examples/valid/job.chat.json"
    );
    let mut job: JobEnvelope = contracts::decode(&std::fs::read(path).unwrap(), 1 << 20).unwrap();
    job.job_id = switchyard_core::JobId::new();
    job.tenant_id = switchyard_core::TenantId::new(tenant).unwrap();
    contracts::encode(&job)
}

pub async fn round_trip_keeps_body_key_and_headers<B: Bus>(bus: B) {
    let queue = unique_queue("roundtrip");
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();
    let mut consumer = bus.consume(&queue, "g").await.unwrap();
    bus.publish(
        &queue,
        Outgoing::new(b"hello".to_vec())
            .with_key("tenant-a")
            .with_header(
                headers::TRACEPARENT,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
    )
    .await
    .unwrap();
    let delivery = next(&mut consumer).await;
    assert_eq!(delivery.body(), b"hello");
    assert_eq!(delivery.key(), Some("tenant-a"));
    assert_eq!(
        delivery.headers()[headers::TRACEPARENT],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(delivery.attempt(), 1);
    delivery.ack().await.unwrap();
    consumer.close().await;
}

pub async fn batch_publish_delivers_everything<B: Bus>(bus: B) {
    let queue = unique_queue("batch");
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();
    let messages = (0..25).map(|i| Outgoing::new(format!("m{i}"))).collect();
    bus.publish_batch(&queue, messages).await.unwrap();
    let mut consumer = bus.consume(&queue, "g").await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 25 {
        let delivery = next(&mut consumer).await;
        seen.insert(String::from_utf8(delivery.body().to_vec()).unwrap());
        delivery.ack().await.unwrap();
    }
    assert_eq!(seen.len(), 25);
    consumer.close().await;
}

/// A consumer that dies without acking loses nothing: another one gets the message.
pub async fn unacked_delivery_comes_back<B: Bus>(bus: B) {
    let queue = unique_queue("redeliver");
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();
    bus.publish(&queue, Outgoing::new(b"once".to_vec()))
        .await
        .unwrap();
    let mut first = bus.consume(&queue, "g").await.unwrap();
    let delivery = next(&mut first).await;
    drop(delivery);
    first.close().await;

    let mut second = bus.consume(&queue, "g").await.unwrap();
    let again = next(&mut second).await;
    assert_eq!(again.body(), b"once");
    again.ack().await.unwrap();
    second.close().await;
}

pub async fn nack_redelivers_later_with_the_attempt_raised<B: Bus>(bus: B) {
    let queue = unique_queue("nack");
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();
    let mut consumer = bus.consume(&queue, "g").await.unwrap();
    bus.publish(&queue, Outgoing::new(b"retry me".to_vec()))
        .await
        .unwrap();
    let delivery = next(&mut consumer).await;
    assert_eq!(delivery.attempt(), 1);
    let nacked_at = tokio::time::Instant::now();
    delivery
        .nack(Duration::from_millis(300), "upstream 503")
        .await
        .unwrap();
    let again = next(&mut consumer).await;
    assert!(
        nacked_at.elapsed() >= Duration::from_millis(300),
        "redelivered too early"
    );
    assert_eq!(again.body(), b"retry me");
    assert_eq!(again.attempt(), 2);
    assert!(again.first_failed_at().is_some());
    again.ack().await.unwrap();
    consumer.close().await;
}

pub async fn dead_letter_keeps_the_original_and_the_reason<B: Bus>(bus: B) {
    use base64::Engine as _;
    let queue = unique_queue("dlq");
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();
    let mut consumer = bus.consume(&queue, "g").await.unwrap();
    let body = b"\x00\xffnot json at all".to_vec();
    bus.publish(&queue, Outgoing::new(body.clone()).with_key("k1"))
        .await
        .unwrap();
    let delivery = next(&mut consumer).await;
    delivery
        .dead_letter(Rejection {
            class: ErrorClass::Decode,
            reason: "not valid JSON".into(),
        })
        .await
        .unwrap();

    let mut dlq = bus.consume(&queue.dead_letter(), "g").await.unwrap();
    let letter = next(&mut dlq).await;
    let letter_doc: DeadLetter = contracts::decode(letter.body(), 1 << 20).unwrap();
    assert_eq!(letter_doc.source_queue, queue);
    assert_eq!(letter_doc.error_class, ErrorClass::Decode);
    assert_eq!(letter_doc.reason, "not valid JSON");
    assert_eq!(letter_doc.original.key.as_deref(), Some("k1"));
    let original = base64::engine::general_purpose::STANDARD
        .decode(&letter_doc.original.body_base64)
        .unwrap();
    assert_eq!(original, body);
    letter.ack().await.unwrap();
    dlq.close().await;
    consumer.close().await;
}

/// A job longer than the lease is not redelivered while its lease is extended.
pub async fn extend_keeps_a_long_job_leased<B: Bus>(bus: B, lease: Duration) {
    let queue = unique_queue("extend");
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();
    bus.publish(&queue, Outgoing::new(b"long".to_vec()))
        .await
        .unwrap();
    let mut consumer = bus.consume(&queue, "g").await.unwrap();
    let delivery = next(&mut consumer).await;
    let until = tokio::time::Instant::now() + lease * 3;
    while tokio::time::Instant::now() < until {
        delivery.extend(lease).await.unwrap();
        // While extended, nothing else is delivered.
        let other = tokio::time::timeout(lease / 3, consumer.next()).await;
        assert!(other.is_err(), "redelivered while the lease was held");
    }
    delivery.ack().await.unwrap();
    consumer.close().await;
}

// --- The runtime over the transport -----------------------------------------------------------

/// Fails `fail_first` times (retryably), then succeeds; counts calls.
pub struct Flaky {
    pub calls: AtomicU32,
    pub fail_first: u32,
    pub reject: bool,
}

impl Handler for Flaky {
    type Message = JobEnvelope;

    async fn handle(&self, _job: JobEnvelope, context: JobContext) -> Result<(), Failure> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        assert_eq!(context.attempt, call, "attempts count across redeliveries");
        if self.reject {
            return Err(Failure::reject(
                ErrorClass::InvalidInput,
                "image is corrupt",
            ));
        }
        if call <= self.fail_first {
            Err(Failure::Retry(format!("provider 503 on call {call}")))
        } else {
            Ok(())
        }
    }
}

pub fn fast_settings() -> Settings {
    Settings {
        concurrency: 4,
        max_attempts: 3,
        message_timeout: Duration::from_secs(10),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        shutdown_grace: Duration::from_secs(5),
        max_message_bytes: 64 * 1024,
        lease: Duration::from_secs(5),
    }
}

async fn run_until<B: Bus, H: Handler>(
    bus: &B,
    queue: &QueueName,
    handler: Arc<H>,
    done: impl Fn(&Counters) -> bool,
) -> Arc<Counters> {
    let consumer = bus.consume(queue, "workers").await.unwrap();
    let counters = Arc::new(Counters::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runtime::run(
        consumer,
        handler,
        fast_settings(),
        counters.clone(),
        shutdown.clone(),
    ));
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(&counters) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "runtime did not finish: {counters:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
    counters
}

async fn one_dead_letter<B: Bus>(bus: &B, queue: &QueueName) -> DeadLetter {
    let mut dlq = bus.consume(&queue.dead_letter(), "inspect").await.unwrap();
    let letter = next(&mut dlq).await;
    let doc: DeadLetter = contracts::decode(letter.body(), 1 << 20).unwrap();
    letter.ack().await.unwrap();
    dlq.close().await;
    doc
}

pub async fn runtime_retries_then_succeeds<B: Bus>(bus: B) {
    let queue = unique_queue("rt-retry");
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();
    bus.publish(&queue, Outgoing::new(job_bytes("acme")))
        .await
        .unwrap();
    let handler = Arc::new(Flaky {
        calls: AtomicU32::new(0),
        fail_first: 2,
        reject: false,
    });
    let counters = run_until(&bus, &queue, handler.clone(), |c| {
        Counters::get(&c.acked) == 1
    })
    .await;
    assert_eq!(handler.calls.load(Ordering::SeqCst), 3);
    assert_eq!(Counters::get(&counters.retried), 2);
    assert_eq!(Counters::get(&counters.dead_lettered), 0);
}

pub async fn runtime_dead_letters_after_the_last_attempt<B: Bus>(bus: B) {
    let queue = unique_queue("rt-exhaust");
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();
    let body = job_bytes("acme");
    bus.publish(&queue, Outgoing::new(body.clone()))
        .await
        .unwrap();
    let handler = Arc::new(Flaky {
        calls: AtomicU32::new(0),
        fail_first: 100,
        reject: false,
    });
    run_until(&bus, &queue, handler.clone(), |c| {
        Counters::get(&c.dead_lettered) == 1
    })
    .await;
    assert_eq!(handler.calls.load(Ordering::SeqCst), 3, "max_attempts is 3");
    let letter = one_dead_letter(&bus, &queue).await;
    assert_eq!(letter.error_class, ErrorClass::RetriesExhausted);
    assert_eq!(letter.attempts, 3);
    assert!(
        letter.reason.contains("provider 503 on call 3"),
        "{}",
        letter.reason
    );
    assert_eq!(letter.tenant_id.unwrap().as_str(), "acme");
}

pub async fn runtime_dead_letters_rejections_at_once<B: Bus>(bus: B) {
    let queue = unique_queue("rt-reject");
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();
    bus.publish(&queue, Outgoing::new(job_bytes("acme")))
        .await
        .unwrap();
    let handler = Arc::new(Flaky {
        calls: AtomicU32::new(0),
        fail_first: 0,
        reject: true,
    });
    run_until(&bus, &queue, handler.clone(), |c| {
        Counters::get(&c.dead_lettered) == 1
    })
    .await;
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
    let letter = one_dead_letter(&bus, &queue).await;
    assert_eq!(letter.error_class, ErrorClass::InvalidInput);
    assert_eq!(letter.reason, "image is corrupt");
}

pub async fn runtime_dead_letters_poison_without_calling_the_handler<B: Bus>(bus: B) {
    let queue = unique_queue("rt-poison");
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();
    bus.publish(
        &queue,
        Outgoing::new(b"{\"schema\":\"switchyard.job/v1\",\"priority\":\"urgent\"}".to_vec()),
    )
    .await
    .unwrap();
    let handler = Arc::new(Flaky {
        calls: AtomicU32::new(0),
        fail_first: 0,
        reject: false,
    });
    run_until(&bus, &queue, handler.clone(), |c| {
        Counters::get(&c.dead_lettered) == 1
    })
    .await;
    assert_eq!(handler.calls.load(Ordering::SeqCst), 0);
    let letter = one_dead_letter(&bus, &queue).await;
    assert_eq!(letter.error_class, ErrorClass::SchemaInvalid);
    assert!(letter.reason.contains("/priority"), "{}", letter.reason);
    assert_eq!(letter.attempts, 1);
}

/// Sleeps on every job; counts finished ones.
pub struct Slow {
    pub started: AtomicU32,
    pub finished: AtomicU32,
    pub pause: Duration,
}

impl Handler for Slow {
    type Message = JobEnvelope;

    async fn handle(&self, _job: JobEnvelope, _context: JobContext) -> Result<(), Failure> {
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.pause).await;
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

pub async fn shutdown_finishes_in_flight_work<B: Bus>(bus: B) {
    let queue = unique_queue("rt-shutdown");
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();
    for _ in 0..4 {
        bus.publish(&queue, Outgoing::new(job_bytes("acme")))
            .await
            .unwrap();
    }
    let handler = Arc::new(Slow {
        started: AtomicU32::new(0),
        finished: AtomicU32::new(0),
        pause: Duration::from_millis(500),
    });
    let consumer = bus.consume(&queue, "workers").await.unwrap();
    let counters = Arc::new(Counters::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runtime::run(
        consumer,
        handler.clone(),
        fast_settings(),
        counters.clone(),
        shutdown.clone(),
    ));
    let deadline = tokio::time::Instant::now() + WAIT;
    while handler.started.load(Ordering::SeqCst) < 4 {
        assert!(tokio::time::Instant::now() < deadline, "jobs did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
    // Everything that had started was finished and acked before `run` returned.
    assert_eq!(handler.finished.load(Ordering::SeqCst), 4);
    assert_eq!(Counters::get(&counters.acked), 4);
    assert_eq!(bus.depth(&queue).await.unwrap().ready, 0);
}

#[macro_export]
macro_rules! bus_suite {
    ($make:expr, $lease:expr) => {
        #[tokio::test]
        async fn round_trip_keeps_body_key_and_headers() {
            suite::round_trip_keeps_body_key_and_headers($make($lease).await).await;
        }
        #[tokio::test]
        async fn batch_publish_delivers_everything() {
            suite::batch_publish_delivers_everything($make($lease).await).await;
        }
        #[tokio::test]
        async fn unacked_delivery_comes_back() {
            suite::unacked_delivery_comes_back($make($lease).await).await;
        }
        #[tokio::test]
        async fn nack_redelivers_later_with_the_attempt_raised() {
            suite::nack_redelivers_later_with_the_attempt_raised($make($lease).await).await;
        }
        #[tokio::test]
        async fn dead_letter_keeps_the_original_and_the_reason() {
            suite::dead_letter_keeps_the_original_and_the_reason($make($lease).await).await;
        }
        #[tokio::test]
        async fn extend_keeps_a_long_job_leased() {
            suite::extend_keeps_a_long_job_leased($make($lease).await, $lease).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn runtime_retries_then_succeeds() {
            suite::runtime_retries_then_succeeds($make($lease).await).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn runtime_dead_letters_after_the_last_attempt() {
            suite::runtime_dead_letters_after_the_last_attempt($make($lease).await).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn runtime_dead_letters_rejections_at_once() {
            suite::runtime_dead_letters_rejections_at_once($make($lease).await).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn runtime_dead_letters_poison_without_calling_the_handler() {
            suite::runtime_dead_letters_poison_without_calling_the_handler($make($lease).await)
                .await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn shutdown_finishes_in_flight_work() {
            suite::shutdown_finishes_in_flight_work($make($lease).await).await;
        }
    };
}
