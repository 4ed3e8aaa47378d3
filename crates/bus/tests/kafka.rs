//! The behaviour suite over Kafka (the local broker from `deploy/local`), plus what only Kafka
//! has: commits that never pass unfinished work, and rebalances between consumers.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: failing loudly is the point"
)]

mod suite;

use std::collections::BTreeSet;
use std::time::Duration;

use switchyard_bus::kafka::{KafkaBus, KafkaSettings};
use switchyard_bus::{Bus, Consumer, Delivery, Outgoing};

fn brokers() -> String {
    match std::env::var("SWITCHYARD_KAFKA_BROKERS") {
        Ok(brokers) if !brokers.is_empty() => brokers,
        _ => panic!(
            "SWITCHYARD_KAFKA_BROKERS is not set: run `deploy/local/up.sh kafka && . deploy/local/env.sh` (or scripts/test.sh)"
        ),
    }
}

/// A bus whose consumer groups no other test shares.
async fn kafka_bus(_lease: Duration) -> KafkaBus {
    let mut settings = KafkaSettings::new(brokers());
    settings.group_prefix = format!(
        "test-{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    );
    settings.partitions = 2;
    KafkaBus::new(settings).unwrap()
}

bus_suite!(kafka_bus, Duration::from_secs(2));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_never_pass_an_unfinished_message() {
    let bus = kafka_bus(Duration::ZERO).await;
    let queue = suite::unique_queue("kafka-order");
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();
    // One key: one partition, so offsets are in publish order.
    let messages = (0..5)
        .map(|i| Outgoing::new(format!("m{i}")).with_key("k"))
        .collect();
    bus.publish_batch(&queue, messages).await.unwrap();

    let mut consumer = bus.consume(&queue, "workers").await.unwrap();
    let mut deliveries = Vec::new();
    for _ in 0..5 {
        deliveries.push(suite::next(&mut consumer).await);
    }
    // m0 is still running; m1..m4 finish.
    let unfinished = deliveries.remove(0);
    assert_eq!(unfinished.body(), b"m0");
    for delivery in deliveries {
        delivery.ack().await.unwrap();
    }
    drop(unfinished);
    consumer.close().await;

    // A crash now must not lose m0: the next member of the group starts at it.
    let mut next = bus.consume(&queue, "workers").await.unwrap();
    let first = suite::next(&mut next).await;
    assert_eq!(first.body(), b"m0");
    first.ack().await.unwrap();
    next.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_share_the_work_and_lose_nothing_in_a_rebalance() {
    let bus = kafka_bus(Duration::ZERO).await;
    let queue = suite::unique_queue("kafka-rebalance");
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();
    let total = 200;
    let messages = (0..total)
        .map(|i| Outgoing::new(format!("m{i}")).with_key(format!("k{i}")))
        .collect();
    bus.publish_batch(&queue, messages).await.unwrap();

    let mut seen = BTreeSet::new();
    let mut first = bus.consume(&queue, "workers").await.unwrap();
    // The first consumer works alone for a while...
    for _ in 0..50 {
        let delivery = suite::next(&mut first).await;
        seen.insert(String::from_utf8(delivery.body().to_vec()).unwrap());
        delivery.ack().await.unwrap();
    }
    // ...then a second joins, and the first leaves: partitions move twice.
    let mut second = bus.consume(&queue, "workers").await.unwrap();
    for _ in 0..20 {
        let delivery = suite::next(&mut first).await;
        seen.insert(String::from_utf8(delivery.body().to_vec()).unwrap());
        delivery.ack().await.unwrap();
    }
    first.close().await;
    while seen.len() < total {
        let delivery = suite::next(&mut second).await;
        seen.insert(String::from_utf8(delivery.body().to_vec()).unwrap());
        delivery.ack().await.unwrap();
    }
    second.close().await;
    // Every message was processed (duplicates are allowed by at-least-once; loss is not).
    assert_eq!(seen.len(), total);
    let lag = bus.lag(&queue, "workers").unwrap();
    assert_eq!(lag.ready, 0, "everything processed was committed");
}

/// `n` messages `"{tag} {i}"`, keyed apart.
fn batch(n: usize, tag: &str) -> Vec<Outgoing> {
    (0..n)
        .map(|i| Outgoing::new(format!("{tag} {i}").into_bytes()).with_key(format!("k{i}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_lag_is_unknown_until_the_group_commits() {
    let bus = kafka_bus(Duration::ZERO).await;
    let queue = suite::unique_queue("kafka-active-lag");
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();
    bus.publish_batch(&queue, batch(10, "first")).await.unwrap();
    // Never consumed: the plain lag counts everything, the active lag does not know.
    assert_eq!(bus.lag(&queue, "workers").unwrap().ready, 10);
    assert_eq!(bus.active_lag(&queue, "workers").unwrap(), None);
    // A reader kept across look-ups sees what is committed after it was made.
    let reader = bus.lag_reader("workers").unwrap();
    assert_eq!(reader.active_lag(&queue).unwrap(), None);

    let mut consumer = bus.consume(&queue, "workers").await.unwrap();
    for _ in 0..10 {
        suite::next(&mut consumer).await.ack().await.unwrap();
    }
    consumer.close().await;
    let caught_up = bus.active_lag(&queue, "workers").unwrap();
    assert_eq!(caught_up.map(|d| d.ready), Some(0));
    bus.publish_batch(&queue, batch(3, "later")).await.unwrap();
    let behind = bus.active_lag(&queue, "workers").unwrap();
    assert_eq!(behind.map(|d| d.ready), Some(3));
    assert_eq!(reader.active_lag(&queue).unwrap(), behind);
    // Another group still has no say.
    assert_eq!(bus.active_lag(&queue, "others").unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_reset_to_the_end_reads_only_what_comes_after() {
    let bus = kafka_bus(Duration::ZERO).await;
    let queue = suite::unique_queue("kafka-reset-to-end");
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();
    bus.publish_batch(&queue, batch(5, "before")).await.unwrap();
    bus.reset_to_end(&queue, "fresh").unwrap();
    assert_eq!(bus.lag(&queue, "fresh").unwrap().ready, 0);
    bus.publish_batch(&queue, batch(2, "after")).await.unwrap();
    let mut consumer = bus.consume(&queue, "fresh").await.unwrap();
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let delivery = suite::next(&mut consumer).await;
        bodies.push(String::from_utf8(delivery.body().to_vec()).unwrap());
        delivery.ack().await.unwrap();
    }
    bodies.sort();
    assert_eq!(bodies, ["after 0", "after 1"]);
    consumer.close().await;
    assert_eq!(bus.lag(&queue, "fresh").unwrap().ready, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_topic_is_read_by_offset_and_reading_changes_nothing() {
    let bus = kafka_bus(Duration::ZERO).await;
    let queue = suite::unique_queue("kafka-dlq");
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();
    let bodies: Vec<Vec<u8>> = (0..5).map(|i| format!("poison {i}").into_bytes()).collect();
    for body in &bodies {
        bus.publish(&queue, Outgoing::new(body.clone()))
            .await
            .unwrap();
    }
    let mut consumer = bus.consume(&queue, "g").await.unwrap();
    for _ in &bodies {
        suite::next(&mut consumer)
            .await
            .dead_letter(switchyard_bus::Rejection {
                class: switchyard_core::contracts::ErrorClass::Decode,
                reason: "not JSON".into(),
            })
            .await
            .unwrap();
    }
    consumer.close().await;
    let dlq = queue.dead_letter();
    bus.publish(&dlq, Outgoing::new(&b"raw bytes"[..]))
        .await
        .unwrap();

    let read = || async {
        let mut pass = switchyard_bus::dlq::Browse::Kafka(bus.browse_dead_letters(&dlq, 1 << 22));
        assert!(!pass.can_remove());
        let mut letters = Vec::new();
        while let Some(letter) = pass.next().await.unwrap() {
            letters.push(letter);
        }
        if let Some(letter) = letters.first() {
            assert!(pass.remove(letter).await.is_err(), "a topic cannot delete");
        }
        pass.finish().await;
        letters
    };
    let first = read().await;
    assert_eq!(first.len(), 6);
    let mut originals: Vec<Vec<u8>> = first.iter().map(|l| l.original_body().unwrap()).collect();
    originals.sort();
    let mut expected = bodies.clone();
    expected.push(b"raw bytes".to_vec());
    expected.sort();
    assert_eq!(originals, expected);
    assert_eq!(first.iter().filter(|l| l.foreign.is_some()).count(), 1);
    let positions: BTreeSet<&str> = first.iter().map(|l| l.position.as_str()).collect();
    assert_eq!(positions.len(), 6, "each letter at its own offset");

    // Nothing was consumed: a second pass reads the same letters under the same ids.
    let second = read().await;
    let ids = |letters: &[switchyard_bus::dlq::Letter]| -> BTreeSet<String> {
        letters
            .iter()
            .map(|l| format!("{}@{}", l.letter.dead_letter_id, l.position))
            .collect()
    };
    assert_eq!(ids(&first), ids(&second));

    // A topic that does not exist holds no letters.
    let none = suite::unique_queue("kafka-none").dead_letter();
    let mut pass = switchyard_bus::dlq::Browse::Kafka(bus.browse_dead_letters(&none, 1 << 22));
    let next = tokio::time::timeout(Duration::from_secs(30), pass.next()).await;
    assert!(next.unwrap().unwrap().is_none());
}
