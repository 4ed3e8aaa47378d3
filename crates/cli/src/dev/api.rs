//! The local HTTP side of `dev`: a webhook receiver that checks Standard Webhooks signatures as
//! a tenant's endpoint must, and a small API to submit jobs and read them back while it runs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;
use switchyard_bus::any::AnyBus;
use switchyard_bus::{Bus, Outgoing};
use switchyard_core::JobId;
use switchyard_core::contracts::{self, DecodeError, JobEnvelope};
use switchyard_ledger::store::{AnyStore, Store};
use switchyard_ledger::webhook::sign::{SigningKeys, verify};
use tokio_util::sync::CancellationToken;

use super::{Observed, lock};

/// What the receiver has seen.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Webhooks {
    /// Requests, all told (retries included).
    pub received: u64,
    /// Requests whose signature matched the tenant's secret, with a fresh timestamp.
    pub verified: u64,
    /// Requests refused: no or bad signature, stale timestamp, unknown tenant.
    pub rejected: u64,
    /// Verified requests for a `webhook-id` already received (a receiver must dedupe on it).
    pub duplicates: u64,
    /// Verified webhooks by `webhook-id`: the event type.
    #[serde(skip)]
    pub by_id: BTreeMap<String, String>,
}

#[derive(Clone)]
pub struct Api {
    pub bus: AnyBus,
    pub store: AnyStore,
    pub observed: Arc<Observed>,
    /// Signing keys by tenant id.
    pub keys: Arc<BTreeMap<String, SigningKeys>>,
    pub max_message_bytes: usize,
}

/// Serves until `shutdown`; the bound address.
pub async fn serve(
    api: Api,
    address: SocketAddr,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/v1/jobs", post(submit))
        .route("/v1/jobs/{id}", get(job))
        .route("/hooks/{tenant}", post(hook))
        .with_state(api);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::warn!(message = "The local API stopped.", %error);
        }
    });
    Ok(bound)
}

/// How far a webhook's timestamp may be from now (the specification's suggestion).
const TOLERANCE_SECS: i64 = 5 * 60;

async fn hook(
    State(api): State<Api>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let checked = (|| {
        let keys = api.keys.get(&tenant)?;
        let id = header("webhook-id")?;
        let timestamp: i64 = header("webhook-timestamp")?.parse().ok()?;
        let signature = header("webhook-signature")?;
        let fresh = (chrono::Utc::now().timestamp() - timestamp).abs() <= TOLERANCE_SECS;
        (fresh && verify(keys, id, timestamp, &body, signature)).then(|| id.to_owned())
    })();
    let mut webhooks = lock(&api.observed.webhooks);
    webhooks.received += 1;
    match checked {
        Some(id) => {
            webhooks.verified += 1;
            let kind = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["type"].as_str().map(str::to_owned))
                .unwrap_or_default();
            if webhooks.by_id.insert(id, kind).is_some() {
                webhooks.duplicates += 1;
            }
            StatusCode::NO_CONTENT
        }
        None => {
            webhooks.rejected += 1;
            StatusCode::UNAUTHORIZED
        }
    }
}

async fn submit(State(api): State<Api>, body: Bytes) -> Response {
    let job: JobEnvelope = match contracts::decode(&body, api.max_message_bytes) {
        Ok(job) => job,
        Err(DecodeError::Invalid(problems)) => {
            let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({ "error": "invalid job", "problems": problems })),
            )
                .into_response();
        }
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": error.to_string() })),
            )
                .into_response();
        }
    };
    let queue = job.priority.queue();
    let message = Outgoing::new(body.to_vec()).with_key(job.job_id.to_string());
    match api.bus.publish(&queue, message).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({ "job_id": job.job_id, "queue": queue.as_str() })),
        )
            .into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": error.to_string() })),
        )
            .into_response(),
    }
}

async fn job(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let Ok(job_id) = id.parse::<JobId>() else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "not a job id (a ULID)" })),
        )
            .into_response();
    };
    let (job, result) = tokio::join!(api.store.job(job_id), api.store.result(job_id));
    match (job, result) {
        (Ok(None), Ok(None)) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "no such job in the store (yet)" })),
        )
            .into_response(),
        (Ok(job), Ok(result)) => Json(json!({ "job": job, "result": result })).into_response(),
        (Err(error), _) | (_, Err(error)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": error.to_string() })),
        )
            .into_response(),
    }
}
