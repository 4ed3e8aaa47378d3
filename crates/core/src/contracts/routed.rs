//! The routed job (`switchyard.routed/v1`): a job plus the router's decision, on a backend queue.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::contracts::job::{Callback, JobEnvelope};
use crate::contracts::tag::schema_tag;
use crate::ids::{BackendId, JobId};
use crate::tier::QueueName;

schema_tag!(
    /// `switchyard.routed/v1`
    RoutedSchema = "switchyard.routed/v1"
);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoutedJob {
    pub schema: RoutedSchema,
    pub job: JobEnvelope,
    pub decision: Decision,
    /// Set on the children of a `multi` job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
}

impl RoutedJob {
    /// The bytes of a routed job whose `job` is `job_bytes` as they are, not encoded again from
    /// the decoded job: the same message to every reader (`decode` gives the `RoutedJob` that
    /// `contracts::encode` of the decoded job would), for a copy instead of a second encoding,
    /// which for a job with an inline image is most of what routing it costs.
    ///
    /// `job_bytes` must be a valid `switchyard.job/v1` envelope: the bytes a job was decoded
    /// from, as the worker runtime hands them to the router.
    pub fn encode_around(
        job_bytes: &[u8],
        decision: &Decision,
        parent: Option<&ParentRef>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(job_bytes.len() + 512);
        out.extend_from_slice(br#"{"schema":""#);
        out.extend_from_slice(RoutedSchema::ID.as_bytes());
        out.extend_from_slice(br#"","job":"#);
        out.extend_from_slice(job_bytes);
        out.extend_from_slice(br#","decision":"#);
        write_json(&mut out, decision);
        if let Some(parent) = parent {
            out.extend_from_slice(br#","parent":"#);
            write_json(&mut out, parent);
        }
        out.push(b'}');
        out
    }
}

fn write_json(out: &mut Vec<u8>, value: &impl Serialize) {
    if let Err(error) = serde_json::to_writer(out, value) {
        // As `contracts::encode`: these types hold no maps with non-string keys, and writing
        // to a `Vec` cannot fail.
        unreachable!("contract types always serialize: {error}");
    }
}

/// Why this backend, and what it is expected to cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub backend_id: BackendId,
    pub queue: QueueName,
    /// The policy rule that matched.
    pub rule: String,
    pub strategy: Strategy,
    /// For people: which constraints held, what was skipped and why.
    pub reason: String,
    pub estimated_cost_usd: Decimal,
    pub estimated_latency_ms: u64,
    /// Where to go next if this backend fails for good, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<BackendId>,
    pub policy_version: String,
    pub decided_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Cheapest,
    Fastest,
    MostAccurate,
    Pinned,
    Weighted,
    LlmClassify,
    Fallback,
}

/// A child's link to its `multi` parent: enough for the join to finish the parent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    pub job_id: JobId,
    /// The subtask's name in the parent.
    pub subtask: String,
    /// Every subtask name of the parent, this one included: the join is done when each has
    /// an outcome.
    pub siblings: Vec<String>,
    /// The parent's callback; children announce nothing themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<Callback>,
}
