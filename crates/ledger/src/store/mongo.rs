//! The MongoDB store (official driver), also run on FerretDB in tests.
//!
//! Only features that MongoDB, Atlas and FerretDB 1.x all support are used (see
//! `docs/store.md`; FerretDB 1.x makes single-document updates atomic only when built with
//! `deploy/local`'s patch): single-document atomic updates (`$inc`, `$push`, `$pull`, `$max`,
//! `$setOnInsert`, upserts), `findAndModify`, secondary indexes and `$match`/`$group`/`$sum`
//! aggregations. No multi-document transactions: FerretDB lacks them, and the spend protocol
//! below does not need them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt as _;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Client, Collection, Database, IndexModel};
use switchyard_core::contracts::{ChildOutcome, JobState, ResultDocument, UsageEvent};
use switchyard_core::money::Micros;
use switchyard_core::{JobId, TenantId};

use crate::store::embedded::{apply_attempt, group_latencies, status_str};
use crate::store::{
    CostRow, DlqAudit, JobFilter, JobRecord, LatencyStats, LetterMark, MinuteVolume, Period,
    Recorded, StatusUpdate, Store, StoreError, WebhookAttempt, WebhookDelivery, WebhookState,
    Written, advances, complete_join, day_key, minute_key,
};

const BACKEND: &str = "mongo";

/// Spend buckets per tenant and day.
pub const SPEND_SHARDS: u32 = 64;

/// The bucket of an event: FNV-1a of its id, stable across processes and releases.
fn spend_shard(event_id: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in event_id.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % SPEND_SHARDS
}

/// A MongoDB database holding the collections `results`, `usage_events`, `spend`, `jobs` and
/// `webhooks`.
#[derive(Clone, Debug)]
pub struct MongoStore {
    database: Database,
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "used as `map_err(unavailable)`, which hands the error over by value"
)]
fn unavailable(error: mongodb::error::Error) -> StoreError {
    StoreError::Unavailable {
        backend: BACKEND,
        message: error.to_string(),
    }
}

fn corrupt(what: &'static str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        backend: BACKEND,
        what,
        message: error.to_string(),
    }
}

fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(write)) => write.code == 11000,
        ErrorKind::Command(command) => command.code == 11000,
        _ => false,
    }
}

fn date(at: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(at.timestamp_millis())
}

fn chrono_of(at: &bson::DateTime) -> Result<DateTime<Utc>, StoreError> {
    use chrono::TimeZone as _;
    Utc.timestamp_millis_opt(at.timestamp_millis())
        .single()
        .ok_or_else(|| corrupt("timestamp", "out of range"))
}

fn to_doc<T: serde::Serialize>(value: &T) -> Result<Document, StoreError> {
    bson::to_document(value).map_err(|error| corrupt("document", error))
}

fn from_doc<T: serde::de::DeserializeOwned>(
    what: &'static str,
    document: Document,
) -> Result<T, StoreError> {
    bson::from_document(document).map_err(|error| corrupt(what, error))
}

fn embedded<T: serde::de::DeserializeOwned>(
    what: &'static str,
    mut document: Document,
) -> Result<T, StoreError> {
    match document.remove("doc") {
        Some(Bson::Document(inner)) => from_doc(what, inner),
        _ => Err(corrupt(what, "no `doc` field")),
    }
}

/// The `doc` of every document of `cursor`, decoded.
async fn all_embedded<T: serde::de::DeserializeOwned>(
    what: &'static str,
    cursor: mongodb::Cursor<Document>,
) -> Result<Vec<T>, StoreError> {
    let documents: Vec<Document> = cursor.try_collect().await.map_err(unavailable)?;
    documents.into_iter().map(|d| embedded(what, d)).collect()
}

fn i64_of(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl MongoStore {
    /// Connects to `uri` and uses `database`. The URI may hold credentials: it never appears in
    /// an error.
    pub async fn connect(uri: &str, database: &str) -> Result<MongoStore, StoreError> {
        let client = Client::with_uri_str(uri)
            .await
            .map_err(|error| StoreError::Open {
                backend: BACKEND,
                message: format!(
                    "cannot use the MongoDB URI (not shown, it may hold credentials): {}",
                    redact(&error.to_string(), uri)
                ),
            })?;
        Ok(MongoStore::new(client.database(database)))
    }

    pub fn new(database: Database) -> MongoStore {
        MongoStore { database }
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    fn collection(&self, name: &str) -> Collection<Document> {
        self.database.collection(name)
    }

    /// `accumulator` over usage events in `[since, until)`, by (tenant, model, day).
    async fn group_usage(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        accumulator: Document,
    ) -> Result<std::collections::BTreeMap<(String, String, String), i64>, StoreError> {
        let rows: Vec<Document> = self
            .collection("usage_events")
            .aggregate([
                doc! { "$match": { "occurred_at": { "$gte": date(since), "$lt": date(until) } } },
                doc! { "$group": {
                    "_id": { "tenant_id": "$tenant_id", "model": "$model", "day": "$day" },
                    "value": accumulator,
                } },
            ])
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        let mut out = std::collections::BTreeMap::new();
        for row in rows {
            let key = row.get_document("_id").map_err(|e| corrupt("cost", e))?;
            let field = |name: &str| -> Result<String, StoreError> {
                Ok(key
                    .get_str(name)
                    .map_err(|e| corrupt("cost", e))?
                    .to_owned())
            };
            let value = match row.get("value") {
                Some(Bson::Int32(n)) => i64::from(*n),
                Some(Bson::Int64(n)) => *n,
                _ => return Err(corrupt("cost", "the sum is not an integer")),
            };
            out.insert((field("tenant_id")?, field("model")?, field("day")?), value);
        }
        Ok(out)
    }

    fn load_job(document: &Document) -> Result<JobRecord, StoreError> {
        let job_id: JobId = document
            .get_str("_id")
            .map_err(|e| corrupt("job", e))?
            .parse()
            .map_err(|e| corrupt("job id", e))?;
        let tenant = document
            .get_str("tenant_id")
            .map_err(|e| corrupt("job", e))?;
        let state = document.get_str("state").map_err(|e| corrupt("job", e))?;
        let history = match document.get_array("history") {
            Ok(entries) => entries
                .iter()
                .map(|entry| match entry {
                    Bson::Document(d) => from_doc::<StatusUpdate>("status update", d.clone()),
                    _ => Err(corrupt("status update", "not a document")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Err(_) => Vec::new(),
        };
        let backend_id = match document.get_str("backend_id") {
            Ok(b) => Some(switchyard_core::BackendId::new(b).map_err(|e| corrupt("backend", e))?),
            Err(_) => None,
        };
        Ok(JobRecord {
            job_id,
            tenant_id: TenantId::new(tenant).map_err(|e| corrupt("tenant id", e))?,
            state: JobState::parse(state).ok_or_else(|| corrupt("job state", state))?,
            attempts: document
                .get_i64("attempts")
                .ok()
                .and_then(|a| u32::try_from(a).ok())
                .unwrap_or(0),
            backend_id,
            created_at: chrono_of(
                document
                    .get_datetime("created_at")
                    .map_err(|e| corrupt("job", e))?,
            )?,
            updated_at: chrono_of(
                document
                    .get_datetime("updated_at")
                    .map_err(|e| corrupt("job", e))?,
            )?,
            history,
        })
    }
}

/// `text` with every occurrence of the URI and of its password removed.
fn redact(text: &str, uri: &str) -> String {
    let mut out = text.replace(uri, "<uri>");
    if let Ok(parsed) = url::Url::parse(uri)
        && let Some(password) = parsed.password()
        && !password.is_empty()
    {
        out = out.replace(password, "<password>");
    }
    out
}

async fn index(
    collection: &Collection<Document>,
    keys: Document,
    unique: bool,
) -> Result<(), StoreError> {
    let model = IndexModel::builder()
        .keys(keys)
        .options(IndexOptions::builder().unique(unique).build())
        .build();
    collection.create_index(model).await.map_err(unavailable)?;
    Ok(())
}

/// The FerretDB version behind `build_info` when it is a 1.x release without isolated writes.
/// Those read a document, change it in Go and write it back by `_id` with no transaction
/// (FerretDB#3040), so two concurrent updates of one document keep only one of them: lost
/// timeline steps, lost spend. `deploy/local` builds FerretDB with a patch that serialises
/// such writes and says so in `buildInfo`.
fn unisolated_ferretdb(build_info: &Document) -> Option<&str> {
    let version = build_info.get_str("ferretdbVersion").ok()?;
    let isolated = build_info.get_bool("isolatedWrites").unwrap_or(false);
    (version.starts_with("v1.") && !isolated).then_some(version)
}

impl Store for MongoStore {
    async fn init(&self) -> Result<(), StoreError> {
        // A warning, not a refusal: one writer at a time (a single `switchyard dev`) is safe.
        if let Ok(info) = self.database.run_command(doc! { "buildInfo": 1 }).await
            && let Some(version) = unisolated_ferretdb(&info)
        {
            tracing::warn!(
                message = "FerretDB 1.x does not isolate concurrent updates of a document: \
                           with more than one writer, job steps and spend can be lost. Use \
                           MongoDB, or FerretDB built by deploy/local (patched).",
                ferretdb = version
            );
        }
        let results = self.collection("results");
        index(&results, doc! { "finished_at": 1 }, false).await?;
        index(&results, doc! { "tenant_id": 1, "finished_at": 1 }, false).await?;
        let usage = self.collection("usage_events");
        index(&usage, doc! { "job_id": 1 }, false).await?;
        index(&usage, doc! { "occurred_at": 1 }, false).await?;
        index(&usage, doc! { "tenant_id": 1, "occurred_at": 1 }, false).await?;
        index(
            &self.collection("spend"),
            doc! { "tenant_id": 1, "day": 1 },
            false,
        )
        .await?;
        let jobs = self.collection("jobs");
        index(&jobs, doc! { "updated_at": -1 }, false).await?;
        index(&jobs, doc! { "tenant_id": 1, "updated_at": -1 }, false).await?;
        index(&jobs, doc! { "state": 1, "updated_at": -1 }, false).await?;
        index(
            &self.collection("join_children"),
            doc! { "parent": 1 },
            false,
        )
        .await?;
        index(
            &self.collection("webhooks"),
            doc! { "state": 1, "next_at": 1 },
            false,
        )
        .await?;
        index(
            &self.collection("dlq_audits"),
            doc! { "started_at": -1 },
            false,
        )
        .await?;
        Ok(())
    }

    /// Exactly once without transactions: the increment and the proof that it happened are
    /// one single-document update — `$inc` guarded by `applied: {$ne: event_id}` together with
    /// `$push` of the id — on the day's spend bucket, and the id is never removed. Whatever
    /// crashes in between and however many deliveries race, one update matches. Each day has
    /// [`SPEND_SHARDS`] buckets (by a hash of the event id) so no bucket's `applied` list
    /// grows past MongoDB's 16 MiB document limit (about 25 million events per tenant-day).
    async fn record_usage(&self, event: &UsageEvent) -> Result<Recorded, StoreError> {
        let events = self.collection("usage_events");
        let spend = self.collection("spend");
        let (written, stored) = match events
            .insert_one(doc! {
                "_id": &event.event_id,
                "job_id": event.job_id.to_string(),
                "tenant_id": event.tenant_id.as_str(),
                "model": &event.model,
                "cost_micros": event.cost_micros.0,
                "occurred_at": date(event.occurred_at),
                "day": day_key(event.occurred_at.date_naive()),
                "doc": to_doc(event)?,
            })
            .await
        {
            Ok(_) => (Written::New, event.clone()),
            // A redelivery: what was stored first is what is charged, whatever this run cost.
            Err(error) if is_duplicate_key(&error) => {
                let existing = events
                    .find_one(doc! { "_id": &event.event_id })
                    .await
                    .map_err(unavailable)?
                    .ok_or_else(|| corrupt("usage event", "vanished after a duplicate key"))?;
                (
                    Written::Unchanged,
                    embedded::<UsageEvent>("usage event", existing)?,
                )
            }
            Err(error) => return Err(unavailable(error)),
        };
        let day = day_key(stored.occurred_at.date_naive());
        let bucket = format!(
            "{}|{day}|{:02}",
            stored.tenant_id.as_str(),
            spend_shard(&stored.event_id)
        );
        let created = spend
            .update_one(
                doc! { "_id": &bucket },
                doc! { "$setOnInsert": {
                    "tenant_id": stored.tenant_id.as_str(),
                    "day": &day,
                    "cost_micros": 0_i64,
                    "events": 0_i64,
                    "applied": [],
                } },
            )
            .upsert(true)
            .await;
        match created {
            Ok(_) => {}
            // Two first events of a bucket racing: the other upsert created it.
            Err(error) if is_duplicate_key(&error) => {}
            Err(error) => return Err(unavailable(error)),
        }
        let applied = spend
            .update_one(
                doc! { "_id": &bucket, "applied": { "$ne": &stored.event_id } },
                doc! {
                    "$inc": { "cost_micros": stored.cost_micros.0, "events": 1_i64 },
                    "$push": { "applied": &stored.event_id },
                },
            )
            .await
            .map_err(unavailable)?;
        // Nothing matched: applied before, which the bucket must show; anything else would be
        // a charge silently lost.
        if applied.matched_count == 0
            && spend
                .find_one(doc! { "_id": &bucket, "applied": &stored.event_id })
                .projection(doc! { "_id": 1 })
                .await
                .map_err(unavailable)?
                .is_none()
        {
            return Err(corrupt(
                "spend",
                format!("bucket {bucket} neither took nor holds {}", stored.event_id),
            ));
        }
        Ok(Recorded { written, stored })
    }

    async fn put_result(&self, result: &ResultDocument) -> Result<Written, StoreError> {
        let mut document = doc! {
            "_id": result.job_id.to_string(),
            "tenant_id": result.tenant_id.as_str(),
            "status": status_str(result.status),
            "latency_ms": i64_of(result.latency_ms),
            "cost_micros": result.cost_micros.0,
            "finished_at": date(result.finished_at),
            "minute": minute_key(result.finished_at),
            "doc": to_doc(result)?,
        };
        if let Some(backend) = &result.backend_id {
            document.insert("backend_id", backend.as_str());
        }
        match self.collection("results").insert_one(document).await {
            Ok(_) => Ok(Written::New),
            Err(error) if is_duplicate_key(&error) => Ok(Written::Unchanged),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// One round trip in the common case: the first step of a job is an insert; later ones
    /// read the state, decide in Rust (the same `advances` as the embedded store) and apply
    /// one update guarded by the state they read, retrying if another writer moved it first.
    async fn record_status(&self, update: &StatusUpdate) -> Result<(), StoreError> {
        let jobs = self.collection("jobs");
        let job_id = update.job_id.to_string();
        let attempt = i64::from(update.attempt.unwrap_or(0));
        let at = date(update.at);
        let entry = to_doc(update)?;
        for _ in 0..8 {
            let current = jobs
                .find_one(doc! { "_id": &job_id })
                .projection(doc! { "state": 1 })
                .await
                .map_err(unavailable)?;
            let Some(current) = current else {
                let mut fresh = doc! {
                    "_id": &job_id,
                    "tenant_id": update.tenant_id.as_str(),
                    "state": update.state.as_str(),
                    "attempts": attempt,
                    "created_at": at,
                    "updated_at": at,
                    "history": [entry.clone()],
                };
                if let Some(backend) = &update.backend_id {
                    fresh.insert("backend_id", backend.as_str());
                }
                match jobs.insert_one(fresh).await {
                    Ok(_) => return Ok(()),
                    Err(error) if is_duplicate_key(&error) => continue,
                    Err(error) => return Err(unavailable(error)),
                }
            };
            let state_text = current.get_str("state").map_err(|e| corrupt("job", e))?;
            let state =
                JobState::parse(state_text).ok_or_else(|| corrupt("job state", state_text))?;
            let mut change = doc! {
                "$push": { "history": entry.clone() },
                "$max": { "attempts": attempt, "updated_at": at },
            };
            if advances(state, update.state) {
                let mut set = doc! { "state": update.state.as_str() };
                if let Some(backend) = &update.backend_id {
                    set.insert("backend_id", backend.as_str());
                }
                change.insert("$set", set);
            }
            let outcome = jobs
                .update_one(doc! { "_id": &job_id, "state": state_text }, change)
                .await
                .map_err(unavailable)?;
            if outcome.matched_count == 1 {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable {
            backend: BACKEND,
            message: format!("job {job_id} changed state under every attempt to update it"),
        })
    }

    async fn result(&self, job_id: JobId) -> Result<Option<ResultDocument>, StoreError> {
        self.collection("results")
            .find_one(doc! { "_id": job_id.to_string() })
            .await
            .map_err(unavailable)?
            .map(|d| embedded("result", d))
            .transpose()
    }

    async fn job(&self, job_id: JobId) -> Result<Option<JobRecord>, StoreError> {
        match self
            .collection("jobs")
            .find_one(doc! { "_id": job_id.to_string() })
            .await
            .map_err(unavailable)?
        {
            Some(document) => Ok(Some(MongoStore::load_job(&document)?)),
            None => Ok(None),
        }
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError> {
        let mut query = doc! {};
        if let Some(tenant) = &filter.tenant_id {
            query.insert("tenant_id", tenant.as_str());
        }
        if let Some(state) = filter.state {
            query.insert("state", state.as_str());
        }
        if let Some(before) = filter.updated_before {
            query.insert("updated_at", doc! { "$lt": date(before) });
        }
        let documents: Vec<Document> = self
            .collection("jobs")
            .find(query)
            .sort(doc! { "updated_at": -1, "_id": -1 })
            .limit(i64::try_from(filter.limit).unwrap_or(i64::MAX))
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        let mut jobs = Vec::with_capacity(documents.len());
        for document in documents {
            jobs.push(MongoStore::load_job(&document)?);
        }
        Ok(jobs)
    }

    async fn usage_of_job(&self, job_id: JobId) -> Result<Vec<UsageEvent>, StoreError> {
        let cursor = self
            .collection("usage_events")
            .find(doc! { "job_id": job_id.to_string() })
            .sort(doc! { "_id": 1 })
            .await
            .map_err(unavailable)?;
        all_embedded("usage event", cursor).await
    }

    async fn spend(&self, tenant_id: &TenantId, period: Period) -> Result<Micros, StoreError> {
        let query = match period {
            Period::Day(day) => doc! { "tenant_id": tenant_id.as_str(), "day": day_key(day) },
            Period::Month { .. } => {
                let prefix = period.day_prefix();
                // Day keys are `YYYY-MM-DD`: the month's are the strings in [prefix, prefix~).
                doc! {
                    "tenant_id": tenant_id.as_str(),
                    "day": { "$gte": &prefix, "$lt": format!("{prefix}~") },
                }
            }
        };
        let buckets: Vec<Document> = self
            .collection("spend")
            .find(query)
            .projection(doc! { "cost_micros": 1 })
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        let mut total = Micros::ZERO;
        for bucket in buckets {
            let cost = bucket
                .get_i64("cost_micros")
                .map_err(|e| corrupt("spend", e))?;
            total = total
                .checked_add(Micros(cost))
                .ok_or_else(|| corrupt("spend", "total overflows"))?;
        }
        Ok(total)
    }

    async fn volume_per_minute(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<MinuteVolume>, StoreError> {
        let rows: Vec<Document> = self
            .collection("results")
            .aggregate([
                doc! { "$match": { "finished_at": { "$gte": date(since), "$lt": date(until) } } },
                doc! { "$group": {
                    "_id": { "minute": "$minute", "status": "$status" },
                    "n": { "$sum": 1 },
                } },
            ])
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        let mut minutes: std::collections::BTreeMap<String, MinuteVolume> = Default::default();
        for row in rows {
            let key = row.get_document("_id").map_err(|e| corrupt("volume", e))?;
            let minute = key.get_str("minute").map_err(|e| corrupt("volume", e))?;
            let failed = key.get_str("status").is_ok_and(|s| s == "failed");
            let n = match row.get("n") {
                Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
                Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
                _ => return Err(corrupt("volume", "count is not an integer")),
            };
            let entry = minutes
                .entry(minute.to_owned())
                .or_insert_with(|| MinuteVolume {
                    minute: minute.to_owned(),
                    succeeded: 0,
                    failed: 0,
                });
            if failed {
                entry.failed += n;
            } else {
                entry.succeeded += n;
            }
        }
        Ok(minutes.into_values().collect())
    }

    async fn latency_by_backend(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<LatencyStats>, StoreError> {
        // Percentiles are computed here: `$percentile` needs MongoDB 7 and FerretDB lacks it.
        let rows: Vec<Document> = self
            .collection("results")
            .find(doc! {
                "finished_at": { "$gte": date(since), "$lt": date(until) },
                "backend_id": { "$exists": true },
            })
            .projection(doc! { "backend_id": 1, "latency_ms": 1 })
            .sort(doc! { "backend_id": 1 })
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        let mut pairs = Vec::with_capacity(rows.len());
        for row in rows {
            let backend = row
                .get_str("backend_id")
                .map_err(|e| corrupt("result", e))?;
            let latency = row
                .get_i64("latency_ms")
                .map_err(|e| corrupt("result", e))?;
            pairs.push((backend.to_owned(), u64::try_from(latency).unwrap_or(0)));
        }
        pairs.sort();
        group_latencies(pairs.into_iter())
    }

    async fn cost_by_tenant_model_day(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<CostRow>, StoreError> {
        // Two pipelines of one accumulator each: FerretDB 1.24 computes only the first
        // accumulator of a `$group` (the others come back 0), and both work on MongoDB.
        let costs = self
            .group_usage(since, until, doc! { "$sum": "$cost_micros" })
            .await?;
        let counts = self.group_usage(since, until, doc! { "$sum": 1 }).await?;
        let mut out = Vec::with_capacity(costs.len());
        for ((tenant, model, day), cost) in costs {
            let events = counts
                .get(&(tenant.clone(), model.clone(), day.clone()))
                .copied()
                .unwrap_or(0);
            out.push(CostRow {
                tenant_id: TenantId::new(tenant).map_err(|e| corrupt("tenant id", e))?,
                model,
                day,
                cost_micros: Micros(cost),
                events: u64::try_from(events).unwrap_or(0),
            });
        }
        out.sort_by(|a, b| {
            (&a.day, a.tenant_id.as_str(), &a.model).cmp(&(&b.day, b.tenant_id.as_str(), &b.model))
        });
        Ok(out)
    }

    async fn enqueue_webhook(&self, delivery: &WebhookDelivery) -> Result<Written, StoreError> {
        match self
            .collection("webhooks")
            .insert_one(doc! {
                "_id": &delivery.webhook_id,
                "state": delivery.state.as_str(),
                "next_at": date(delivery.next_attempt_at),
                "doc": to_doc(delivery)?,
            })
            .await
        {
            Ok(_) => Ok(Written::New),
            Err(error) if is_duplicate_key(&error) => Ok(Written::Unchanged),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn claim_due_webhooks(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        let webhooks = self.collection("webhooks");
        let lease_end =
            now + chrono::Duration::from_std(lease).unwrap_or_else(|_| chrono::Duration::hours(1));
        let mut claimed = Vec::new();
        // One findAndModify per delivery: each claim is atomic, so two dispatchers never
        // take the same delivery.
        while claimed.len() < limit {
            let Some(document) = webhooks
                .find_one_and_update(
                    doc! { "state": WebhookState::Pending.as_str(), "next_at": { "$lte": date(now) } },
                    doc! { "$set": {
                        "next_at": date(lease_end),
                        "doc.next_attempt_at": lease_end.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                    } },
                )
                .sort(doc! { "next_at": 1 })
                .return_document(ReturnDocument::After)
                .await
                .map_err(unavailable)?
            else {
                break;
            };
            claimed.push(embedded("webhook", document)?);
        }
        Ok(claimed)
    }

    async fn record_webhook_attempt(
        &self,
        webhook_id: &str,
        attempt: &WebhookAttempt,
    ) -> Result<bool, StoreError> {
        let webhooks = self.collection("webhooks");
        let claim = doc! {
            "_id": webhook_id,
            "state": WebhookState::Pending.as_str(),
            "next_at": date(attempt.claimed_until),
        };
        let Some(document) = webhooks
            .find_one(claim.clone())
            .await
            .map_err(unavailable)?
        else {
            return Ok(false);
        };
        let mut delivery: WebhookDelivery = embedded("webhook", document)?;
        apply_attempt(&mut delivery, attempt);
        // Guarded by the claim again: whoever took the delivery over since the read wins.
        let replaced = webhooks
            .replace_one(
                claim,
                doc! {
                    "_id": webhook_id,
                    "state": delivery.state.as_str(),
                    "next_at": date(delivery.next_attempt_at),
                    "doc": to_doc(&delivery)?,
                },
            )
            .await
            .map_err(unavailable)?;
        Ok(replaced.matched_count == 1)
    }

    /// One insert per child (`_id` = parent:name, the first one wins), then one read of the
    /// parent's children: no read-modify-write on a shared document.
    async fn record_child(
        &self,
        parent: JobId,
        child: &ChildOutcome,
        siblings: &[String],
    ) -> Result<Option<Vec<ChildOutcome>>, StoreError> {
        let children = self.collection("join_children");
        let parent = parent.to_string();
        match children
            .insert_one(doc! {
                "_id": format!("{parent}:{}", child.name),
                "parent": &parent,
                "doc": to_doc(child)?,
            })
            .await
        {
            Ok(_) => {}
            Err(error) if is_duplicate_key(&error) => {}
            Err(error) => return Err(unavailable(error)),
        }
        let cursor = children
            .find(doc! { "parent": &parent })
            .await
            .map_err(unavailable)?;
        let recorded: Vec<ChildOutcome> = all_embedded("child outcome", cursor).await?;
        Ok(complete_join(recorded, siblings))
    }

    async fn webhook(&self, webhook_id: &str) -> Result<Option<WebhookDelivery>, StoreError> {
        self.collection("webhooks")
            .find_one(doc! { "_id": webhook_id })
            .await
            .map_err(unavailable)?
            .map(|d| embedded("webhook", d))
            .transpose()
    }

    async fn mark_letter(&self, mark: &LetterMark) -> Result<(), StoreError> {
        let id = mark.dead_letter_id.to_string();
        self.collection("dlq_marks")
            .replace_one(
                doc! { "_id": &id },
                doc! { "_id": &id, "doc": to_doc(mark)? },
            )
            .upsert(true)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn letter_marks(&self, ids: &[ulid::Ulid]) -> Result<Vec<LetterMark>, StoreError> {
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let cursor = self
            .collection("dlq_marks")
            .find(doc! { "_id": { "$in": ids } })
            .await
            .map_err(unavailable)?;
        all_embedded("dead-letter mark", cursor).await
    }

    async fn put_dlq_audit(&self, audit: &DlqAudit) -> Result<(), StoreError> {
        let id = audit.audit_id.to_string();
        self.collection("dlq_audits")
            .replace_one(
                doc! { "_id": &id },
                doc! { "_id": &id, "started_at": date(audit.started_at), "doc": to_doc(audit)? },
            )
            .upsert(true)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn dlq_audits(&self, limit: usize) -> Result<Vec<DlqAudit>, StoreError> {
        let cursor = self
            .collection("dlq_audits")
            .find(doc! {})
            .sort(doc! { "started_at": -1, "_id": -1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(unavailable)?;
        all_embedded("dead-letter audit", cursor).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_never_echo_the_uri_or_its_password() {
        let uri = "mongodb://app:s3cret@db.internal:27017/?tls=maybe";
        let text = format!("invalid option in {uri}; password s3cret rejected");
        let redacted = redact(&text, uri);
        assert!(!redacted.contains("s3cret"), "{redacted}");
        assert!(!redacted.contains("db.internal"), "{redacted}");
    }

    #[test]
    fn only_unpatched_ferretdb_1_is_warned_about() {
        let mongodb = doc! { "version": "7.0.14", "ok": 1.0 };
        let upstream = doc! { "version": "7.0.42", "ferretdbVersion": "v1.24.2" };
        let patched = doc! { "ferretdbVersion": "v1.24.2", "isolatedWrites": true };
        let two = doc! { "ferretdbVersion": "v2.1.0" };
        assert_eq!(unisolated_ferretdb(&mongodb), None);
        assert_eq!(unisolated_ferretdb(&upstream), Some("v1.24.2"));
        assert_eq!(unisolated_ferretdb(&patched), None);
        assert_eq!(unisolated_ferretdb(&two), None);
    }
}
