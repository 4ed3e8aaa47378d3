//! The result document (`switchyard.result/v1`): one per job, stored and sent by webhook.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::contracts::ErrorClass;
use crate::contracts::job::TaskKind;
use crate::contracts::tag::schema_tag;
use crate::ids::{BackendId, JobId, TenantId};
use crate::money::Micros;

schema_tag!(
    /// `switchyard.result/v1`
    ResultSchema = "switchyard.result/v1"
);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultDocument {
    pub schema: ResultSchema,
    pub job_id: JobId,
    pub tenant_id: TenantId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_job_id: Option<JobId>,
    pub status: ResultStatus,
    pub task: TaskKind,
    /// The backend that produced the outcome (absent when the job never reached one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_id: Option<BackendId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    pub attempts: u32,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub latency_ms: u64,
    /// Total charged for the job, all calls included.
    pub cost_micros: Micros,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    Succeeded,
    Failed,
    /// Some subtasks of a `multi` job failed; each child says which.
    Partial,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    pub class: ErrorClass,
    pub message: String,
}

/// The payload of a result. Tagged by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Output {
    Detections(Detections),
    Text(TextOutput),
    Classification(Classification),
    Multi(MultiOutput),
    /// The output was too large to carry inline and lives in the blob store.
    Blob(BlobRef),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detections {
    pub image: ImageSize,
    pub detections: Vec<Detection>,
    pub timings_ms: StageTimings,
    pub batch_size: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSize {
    pub width: u32,
    pub height: u32,
}

/// One box, in pixels of the original image: `[x1, y1, x2, y2]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub class_id: u32,
    pub class_name: String,
    pub confidence: f32,
    pub bbox: [f32; 4],
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTimings {
    pub decode: f64,
    pub preprocess: f64,
    pub inference: f64,
    pub postprocess: f64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextOutput {
    pub text: String,
    /// The provider's reason, normalised: `stop`, `length`, `content_filter`, `tool_use`.
    pub finish_reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    pub labels: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MultiOutput {
    pub children: Vec<ChildOutcome>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildOutcome {
    pub name: String,
    pub job_id: JobId,
    pub status: ResultStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_id: Option<BackendId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Box<Output>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// `s3://bucket/key` or `file:///...` for the local blob store.
    pub uri: String,
    pub content_type: String,
    pub size_bytes: u64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
}
