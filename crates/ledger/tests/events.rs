//! Lifecycle event sinks against real transports: EventBridge on moto (from `deploy/local`),
//! delivered by a rule to SQS, and a bus topic on the in-process bus.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: failing loudly is the point"
)]

use std::time::Duration;

use aws_sdk_eventbridge::types::Target;
use aws_sdk_sqs::types::QueueAttributeName;
use chrono::{DateTime, SubsecRound as _, Utc};
use switchyard_bus::memory::MemoryBus;
use switchyard_bus::{Bus, Consumer, Delivery, headers};
use switchyard_core::contracts::{EventSchema, JobState, LifecycleEvent, TraceContext};
use switchyard_core::{JobId, QueueName, TenantId};
use switchyard_ledger::events::{BusSink, EventBridgeSink, EventError, EventSink};

/// How long a test waits for a delivery before failing.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

async fn aws() -> aws_config::SdkConfig {
    if std::env::var("AWS_ENDPOINT_URL").is_err() {
        panic!(
            "AWS_ENDPOINT_URL is not set: run `deploy/local/up.sh && . deploy/local/env.sh` (or scripts/test.sh)"
        );
    }
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// A name no other test (or earlier run) uses.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    )
}

fn event(state: JobState, at: DateTime<Utc>) -> LifecycleEvent {
    let job_id = JobId::new();
    LifecycleEvent {
        schema: EventSchema,
        event_id: format!("{job_id}:{}", state.as_str()),
        job_id,
        tenant_id: TenantId::new("acme").unwrap(),
        state,
        at,
        backend_id: None,
        attempt: Some(1),
        error: None,
        cost_micros: None,
        latency_ms: Some(24),
        trace: Some(TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: None,
        }),
    }
}

/// An SQS queue that receives what a rule on a fresh event bus matches.
struct Routed {
    events: aws_sdk_eventbridge::Client,
    sqs: aws_sdk_sqs::Client,
    event_bus: String,
    rule: String,
    queue_url: String,
}

impl Routed {
    async fn new(aws: &aws_config::SdkConfig, pattern: &str) -> Routed {
        let events = aws_sdk_eventbridge::Client::new(aws);
        let sqs = aws_sdk_sqs::Client::new(aws);
        let queue_url = sqs
            .create_queue()
            .queue_name(unique("ledger-events"))
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let queue_arn = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&QueueAttributeName::QueueArn]
            .clone();
        let event_bus = unique("ledger-bus");
        events
            .create_event_bus()
            .name(&event_bus)
            .send()
            .await
            .unwrap();
        let rule = unique("ledger-rule");
        events
            .put_rule()
            .name(&rule)
            .event_bus_name(&event_bus)
            .event_pattern(pattern)
            .send()
            .await
            .unwrap();
        events
            .put_targets()
            .rule(&rule)
            .event_bus_name(&event_bus)
            .targets(
                Target::builder()
                    .id("queue")
                    .arn(&queue_arn)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        Routed {
            events,
            sqs,
            event_bus,
            rule,
            queue_url,
        }
    }

    /// Bodies of the messages that arrive until `expected` have, or the timeout passes; then
    /// one more short poll, so a message that should not have arrived is seen too.
    async fn receive(&self, expected: usize) -> Vec<serde_json::Value> {
        let mut bodies = Vec::new();
        let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
        while bodies.len() < expected && tokio::time::Instant::now() < deadline {
            bodies.extend(self.poll(5).await);
        }
        bodies.extend(self.poll(1).await);
        bodies
    }

    async fn poll(&self, wait_seconds: i32) -> Vec<serde_json::Value> {
        let messages = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .wait_time_seconds(wait_seconds)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        let mut bodies = Vec::new();
        for message in messages {
            bodies.push(serde_json::from_str(message.body().unwrap()).unwrap());
            self.sqs
                .delete_message()
                .queue_url(&self.queue_url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        bodies
    }

    async fn delete(self) {
        self.events
            .remove_targets()
            .rule(&self.rule)
            .event_bus_name(&self.event_bus)
            .ids("queue")
            .send()
            .await
            .unwrap();
        self.events
            .delete_rule()
            .name(&self.rule)
            .event_bus_name(&self.event_bus)
            .send()
            .await
            .unwrap();
        self.events
            .delete_event_bus()
            .name(&self.event_bus)
            .send()
            .await
            .unwrap();
        self.sqs
            .delete_queue()
            .queue_url(&self.queue_url)
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn eventbridge_rules_see_source_detail_type_and_detail() {
    let aws = aws().await;
    let routed = Routed::new(
        &aws,
        r#"{"source":["switchyard"],"detail-type":["Job Succeeded"]}"#,
    )
    .await;
    let sink = EventBridgeSink::new(&aws, routed.event_bus.as_str());

    // EventBridge keeps whole seconds of `Time`.
    let at = Utc::now().trunc_subsecs(0) - chrono::Duration::minutes(5);
    let succeeded = event(JobState::Succeeded, at);
    let failed = event(JobState::Failed, at);
    sink.publish(&[failed, succeeded.clone()]).await.unwrap();

    let bodies = routed.receive(1).await;
    assert_eq!(bodies.len(), 1, "only the rule's match arrives: {bodies:?}");
    let body = &bodies[0];
    assert_eq!(body["source"], "switchyard");
    assert_eq!(body["detail-type"], "Job Succeeded");
    assert_eq!(body["detail"], serde_json::to_value(&succeeded).unwrap());
    assert_eq!(body["resources"], serde_json::json!([]));
    let time: DateTime<Utc> = body["time"].as_str().unwrap().parse().unwrap();
    assert_eq!(time, at, "the event's time, not the publish time");

    routed.delete().await;
}

#[tokio::test]
async fn eventbridge_takes_more_events_than_one_call_holds() {
    let aws = aws().await;
    let routed = Routed::new(&aws, r#"{"source":["switchyard"]}"#).await;
    let sink = EventBridgeSink::new(&aws, routed.event_bus.as_str());

    let events: Vec<LifecycleEvent> = (0..23)
        .map(|_| event(JobState::Started, Utc::now()))
        .collect();
    sink.publish(&events).await.unwrap();

    let bodies = routed.receive(events.len()).await;
    let mut received: Vec<String> = bodies
        .iter()
        .map(|body| body["detail"]["event_id"].as_str().unwrap().to_owned())
        .collect();
    received.sort();
    let mut sent: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
    sent.sort();
    assert_eq!(received, sent);

    routed.delete().await;
}

#[tokio::test]
async fn eventbridge_reports_a_missing_event_bus() {
    let aws = aws().await;
    let sink = EventBridgeSink::new(&aws, unique("no-such-bus"));
    let result = sink
        .publish(&[event(JobState::Succeeded, Utc::now())])
        .await;
    // Whether the call or only its entry is refused, the publish fails and says which bus.
    let error = result.unwrap_err();
    assert!(
        matches!(
            error,
            EventError::Transport(_) | EventError::Rejected { .. }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains(sink.event_bus()), "{error}");
}

#[tokio::test]
async fn bus_sink_publishes_each_event_keyed_by_job() {
    let bus = MemoryBus::default();
    let topic = QueueName::new(unique("switchyard.events")).unwrap();
    bus.ensure(std::slice::from_ref(&topic)).await.unwrap();
    let sink = BusSink::new(bus.clone(), topic.clone());

    let events = [
        event(JobState::Started, Utc::now()),
        event(JobState::Succeeded, Utc::now()),
    ];
    sink.publish(&events).await.unwrap();
    sink.publish(&[]).await.unwrap();

    let mut consumer = bus.consume(&topic, "test").await.unwrap();
    for sent in &events {
        let delivery = tokio::time::timeout(DELIVERY_TIMEOUT, consumer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let received: LifecycleEvent =
            switchyard_core::contracts::decode(delivery.body(), 1 << 20).unwrap();
        assert_eq!(&received, sent);
        assert_eq!(delivery.key(), Some(sent.job_id.to_string().as_str()));
        assert_eq!(
            delivery
                .headers()
                .get(headers::CONTENT_TYPE)
                .map(String::as_str),
            Some("application/json")
        );
        assert_eq!(
            delivery.headers().get(headers::TRACEPARENT),
            sent.trace.as_ref().map(|t| &t.traceparent)
        );
        delivery.ack().await.unwrap();
    }
    assert!(consumer.try_next().is_none(), "nothing more was published");
}

#[tokio::test]
async fn bus_sink_fails_on_a_missing_topic() {
    let bus = MemoryBus::default();
    let sink = BusSink::new(bus, QueueName::new(unique("switchyard.events")).unwrap());
    let error = sink
        .publish(&[event(JobState::Succeeded, Utc::now())])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("does not exist"), "{error}");
}
