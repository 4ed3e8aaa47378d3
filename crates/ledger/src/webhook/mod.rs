//! Standard Webhooks delivery: signed, durable, SSRF-guarded.
//!
//! `Ledger::finish` only queues a delivery in the store. The [`Dispatcher`] claims due
//! deliveries (a lease in the store, so several dispatchers share the work and a dead one's
//! claims come back), sends each once, and records the attempt with the next due time from the
//! schedule (Svix's by default: immediately, 5 s, 5 min, 30 min, 2 h, ...). A restart resumes
//! from the store. After the last attempt the delivery is `exhausted` and a `webhook_exhausted`
//! lifecycle event says so.

pub mod client;
pub mod guard;
pub mod sign;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use switchyard_core::contracts::{EventSchema, JobState, LifecycleEvent};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::events::EventSink;
use crate::store::{AttemptNext, StatusUpdate, Store, StoreError, WebhookAttempt, WebhookDelivery};
use client::{AttemptOutcome, WebhookClient, WebhookRequest};
use sign::SigningKeys;

/// The environment variable holding a tenant's signing keys: `SWITCHYARD_WEBHOOK_SECRET_` and
/// the tenant id in upper case when it is only letters and digits (`acme` → `..._ACME`), else
/// `H_` and the id's bytes in upper-case hex (`acme-co` → `..._H_61636D652D636F`). The
/// two forms never meet (only the second has `_`), so no two tenants share a variable.
pub fn tenant_secret_var(tenant: &switchyard_core::TenantId) -> String {
    let id = tenant.as_str();
    if id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        format!("SWITCHYARD_WEBHOOK_SECRET_{}", id.to_ascii_uppercase())
    } else {
        format!("SWITCHYARD_WEBHOOK_SECRET_H_{}", hex::encode_upper(id))
    }
}

/// Where signing keys come from: the environment in production, a map in tests.
pub type KeyLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// How the dispatcher works.
#[derive(Clone, Debug)]
pub struct DispatchSettings {
    /// Delay before each attempt; `schedule[n]` is the wait before attempt `n + 1`.
    pub schedule: Vec<Duration>,
    /// How long a claimed delivery is held before another dispatcher may take it.
    pub lease: Duration,
    /// Deliveries claimed (and sent concurrently) per round.
    pub batch: usize,
    /// Sleep between rounds when nothing is due.
    pub idle_poll: Duration,
}

impl DispatchSettings {
    pub fn from_config(webhooks: &switchyard_core::config::RawWebhooks) -> DispatchSettings {
        DispatchSettings {
            schedule: webhooks.schedule.clone(),
            // Longer than an attempt can take, so a live dispatcher never loses its claim.
            lease: webhooks.timeout * 2 + Duration::from_secs(5),
            batch: 32,
            idle_poll: Duration::from_millis(500),
        }
    }
}

/// Delivers queued webhooks.
pub struct Dispatcher<S, E> {
    store: S,
    events: E,
    client: WebhookClient,
    settings: DispatchSettings,
    keys: KeyLookup,
}

impl<S, E> std::fmt::Debug for Dispatcher<S, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<S: Store, E: EventSink> Dispatcher<S, E> {
    pub fn new(
        store: S,
        events: E,
        client: WebhookClient,
        settings: DispatchSettings,
        keys: KeyLookup,
    ) -> Dispatcher<S, E> {
        Dispatcher {
            store,
            events,
            client,
            settings,
            keys,
        }
    }

    /// Signing keys from the process environment.
    pub fn env_keys() -> KeyLookup {
        Arc::new(|name| std::env::var(name).ok())
    }

    /// Delivers until `shutdown`; an attempt in progress is finished first.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut failures = 0u32;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            // A round in progress is finished, not dropped: an attempt already sent must be
            // recorded, or it would be sent again after the lease with its count unchanged.
            // A round is bounded by the client's timeout.
            let sent = self.round(Utc::now()).await;
            let pause = match sent {
                Ok(0) => {
                    failures = 0;
                    self.settings.idle_poll
                }
                Ok(_) => {
                    failures = 0;
                    continue;
                }
                Err(error) => {
                    failures += 1;
                    let delay = switchyard_bus::backoff(
                        failures,
                        Duration::from_millis(200),
                        Duration::from_secs(30),
                    );
                    warn!(message = "Webhook round failed; backing off.", %error, delay_ms = delay.as_millis() as u64);
                    delay
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
        info!(message = "Webhook dispatcher stopped.");
    }

    /// One round: claims what is due at `now` and attempts each; returns how many.
    pub async fn round(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let due = self
            .store
            .claim_due_webhooks(now, self.settings.lease, self.settings.batch)
            .await?;
        let n = due.len();
        let results: Vec<Result<(), StoreError>> = futures_util::stream::iter(due)
            .map(|delivery| self.attempt(delivery))
            .buffer_unordered(self.settings.batch.max(1))
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(n)
    }

    async fn attempt(&self, delivery: WebhookDelivery) -> Result<(), StoreError> {
        let now = Utc::now();
        let outcome = match self.signing_keys(&delivery) {
            Ok(keys) => self.send(&delivery, now, keys.as_ref()).await,
            // A named secret that is missing or malformed is an operator's mistake: retried on
            // schedule, so fixing the environment lets the delivery go through.
            Err(error) => AttemptOutcome::Failed {
                status: None,
                error: error.to_string(),
                retryable: true,
            },
        };
        let attempts_made = delivery.attempts + 1;
        let (status, error, next) = match outcome {
            AttemptOutcome::Delivered { status } => (Some(status), None, AttemptNext::Delivered),
            AttemptOutcome::Failed {
                status,
                error,
                retryable,
            } => {
                let next = match client::next_delay(&self.settings.schedule, attempts_made) {
                    Some(delay) if retryable => AttemptNext::RetryAt(
                        now + chrono::Duration::from_std(delay)
                            .unwrap_or_else(|_| chrono::Duration::hours(1)),
                    ),
                    Some(_) | None => AttemptNext::Exhausted,
                };
                (status, Some(error), next)
            }
        };
        match (&next, &error) {
            (AttemptNext::Delivered, _) => {
                debug!(message = "Webhook delivered.", job_id = %delivery.job_id, attempt = attempts_made);
            }
            (_, Some(error)) => {
                warn!(message = "Webhook attempt failed.", job_id = %delivery.job_id, attempt = attempts_made, %error, status = ?status);
            }
            (_, None) => {}
        }
        let recorded = self
            .store
            .record_webhook_attempt(
                &delivery.webhook_id,
                &WebhookAttempt {
                    claimed_until: delivery.next_attempt_at,
                    at: now,
                    status,
                    error: error.clone(),
                    next,
                },
            )
            .await?;
        if !recorded {
            warn!(message = "Lost the claim on a webhook while attempting it; the new holder decides.", job_id = %delivery.job_id);
            return Ok(());
        }
        if next == AttemptNext::Exhausted {
            self.exhausted(&delivery, now, error).await?;
        }
        Ok(())
    }

    /// The tenant's own keys, from [`tenant_secret_var`]. Never chosen by the message, and no
    /// key shared between tenants: otherwise one tenant could receive a result signed with a
    /// key another tenant's receiver trusts, and replay it there. No key: sent unsigned, with
    /// a warning naming the variable.
    fn signing_keys(
        &self,
        delivery: &WebhookDelivery,
    ) -> Result<Option<SigningKeys>, sign::SecretError> {
        let var = tenant_secret_var(&delivery.tenant_id);
        match (self.keys)(&var) {
            Some(value) => SigningKeys::parse(&value).map(Some).map_err(|reason| {
                sign::SecretError::InVariable {
                    var,
                    reason: Box::new(reason),
                }
            }),
            None => {
                warn!(message = "No signing key for the tenant; the webhook goes out unsigned.", tenant_id = %delivery.tenant_id, variable = %var);
                Ok(None)
            }
        }
    }

    async fn send(
        &self,
        delivery: &WebhookDelivery,
        now: DateTime<Utc>,
        keys: Option<&SigningKeys>,
    ) -> AttemptOutcome {
        self.client
            .send(WebhookRequest {
                url: &delivery.url,
                msg_id: &delivery.webhook_id,
                timestamp: now,
                body: delivery.payload.as_bytes(),
                keys,
            })
            .await
    }

    async fn exhausted(
        &self,
        delivery: &WebhookDelivery,
        now: DateTime<Utc>,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let detail = format!(
            "webhook to {} gave up after {} attempts: {}",
            delivery.url.host_str().unwrap_or("?"),
            delivery.attempts + 1,
            error.as_deref().unwrap_or("unknown error")
        );
        self.store
            .record_status(&StatusUpdate {
                job_id: delivery.job_id,
                tenant_id: delivery.tenant_id.clone(),
                state: JobState::WebhookExhausted,
                at: now,
                attempt: None,
                backend_id: None,
                detail: Some(detail.clone()),
            })
            .await?;
        let event = LifecycleEvent {
            schema: EventSchema,
            event_id: format!(
                "{}:{}",
                delivery.job_id,
                JobState::WebhookExhausted.as_str()
            ),
            job_id: delivery.job_id,
            tenant_id: delivery.tenant_id.clone(),
            state: JobState::WebhookExhausted,
            at: now,
            backend_id: None,
            attempt: Some(delivery.attempts + 1),
            error: Some(switchyard_core::contracts::JobError {
                class: switchyard_core::contracts::ErrorClass::RetriesExhausted,
                message: detail,
            }),
            cost_micros: None,
            latency_ms: None,
            trace: None,
        };
        // The delivery is already recorded as exhausted; a lost event is logged, not retried
        // forever.
        if let Err(error) = self.events.publish(&[event]).await {
            warn!(message = "Failed to publish webhook_exhausted.", %error, job_id = %delivery.job_id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use switchyard_core::TenantId;

    use super::*;

    #[test]
    fn every_tenant_has_its_own_secret_variable() {
        let var = |t: &str| tenant_secret_var(&TenantId::new(t).unwrap());
        assert_eq!(var("acme"), "SWITCHYARD_WEBHOOK_SECRET_ACME");
        assert_eq!(var("acme-co"), "SWITCHYARD_WEBHOOK_SECRET_H_61636D652D636F");
        let names = ["acme-co", "acme_co", "acme.co", "acmeco", "h_61", "a--b"];
        let vars: std::collections::HashSet<String> = names.iter().map(|n| var(n)).collect();
        assert_eq!(vars.len(), names.len(), "{vars:?}");
        assert!(
            vars.iter()
                .all(|v| !v["SWITCHYARD_".len()..].contains("__")),
            "{vars:?}"
        );
    }
}
