//! The Store: results, the cost ledger, job timelines, spend totals and webhook deliveries.
//!
//! Every write is idempotent by a key the caller cannot get wrong twice: results by `job_id`
//! (the first write wins), usage events by their deterministic `event_id` (and the spend totals
//! move exactly once per event), status updates never move a job backwards, webhook deliveries
//! by their webhook id. So a redelivered job, replayed from a dead-letter queue or not, writes
//! nothing new.
//!
//! Two implementations: [`mongo::MongoStore`] (the official driver; only features that MongoDB,
//! Atlas and FerretDB all have, see `docs/store.md`) and [`embedded::EmbeddedStore`] (SQLite in
//! one local file, for `switchyard dev`).

pub mod embedded;
pub mod mongo;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use switchyard_core::contracts::{ChildOutcome, JobState, ResultDocument, UsageEvent};
use switchyard_core::money::Micros;
use switchyard_core::{BackendId, JobId, TenantId};
use url::Url;

pub use embedded::EmbeddedStore;
pub use mongo::MongoStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or refused the operation; worth retrying.
    #[error("{backend} store unavailable: {message}")]
    Unavailable {
        backend: &'static str,
        message: String,
    },
    /// What is stored cannot be read back as the contract says: a bug or a foreign writer.
    #[error("corrupt {what} in the {backend} store: {message}")]
    Corrupt {
        backend: &'static str,
        what: &'static str,
        message: String,
    },
    /// The store cannot be opened or set up (bad path, bad URI, failed migration).
    #[error("cannot open the {backend} store: {message}")]
    Open {
        backend: &'static str,
        message: String,
    },
}

impl StoreError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Unavailable { .. } => true,
            StoreError::Corrupt { .. } | StoreError::Open { .. } => false,
        }
    }
}

/// Whether a write changed anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    New,
    /// Already there (a redelivery or replay): nothing changed.
    Unchanged,
}

/// What `record_usage` did, and the event as stored (the first write's).
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub written: Written,
    pub stored: UsageEvent,
}

/// One step of a job's timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub job_id: JobId,
    pub tenant_id: TenantId,
    pub state: JobState,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_id: Option<BackendId>,
    /// An error message or a note for people (`replayed from switchyard.dlq...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A job's status and timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: JobId,
    pub tenant_id: TenantId,
    /// The furthest state reached (a dead-lettered job that is replayed moves on again).
    pub state: JobState,
    /// The highest attempt seen.
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_id: Option<BackendId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Every update in the order it was recorded.
    pub history: Vec<StatusUpdate>,
}

/// Which jobs `list_jobs` returns: newest updated first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub tenant_id: Option<TenantId>,
    pub state: Option<JobState>,
    /// Only jobs updated before this (paging backwards).
    pub updated_before: Option<DateTime<Utc>>,
    pub limit: usize,
}

/// A spend period of a tenant (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Period {
    Day(NaiveDate),
    Month { year: i32, month: u32 },
}

impl Period {
    pub fn day_of(at: DateTime<Utc>) -> Period {
        Period::Day(at.date_naive())
    }

    pub fn month_of(at: DateTime<Utc>) -> Period {
        Period::Month {
            year: at.year(),
            month: at.month(),
        }
    }

    /// The key prefix of the day buckets this period covers: `2026-12-01` or `2026-12-`.
    pub fn day_prefix(self) -> String {
        match self {
            Period::Day(day) => day_key(day),
            Period::Month { year, month } => format!("{year:04}-{month:02}-"),
        }
    }
}

/// The spend bucket key of a day.
pub fn day_key(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// The minute bucket of an instant: `2026-12-01T17:55`.
pub fn minute_key(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M").to_string()
}

/// Outcomes finished in one minute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MinuteVolume {
    /// `2026-12-01T17:55`, UTC.
    pub minute: String,
    pub succeeded: u64,
    pub failed: u64,
}

/// Latency of the results one backend produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LatencyStats {
    pub backend_id: BackendId,
    pub count: u64,
    pub p50_ms: u64,
    pub p90_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

/// Money spent by one tenant on one model on one day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CostRow {
    pub tenant_id: TenantId,
    pub model: String,
    /// `2026-12-01`, UTC.
    pub day: String,
    pub cost_micros: Micros,
    pub events: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookState {
    Pending,
    Delivered,
    /// Every scheduled attempt failed.
    Exhausted,
}

impl WebhookState {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookState::Pending => "pending",
            WebhookState::Delivered => "delivered",
            WebhookState::Exhausted => "exhausted",
        }
    }

    pub fn parse(text: &str) -> Option<WebhookState> {
        match text {
            "pending" => Some(WebhookState::Pending),
            "delivered" => Some(WebhookState::Delivered),
            "exhausted" => Some(WebhookState::Exhausted),
            _ => None,
        }
    }
}

/// A webhook to deliver, and how its delivery went so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// The `webhook-id` header: stable across attempts, the receiver's idempotency key.
    pub webhook_id: String,
    pub job_id: JobId,
    pub tenant_id: TenantId,
    pub url: Url,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<String>,
    /// The exact body sent on every attempt (the signature covers it).
    pub payload: String,
    pub state: WebhookState,
    pub attempts: u32,
    /// When the next attempt is due (while pending); a claim pushes it out by the lease.
    pub next_attempt_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl WebhookDelivery {
    /// The webhook id of a job's outcome: one per job, whatever the number of redeliveries.
    pub fn id_for(job_id: JobId) -> String {
        format!("msg_{job_id}")
    }
}

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookAttempt {
    /// The due time the claim set (`next_attempt_at` of the claimed delivery): the attempt is
    /// recorded only while the claim still holds.
    pub claimed_until: DateTime<Utc>,
    pub at: DateTime<Utc>,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub next: AttemptNext,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptNext {
    Delivered,
    RetryAt(DateTime<Utc>),
    Exhausted,
}

/// What the dead-letter tools last did to one letter. Kafka cannot delete a letter from its
/// topic, so this is how a replayed or purged letter stays out of the next listing and a
/// repeated replay does not send it again; on SQS it finishes a replay that was killed
/// between sending the copy and deleting the letter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LetterMark {
    pub dead_letter_id: ulid::Ulid,
    /// The dead-letter queue it sits on.
    pub dlq: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    /// Copies sent by replays, all told.
    pub copies: u32,
    /// Replayed (moved) or purged: no longer listed, never replayed again unless asked.
    pub removed: bool,
    pub last_action: LetterAction,
    pub last_at: DateTime<Utc>,
    /// The audit record of the run that did it.
    pub audit_id: ulid::Ulid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LetterAction {
    /// A copy was sent and the letter removed.
    Replayed,
    /// A copy was sent and the letter kept (`--keep`).
    Copied,
    Purged,
}

/// Who replayed or purged what, when, and how it went: one record per run of
/// `switchyard dlq replay | purge`, written when the run starts and again when it ends, so a
/// run that was killed shows as never finished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqAudit {
    pub audit_id: ulid::Ulid,
    /// `replay` or `purge`.
    pub action: String,
    /// `$SWITCHYARD_OPERATOR`, else the login name, and the host.
    pub operator: String,
    pub transport: String,
    /// The filters as given on the command line.
    pub filters: String,
    /// Where a replay sent its copies: `source queues` or the `--to` queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// `running`, `completed`, `interrupted`, or `failed: why`.
    pub outcome: String,
    /// Letters read, letters the filters matched, letters done (replayed or purged), letters
    /// skipped (already replayed or purged), letters that failed.
    pub scanned: u64,
    pub matched: u64,
    pub done: u64,
    pub skipped: u64,
    pub failed: u64,
}

/// Where results, usage, timelines and webhook deliveries are kept.
pub trait Store: Clone + Send + Sync + 'static {
    /// Creates collections/tables and indexes. Idempotent; run at start-up.
    fn init(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes a usage event and adds its cost to the tenant's spend totals, both exactly once
    /// per `event_id`, whatever crashes or concurrent deliveries happen in between. A second
    /// write of the id (a redelivery that re-ran the call, at another cost or on another day)
    /// changes nothing and returns the first, stored event: that is what was charged.
    fn record_usage(
        &self,
        event: &UsageEvent,
    ) -> impl Future<Output = Result<Recorded, StoreError>> + Send;

    /// Writes a job's result; the first write wins.
    fn put_result(
        &self,
        result: &ResultDocument,
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;

    /// Adds a step to a job's timeline; the state moves forward only (a dead-lettered job may
    /// move on after a replay).
    fn record_status(
        &self,
        update: &StatusUpdate,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn result(
        &self,
        job_id: JobId,
    ) -> impl Future<Output = Result<Option<ResultDocument>, StoreError>> + Send;

    fn job(
        &self,
        job_id: JobId,
    ) -> impl Future<Output = Result<Option<JobRecord>, StoreError>> + Send;

    fn list_jobs(
        &self,
        filter: &JobFilter,
    ) -> impl Future<Output = Result<Vec<JobRecord>, StoreError>> + Send;

    /// A job's usage events, in event id order.
    fn usage_of_job(
        &self,
        job_id: JobId,
    ) -> impl Future<Output = Result<Vec<UsageEvent>, StoreError>> + Send;

    /// What a tenant spent in a period, from the spend totals.
    fn spend(
        &self,
        tenant_id: &TenantId,
        period: Period,
    ) -> impl Future<Output = Result<Micros, StoreError>> + Send;

    /// Results finished per minute in `[since, until)`, oldest first.
    fn volume_per_minute(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<MinuteVolume>, StoreError>> + Send;

    /// Latency percentiles per backend over results finished in `[since, until)`.
    fn latency_by_backend(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<LatencyStats>, StoreError>> + Send;

    /// Cost by tenant, model and day over usage in `[since, until)`.
    fn cost_by_tenant_model_day(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<CostRow>, StoreError>> + Send;

    /// Queues a webhook; a second enqueue of the same webhook id changes nothing.
    fn enqueue_webhook(
        &self,
        delivery: &WebhookDelivery,
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;

    /// Takes up to `limit` pending deliveries due at `now`, pushing each one's due time out by
    /// `lease` so that no other dispatcher takes it meanwhile; a dispatcher that dies holding
    /// one leaves it to be taken again when the lease ends.
    fn claim_due_webhooks(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<WebhookDelivery>, StoreError>> + Send;

    /// Records an attempt of a delivery (its count goes up by one) if the claim it was made
    /// under still holds; `false` when it does not (the lease ran out and another dispatcher
    /// took the delivery over), and nothing is written: a stale dispatcher can neither undo a
    /// delivery nor exhaust one.
    fn record_webhook_attempt(
        &self,
        webhook_id: &str,
        attempt: &WebhookAttempt,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    fn webhook(
        &self,
        webhook_id: &str,
    ) -> impl Future<Output = Result<Option<WebhookDelivery>, StoreError>> + Send;

    /// Records a child's outcome in its parent's join (the first record of a child wins) and
    /// returns every child's outcome, in `siblings` order, once each of them has one.
    fn record_child(
        &self,
        parent: JobId,
        child: &ChildOutcome,
        siblings: &[String],
    ) -> impl Future<Output = Result<Option<Vec<ChildOutcome>>, StoreError>> + Send;

    /// Remembers what was done to a letter (replaces the earlier mark).
    fn mark_letter(&self, mark: &LetterMark)
    -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The marks of those of `ids` that have one.
    fn letter_marks(
        &self,
        ids: &[ulid::Ulid],
    ) -> impl Future<Output = Result<Vec<LetterMark>, StoreError>> + Send;

    /// Writes a dead-letter audit record (replaces one with its id).
    fn put_dlq_audit(
        &self,
        audit: &DlqAudit,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The latest `limit` audit records, newest first.
    fn dlq_audits(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DlqAudit>, StoreError>> + Send;
}

/// The join is complete when every sibling has an outcome: them, in `siblings` order.
pub(crate) fn complete_join(
    mut recorded: Vec<ChildOutcome>,
    siblings: &[String],
) -> Option<Vec<ChildOutcome>> {
    let mut ordered = Vec::with_capacity(siblings.len());
    for name in siblings {
        let index = recorded.iter().position(|c| &c.name == name)?;
        ordered.push(recorded.swap_remove(index));
    }
    Some(ordered)
}

/// How far a state is along; a status update never moves a job to a lower rank.
pub(crate) fn state_rank(state: JobState) -> i32 {
    match state {
        JobState::Submitted => 0,
        JobState::Routed => 1,
        JobState::Started => 2,
        JobState::DeadLettered => 3,
        JobState::Failed | JobState::Succeeded => 4,
        // Recorded in the timeline, never the job's state.
        JobState::WebhookExhausted => -1,
    }
}

/// Whether `next` replaces `current` as a job's state.
pub(crate) fn advances(current: JobState, next: JobState) -> bool {
    // A replayed dead letter starts over; everything else only moves forward.
    next != JobState::WebhookExhausted
        && (state_rank(next) > state_rank(current)
            || (current == JobState::DeadLettered && next != JobState::DeadLettered))
}

/// Nearest-rank percentiles of sorted latencies.
pub(crate) fn latency_stats(backend_id: BackendId, sorted: &[u64]) -> LatencyStats {
    let at = |p: f64| -> u64 {
        if sorted.is_empty() {
            return 0;
        }
        let rank = (p * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    };
    LatencyStats {
        backend_id,
        count: sorted.len() as u64,
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        max_ms: sorted.last().copied().unwrap_or(0),
    }
}

/// A store chosen by configuration.
#[derive(Clone, Debug)]
pub enum AnyStore {
    Embedded(EmbeddedStore),
    Mongo(MongoStore),
}

impl AnyStore {
    /// Opens an existing store without creating anything, for read-only tools: a wrong path
    /// is an error, not an empty database.
    pub async fn open_existing(
        config: &switchyard_core::config::StoreConfig,
    ) -> Result<AnyStore, StoreError> {
        use switchyard_core::config::StoreConfig;
        match config {
            StoreConfig::Embedded { path } => {
                let file = path.join("switchyard.sqlite3");
                if !file.is_file() {
                    return Err(StoreError::Open {
                        backend: "embedded",
                        message: format!(
                            "no store at {} (set store.embedded.path, or SWITCHYARD_STORE__EMBEDDED__PATH)",
                            file.display()
                        ),
                    });
                }
                Ok(AnyStore::Embedded(EmbeddedStore::open(&file)?))
            }
            StoreConfig::Mongo { uri, database } => {
                Ok(AnyStore::Mongo(MongoStore::connect(uri, database).await?))
            }
        }
    }

    /// Opens the configured store (connecting, creating the file) and initialises it.
    pub async fn open(
        config: &switchyard_core::config::StoreConfig,
    ) -> Result<AnyStore, StoreError> {
        use switchyard_core::config::StoreConfig;
        let store = match config {
            StoreConfig::Embedded { path } => {
                AnyStore::Embedded(EmbeddedStore::open(&path.join("switchyard.sqlite3"))?)
            }
            StoreConfig::Mongo { uri, database } => {
                AnyStore::Mongo(MongoStore::connect(uri, database).await?)
            }
        };
        store.init().await?;
        Ok(store)
    }
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Embedded($store) => $call.await,
            AnyStore::Mongo($store) => $call.await,
        }
    };
}

impl Store for AnyStore {
    async fn init(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.init())
    }
    async fn record_usage(&self, event: &UsageEvent) -> Result<Recorded, StoreError> {
        dispatch!(self, s => s.record_usage(event))
    }
    async fn put_result(&self, result: &ResultDocument) -> Result<Written, StoreError> {
        dispatch!(self, s => s.put_result(result))
    }
    async fn record_status(&self, update: &StatusUpdate) -> Result<(), StoreError> {
        dispatch!(self, s => s.record_status(update))
    }
    async fn result(&self, job_id: JobId) -> Result<Option<ResultDocument>, StoreError> {
        dispatch!(self, s => s.result(job_id))
    }
    async fn job(&self, job_id: JobId) -> Result<Option<JobRecord>, StoreError> {
        dispatch!(self, s => s.job(job_id))
    }
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError> {
        dispatch!(self, s => s.list_jobs(filter))
    }
    async fn usage_of_job(&self, job_id: JobId) -> Result<Vec<UsageEvent>, StoreError> {
        dispatch!(self, s => s.usage_of_job(job_id))
    }
    async fn spend(&self, tenant_id: &TenantId, period: Period) -> Result<Micros, StoreError> {
        dispatch!(self, s => s.spend(tenant_id, period))
    }
    async fn volume_per_minute(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<MinuteVolume>, StoreError> {
        dispatch!(self, s => s.volume_per_minute(since, until))
    }
    async fn latency_by_backend(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<LatencyStats>, StoreError> {
        dispatch!(self, s => s.latency_by_backend(since, until))
    }
    async fn cost_by_tenant_model_day(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<CostRow>, StoreError> {
        dispatch!(self, s => s.cost_by_tenant_model_day(since, until))
    }
    async fn enqueue_webhook(&self, delivery: &WebhookDelivery) -> Result<Written, StoreError> {
        dispatch!(self, s => s.enqueue_webhook(delivery))
    }
    async fn claim_due_webhooks(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        dispatch!(self, s => s.claim_due_webhooks(now, lease, limit))
    }
    async fn record_webhook_attempt(
        &self,
        webhook_id: &str,
        attempt: &WebhookAttempt,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.record_webhook_attempt(webhook_id, attempt))
    }
    async fn webhook(&self, webhook_id: &str) -> Result<Option<WebhookDelivery>, StoreError> {
        dispatch!(self, s => s.webhook(webhook_id))
    }
    async fn record_child(
        &self,
        parent: JobId,
        child: &ChildOutcome,
        siblings: &[String],
    ) -> Result<Option<Vec<ChildOutcome>>, StoreError> {
        dispatch!(self, s => s.record_child(parent, child, siblings))
    }
    async fn mark_letter(&self, mark: &LetterMark) -> Result<(), StoreError> {
        dispatch!(self, s => s.mark_letter(mark))
    }
    async fn letter_marks(&self, ids: &[ulid::Ulid]) -> Result<Vec<LetterMark>, StoreError> {
        dispatch!(self, s => s.letter_marks(ids))
    }
    async fn put_dlq_audit(&self, audit: &DlqAudit) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_dlq_audit(audit))
    }
    async fn dlq_audits(&self, limit: usize) -> Result<Vec<DlqAudit>, StoreError> {
        dispatch!(self, s => s.dlq_audits(limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_only_move_forward_except_out_of_the_dead_letter_queue() {
        use JobState::*;
        let cases = [
            (Submitted, Routed, true),
            (Routed, Started, true),
            (Started, Succeeded, true),
            (Succeeded, Started, false),
            (Succeeded, Failed, false),
            (Started, Routed, false),
            (Started, DeadLettered, true),
            (DeadLettered, Routed, true),
            (DeadLettered, DeadLettered, false),
            (Failed, DeadLettered, false),
            (Started, WebhookExhausted, false),
            (Succeeded, WebhookExhausted, false),
        ];
        for (current, next, expected) in cases {
            assert_eq!(advances(current, next), expected, "{current:?} → {next:?}");
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let id = BackendId::new("b").unwrap();
        let sorted: Vec<u64> = (1..=100).collect();
        let stats = latency_stats(id.clone(), &sorted);
        assert_eq!(
            (stats.p50_ms, stats.p90_ms, stats.p99_ms, stats.max_ms),
            (50, 90, 99, 100)
        );
        let one = latency_stats(id.clone(), &[7]);
        assert_eq!((one.p50_ms, one.p99_ms, one.count), (7, 7, 1));
        assert_eq!(latency_stats(id, &[]).count, 0);
    }

    #[test]
    fn periods_name_their_day_buckets() {
        let at = DateTime::parse_from_rfc3339("2026-12-01T23:59:59Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(Period::day_of(at).day_prefix(), "2026-12-01");
        assert_eq!(Period::month_of(at).day_prefix(), "2026-12-");
        assert_eq!(minute_key(at), "2026-12-01T23:59");
    }
}
