//! The behaviour suite over SQS (moto from `deploy/local`), plus what only SQS has: the S3
//! claim check for large bodies and the redrive policy.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: failing loudly is the point"
)]

mod suite;

use std::time::Duration;

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
