//! The Bus: how messages travel, and the worker runtime every worker runs on.
//!
//! One trait ([`Bus`]) with three transports: in-process ([`memory`]), Kafka and SQS. Routing,
//! inference and accounting code is generic over [`Bus`] and never names a transport.
//!
//! Semantics every transport provides (and the shared behaviour suite checks):
//! - at-least-once: a delivery is gone only once acked or dead-lettered; a delivery dropped
//!   without either comes back (lease expiry, uncommitted offset);
//! - `nack(delay)` redelivers no sooner than `delay`, with the attempt count raised by one;
//! - `dead_letter` puts a [`DeadLetter`] holding the original bytes on `switchyard.dlq.<queue>`,
//!   then removes the original;
//! - `extend` keeps a long job's lease from expiring.
//!
//! Architecture invariant: only this crate knows Kafka or SQS.

pub mod any;
pub mod dlq;
pub mod headers;
pub mod kafka;
pub mod memory;
pub mod runtime;
pub mod scheduler;
pub mod sqs;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use switchyard_core::QueueName;
use switchyard_core::contracts::{DeadLetter, ErrorClass};

pub use headers::Headers;

/// A message to publish.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outgoing {
    /// Partitioning key (tenant or job id): messages with one key keep their order on Kafka.
    pub key: Option<String>,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Outgoing {
    pub fn new(body: impl Into<Vec<u8>>) -> Outgoing {
        Outgoing {
            key: None,
            headers: Headers::new(),
            body: body.into(),
        }
    }

    pub fn with_key(mut self, key: impl Into<String>) -> Outgoing {
        self.key = Some(key.into());
        self
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Outgoing {
        self.headers.insert(name.to_owned(), value.into());
        self
    }
}

/// How many messages wait on a queue, as the transport reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Ready to be delivered (SQS visible messages, Kafka consumer lag).
    pub ready: u64,
    /// Delivered and not yet acked, or waiting out a retry delay.
    pub in_flight: u64,
}

/// Why a dead letter is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub class: ErrorClass,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("queue `{0}` does not exist; run `ensure` first")]
    UnknownQueue(String),
    #[error("message of {size} bytes exceeds the transport limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("{transport} error: {message}")]
    Transport {
        transport: &'static str,
        message: String,
    },
    #[error("the lease expired before the delivery was settled; it will be redelivered")]
    LeaseExpired,
}

impl BusError {
    pub fn transport(transport: &'static str, error: impl std::fmt::Display) -> BusError {
        BusError::Transport {
            transport,
            message: error.to_string(),
        }
    }
}

/// A transport.
pub trait Bus: Clone + Send + Sync + 'static {
    type Consumer: Consumer;

    /// Creates the queues and their dead-letter queues if missing. Idempotent.
    fn ensure(&self, queues: &[QueueName]) -> impl Future<Output = Result<(), BusError>> + Send;

    fn publish(
        &self,
        queue: &QueueName,
        message: Outgoing,
    ) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Publishes several messages; returns when all are durable.
    fn publish_batch(
        &self,
        queue: &QueueName,
        messages: Vec<Outgoing>,
    ) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Starts consuming `queue` as a member of `group` (consumers of one group share the work).
    fn consume(
        &self,
        queue: &QueueName,
        group: &str,
    ) -> impl Future<Output = Result<Self::Consumer, BusError>> + Send;

    fn depth(&self, queue: &QueueName)
    -> impl Future<Output = Result<QueueDepth, BusError>> + Send;
}

/// A stream of deliveries from one queue.
pub trait Consumer: Send + std::fmt::Debug + 'static {
    type Delivery: Delivery;

    /// The next delivery; waits for one. `None` once the consumer is closed.
    fn next(&mut self) -> impl Future<Output = Result<Option<Self::Delivery>, BusError>> + Send;

    /// Stops fetching; in-flight deliveries may still be settled. Commits what is done.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// One received message and its lease.
pub trait Delivery: Send + Sync + std::fmt::Debug + 'static {
    fn queue(&self) -> &QueueName;
    fn body(&self) -> &[u8];
    fn headers(&self) -> &Headers;
    fn key(&self) -> Option<&str>;
    /// 1 on first delivery, +1 for each redelivery (nack or lease expiry).
    fn attempt(&self) -> u32;
    /// When the first failure of this message happened, if any did.
    fn first_failed_at(&self) -> Option<DateTime<Utc>>;

    /// Done: the message is gone for good.
    fn ack(self) -> impl Future<Output = Result<(), BusError>> + Send;
    /// Failed, retryable: deliver again no sooner than `delay`, attempt + 1. `error` is kept for
    /// the dead letter should the attempts run out.
    fn nack(
        self,
        delay: Duration,
        error: &str,
    ) -> impl Future<Output = Result<(), BusError>> + Send;
    /// Keeps the lease for `by` more (long jobs).
    fn extend(&self, by: Duration) -> impl Future<Output = Result<(), BusError>> + Send;
    /// Whether the delivery holds a lease that runs out, so that `extend` does something. A
    /// transport without one (Kafka) spares the runtime a renewal timer per message. No
    /// default: a wrapper that forgot to forward it would quietly claim a lease.
    fn leased(&self) -> bool;
    /// Moves the original bytes to the dead-letter queue with why, then removes the original.
    fn dead_letter(self, rejection: Rejection)
    -> impl Future<Output = Result<(), BusError>> + Send;
}

/// The dead letter for a delivery; shared by the transports so every DLQ holds the same thing.
pub fn dead_letter_for(
    queue: &QueueName,
    body: &[u8],
    headers: &Headers,
    key: Option<&str>,
    attempts: u32,
    first_failed_at: Option<DateTime<Utc>>,
    rejection: &Rejection,
) -> DeadLetter {
    use base64::Engine as _;
    use switchyard_core::contracts::{DeadLetterSchema, OriginalMessage};

    let now = Utc::now();
    // Poison input may hold no ids; take them when the body is a job or a routed job.
    let (job_id, tenant_id) = ids_of(body);
    DeadLetter {
        schema: DeadLetterSchema,
        dead_letter_id: ulid::Ulid::new(),
        source_queue: queue.clone(),
        error_class: rejection.class,
        reason: rejection.reason.clone(),
        attempts,
        first_failed_at: first_failed_at.unwrap_or(now),
        last_failed_at: now,
        dead_lettered_at: now,
        job_id,
        tenant_id,
        original: OriginalMessage {
            body_base64: base64::engine::general_purpose::STANDARD.encode(body),
            headers: headers.clone(),
            key: key.map(str::to_owned),
        },
        replays: headers
            .get(headers::REPLAYS)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    }
}

/// The message a transport publishes to `queue.dead_letter()`: the encoded [`DeadLetter`],
/// keyed like the original so a tenant's letters stay together.
pub fn dead_letter_message(
    queue: &QueueName,
    body: &[u8],
    headers: &Headers,
    key: Option<&str>,
    attempts: u32,
    first_failed_at: Option<DateTime<Utc>>,
    rejection: &Rejection,
) -> Outgoing {
    let letter = dead_letter_for(
        queue,
        body,
        headers,
        key,
        attempts,
        first_failed_at,
        rejection,
    );
    let mut outgoing = Outgoing::new(switchyard_core::contracts::encode(&letter))
        .with_header(headers::CONTENT_TYPE, "application/json");
    outgoing.key = key.map(str::to_owned);
    outgoing
}

pub(crate) fn ids_of(
    body: &[u8],
) -> (
    Option<switchyard_core::JobId>,
    Option<switchyard_core::TenantId>,
) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (None, None);
    };
    let job = value.get("job").unwrap_or(&value);
    let job_id = job
        .get("job_id")
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse().ok());
    let tenant_id = job
        .get("tenant_id")
        .and_then(|v| v.as_str())
        .and_then(|s| switchyard_core::TenantId::new(s).ok());
    (job_id, tenant_id)
}

/// Exponential backoff with full jitter: a random delay in `[initial·2^(n-1) / 2, initial·2^(n-1)]`
/// capped at `max`, for the `n`th failed attempt.
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let ceiling = initial.saturating_mul(1u32 << exponent).min(max);
    // Half fixed, half random: spreads retries without ever retrying at once.
    let half = ceiling / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for _ in 0..100 {
            let first = backoff(1, initial, max);
            assert!(
                first >= Duration::from_millis(50) && first <= initial,
                "{first:?}"
            );
            let third = backoff(3, initial, max);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = backoff(40, initial, max);
            assert!(late >= Duration::from_secs(1) && late <= max, "{late:?}");
        }
    }

    #[test]
    fn dead_letters_keep_the_bytes_and_find_the_ids() {
        use base64::Engine as _;
        let queue = QueueName::new("switchyard.jobs.batch").unwrap();
        let body = br#"{"job_id":"01JDQ3Z4W5X6Y7Z8A9B0C1D2E3","tenant_id":"acme","priority":"x"}"#;
        let rejection = Rejection {
            class: ErrorClass::SchemaInvalid,
            reason: "/priority: bad".into(),
        };
        let letter = dead_letter_for(
            &queue,
            body,
            &Headers::new(),
            Some("acme"),
            1,
            None,
            &rejection,
        );
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&letter.original.body_base64)
            .unwrap();
        assert_eq!(decoded, body);
        assert_eq!(
            letter.job_id.unwrap().to_string(),
            "01JDQ3Z4W5X6Y7Z8A9B0C1D2E3"
        );
        assert_eq!(letter.tenant_id.as_ref().unwrap().as_str(), "acme");
        // It is itself a valid message.
        let bytes = switchyard_core::contracts::encode(&letter);
        switchyard_core::contracts::decode::<DeadLetter>(&bytes, 1 << 20).unwrap();

        let garbage = dead_letter_for(
            &queue,
            b"\xff\x00",
            &Headers::new(),
            None,
            1,
            None,
            &rejection,
        );
        assert_eq!(garbage.job_id, None);
    }
}
