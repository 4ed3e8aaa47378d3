//! The behaviour suite over the in-process bus, plus the tier scheduler.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: failing loudly is the point"
)]

mod suite;

use std::time::Duration;

use switchyard_bus::memory::MemoryBus;
use switchyard_bus::scheduler::WeightedConsumer;
use switchyard_bus::{Bus, Consumer, Delivery, Outgoing};

async fn memory_bus(lease: Duration) -> MemoryBus {
    MemoryBus::new(lease)
}

bus_suite!(memory_bus, Duration::from_secs(1));

/// Publishes `n` messages named `<label><i>` to `queue`.
async fn fill(bus: &MemoryBus, queue: &switchyard_core::QueueName, label: &str, n: usize) {
    let messages = (0..n)
        .map(|i| Outgoing::new(format!("{label}{i}")))
        .collect();
    bus.publish_batch(queue, messages).await.unwrap();
}

async fn tiers(
    bus: &MemoryBus,
) -> (
    WeightedConsumer<switchyard_bus::memory::MemoryConsumer>,
    [switchyard_core::QueueName; 3],
) {
    let queues = [
        suite::unique_queue("realtime"),
        suite::unique_queue("standard"),
        suite::unique_queue("batch"),
    ];
    bus.ensure(&queues).await.unwrap();
    let mut consumers = Vec::new();
    for (weight, queue) in [8, 3, 1].into_iter().zip(&queues) {
        consumers.push((weight, bus.consume(queue, "router").await.unwrap()));
    }
    (WeightedConsumer::new(consumers), queues)
}

/// Takes `n` deliveries in order, acking each; returns their bodies.
async fn take<C: Consumer>(consumer: &mut C, n: usize) -> Vec<String> {
    let mut order = Vec::new();
    for _ in 0..n {
        let delivery = suite::next(consumer).await;
        order.push(String::from_utf8(delivery.body().to_vec()).unwrap());
        delivery.ack().await.unwrap();
    }
    order
}

#[tokio::test]
async fn batch_still_progresses_under_a_realtime_flood() {
    let bus = MemoryBus::default();
    let (mut consumer, [realtime, _, batch]) = tiers(&bus).await;
    fill(&bus, &realtime, "r", 1_000).await;
    fill(&bus, &batch, "b", 10).await;
    let order = take(&mut consumer, 120).await;
    let batch_done = order.iter().filter(|m| m.starts_with('b')).count();
    // Weight 1 of 9 busy shares: about 120/9 ≈ 13 slots, all 10 batch messages fit.
    assert_eq!(batch_done, 10, "{order:?}");
    // And they are spread out, not bunched at the end.
    let first_batch = order.iter().position(|m| m.starts_with('b')).unwrap();
    assert!(first_batch < 12, "first batch message at {first_batch}");
    consumer.close().await;
}

#[tokio::test]
async fn realtime_is_served_promptly_behind_a_batch_flood() {
    let bus = MemoryBus::default();
    let (mut consumer, [realtime, _, batch]) = tiers(&bus).await;
    fill(&bus, &batch, "b", 1_000).await;
    // The flood is already being served when realtime work arrives.
    let before = take(&mut consumer, 50).await;
    assert!(before.iter().all(|m| m.starts_with('b')));
    fill(&bus, &realtime, "r", 16).await;
    let after = take(&mut consumer, 20).await;
    // Queue position is the latency that scheduling controls: with 8:1, realtime takes 8 of
    // every 9 picks, so all 16 realtime jobs are done within 20 picks of arriving, behind a
    // backlog of 950 batch jobs.
    let realtime_done = after.iter().filter(|m| m.starts_with('r')).count();
    assert_eq!(realtime_done, 16, "{after:?}");
    // Realtime messages keep their order.
    let realtime_order: Vec<&String> = after.iter().filter(|m| m.starts_with('r')).collect();
    let expected: Vec<String> = (0..16).map(|i| format!("r{i}")).collect();
    assert_eq!(realtime_order, expected.iter().collect::<Vec<_>>());
    consumer.close().await;
}

#[tokio::test]
async fn weights_split_a_saturated_consumer_eight_three_one() {
    let bus = MemoryBus::default();
    let (mut consumer, [realtime, standard, batch]) = tiers(&bus).await;
    fill(&bus, &realtime, "r", 500).await;
    fill(&bus, &standard, "s", 500).await;
    fill(&bus, &batch, "b", 500).await;
    let order = take(&mut consumer, 120).await;
    let count = |p: char| order.iter().filter(|m| m.starts_with(p)).count();
    assert_eq!((count('r'), count('s'), count('b')), (80, 30, 10));
    consumer.close().await;
}

#[tokio::test]
async fn expired_leases_count_as_attempts() {
    let bus = MemoryBus::new(Duration::from_millis(50));
    let queue = suite::unique_queue("expiry");
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();
    bus.publish(&queue, Outgoing::new(b"x".to_vec()))
        .await
        .unwrap();
    let mut consumer = bus.consume(&queue, "g").await.unwrap();
    let first = suite::next(&mut consumer).await;
    let second = suite::next(&mut consumer).await;
    assert_eq!(second.attempt(), 2);
    // The first lease is gone: settling it is refused, so the job cannot be acked twice.
    assert!(matches!(
        first.ack().await,
        Err(switchyard_bus::BusError::LeaseExpired)
    ));
    second.ack().await.unwrap();
    assert_eq!(
        bus.depth(&queue).await.unwrap(),
        switchyard_bus::QueueDepth::default()
    );
}

struct PanicsOnce {
    calls: std::sync::atomic::AtomicU32,
}

impl switchyard_bus::runtime::Handler for PanicsOnce {
    type Message = switchyard_core::contracts::JobEnvelope;

    async fn handle(
        &self,
        _job: Self::Message,
        _context: switchyard_bus::runtime::JobContext,
    ) -> Result<(), switchyard_bus::runtime::Failure> {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert!(call > 0, "first call fails the way a bug would");
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_a_failed_attempt_not_a_lost_message() {
    use switchyard_bus::runtime::{self, Counters};
    let bus = MemoryBus::default();
    let queue = suite::unique_queue("panic");
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();
    bus.publish(&queue, Outgoing::new(suite::job_bytes("acme")))
        .await
        .unwrap();
    let handler = std::sync::Arc::new(PanicsOnce {
        calls: std::sync::atomic::AtomicU32::new(0),
    });
    let counters = std::sync::Arc::new(Counters::default());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(runtime::run(
        bus.consume(&queue, "w").await.unwrap(),
        handler.clone(),
        suite::fast_settings(),
        counters.clone(),
        shutdown.clone(),
    ));
    let deadline = tokio::time::Instant::now() + suite::WAIT;
    while Counters::get(&counters.acked) < 1 {
        assert!(tokio::time::Instant::now() < deadline, "{counters:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(Counters::get(&counters.retried), 1);
    assert_eq!(handler.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}
