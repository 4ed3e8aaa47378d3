//! Message headers (Kafka headers, SQS message attributes) and the names Switchyard uses.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

/// Header name → value. Sorted, so what a test or a dead letter shows is stable.
pub type Headers = BTreeMap<String, String>;

/// The W3C trace context of the message.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
pub const CONTENT_TYPE: &str = "content-type";
/// Attempt number of this delivery (1 on first delivery), for transports that count it
/// themselves by republishing.
pub const ATTEMPT: &str = "switchyard-attempt";
/// RFC 3339 time of the first failure.
pub const FIRST_FAILED_AT: &str = "switchyard-first-failed-at";
/// The last retryable error, for the dead letter.
pub const LAST_ERROR: &str = "switchyard-last-error";
/// How many times this message has been replayed from a dead-letter queue.
pub const REPLAYS: &str = "switchyard-replays";

/// The time of the first failure, as a transport that republishes retries stamped it.
pub fn first_failed_at(headers: &Headers) -> Option<DateTime<Utc>> {
    headers
        .get(FIRST_FAILED_AT)
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(|t| t.with_timezone(&Utc))
}
