//! The embedded store: SQLite in one local file, for `switchyard dev` and single-node use.
//!
//! Why SQLite (rusqlite, compiled in): it is ACID on one file, so a usage event and its spend
//! increment commit together and the exactly-once property is a plain transaction; in WAL mode a
//! second process (`switchyard jobs list` while `switchyard dev` runs) reads while the first
//! writes; and the dashboard's aggregations are SQL. Calls run on the blocking pool so a slow
//! disk never stalls the async workers.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};
use switchyard_core::contracts::{
    ChildOutcome, JobState, ResultDocument, ResultStatus, UsageEvent,
};
use switchyard_core::money::Micros;
use switchyard_core::{BackendId, JobId, TenantId};

use crate::store::{
    AttemptNext, CostRow, DlqAudit, JobFilter, JobRecord, LatencyStats, LetterMark, MinuteVolume,
    Period, Recorded, StatusUpdate, Store, StoreError, WebhookAttempt, WebhookDelivery,
    WebhookState, Written, advances, complete_join, day_key, latency_stats, minute_key,
};

const BACKEND: &str = "embedded";

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS results (
    job_id      TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    backend_id  TEXT,
    status      TEXT NOT NULL,
    latency_ms  INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    finished_ms INTEGER NOT NULL,
    minute      TEXT NOT NULL,
    doc         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_finished ON results (finished_ms);
CREATE INDEX IF NOT EXISTS results_tenant ON results (tenant_id, finished_ms);

CREATE TABLE IF NOT EXISTS usage_events (
    event_id    TEXT PRIMARY KEY,
    job_id      TEXT NOT NULL,
    tenant_id   TEXT NOT NULL,
    model       TEXT NOT NULL,
    cost_micros INTEGER NOT NULL,
    occurred_ms INTEGER NOT NULL,
    day         TEXT NOT NULL,
    doc         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_job ON usage_events (job_id);
CREATE INDEX IF NOT EXISTS usage_occurred ON usage_events (occurred_ms);

CREATE TABLE IF NOT EXISTS spend (
    tenant_id   TEXT NOT NULL,
    day         TEXT NOT NULL,
    cost_micros INTEGER NOT NULL,
    events      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, day)
);

CREATE TABLE IF NOT EXISTS jobs (
    job_id      TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    backend_id  TEXT,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_updated ON jobs (updated_ms);
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs (tenant_id, updated_ms);

CREATE TABLE IF NOT EXISTS job_history (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  TEXT NOT NULL,
    doc     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_history_job ON job_history (job_id, seq);

CREATE TABLE IF NOT EXISTS join_children (
    parent  TEXT NOT NULL,
    name    TEXT NOT NULL,
    doc     TEXT NOT NULL,
    PRIMARY KEY (parent, name)
);

CREATE TABLE IF NOT EXISTS webhooks (
    webhook_id  TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    next_ms     INTEGER NOT NULL,
    doc         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS webhooks_due ON webhooks (state, next_ms);

CREATE TABLE IF NOT EXISTS dlq_marks (
    dead_letter_id  TEXT PRIMARY KEY,
    doc             TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS dlq_audits (
    audit_id    TEXT PRIMARY KEY,
    started_ms  INTEGER NOT NULL,
    doc         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dlq_audits_started ON dlq_audits (started_ms);
";

const WEBHOOK_BY_ID: &str = "SELECT doc FROM webhooks WHERE webhook_id = ?1";

/// SQLite in one file. Write transactions are `IMMEDIATE`: they take the write lock up front,
/// so a second process writing the same file waits (busy timeout) instead of failing to
/// upgrade a read lock.
#[derive(Clone, Debug)]
pub struct EmbeddedStore {
    connection: Arc<Mutex<Connection>>,
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
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

/// `INSERT OR IGNORE` inserted `rows`: one if new, none if the key was there.
fn written(rows: usize) -> Written {
    if rows == 1 {
        Written::New
    } else {
        Written::Unchanged
    }
}

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn from_millis(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| corrupt("timestamp", format!("{ms} ms is out of range")))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|error| corrupt("document", error))
}

fn from_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|error| corrupt(what, error))
}

impl EmbeddedStore {
    /// Opens (creating) the database file and its directory.
    pub fn open(path: &Path) -> Result<EmbeddedStore, StoreError> {
        let open_error = |error: &dyn std::fmt::Display| StoreError::Open {
            backend: BACKEND,
            message: format!("{}: {error}", path.display()),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_error(&e))?;
        }
        let connection = Connection::open(path).map_err(|e| open_error(&e))?;
        // WAL: readers in other processes do not block the writer; NORMAL sync is durable
        // across process crashes (a power cut may lose the last commits, never corrupt).
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .and_then(|()| connection.pragma_update(None, "synchronous", "NORMAL"))
            .and_then(|()| connection.busy_timeout(Duration::from_secs(5)))
            .map_err(|e| open_error(&e))?;
        Ok(EmbeddedStore {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// A private database in memory, for unit tests.
    pub fn in_memory() -> Result<EmbeddedStore, StoreError> {
        let connection = Connection::open_in_memory().map_err(|e| StoreError::Open {
            backend: BACKEND,
            message: e.to_string(),
        })?;
        Ok(EmbeddedStore {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    async fn with<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves SQLite consistent (its own transaction
            // rolls back), so the poisoned guard is safe to keep using.
            let mut guard = connection
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            work(&mut guard)
        })
        .await
        .map_err(|error| unavailable(format!("store task failed: {error}")))?
    }
}

/// The `doc` of the one row `sql` selects for `key`, decoded.
fn doc_of<T: serde::de::DeserializeOwned>(
    connection: &Connection,
    what: &'static str,
    sql: &str,
    key: &str,
) -> Result<Option<T>, StoreError> {
    let doc: Option<String> = connection
        .query_row(sql, params![key], |row| row.get(0))
        .optional()
        .map_err(unavailable)?;
    doc.map(|doc| from_json(what, &doc)).transpose()
}

/// The `doc` of every row `sql` selects for `values`, decoded, in the query's order.
fn docs_of<T: serde::de::DeserializeOwned>(
    connection: &Connection,
    what: &'static str,
    sql: &str,
    values: impl rusqlite::Params,
) -> Result<Vec<T>, StoreError> {
    let mut statement = connection.prepare_cached(sql).map_err(unavailable)?;
    statement
        .query_map(values, |row| row.get::<_, String>(0))
        .map_err(unavailable)?
        .map(|doc| {
            doc.map_err(unavailable)
                .and_then(|doc| from_json(what, &doc))
        })
        .collect()
}

fn load_job(connection: &Connection, job_id: &str) -> Result<Option<JobRecord>, StoreError> {
    let row = connection
        .query_row(
            "SELECT tenant_id, state, attempts, backend_id, created_ms, updated_ms
             FROM jobs WHERE job_id = ?1",
            params![job_id],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, Option<String>>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, i64>(5)?,
                ))
            },
        )
        .optional()
        .map_err(unavailable)?;
    let Some((tenant, state, attempts, backend, created_ms, updated_ms)) = row else {
        return Ok(None);
    };
    let history: Vec<StatusUpdate> = docs_of(
        connection,
        "status update",
        "SELECT doc FROM job_history WHERE job_id = ?1 ORDER BY seq",
        params![job_id],
    )?;
    Ok(Some(JobRecord {
        job_id: job_id.parse().map_err(|e| corrupt("job id", e))?,
        tenant_id: TenantId::new(tenant).map_err(|e| corrupt("tenant id", e))?,
        state: JobState::parse(&state).ok_or_else(|| corrupt("job state", &state))?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        backend_id: backend
            .map(BackendId::new)
            .transpose()
            .map_err(|e| corrupt("backend id", e))?,
        created_at: from_millis(created_ms)?,
        updated_at: from_millis(updated_ms)?,
        history,
    }))
}

impl Store for EmbeddedStore {
    async fn init(&self) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute_batch(SCHEMA).map_err(|e| StoreError::Open {
                backend: BACKEND,
                message: format!("creating tables: {e}"),
            })
        })
        .await
    }

    async fn record_usage(&self, event: &UsageEvent) -> Result<Recorded, StoreError> {
        let doc = to_json(event)?;
        let event = event.clone();
        self.with(move |c| {
            // One transaction: the event and its spend increment commit together or not at all.
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let day = day_key(event.occurred_at.date_naive());
            let inserted = tx
                .execute(
                    "INSERT OR IGNORE INTO usage_events
                     (event_id, job_id, tenant_id, model, cost_micros, occurred_ms, day, doc)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        event.event_id,
                        event.job_id.to_string(),
                        event.tenant_id.as_str(),
                        event.model,
                        event.cost_micros.0,
                        millis(event.occurred_at),
                        day,
                        doc
                    ],
                )
                .map_err(unavailable)?;
            if inserted == 0 {
                let stored = doc_of(
                    &tx,
                    "usage event",
                    "SELECT doc FROM usage_events WHERE event_id = ?1",
                    &event.event_id,
                )?
                .ok_or_else(|| corrupt("usage event", "vanished after a duplicate insert"))?;
                return Ok(Recorded {
                    written: Written::Unchanged,
                    stored,
                });
            }
            tx.execute(
                "INSERT INTO spend (tenant_id, day, cost_micros, events) VALUES (?1, ?2, ?3, 1)
                 ON CONFLICT (tenant_id, day) DO UPDATE
                 SET cost_micros = cost_micros + excluded.cost_micros, events = events + 1",
                params![event.tenant_id.as_str(), day, event.cost_micros.0],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(Recorded {
                written: Written::New,
                stored: event,
            })
        })
        .await
    }

    async fn put_result(&self, result: &ResultDocument) -> Result<Written, StoreError> {
        let doc = to_json(result)?;
        let result = result.clone();
        self.with(move |c| {
            let inserted = c
                .execute(
                    "INSERT OR IGNORE INTO results
                     (job_id, tenant_id, backend_id, status, latency_ms, cost_micros,
                      finished_ms, minute, doc)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        result.job_id.to_string(),
                        result.tenant_id.as_str(),
                        result.backend_id.as_ref().map(BackendId::as_str),
                        status_str(result.status),
                        i64::try_from(result.latency_ms).unwrap_or(i64::MAX),
                        result.cost_micros.0,
                        millis(result.finished_at),
                        minute_key(result.finished_at),
                        doc
                    ],
                )
                .map_err(unavailable)?;
            Ok(written(inserted))
        })
        .await
    }

    async fn record_status(&self, update: &StatusUpdate) -> Result<(), StoreError> {
        let doc = to_json(update)?;
        let update = update.clone();
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let job_id = update.job_id.to_string();
            let at = millis(update.at);
            let attempt = i64::from(update.attempt.unwrap_or(0));
            let current: Option<String> = tx
                .query_row(
                    "SELECT state FROM jobs WHERE job_id = ?1",
                    params![job_id],
                    |row| row.get(0),
                )
                .optional()
                .map_err(unavailable)?;
            match current {
                None => {
                    tx.execute(
                        "INSERT INTO jobs (job_id, tenant_id, state, attempts, backend_id,
                                           created_ms, updated_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                        params![
                            job_id,
                            update.tenant_id.as_str(),
                            update.state.as_str(),
                            attempt,
                            update.backend_id.as_ref().map(BackendId::as_str),
                            at
                        ],
                    )
                    .map_err(unavailable)?;
                }
                Some(current) => {
                    let current =
                        JobState::parse(&current).ok_or_else(|| corrupt("job state", &current))?;
                    let moves = advances(current, update.state);
                    tx.execute(
                        "UPDATE jobs SET
                           state = CASE WHEN ?2 THEN ?3 ELSE state END,
                           backend_id = CASE WHEN ?2 AND ?4 IS NOT NULL THEN ?4 ELSE backend_id END,
                           attempts = MAX(attempts, ?5),
                           updated_ms = MAX(updated_ms, ?6)
                         WHERE job_id = ?1",
                        params![
                            job_id,
                            moves,
                            update.state.as_str(),
                            update.backend_id.as_ref().map(BackendId::as_str),
                            attempt,
                            at
                        ],
                    )
                    .map_err(unavailable)?;
                }
            }
            tx.execute(
                "INSERT INTO job_history (job_id, doc) VALUES (?1, ?2)",
                params![job_id, doc],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn result(&self, job_id: JobId) -> Result<Option<ResultDocument>, StoreError> {
        self.with(move |c| {
            doc_of(
                c,
                "result",
                "SELECT doc FROM results WHERE job_id = ?1",
                &job_id.to_string(),
            )
        })
        .await
    }

    async fn job(&self, job_id: JobId) -> Result<Option<JobRecord>, StoreError> {
        self.with(move |c| load_job(c, &job_id.to_string())).await
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError> {
        let filter = filter.clone();
        self.with(move |c| {
            let mut statement = c
                .prepare_cached(
                    "SELECT job_id FROM jobs
                     WHERE (?1 IS NULL OR tenant_id = ?1)
                       AND (?2 IS NULL OR state = ?2)
                       AND (?3 IS NULL OR updated_ms < ?3)
                     ORDER BY updated_ms DESC, job_id DESC
                     LIMIT ?4",
                )
                .map_err(unavailable)?;
            let ids = statement
                .query_map(
                    params![
                        filter.tenant_id.as_ref().map(TenantId::as_str),
                        filter.state.map(|s| s.as_str()),
                        filter.updated_before.map(millis),
                        i64::try_from(filter.limit).unwrap_or(i64::MAX)
                    ],
                    |row| row.get::<_, String>(0),
                )
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            drop(statement);
            let mut jobs = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(job) = load_job(c, &id)? {
                    jobs.push(job);
                }
            }
            Ok(jobs)
        })
        .await
    }

    async fn usage_of_job(&self, job_id: JobId) -> Result<Vec<UsageEvent>, StoreError> {
        self.with(move |c| {
            docs_of(
                c,
                "usage event",
                "SELECT doc FROM usage_events WHERE job_id = ?1 ORDER BY event_id",
                params![job_id.to_string()],
            )
        })
        .await
    }

    async fn spend(&self, tenant_id: &TenantId, period: Period) -> Result<Micros, StoreError> {
        let tenant = tenant_id.as_str().to_owned();
        self.with(move |c| {
            let prefix = period.day_prefix();
            let total: i64 = c
                .query_row(
                    "SELECT COALESCE(SUM(cost_micros), 0) FROM spend
                     WHERE tenant_id = ?1 AND substr(day, 1, length(?2)) = ?2",
                    params![tenant, prefix],
                    |row| row.get(0),
                )
                .map_err(unavailable)?;
            Ok(Micros(total))
        })
        .await
    }

    async fn volume_per_minute(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<MinuteVolume>, StoreError> {
        self.with(move |c| {
            let mut statement = c
                .prepare_cached(
                    "SELECT minute,
                            SUM(CASE WHEN status = 'failed' THEN 0 ELSE 1 END),
                            SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END)
                     FROM results WHERE finished_ms >= ?1 AND finished_ms < ?2
                     GROUP BY minute ORDER BY minute",
                )
                .map_err(unavailable)?;
            statement
                .query_map(params![millis(since), millis(until)], |row| {
                    Ok(MinuteVolume {
                        minute: row.get(0)?,
                        succeeded: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                        failed: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                    })
                })
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)
        })
        .await
    }

    async fn latency_by_backend(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<LatencyStats>, StoreError> {
        self.with(move |c| {
            let mut statement = c
                .prepare_cached(
                    "SELECT backend_id, latency_ms FROM results
                     WHERE backend_id IS NOT NULL AND finished_ms >= ?1 AND finished_ms < ?2
                     ORDER BY backend_id, latency_ms",
                )
                .map_err(unavailable)?;
            let rows = statement
                .query_map(params![millis(since), millis(until)], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            group_latencies(
                rows.into_iter()
                    .map(|(b, l)| (b, u64::try_from(l).unwrap_or(0))),
            )
        })
        .await
    }

    async fn cost_by_tenant_model_day(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<CostRow>, StoreError> {
        self.with(move |c| {
            let mut statement = c
                .prepare_cached(
                    "SELECT tenant_id, model, day, SUM(cost_micros), COUNT(*) FROM usage_events
                     WHERE occurred_ms >= ?1 AND occurred_ms < ?2
                     GROUP BY tenant_id, model, day ORDER BY day, tenant_id, model",
                )
                .map_err(unavailable)?;
            let rows = statement
                .query_map(params![millis(since), millis(until)], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                        row.get::<_, i64>(4)?,
                    ))
                })
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            rows.into_iter()
                .map(|(tenant, model, day, cost, events)| {
                    Ok(CostRow {
                        tenant_id: TenantId::new(tenant).map_err(|e| corrupt("tenant id", e))?,
                        model,
                        day,
                        cost_micros: Micros(cost),
                        events: u64::try_from(events).unwrap_or(0),
                    })
                })
                .collect()
        })
        .await
    }

    async fn enqueue_webhook(&self, delivery: &WebhookDelivery) -> Result<Written, StoreError> {
        let doc = to_json(delivery)?;
        let delivery = delivery.clone();
        self.with(move |c| {
            let inserted = c
                .execute(
                    "INSERT OR IGNORE INTO webhooks (webhook_id, state, next_ms, doc)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![
                        delivery.webhook_id,
                        delivery.state.as_str(),
                        millis(delivery.next_attempt_at),
                        doc
                    ],
                )
                .map_err(unavailable)?;
            Ok(written(inserted))
        })
        .await
    }

    async fn claim_due_webhooks(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let claimable: Vec<WebhookDelivery> = docs_of(
                &tx,
                "webhook",
                "SELECT doc FROM webhooks WHERE state = 'pending' AND next_ms <= ?1
                 ORDER BY next_ms LIMIT ?2",
                params![millis(now), i64::try_from(limit).unwrap_or(i64::MAX)],
            )?;
            let lease_end = now
                + chrono::Duration::from_std(lease).unwrap_or_else(|_| chrono::Duration::hours(1));
            let mut claimed = Vec::with_capacity(claimable.len());
            for mut delivery in claimable {
                delivery.next_attempt_at = lease_end;
                tx.execute(
                    "UPDATE webhooks SET next_ms = ?2, doc = ?3 WHERE webhook_id = ?1",
                    params![delivery.webhook_id, millis(lease_end), to_json(&delivery)?],
                )
                .map_err(unavailable)?;
                claimed.push(delivery);
            }
            tx.commit().map_err(unavailable)?;
            Ok(claimed)
        })
        .await
    }

    async fn record_webhook_attempt(
        &self,
        webhook_id: &str,
        attempt: &WebhookAttempt,
    ) -> Result<bool, StoreError> {
        let webhook_id = webhook_id.to_owned();
        let attempt = attempt.clone();
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let Some(mut delivery) =
                doc_of::<WebhookDelivery>(&tx, "webhook", WEBHOOK_BY_ID, &webhook_id)?
            else {
                return Err(corrupt("webhook", format!("no delivery {webhook_id}")));
            };
            if delivery.state != WebhookState::Pending
                || millis(delivery.next_attempt_at) != millis(attempt.claimed_until)
            {
                return Ok(false);
            }
            apply_attempt(&mut delivery, &attempt);
            tx.execute(
                "UPDATE webhooks SET state = ?2, next_ms = ?3, doc = ?4 WHERE webhook_id = ?1",
                params![
                    webhook_id,
                    delivery.state.as_str(),
                    millis(delivery.next_attempt_at),
                    to_json(&delivery)?
                ],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn record_child(
        &self,
        parent: JobId,
        child: &ChildOutcome,
        siblings: &[String],
    ) -> Result<Option<Vec<ChildOutcome>>, StoreError> {
        self.join(parent, child, siblings).await
    }

    async fn webhook(&self, webhook_id: &str) -> Result<Option<WebhookDelivery>, StoreError> {
        let webhook_id = webhook_id.to_owned();
        self.with(move |c| doc_of(c, "webhook", WEBHOOK_BY_ID, &webhook_id))
            .await
    }

    async fn mark_letter(&self, mark: &LetterMark) -> Result<(), StoreError> {
        let doc = to_json(mark)?;
        let id = mark.dead_letter_id.to_string();
        self.with(move |c| {
            c.execute(
                "INSERT INTO dlq_marks (dead_letter_id, doc) VALUES (?1, ?2)
                 ON CONFLICT (dead_letter_id) DO UPDATE SET doc = excluded.doc",
                params![id, doc],
            )
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn letter_marks(&self, ids: &[ulid::Ulid]) -> Result<Vec<LetterMark>, StoreError> {
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        self.with(move |c| {
            let mut marks = Vec::new();
            for id in &ids {
                if let Some(mark) = doc_of(
                    c,
                    "dead-letter mark",
                    "SELECT doc FROM dlq_marks WHERE dead_letter_id = ?1",
                    id,
                )? {
                    marks.push(mark);
                }
            }
            Ok(marks)
        })
        .await
    }

    async fn put_dlq_audit(&self, audit: &DlqAudit) -> Result<(), StoreError> {
        let doc = to_json(audit)?;
        let id = audit.audit_id.to_string();
        let started = millis(audit.started_at);
        self.with(move |c| {
            c.execute(
                "INSERT INTO dlq_audits (audit_id, started_ms, doc) VALUES (?1, ?2, ?3)
                 ON CONFLICT (audit_id) DO UPDATE SET doc = excluded.doc",
                params![id, started, doc],
            )
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn dlq_audits(&self, limit: usize) -> Result<Vec<DlqAudit>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |c| {
            docs_of(
                c,
                "dead-letter audit",
                "SELECT doc FROM dlq_audits ORDER BY started_ms DESC, audit_id DESC LIMIT ?1",
                params![limit],
            )
        })
        .await
    }
}

impl EmbeddedStore {
    async fn join(
        &self,
        parent: JobId,
        child: &ChildOutcome,
        siblings: &[String],
    ) -> Result<Option<Vec<ChildOutcome>>, StoreError> {
        let doc = to_json(child)?;
        let name = child.name.clone();
        let siblings = siblings.to_vec();
        self.with(move |c| {
            let parent = parent.to_string();
            c.execute(
                "INSERT OR IGNORE INTO join_children (parent, name, doc) VALUES (?1, ?2, ?3)",
                params![parent, name, doc],
            )
            .map_err(unavailable)?;
            let recorded: Vec<ChildOutcome> = docs_of(
                c,
                "child outcome",
                "SELECT doc FROM join_children WHERE parent = ?1",
                params![parent],
            )?;
            Ok(complete_join(recorded, &siblings))
        })
        .await
    }
}

pub(crate) fn status_str(status: ResultStatus) -> &'static str {
    match status {
        ResultStatus::Succeeded => "succeeded",
        ResultStatus::Failed => "failed",
        ResultStatus::Partial => "partial",
    }
}

/// The delivery after one attempt.
pub(crate) fn apply_attempt(delivery: &mut WebhookDelivery, attempt: &WebhookAttempt) {
    delivery.attempts += 1;
    delivery.last_status = attempt.status;
    delivery.last_error.clone_from(&attempt.error);
    delivery.updated_at = attempt.at;
    match attempt.next {
        AttemptNext::Delivered => delivery.state = WebhookState::Delivered,
        AttemptNext::Exhausted => delivery.state = WebhookState::Exhausted,
        AttemptNext::RetryAt(at) => {
            delivery.state = WebhookState::Pending;
            delivery.next_attempt_at = at;
        }
    }
}

/// Latencies sorted by backend then value → one row per backend.
pub(crate) fn group_latencies(
    rows: impl Iterator<Item = (String, u64)>,
) -> Result<Vec<LatencyStats>, StoreError> {
    let mut out = Vec::new();
    let mut current: Option<(String, Vec<u64>)> = None;
    let flush = |current: Option<(String, Vec<u64>)>, out: &mut Vec<LatencyStats>| {
        if let Some((backend, mut values)) = current {
            values.sort_unstable();
            let id = BackendId::new(backend).map_err(|e| corrupt("backend id", e))?;
            out.push(latency_stats(id, &values));
        }
        Ok::<(), StoreError>(())
    };
    for (backend, latency) in rows {
        match &mut current {
            Some((name, values)) if *name == backend => values.push(latency),
            _ => {
                flush(current.take(), &mut out)?;
                current = Some((backend, vec![latency]));
            }
        }
    }
    flush(current, &mut out)?;
    Ok(out)
}
