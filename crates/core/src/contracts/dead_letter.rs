//! The dead letter (`switchyard.deadletter/v1`): a message that could not be processed, kept
//! verbatim with why, for an SRE to inspect and replay.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::contracts::ErrorClass;
use crate::contracts::tag::schema_tag;
use crate::ids::{JobId, TenantId};
use crate::tier::QueueName;

schema_tag!(
    /// `switchyard.deadletter/v1`
    DeadLetterSchema = "switchyard.deadletter/v1"
);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub schema: DeadLetterSchema,
    pub dead_letter_id: Ulid,
    /// The queue the message failed on; replay sends it back there.
    pub source_queue: QueueName,
    pub error_class: ErrorClass,
    pub reason: String,
    pub attempts: u32,
    pub first_failed_at: DateTime<Utc>,
    pub last_failed_at: DateTime<Utc>,
    pub dead_lettered_at: DateTime<Utc>,
    /// Read from the payload when it could be; poison input may have neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<TenantId>,
    pub original: OriginalMessage,
    /// How many times this letter has been replayed before.
    #[serde(default)]
    pub replays: u32,
}

/// The failed message exactly as it arrived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginalMessage {
    /// The body bytes, base64: never re-encoded, so undecodable input survives intact.
    pub body_base64: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The partition key, where the transport has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}
