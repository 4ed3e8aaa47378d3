//! The usage event (`switchyard.usage/v1`): one line of the cost ledger.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::contracts::tag::schema_tag;
use crate::ids::{BackendId, JobId, TenantId};
use crate::money::Micros;
use crate::rates::Usage;

schema_tag!(
    /// `switchyard.usage/v1`
    UsageSchema = "switchyard.usage/v1"
);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageEvent {
    pub schema: UsageSchema,
    /// Deterministic: `<job_id>:<call>`, so a replayed write of the same call is a no-op.
    pub event_id: String,
    pub job_id: JobId,
    pub tenant_id: TenantId,
    pub backend_id: BackendId,
    pub provider: String,
    pub model: String,
    pub usage: Usage,
    pub cost_micros: Micros,
    /// The rates table version that priced this event.
    pub rates_version: String,
    pub latency_ms: u64,
    pub occurred_at: DateTime<Utc>,
}

impl UsageEvent {
    /// The event id of call `call` (`main`, `classifier`, ...) of a job: stable across retries and
    /// redeliveries, which is what makes ledger writes idempotent.
    pub fn event_id_for(job_id: JobId, call: &str) -> String {
        format!("{job_id}:{call}")
    }
}
