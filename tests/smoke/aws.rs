use aws_sdk_eventbridge::types::{PutEventsRequestEntry, Target};
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use switchyard_tests::{endpoint, unique};

async fn shared_config() -> aws_config::SdkConfig {
    // The endpoint, region and (dummy) credentials come from the standard AWS variables.
    endpoint("AWS_ENDPOINT_URL");
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

#[tokio::test]
async fn sqs_send_receive_delete() {
    let sqs = aws_sdk_sqs::Client::new(&shared_config().await);
    let queue_url = sqs
        .create_queue()
        .queue_name(unique("smoke"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();

    sqs.send_message()
        .queue_url(&queue_url)
        .message_body(r#"{"hello":"sqs"}"#)
        .message_attributes(
            "switchyard-attempt",
            MessageAttributeValue::builder()
                .data_type("Number")
                .string_value("1")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let received = sqs
        .receive_message()
        .queue_url(&queue_url)
        .wait_time_seconds(5)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap();
    let messages = received.messages.unwrap_or_default();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.body.as_deref(), Some(r#"{"hello":"sqs"}"#));
    let attempt = &message.message_attributes.as_ref().unwrap()["switchyard-attempt"];
    assert_eq!(attempt.string_value.as_deref(), Some("1"));

    sqs.delete_message()
        .queue_url(&queue_url)
        .receipt_handle(message.receipt_handle.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    assert_eq!(
        attributes[&QueueAttributeName::ApproximateNumberOfMessages],
        "0"
    );
    assert_eq!(
        attributes[&QueueAttributeName::ApproximateNumberOfMessagesNotVisible],
        "0"
    );

    sqs.delete_queue()
        .queue_url(&queue_url)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn s3_put_get_path_style() {
    let shared = shared_config().await;
    // S3 emulators serve buckets by path, not by virtual host.
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(true)
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(config);
    let bucket = unique("smoke");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();

    let body: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    s3.put_object()
        .bucket(&bucket)
        .key("inputs/blob.bin")
        .body(body.clone().into())
        .send()
        .await
        .unwrap();
    let object = s3
        .get_object()
        .bucket(&bucket)
        .key("inputs/blob.bin")
        .send()
        .await
        .unwrap();
    let fetched = object.body.collect().await.unwrap().into_bytes();
    assert_eq!(fetched.as_ref(), body.as_slice());

    let missing = s3
        .get_object()
        .bucket(&bucket)
        .key("nope")
        .send()
        .await
        .unwrap_err();
    assert!(missing.into_service_error().is_no_such_key());

    s3.delete_object()
        .bucket(&bucket)
        .key("inputs/blob.bin")
        .send()
        .await
        .unwrap();
    s3.delete_bucket().bucket(&bucket).send().await.unwrap();
}

#[tokio::test]
async fn eventbridge_rule_routes_put_events_to_sqs() {
    let shared = shared_config().await;
    let events = aws_sdk_eventbridge::Client::new(&shared);
    let sqs = aws_sdk_sqs::Client::new(&shared);

    let queue_url = sqs
        .create_queue()
        .queue_name(unique("smoke-events"))
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

    let bus = unique("smoke-bus");
    events.create_event_bus().name(&bus).send().await.unwrap();
    let rule = unique("smoke-rule");
    events
        .put_rule()
        .name(&rule)
        .event_bus_name(&bus)
        .event_pattern(r#"{"source":["switchyard"],"detail-type":["Job Succeeded"]}"#)
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule(&rule)
        .event_bus_name(&bus)
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

    let entry = |detail_type: &str, job: &str| {
        PutEventsRequestEntry::builder()
            .event_bus_name(&bus)
            .source("switchyard")
            .detail_type(detail_type)
            .detail(format!(r#"{{"job_id":"{job}"}}"#))
            .build()
    };
    let put = events
        .put_events()
        .entries(entry("Job Started", "started-job"))
        .entries(entry("Job Succeeded", "succeeded-job"))
        .send()
        .await
        .unwrap();
    assert_eq!(put.failed_entry_count, 0);
    assert_eq!(put.entries().len(), 2);
    assert!(put.entries().iter().all(|e| e.event_id.is_some()));

    let received = sqs
        .receive_message()
        .queue_url(&queue_url)
        .wait_time_seconds(5)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    // Only the event that matches the rule's pattern arrives.
    assert_eq!(received.len(), 1, "{received:?}");
    let body: serde_json::Value =
        serde_json::from_str(received[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(body["detail-type"], "Job Succeeded");
    assert_eq!(body["detail"]["job_id"], "succeeded-job");

    events
        .remove_targets()
        .rule(&rule)
        .event_bus_name(&bus)
        .ids("queue")
        .send()
        .await
        .unwrap();
    events
        .delete_rule()
        .name(&rule)
        .event_bus_name(&bus)
        .send()
        .await
        .unwrap();
    events.delete_event_bus().name(&bus).send().await.unwrap();
    sqs.delete_queue()
        .queue_url(&queue_url)
        .send()
        .await
        .unwrap();
}
