//! The lifecycle event (`switchyard.event/v1`), published to EventBridge or a Kafka topic.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::contracts::TraceContext;
use crate::contracts::result::JobError;
use crate::contracts::tag::schema_tag;
use crate::ids::{BackendId, JobId, TenantId};
use crate::money::Micros;

schema_tag!(
    /// `switchyard.event/v1`
    EventSchema = "switchyard.event/v1"
);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    pub schema: EventSchema,
    /// `<job_id>:<state>`: one event per state per job, so a republished event deduplicates.
    pub event_id: String,
    pub job_id: JobId,
    pub tenant_id: TenantId,
    pub state: JobState,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_id: Option<BackendId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micros: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Submitted,
    Routed,
    Started,
    Succeeded,
    Failed,
    DeadLettered,
    /// Not a step of the job itself: its webhook could not be delivered on any attempt.
    WebhookExhausted,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Submitted,
        JobState::Routed,
        JobState::Started,
        JobState::Succeeded,
        JobState::Failed,
        JobState::DeadLettered,
        JobState::WebhookExhausted,
    ];

    /// The state named `text` (its `as_str`).
    pub fn parse(text: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Submitted => "submitted",
            JobState::Routed => "routed",
            JobState::Started => "started",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::DeadLettered => "dead_lettered",
            JobState::WebhookExhausted => "webhook_exhausted",
        }
    }

    /// The EventBridge `detail-type`: `Job Succeeded`, `Job Dead Lettered`, ...
    pub fn detail_type(self) -> &'static str {
        match self {
            JobState::Submitted => "Job Submitted",
            JobState::Routed => "Job Routed",
            JobState::Started => "Job Started",
            JobState::Succeeded => "Job Succeeded",
            JobState::Failed => "Job Failed",
            JobState::DeadLettered => "Job Dead Lettered",
            JobState::WebhookExhausted => "Webhook Exhausted",
        }
    }

    /// Whether the job can still change state after this one.
    pub fn is_terminal(self) -> bool {
        match self {
            JobState::Succeeded | JobState::Failed | JobState::DeadLettered => true,
            JobState::Submitted
            | JobState::Routed
            | JobState::Started
            | JobState::WebhookExhausted => false,
        }
    }
}
