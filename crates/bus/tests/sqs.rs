//! The behaviour suite over SQS (moto from `deploy/local`), plus what only SQS has: the S3
//! claim check for large bodies and the redrive policy.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: failing loudly is the point"
)]

mod suite;

use std::time::Duration;

use switchyard_bus::dlq::Browse;
use switchyard_bus::sqs::{SqsBus, SqsSettings};
use switchyard_bus::{Bus, Consumer, Delivery, Outgoing};

async fn aws() -> aws_config::SdkConfig {
    if std::env::var("AWS_ENDPOINT_URL").is_err() {
        panic!(
            "AWS_ENDPOINT_URL is not set: run `deploy/local/up.sh moto && . deploy/local/env.sh` (or scripts/test.sh)"
        );
    }
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// A bus with its own claim-check bucket; leases (visibility timeouts) of `lease`.
async fn sqs_bus(lease: Duration) -> SqsBus {
    let aws = aws().await;
    let bucket = format!(
        "claims-{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    );
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&aws)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let settings = SqsSettings {
        claim_check_bucket: Some(bucket),
        wait_time: Duration::from_secs(1),
        visibility_timeout: lease,
        s3_force_path_style: true,
        ..SqsSettings::default()
    };
    SqsBus::new(&aws, settings)
}

bus_suite!(sqs_bus, Duration::from_secs(2));

#[tokio::test]
async fn large_bodies_travel_by_claim_check() {
    let bus = sqs_bus(Duration::from_secs(30)).await;
    let queue = suite::unique_queue("sqs-claim");
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();
    let body: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
    bus.publish(&queue, Outgoing::new(body.clone()).with_key("big"))
        .await
        .unwrap();
    let mut consumer = bus.consume(&queue, "g").await.unwrap();
    let delivery = suite::next(&mut consumer).await;
    assert_eq!(delivery.body(), body.as_slice());
    assert_eq!(delivery.key(), Some("big"));
    assert!(delivery.headers().contains_key("switchyard-claim-check"));
    delivery.ack().await.unwrap();
    consumer.close().await;
}

#[tokio::test]
async fn queue_names_map_to_what_sqs_accepts() {
    let bus = sqs_bus(Duration::from_secs(30)).await;
    let queue = switchyard_core::Tier::Batch.queue();
    assert_eq!(bus.physical_name(&queue), "switchyard-jobs-batch");
    assert_eq!(
        bus.physical_name(&queue.dead_letter()),
        "switchyard-dlq-switchyard-jobs-batch"
    );
}

#[tokio::test]
async fn publishing_to_a_missing_queue_names_it() {
    let bus = sqs_bus(Duration::from_secs(30)).await;
    let queue = suite::unique_queue("never-ensured");
    let error = bus
        .publish(&queue, Outgoing::new(b"x".to_vec()))
        .await
        .unwrap_err();
    assert!(
        matches!(error, switchyard_bus::BusError::UnknownQueue(ref q) if *q == queue.to_string()),
        "{error}"
    );
}

#[tokio::test]
async fn ensure_sets_up_the_redrive_policy_to_the_dead_letter_queue() {
    let aws = aws().await;
    let bus = sqs_bus(Duration::from_secs(30)).await;
    let queue = suite::unique_queue("sqs-redrive");
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();
    // Idempotent: a second ensure changes nothing and does not fail.
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();

    let sqs = aws_sdk_sqs::Client::new(&aws);
    let url = sqs
        .get_queue_url()
        .queue_name(bus.physical_name(&queue))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    let redrive: serde_json::Value =
        serde_json::from_str(&attributes[&aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy])
            .unwrap();
    let dlq_name = bus.physical_name(&queue.dead_letter());
    assert!(
        redrive["deadLetterTargetArn"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{dlq_name}")),
        "{redrive}"
    );
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "10"
    );
    assert_eq!(
        attributes[&aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout],
        "30"
    );
}

/// Dead-letters `bodies` from a fresh queue; returns the queue.
async fn dead_lettered(bus: &SqsBus, bodies: &[Vec<u8>]) -> switchyard_core::QueueName {
    let queue = suite::unique_queue("sqs-dlq");
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();
    for body in bodies {
        bus.publish(&queue, Outgoing::new(body.clone()))
            .await
            .unwrap();
    }
    let mut consumer = bus.consume(&queue, "g").await.unwrap();
    for _ in bodies {
        let delivery = suite::next(&mut consumer).await;
        delivery
            .dead_letter(switchyard_bus::Rejection {
                class: switchyard_core::contracts::ErrorClass::InvalidInput,
                reason: "corrupt".into(),
            })
            .await
            .unwrap();
    }
    consumer.close().await;
    queue
}

async fn browse(bus: &SqsBus, dlq: &switchyard_core::QueueName) -> Browse {
    Browse::Sqs(Box::new(
        bus.browse_dead_letters(dlq, Duration::from_secs(60), 1 << 22)
            .await
            .unwrap(),
    ))
}

async fn read_all(browse: &mut Browse) -> Vec<switchyard_bus::dlq::Letter> {
    let mut letters = Vec::new();
    while let Some(letter) = browse.next().await.unwrap() {
        letters.push(letter);
    }
    letters
}

#[tokio::test]
async fn a_dead_letter_pass_holds_what_it_reads_removes_one_and_releases_the_rest() {
    let bus = sqs_bus(Duration::from_secs(30)).await;
    // One letter too large for SQS travels by claim check, like its original did.
    let large: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let bodies = vec![b"first".to_vec(), b"second".to_vec(), large];
    let queue = dead_lettered(&bus, &bodies).await;
    let dlq = queue.dead_letter();
    // A raw message on the DLQ, as SQS's own redrive policy moves one there.
    bus.publish(
        &dlq,
        Outgoing::new(&b"{\"job_id\":\"raw\"}"[..]).with_key("k"),
    )
    .await
    .unwrap();

    let mut pass = browse(&bus, &dlq).await;
    let letters = read_all(&mut pass).await;
    assert_eq!(letters.len(), 4);
    let mut originals: Vec<Vec<u8>> = letters.iter().map(|l| l.original_body().unwrap()).collect();
    originals.sort();
    let mut expected = bodies.clone();
    expected.push(b"{\"job_id\":\"raw\"}".to_vec());
    expected.sort();
    assert_eq!(originals, expected);
    let foreign: Vec<_> = letters.iter().filter(|l| l.foreign.is_some()).collect();
    assert_eq!(foreign.len(), 1);
    assert_eq!(foreign[0].letter.source_queue, queue);
    assert_eq!(foreign[0].letter.original.key.as_deref(), Some("k"));
    for letter in letters.iter().filter(|l| l.foreign.is_none()) {
        assert_eq!(letter.letter.reason, "corrupt");
        assert_eq!(letter.letter.source_queue, queue);
    }

    // Held: a second pass meanwhile sees nothing, so no letter is worked on twice.
    let mut other = browse(&bus, &dlq).await;
    assert!(read_all(&mut other).await.is_empty());
    other.finish().await;

    let first = letters
        .iter()
        .find(|l| l.original_body().unwrap() == b"first")
        .unwrap();
    pass.remove(first).await.unwrap();
    pass.finish().await;

    // Released at once: the next pass reads the other three, and the removed one is gone.
    let mut again = browse(&bus, &dlq).await;
    let left = read_all(&mut again).await;
    again.finish().await;
    let mut ids: Vec<_> = left.iter().map(|l| l.letter.dead_letter_id).collect();
    ids.sort();
    let mut expected: Vec<_> = letters
        .iter()
        .filter(|l| l.position != first.position)
        .map(|l| l.letter.dead_letter_id)
        .collect();
    expected.sort();
    assert_eq!(
        ids, expected,
        "the same letters, the foreign one under the same id"
    );
}

#[tokio::test]
async fn a_missing_dead_letter_queue_is_an_empty_pass() {
    let bus = sqs_bus(Duration::from_secs(30)).await;
    let dlq = suite::unique_queue("sqs-none").dead_letter();
    let mut pass = browse(&bus, &dlq).await;
    assert!(read_all(&mut pass).await.is_empty());
    pass.finish().await;
}
