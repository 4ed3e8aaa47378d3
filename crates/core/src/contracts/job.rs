//! The job envelope (`switchyard.job/v1`): what producers put on the tier queues.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::contracts::tag::schema_tag;
use crate::ids::{BackendId, JobId, PlanName, TenantId};
use crate::tier::Tier;

schema_tag!(
    /// `switchyard.job/v1`
    JobSchema = "switchyard.job/v1"
);

/// Largest inline payload, decoded. Keeps an envelope with base64 overhead under 256 KiB, the
/// classic SQS limit and well under Kafka's default 1 MB; anything larger goes by reference.
pub const MAX_INLINE_BYTES: usize = 192 * 1024;
/// Longest inline text, in characters, for the same reason.
pub const MAX_INLINE_TEXT_CHARS: usize = 192 * 1024;

/// One inference job as a producer submits it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobEnvelope {
    pub schema: JobSchema,
    pub job_id: JobId,
    pub tenant_id: TenantId,
    pub plan: PlanName,
    pub priority: Tier,
    pub task: Task,
    #[serde(default)]
    pub routing: RoutingHints,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<Callback>,
    /// The producer's own key for deduplicating submissions; results are keyed by `job_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub submitted_at: DateTime<Utc>,
    /// Labels the routing policy can match on (`legal`, `medical`, `bulk`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Free-form producer data, carried through to the result untouched.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
}

/// What to do. Tagged by `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// Object detection on one image.
    Detect(DetectTask),
    /// A chat completion over a list of messages.
    Chat(ChatTask),
    Summarize(SummarizeTask),
    /// Pick one (or several) of the given labels.
    Classify(ClassifyTask),
    /// Several subtasks on the same job, fanned out and joined into one result.
    Multi(MultiTask),
}

/// The task kinds, without their parameters: what routing rules and backends talk about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Detect,
    Chat,
    Summarize,
    Classify,
    Multi,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Detect => "detect",
            TaskKind::Chat => "chat",
            TaskKind::Summarize => "summarize",
            TaskKind::Classify => "classify",
            TaskKind::Multi => "multi",
        }
    }
}

impl Task {
    pub fn kind(&self) -> TaskKind {
        match self {
            Task::Detect(_) => TaskKind::Detect,
            Task::Chat(_) => TaskKind::Chat,
            Task::Summarize(_) => TaskKind::Summarize,
            Task::Classify(_) => TaskKind::Classify,
            Task::Multi(_) => TaskKind::Multi,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectTask {
    pub input: Input,
    #[serde(default)]
    pub params: DetectParams,
}

/// Overrides of the detector's defaults (Ultralytics: conf 0.25, IoU 0.7, max_det 300).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DetectParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iou: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_det: Option<u32>,
    /// Keep only these class ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<u32>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatTask {
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub params: GenerationParams,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummarizeTask {
    pub input: Input,
    /// A soft length target for the summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_words: Option<u32>,
    #[serde(default)]
    pub params: GenerationParams,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifyTask {
    pub input: Input,
    pub labels: Vec<String>,
    /// Several labels may apply at once.
    #[serde(default)]
    pub multi_label: bool,
    #[serde(default)]
    pub params: GenerationParams,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MultiTask {
    pub subtasks: Vec<Subtask>,
}

/// One branch of a `multi` job. Subtasks cannot nest another `multi`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Subtask {
    /// Unique within the job; names the child's part of the joined result.
    pub name: String,
    pub task: Task,
}

/// Generation settings passed through to the LLM provider.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        schema: serde_json::Value,
    },
}

/// The job's input: carried inline (small) or referenced (large). Tagged by `type`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Input {
    /// Bytes inline, base64 (standard alphabet, padded), at most [`MAX_INLINE_BYTES`] decoded.
    Inline {
        data_base64: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content_type: Option<String>,
    },
    /// UTF-8 text inline, for the LLM tasks.
    Text { text: String },
    /// A reference: `s3://bucket/key`, `https://...`, or `file:///...` inside the local blob
    /// store's directory (the embedded mode).
    Uri {
        uri: Url,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content_type: Option<String>,
        /// Size in bytes, when the producer knows it; lets a worker refuse early.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size_bytes: Option<u64>,
    },
}

/// What the producer wants the router to favour; all optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutingHints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimize: Option<Optimize>,
    /// Refuse backends whose estimated cost exceeds this, in USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<Decimal>,
    /// The result is worthless after this many milliseconds from `submitted_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Serve with exactly this backend (if policy allows pinning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimize {
    Cost,
    Latency,
    Accuracy,
}

/// Where to announce the outcome (Standard Webhooks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    pub url: Url,
    /// Names the signing secret; the secret itself comes from the environment, never a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<String>,
}

/// W3C trace context, carried across every hop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    pub traceparent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}
