use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use switchyard_tests::{DELIVERY_TIMEOUT, endpoint, unique};

#[tokio::test]
async fn produce_and_consume_with_headers_and_commit() {
    let brokers = endpoint("SWITCHYARD_KAFKA_BROKERS");
    let topic = unique("smoke");

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 3, TopicReplication::Fixed(1))],
            &options,
        )
        .await
        .unwrap();
    assert!(created[0].is_ok(), "{created:?}");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let headers = OwnedHeaders::new().insert(Header {
        key: "traceparent",
        value: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    });
    let delivery = producer
        .send(
            FutureRecord::to(&topic)
                .key("tenant-a")
                .payload(r#"{"hello":"kafka"}"#)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(error, _)| error)
        .unwrap();
    let (partition, offset) = (delivery.partition, delivery.offset);

    let group = unique("smoke-group");
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let message = tokio::time::timeout(DELIVERY_TIMEOUT, consumer.recv())
        .await
        .expect("no message within the delivery timeout")
        .unwrap();
    assert_eq!(message.partition(), partition);
    assert_eq!(message.offset(), offset);
    assert_eq!(message.key(), Some(&b"tenant-a"[..]));
    assert_eq!(message.payload(), Some(&br#"{"hello":"kafka"}"#[..]));
    let header = message.headers().unwrap().get(0);
    assert_eq!(header.key, "traceparent");
    consumer.commit_message(&message, CommitMode::Sync).unwrap();
    // librdkafka cannot finish closing the consumer while a message it handed out is alive, so
    // dropping the consumer with `message` still in scope would hang forever.
    drop(message);
    let committed = consumer
        .committed(Duration::from_secs(10))
        .unwrap()
        .find_partition(&topic, partition)
        .unwrap()
        .offset();
    assert_eq!(committed, rdkafka::Offset::Offset(offset + 1));

    drop(consumer);
    let deleted = admin.delete_topics(&[&topic], &options).await.unwrap();
    assert!(deleted[0].is_ok(), "{deleted:?}");
}
