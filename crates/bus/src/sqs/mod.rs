//! SQS (aws-sdk-sqs). Queue names map to SQS names (`switchyard.jobs.batch` →
//! `<prefix>jobs-batch`); leases are visibility timeouts.
//!
//! - Receive: long polling in a background task that keeps a small buffer full, so `next` is
//!   cancel-safe (a receive in flight is never dropped with messages in it).
//! - `ack` = a delete, batched with whatever other acks wait (DeleteMessageBatch); `nack(delay)` = ChangeMessageVisibility to the delay (rounded up to
//!   whole seconds, SQS's unit): the same message comes back, its receive count — the attempt —
//!   raised; `extend` = ChangeMessageVisibility; `dead_letter` sends a dead letter to the
//!   `switchyard.dlq.<queue>` queue, then deletes the original.
//! - `ensure` creates the DLQ and the queue with a redrive policy (`maxReceiveCount`) as a
//!   safety net behind the runtime's own dead-lettering (a consumer that crashes on a message
//!   forever still gets it moved).
//! - Bodies SQS cannot carry (non-UTF-8, control characters) travel base64-encoded with an
//!   attribute saying so; bodies over the size limit go to S3 (claim check) and the message
//!   carries the reference.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use switchyard_core::QueueName;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    Bus, BusError, Consumer, Delivery, Headers, Outgoing, QueueDepth, Rejection,
    dead_letter_message, headers,
};

const TRANSPORT: &str = "sqs";
/// Attribute holding the partition key (standard queues have no message groups).
const KEY: &str = "switchyard-key";
/// Attribute set when the body is base64 because SQS could not carry it as is.
const BODY_ENCODING: &str = "switchyard-body-encoding";
/// Attribute with the `s3://` location of a claim-checked body.
const CLAIM_CHECK: &str = "switchyard-claim-check";
/// SQS's message attributes limit is 10.
const MAX_ATTRIBUTES: usize = 10;

/// SQS settings, from `[bus.sqs]`.
#[derive(Clone, Debug)]
pub struct SqsSettings {
    pub queue_prefix: String,
    /// Where bodies over `max_body_bytes` go; without it, such messages are refused.
    pub claim_check_bucket: Option<String>,
    pub wait_time: Duration,
    /// The lease a receive starts with.
    pub visibility_timeout: Duration,
    /// Redrive policy: receives before SQS itself moves a message to the DLQ.
    pub max_receive_count: u32,
    /// Body size beyond which the claim check is used (SQS's classic limit: 256 KiB, less
    /// room for attributes).
    pub max_body_bytes: usize,
    /// Path-style S3 addressing, for emulators.
    pub s3_force_path_style: bool,
    /// Long polls in flight per consumer; one receive returns at most 10 messages, so a busy
    /// worker needs several to stay fed.
    pub receivers: usize,
}

impl Default for SqsSettings {
    fn default() -> Self {
        SqsSettings {
            queue_prefix: "switchyard-".into(),
            claim_check_bucket: None,
            wait_time: Duration::from_secs(20),
            visibility_timeout: Duration::from_secs(60),
            max_receive_count: 10,
            max_body_bytes: 240 * 1024,
            s3_force_path_style: false,
            receivers: 2,
        }
    }
}

#[derive(Clone)]
pub struct SqsBus {
    inner: Arc<SqsInner>,
}

struct SqsInner {
    settings: SqsSettings,
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
    urls: Mutex<HashMap<QueueName, String>>,
}

impl std::fmt::Debug for SqsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsBus")
            .field("queue_prefix", &self.inner.settings.queue_prefix)
            .finish_non_exhaustive()
    }
}

fn sqs_error(error: impl std::fmt::Display) -> BusError {
    BusError::transport(TRANSPORT, error)
}

/// The SDK's errors print only their kind; the service's code and message are in the source.
fn service_error<E: std::error::Error + 'static>(
    error: aws_sdk_sqs::error::SdkError<E>,
) -> BusError {
    sqs_error(aws_sdk_sqs::error::DisplayErrorContext(error))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SqsBus {
    /// Builds the clients from an AWS config (credentials, region, endpoint).
    pub fn new(aws: &aws_config::SdkConfig, settings: SqsSettings) -> SqsBus {
        let s3_config = aws_sdk_s3::config::Builder::from(aws)
            .force_path_style(settings.s3_force_path_style)
            .build();
        SqsBus {
            inner: Arc::new(SqsInner {
                sqs: aws_sdk_sqs::Client::new(aws),
                s3: aws_sdk_s3::Client::from_conf(s3_config),
                settings,
                urls: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// `switchyard.jobs.batch` → `<prefix>jobs-batch`; SQS names allow no dots.
    pub fn physical_name(&self, queue: &QueueName) -> String {
        let logical = queue.as_str();
        let logical = logical.strip_prefix("switchyard.").unwrap_or(logical);
        format!(
            "{}{}",
            self.inner.settings.queue_prefix,
            logical.replace('.', "-")
        )
    }

    async fn url(&self, queue: &QueueName) -> Result<String, BusError> {
        if let Some(url) = lock(&self.inner.urls).get(queue) {
            return Ok(url.clone());
        }
        let url = self
            .inner
            .sqs
            .get_queue_url()
            .queue_name(self.physical_name(queue))
            .send()
            .await
            .map_err(|error| {
                if error
                    .as_service_error()
                    .is_some_and(aws_sdk_sqs::operation::get_queue_url::GetQueueUrlError::is_queue_does_not_exist)
                {
                    BusError::UnknownQueue(queue.to_string())
                } else {
                    service_error(error)
                }
            })?
            .queue_url
            .ok_or_else(|| sqs_error("GetQueueUrl returned no URL"))?;
        lock(&self.inner.urls).insert(queue.clone(), url.clone());
        Ok(url)
    }

    async fn create(
        &self,
        queue: &QueueName,
        attributes: Vec<(QueueAttributeName, String)>,
    ) -> Result<String, BusError> {
        let mut request = self
            .inner
            .sqs
            .create_queue()
            .queue_name(self.physical_name(queue));
        for (name, value) in attributes {
            request = request.attributes(name, value);
        }
        let url = request
            .send()
            .await
            .map_err(service_error)?
            .queue_url
            .ok_or_else(|| sqs_error("CreateQueue returned no URL"))?;
        lock(&self.inner.urls).insert(queue.clone(), url.clone());
        Ok(url)
    }

    async fn arn(&self, url: &str) -> Result<String, BusError> {
        self.inner
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(service_error)?
            .attributes
            .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn))
            .ok_or_else(|| sqs_error("GetQueueAttributes returned no ARN"))
    }

    /// The body and attributes SQS will carry for `message` (claim check and encoding done).
    async fn wire(
        &self,
        queue: &QueueName,
        message: &Outgoing,
    ) -> Result<(String, HashMap<String, MessageAttributeValue>), BusError> {
        let mut attributes = HashMap::new();
        let mut add = |name: &str, value: &str| -> Result<(), BusError> {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(sqs_error)?;
            attributes.insert(name.to_owned(), value);
            Ok(())
        };
        for (name, value) in &message.headers {
            add(name, value)?;
        }
        if let Some(key) = &message.key {
            add(KEY, key)?;
        }
        let body = if message.body.len() > self.inner.settings.max_body_bytes {
            let Some(bucket) = &self.inner.settings.claim_check_bucket else {
                return Err(BusError::TooLarge {
                    size: message.body.len(),
                    limit: self.inner.settings.max_body_bytes,
                });
            };
            let key = format!("claims/{}/{}", self.physical_name(queue), ulid::Ulid::new());
            self.inner
                .s3
                .put_object()
                .bucket(bucket)
                .key(&key)
                .body(message.body.clone().into())
                .send()
                .await
                .map_err(|error| sqs_error(aws_sdk_s3::error::DisplayErrorContext(error)))?;
            let location = format!("s3://{bucket}/{key}");
            add(CLAIM_CHECK, &location)?;
            format!(r#"{{"claim_check":"{location}"}}"#)
        } else {
            match std::str::from_utf8(&message.body) {
                Ok(text) if sqs_can_carry(text) => text.to_owned(),
                _ => {
                    add(BODY_ENCODING, "base64")?;
                    base64::engine::general_purpose::STANDARD.encode(&message.body)
                }
            }
        };
        if attributes.len() > MAX_ATTRIBUTES {
            return Err(sqs_error(format!(
                "{} headers; SQS carries at most {MAX_ATTRIBUTES} message attributes",
                attributes.len()
            )));
        }
        Ok((body, attributes))
    }

    /// The original bytes of a received message (claim check fetched, encoding undone).
    async fn unwire(&self, body: &str, headers: &mut Headers) -> Result<Vec<u8>, BusError> {
        if let Some(location) = headers.get(CLAIM_CHECK) {
            let (bucket, key) = parse_s3(location)?;
            let object = self
                .inner
                .s3
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|error| sqs_error(aws_sdk_s3::error::DisplayErrorContext(error)))?;
            let bytes = object.body.collect().await.map_err(sqs_error)?.into_bytes();
            return Ok(bytes.to_vec());
        }
        if headers.get(BODY_ENCODING).is_some_and(|e| e == "base64") {
            headers.remove(BODY_ENCODING);
            return base64::engine::general_purpose::STANDARD
                .decode(body)
                .map_err(sqs_error);
        }
        Ok(body.as_bytes().to_vec())
    }

    async fn prepare(&self, message: aws_sdk_sqs::types::Message) -> Received {
        let received_at = tokio::time::Instant::now();
        let mut headers = Headers::new();
        for (name, value) in message.message_attributes.unwrap_or_default() {
            if let Some(value) = value.string_value {
                headers.insert(name, value);
            }
        }
        let key = headers.remove(KEY);
        let attributes = message.attributes.unwrap_or_default();
        let attempt = attributes
            .get(&MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        // SQS cannot stamp a redelivered message; the first receive is when the first
        // (failed) attempt began, which is as close as it gets.
        let first_receive = attributes
            .get(&MessageSystemAttributeName::ApproximateFirstReceiveTimestamp)
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(DateTime::<Utc>::from_timestamp_millis);
        let first_failed_at =
            headers::first_failed_at(&headers).or(if attempt > 1 { first_receive } else { None });
        let receipt = message.receipt_handle.unwrap_or_default();
        let body = match self
            .unwire(message.body.as_deref().unwrap_or_default(), &mut headers)
            .await
        {
            Ok(body) => body,
            Err(error) => {
                // Leave it to come back after its timeout; the error surfaces to the worker.
                return Err(error);
            }
        };
        Ok(Prepared {
            received_at,
            receipt,
            key,
            headers,
            body,
            attempt,
            first_failed_at,
        })
    }

    /// Makes a received message visible again at once.
    async fn release(&self, url: &str, receipt: &str) {
        if let Err(error) = self
            .inner
            .sqs
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await
        {
            warn!(message = "Failed to release a message.", error = %aws_sdk_sqs::error::DisplayErrorContext(error));
        }
    }

    /// The claim-checked body is no longer needed once its message is gone.
    async fn delete_claim(&self, location: &str) {
        if let Ok((bucket, key)) = parse_s3(location)
            && let Err(error) = self
                .inner
                .s3
                .delete_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
        {
            warn!(message = "Failed to delete claim-checked body.", error = %aws_sdk_s3::error::DisplayErrorContext(error), location);
        }
    }
}

/// What the dead-letter tools need ([`crate::dlq`]).
impl SqsBus {
    /// A pass over the dead-letter queue `dlq` that holds what it reads for `hold` at a time.
    pub async fn browse_dead_letters(
        &self,
        dlq: &QueueName,
        hold: Duration,
        max_bytes: usize,
    ) -> Result<crate::dlq::SqsBrowse, BusError> {
        crate::dlq::SqsBrowse::start(self, dlq, hold, max_bytes).await
    }

    pub(crate) async fn queue_url(&self, queue: &QueueName) -> Result<String, BusError> {
        self.url(queue).await
    }

    /// Up to ten messages, invisible for `hold`, their bodies made whole; `wait` seconds of
    /// long polling.
    pub(crate) async fn receive_held(
        &self,
        url: &str,
        hold: Duration,
        wait: i32,
    ) -> Result<Vec<crate::dlq::HeldMessage>, BusError> {
        let output = self
            .inner
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait)
            .visibility_timeout(visibility_seconds(hold))
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(service_error)?;
        let mut held = Vec::new();
        for message in output.messages.unwrap_or_default() {
            let mut headers = Headers::new();
            for (name, value) in message.message_attributes.unwrap_or_default() {
                if let Some(value) = value.string_value {
                    headers.insert(name, value);
                }
            }
            let key = headers.remove(KEY);
            let claim_check = headers.get(CLAIM_CHECK).cloned();
            let sent_at = message
                .attributes
                .unwrap_or_default()
                .get(&MessageSystemAttributeName::SentTimestamp)
                .and_then(|v| v.parse::<i64>().ok())
                .and_then(DateTime::<Utc>::from_timestamp_millis);
            let body = self
                .unwire(message.body.as_deref().unwrap_or_default(), &mut headers)
                .await?;
            headers.remove(CLAIM_CHECK);
            held.push(crate::dlq::HeldMessage {
                id: message.message_id.unwrap_or_default(),
                receipt: message.receipt_handle.unwrap_or_default(),
                claim_check,
                sent_at,
                body,
                headers,
                key,
            });
        }
        Ok(held)
    }

    /// Sets the visibility of every receipt, ten at a time.
    pub(crate) async fn set_visibility_all(
        &self,
        url: &str,
        receipts: &[&str],
        timeout: Duration,
    ) -> Result<(), BusError> {
        for chunk in receipts.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(index, receipt)| {
                    aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(index.to_string())
                        .receipt_handle(*receipt)
                        .visibility_timeout(visibility_seconds(timeout))
                        .build()
                        .map_err(sqs_error)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let output = self
                .inner
                .sqs
                .change_message_visibility_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(service_error)?;
            if let Some(failed) = output.failed.first() {
                return Err(sqs_error(format!(
                    "{} of {} visibility changes failed: {}",
                    output.failed.len(),
                    chunk.len(),
                    failed.message.as_deref().unwrap_or(&failed.code)
                )));
            }
        }
        Ok(())
    }

    pub(crate) async fn delete_held(&self, url: &str, receipt: &str) -> Result<(), BusError> {
        self.inner
            .sqs
            .delete_message()
            .queue_url(url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(service_error)?;
        Ok(())
    }

    pub(crate) async fn delete_claim_of(&self, location: &str) {
        self.delete_claim(location).await;
    }
}

/// Whole seconds, rounded up so a hold is never shorter than asked; SQS caps at 12 h.
fn visibility_seconds(timeout: Duration) -> i32 {
    let seconds = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    i32::try_from(seconds.min(12 * 3600)).unwrap_or(12 * 3600)
}

/// SQS accepts #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF.
fn sqs_can_carry(text: &str) -> bool {
    text.chars().all(|c| {
        matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
    })
}

fn parse_s3(location: &str) -> Result<(&str, &str), BusError> {
    location
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .ok_or_else(|| sqs_error(format!("bad claim-check location `{location}`")))
}

impl Bus for SqsBus {
    type Consumer = SqsConsumer;

    async fn ensure(&self, queues: &[QueueName]) -> Result<(), BusError> {
        let visibility = self.inner.settings.visibility_timeout.as_secs().to_string();
        for queue in queues {
            let dlq_url = self
                .create(
                    &queue.dead_letter(),
                    vec![(QueueAttributeName::MessageRetentionPeriod, "1209600".into())],
                )
                .await?;
            let dlq_arn = self.arn(&dlq_url).await?;
            let redrive = format!(
                r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{}"}}"#,
                self.inner.settings.max_receive_count
            );
            self.create(
                queue,
                vec![
                    (QueueAttributeName::VisibilityTimeout, visibility.clone()),
                    (QueueAttributeName::RedrivePolicy, redrive),
                ],
            )
            .await?;
        }
        Ok(())
    }

    async fn publish(&self, queue: &QueueName, message: Outgoing) -> Result<(), BusError> {
        let url = self.url(queue).await?;
        let (body, attributes) = self.wire(queue, &message).await?;
        self.inner
            .sqs
            .send_message()
            .queue_url(url)
            .message_body(body)
            .set_message_attributes(Some(attributes))
            .send()
            .await
            .map_err(service_error)?;
        Ok(())
    }

    async fn publish_batch(
        &self,
        queue: &QueueName,
        messages: Vec<Outgoing>,
    ) -> Result<(), BusError> {
        let url = self.url(queue).await?;
        // SendMessageBatch takes 10 entries and 256 KiB in all.
        let mut batch: Vec<SendMessageBatchRequestEntry> = Vec::new();
        let mut batch_bytes = 0usize;
        for message in &messages {
            let (body, attributes) = self.wire(queue, message).await?;
            let size = body.len()
                + attributes
                    .iter()
                    .map(|(k, v)| k.len() + v.string_value().map_or(0, str::len))
                    .sum::<usize>();
            if batch.len() == 10 || (batch_bytes + size > 250 * 1024 && !batch.is_empty()) {
                self.send_batch(&url, std::mem::take(&mut batch)).await?;
                batch_bytes = 0;
            }
            let entry = SendMessageBatchRequestEntry::builder()
                .id(batch.len().to_string())
                .message_body(body)
                .set_message_attributes(Some(attributes))
                .build()
                .map_err(sqs_error)?;
            batch.push(entry);
            batch_bytes += size;
        }
        if !batch.is_empty() {
            self.send_batch(&url, batch).await?;
        }
        Ok(())
    }

    async fn consume(&self, queue: &QueueName, _group: &str) -> Result<SqsConsumer, BusError> {
        let url = self.url(queue).await?;
        let receivers = self.inner.settings.receivers.max(1);
        let (tx, rx) = mpsc::channel(10 * receivers);
        let stop = CancellationToken::new();
        for _ in 0..receivers {
            tokio::spawn(receive_loop(
                self.clone(),
                url.clone(),
                tx.clone(),
                stop.clone(),
            ));
        }
        let (deleter, deletes) = mpsc::channel(1024);
        tokio::spawn(delete_loop(self.clone(), url.clone(), deletes));
        Ok(SqsConsumer {
            queue: queue.clone(),
            url,
            bus: self.clone(),
            rx,
            stop,
            deleter,
        })
    }

    async fn depth(&self, queue: &QueueName) -> Result<QueueDepth, BusError> {
        let url = self.url(queue).await?;
        let attributes = self
            .inner
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(service_error)?
            .attributes
            .unwrap_or_default();
        let get = |name: QueueAttributeName| -> u64 {
            attributes
                .get(&name)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(QueueDepth {
            ready: get(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                + get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
    }
}

impl SqsBus {
    async fn send_batch(
        &self,
        url: &str,
        entries: Vec<SendMessageBatchRequestEntry>,
    ) -> Result<(), BusError> {
        let mut pending = entries;
        // Entries can fail one by one (throttling); resend those, a few times.
        for _ in 0..3 {
            let output = self
                .inner
                .sqs
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(pending.clone()))
                .send()
                .await
                .map_err(service_error)?;
            if output.failed.is_empty() {
                return Ok(());
            }
            let failed: std::collections::HashSet<&str> =
                output.failed.iter().map(|f| f.id.as_str()).collect();
            pending.retain(|entry| failed.contains(entry.id.as_str()));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(sqs_error(format!(
            "{} entries of a batch could not be sent",
            pending.len()
        )))
    }
}

/// A received message made ready in the receive loop (claim check fetched, encoding undone),
/// so that `next` only takes from the buffer and stays cancel-safe.
#[derive(Debug)]
struct Prepared {
    received_at: tokio::time::Instant,
    receipt: String,
    key: Option<String>,
    headers: Headers,
    body: Vec<u8>,
    attempt: u32,
    first_failed_at: Option<DateTime<Utc>>,
}

type Received = Result<Prepared, BusError>;

/// One delete for the batcher: the receipt, the claim-checked body to remove after, and where
/// to report the outcome.
#[derive(Debug)]
struct DeleteRequest {
    receipt: String,
    claim_check: Option<String>,
    done: tokio::sync::oneshot::Sender<Result<(), BusError>>,
}

/// Deletes in batches of up to 10 (DeleteMessageBatch) whatever acks are waiting, without
/// waiting for more: no latency is added, and under load most deletes share a request. Runs
/// until every delivery holding a sender is gone.
async fn delete_loop(bus: SqsBus, url: String, mut rx: mpsc::Receiver<DeleteRequest>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 10 {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let mut request = bus.inner.sqs.delete_message_batch().queue_url(&url);
        let mut unbuildable = HashMap::new();
        for (i, delete) in batch.iter().enumerate() {
            match aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(&delete.receipt)
                .build()
            {
                Ok(entry) => request = request.entries(entry),
                Err(error) => {
                    unbuildable.insert(i.to_string(), error.to_string());
                }
            }
        }
        let outcome = request.send().await;
        let failures: HashMap<String, String> = match &outcome {
            Ok(output) => output
                .failed
                .iter()
                .map(|f| {
                    (
                        f.id.clone(),
                        f.message.clone().unwrap_or_else(|| f.code.clone()),
                    )
                })
                .collect(),
            Err(_) => HashMap::new(),
        };
        let batch_error = outcome.err().map(|error| service_error(error).to_string());
        for (i, delete) in batch.into_iter().enumerate() {
            let result = match (&batch_error, failures.get(&i.to_string())) {
                (Some(error), _) => Err(sqs_error(error)),
                (None, Some(error)) => Err(sqs_error(format!("delete refused: {error}"))),
                (None, None) => Ok(()),
            };
            if result.is_ok()
                && let Some(location) = delete.claim_check
            {
                let bus = bus.clone();
                tokio::spawn(async move { bus.delete_claim(&location).await });
            }
            let _ = delete.done.send(result);
        }
    }
}

/// Long-polls into a buffer of at most one receive's worth, until stopped.
async fn receive_loop(
    bus: SqsBus,
    url: String,
    tx: mpsc::Sender<Received>,
    stop: CancellationToken,
) {
    let wait = i32::try_from(bus.inner.settings.wait_time.as_secs())
        .unwrap_or(20)
        .min(20);
    let mut failures = 0u32;
    loop {
        // Wait for room first: a message received is leased, and a full buffer means nobody
        // would work on it before its lease runs.
        let permits = tokio::select! {
            () = stop.cancelled() => return,
            permits = tx.reserve_many(10) => match permits {
                Ok(permits) => permits,
                Err(_) => return,
            },
        };
        let received = tokio::select! {
            () = stop.cancelled() => return,
            received = bus
                .inner
                .sqs
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .wait_time_seconds(wait)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .message_system_attribute_names(
                    MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
                )
                .send() => received,
        };
        match received {
            Ok(output) => {
                failures = 0;
                for (permit, message) in permits.zip(output.messages.unwrap_or_default()) {
                    permit.send(bus.prepare(message).await);
                }
            }
            Err(error) => {
                failures += 1;
                let error = service_error(error);
                let delay = crate::backoff(
                    failures,
                    Duration::from_millis(200),
                    Duration::from_secs(20),
                );
                warn!(message = "SQS receive failed; backing off.", %error, delay_ms = delay.as_millis() as u64);
                if failures >= 3 {
                    let mut permits = permits;
                    if let Some(permit) = permits.next() {
                        permit.send(Err(error));
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

#[derive(Debug)]
pub struct SqsConsumer {
    queue: QueueName,
    url: String,
    bus: SqsBus,
    rx: mpsc::Receiver<Received>,
    stop: CancellationToken,
    deleter: mpsc::Sender<DeleteRequest>,
}

impl Drop for SqsConsumer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Consumer for SqsConsumer {
    type Delivery = SqsDelivery;

    async fn next(&mut self) -> Result<Option<SqsDelivery>, BusError> {
        loop {
            let Some(received) = self.rx.recv().await else {
                return Ok(None);
            };
            let prepared = received?;
            // Waited so long in the buffer that its lease may be gone: working on it now could
            // duplicate another worker's work. Hand it back to the queue instead.
            if prepared.received_at.elapsed() > self.bus.inner.settings.visibility_timeout / 2 {
                let bus = self.bus.clone();
                let url = self.url.clone();
                tokio::spawn(async move { bus.release(&url, &prepared.receipt).await });
                continue;
            }
            return Ok(Some(SqsDelivery {
                queue: self.queue.clone(),
                url: self.url.clone(),
                receipt: prepared.receipt,
                key: prepared.key,
                headers: prepared.headers,
                body: prepared.body,
                attempt: prepared.attempt,
                first_failed_at: prepared.first_failed_at,
                bus: self.bus.clone(),
                deleter: self.deleter.clone(),
            }));
        }
    }

    async fn close(mut self) {
        self.stop.cancel();
        // Buffered messages were received but never handed out: release them now rather than
        // leaving them invisible until their timeout.
        self.rx.close();
        while let Some(received) = self.rx.recv().await {
            if let Ok(prepared) = received {
                self.bus.release(&self.url, &prepared.receipt).await;
            }
        }
    }
}

#[derive(Debug)]
pub struct SqsDelivery {
    queue: QueueName,
    url: String,
    receipt: String,
    key: Option<String>,
    headers: Headers,
    body: Vec<u8>,
    attempt: u32,
    first_failed_at: Option<DateTime<Utc>>,
    bus: SqsBus,
    deleter: mpsc::Sender<DeleteRequest>,
}

impl SqsDelivery {
    async fn delete(self) -> Result<(), BusError> {
        let (done, outcome) = tokio::sync::oneshot::channel();
        let request = DeleteRequest {
            receipt: self.receipt,
            claim_check: self.headers.get(CLAIM_CHECK).cloned(),
            done,
        };
        self.deleter
            .send(request)
            .await
            .map_err(|_| sqs_error("the delete batcher stopped"))?;
        outcome
            .await
            .map_err(|_| sqs_error("the delete batcher dropped the request"))?
    }

    async fn set_visibility(&self, timeout: Duration) -> Result<(), BusError> {
        let seconds = visibility_seconds(timeout);
        self.bus
            .inner
            .sqs
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&self.receipt)
            .visibility_timeout(seconds)
            .send()
            .await
            .map_err(service_error)?;
        Ok(())
    }
}

impl Delivery for SqsDelivery {
    fn queue(&self) -> &QueueName {
        &self.queue
    }

    fn body(&self) -> &[u8] {
        &self.body
    }

    fn headers(&self) -> &Headers {
        &self.headers
    }

    fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    fn attempt(&self) -> u32 {
        self.attempt
    }

    fn first_failed_at(&self) -> Option<DateTime<Utc>> {
        self.first_failed_at
    }

    async fn ack(self) -> Result<(), BusError> {
        self.delete().await
    }

    async fn nack(self, delay: Duration, _error: &str) -> Result<(), BusError> {
        // SQS cannot rewrite a message's attributes, so the last error is not kept on it; the
        // runtime puts it in the dead letter's reason when the attempts run out.
        self.set_visibility(delay).await
    }

    async fn extend(&self, by: Duration) -> Result<(), BusError> {
        self.set_visibility(by).await
    }

    fn leased(&self) -> bool {
        true
    }

    async fn dead_letter(self, rejection: Rejection) -> Result<(), BusError> {
        let outgoing = dead_letter_message(
            &self.queue,
            &self.body,
            &self.headers,
            self.key.as_deref(),
            self.attempt,
            self.first_failed_at,
            &rejection,
        );
        // Durable in the DLQ first, then gone from the queue.
        self.bus
            .publish(&self.queue.dead_letter(), outgoing)
            .await?;
        self.delete().await
    }
}
