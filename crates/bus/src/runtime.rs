//! The worker runtime: the one consume loop the router, vision and LLM workers share.
//!
//! For every delivery: decode and validate (poison → dead letter at once, with the validation
//! error), run the handler under a timeout with the lease kept alive, then settle: ack on
//! success, nack with exponential backoff and jitter on a retryable failure, dead letter on a
//! permanent one or when the attempts run out. Concurrency is capped by a semaphore. On
//! shutdown the loop stops fetching, lets in-flight work finish within the grace period, and
//! returns; whatever did not finish is left unsettled and comes back to another worker.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt as _;
use switchyard_core::QueueName;
use switchyard_core::contracts::{self, Contract, ErrorClass};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{BusError, Consumer, Delivery, Headers, Rejection, backoff, headers};

/// How a handler failed. Closed: every new kind needs a decision here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Try again later (timeouts, 5xx, 429, a dependency down).
    Retry(String),
    /// Never going to work: dead-letter now with this class and reason.
    Reject(Rejection),
}

impl Failure {
    pub fn reject(class: ErrorClass, reason: impl Into<String>) -> Failure {
        Failure::Reject(Rejection {
            class,
            reason: reason.into(),
        })
    }
}

/// What a handler knows about the delivery it works on.
#[derive(Clone, Debug)]
pub struct JobContext {
    pub queue: QueueName,
    pub attempt: u32,
    pub max_attempts: u32,
    pub headers: Headers,
    /// The bytes the message was decoded from: what a handler passes on unchanged instead of
    /// encoding the decoded message again (the router's routed job carries its job so).
    pub body: Arc<[u8]>,
}

impl JobContext {
    /// Headers to put on messages this job publishes: the trace context travels on.
    pub fn outgoing_headers(&self) -> Headers {
        [headers::TRACEPARENT, headers::TRACESTATE]
            .into_iter()
            .filter_map(|name| {
                self.headers
                    .get(name)
                    .map(|value| (name.to_owned(), value.clone()))
            })
            .collect()
    }

    /// Whether a failure now is the last try.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }
}

/// The work a worker does with one decoded message.
pub trait Handler: Send + Sync + 'static {
    type Message: Contract + Send + 'static;

    fn handle(
        &self,
        message: Self::Message,
        context: JobContext,
    ) -> impl Future<Output = Result<(), Failure>> + Send;

    /// Called once `message`'s dead letter is durable (rejected, or out of attempts): where a
    /// handler notes it in the job's timeline. The letter is safe either way, so this cannot
    /// fail; a handler logs its own errors.
    fn dead_lettered(
        &self,
        message: Self::Message,
        rejection: &Rejection,
        context: &JobContext,
    ) -> impl Future<Output = ()> + Send {
        let _ = (message, rejection, context);
        async {}
    }
}

/// Runtime settings; `switchyard_core::config::RawWorker` maps onto them.
#[derive(Clone, Debug)]
pub struct Settings {
    pub concurrency: usize,
    pub max_attempts: u32,
    pub message_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub shutdown_grace: Duration,
    pub max_message_bytes: usize,
    /// While a handler runs, its lease is extended by this much, a third of it before it ends.
    pub lease: Duration,
}

impl Settings {
    /// The `[worker]` table and the bus's size limit.
    pub fn from_config(config: &switchyard_core::config::Config, lease: Duration) -> Settings {
        let worker = &config.worker;
        Settings {
            concurrency: worker.concurrency,
            max_attempts: worker.max_attempts,
            message_timeout: worker.message_timeout,
            backoff_initial: worker.backoff_initial,
            backoff_max: worker.backoff_max,
            shutdown_grace: worker.shutdown_grace,
            max_message_bytes: config.max_message_bytes,
            lease,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            concurrency: 32,
            max_attempts: 5,
            message_timeout: Duration::from_secs(120),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(30),
            max_message_bytes: contracts::DEFAULT_MAX_MESSAGE_BYTES,
            lease: Duration::from_secs(30),
        }
    }
}

/// What happened to deliveries, for metrics and tests.
#[derive(Debug, Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub acked: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Settling failed (lease lost, broker error): the message will come back.
    pub settle_errors: AtomicU64,
    /// Left unsettled at shutdown because the grace period ran out.
    pub abandoned: AtomicU64,
}

impl Counters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Runs `handler` over `consumer` until `shutdown` is cancelled or the consumer ends.
pub async fn run<C, H>(
    mut consumer: C,
    handler: Arc<H>,
    settings: Settings,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) -> Result<(), BusError>
where
    C: Consumer,
    H: Handler,
{
    contracts::precompile();
    let semaphore = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let mut poll_failures = 0u32;
    loop {
        // Take a slot before fetching, so nothing is leased that cannot be worked on.
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = semaphore.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        // Reap finished tasks so the set does not grow without bound.
        while tasks.try_join_next().is_some() {}
        let delivery = tokio::select! {
            () = shutdown.cancelled() => break,
            next = consumer.next() => next,
        };
        let delivery = match delivery {
            Ok(Some(delivery)) => {
                poll_failures = 0;
                delivery
            }
            Ok(None) => break,
            Err(error) => {
                poll_failures += 1;
                let delay = backoff(
                    poll_failures,
                    Duration::from_millis(100),
                    Duration::from_secs(10),
                );
                warn!(message = "Failed to fetch; backing off.", %error, delay_ms = delay.as_millis() as u64);
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => continue,
                }
            }
        };
        bump(&counters.received);
        let handler = handler.clone();
        let settings = settings.clone();
        let counters = counters.clone();
        // Decoding (JSON, schema, contract checks) is most of a light handler's CPU: done in
        // the task, it runs on every runtime thread rather than in this one fetching loop.
        // Boxed: tokio copies a task's whole future as it binds, finishes and reaps it, and
        // this one holds a delivery, a decoded message and the runtime's own futures (3.3 KB
        // for the router on Kafka); a box is one allocation against three such copies.
        tasks.spawn(Box::pin(async move {
            match contracts::decode::<H::Message>(delivery.body(), settings.max_message_bytes) {
                Ok(message) => {
                    process(delivery, message, handler.as_ref(), &settings, &counters).await;
                }
                Err(error) => {
                    let rejection = Rejection {
                        class: error.error_class(),
                        reason: error.to_string(),
                    };
                    warn!(
                        message = "Dead-lettering undecodable message.",
                        queue = %delivery.queue(),
                        class = %rejection.class,
                        reason = %rejection.reason,
                    );
                    settle(
                        Box::pin(delivery.dead_letter(rejection)),
                        &counters,
                        &counters.dead_lettered,
                    )
                    .await;
                }
            }
            drop(permit);
        }));
    }

    info!(
        message = "Stopping: waiting for in-flight work.",
        in_flight = tasks.len()
    );
    let drained = tokio::time::timeout(settings.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        let left = tasks.len() as u64;
        warn!(
            message = "Shutdown grace ran out; abandoning in-flight work to redelivery.",
            left
        );
        counters.abandoned.fetch_add(left, Ordering::Relaxed);
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    consumer.close().await;
    Ok(())
}

async fn process<D: Delivery, H: Handler>(
    delivery: D,
    message: H::Message,
    handler: &H,
    settings: &Settings,
    counters: &Counters,
) {
    let context = JobContext {
        queue: delivery.queue().clone(),
        attempt: delivery.attempt(),
        max_attempts: settings.max_attempts,
        headers: delivery.headers().clone(),
        body: Arc::from(delivery.body()),
    };
    let attempt = context.attempt;
    // A panicking handler is a failed attempt, not a lost delivery: left unsettled, a Kafka
    // offset would hold its partition's commits back until the next restart.
    // Boxed, as the futures of the rare paths below: a handler's future is large (the
    // router's holds its classifier call), a transport's nack or dead letter is a publish, and
    // inline they made every job's task 4.9 KB, which tokio copies whole as the task is
    // spawned, finishes and is reaped: a tenth of the router's CPU went to `memmove`.
    let guarded =
        std::panic::AssertUnwindSafe(Box::pin(handler.handle(message, context))).catch_unwind();
    let work = tokio::time::timeout(settings.message_timeout, guarded);
    tokio::pin!(work);
    let outcome = if delivery.leased() {
        // Renew the lease well before it runs out, for as long as the handler works.
        let renew_every = (settings.lease / 3).max(Duration::from_millis(10));
        let mut renew =
            tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
        loop {
            tokio::select! {
                outcome = &mut work => break outcome,
                _ = renew.tick() => {
                    if let Err(error) = delivery.extend(settings.lease).await {
                        warn!(message = "Failed to extend lease.", %error, queue = %delivery.queue());
                    }
                }
            }
        }
    } else {
        work.await
    };
    let failure = match outcome {
        Ok(Err(panic)) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            warn!(message = "Handler panicked.", queue = %delivery.queue(), panic = %what);
            Failure::Retry(format!("handler panicked: {what}"))
        }
        Ok(Ok(Ok(()))) => {
            settle(delivery.ack(), counters, &counters.acked).await;
            return;
        }
        Ok(Ok(Err(failure))) => failure,
        Err(_) => Failure::Retry(format!(
            "timed out after {} ms",
            settings.message_timeout.as_millis()
        )),
    };
    let rejection = match failure {
        Failure::Reject(rejection) => {
            warn!(message = "Dead-lettering rejected job.", queue = %delivery.queue(), class = %rejection.class, reason = %rejection.reason);
            rejection
        }
        Failure::Retry(error) if attempt >= settings.max_attempts => {
            warn!(message = "Dead-lettering after the last attempt.", queue = %delivery.queue(), attempt, %error);
            Rejection {
                class: ErrorClass::RetriesExhausted,
                reason: format!("gave up after {attempt} attempts; last error: {error}"),
            }
        }
        Failure::Retry(error) => {
            let delay = backoff(attempt, settings.backoff_initial, settings.backoff_max);
            debug!(message = "Retrying later.", queue = %delivery.queue(), attempt, delay_ms = delay.as_millis() as u64, %error);
            settle(
                Box::pin(delivery.nack(delay, &error)),
                counters,
                &counters.retried,
            )
            .await;
            return;
        }
    };
    // The handler consumed the message; decoding it again costs only on this rare path.
    let message = contracts::decode::<H::Message>(delivery.body(), settings.max_message_bytes);
    let (delivery_queue, delivery_headers, delivery_body) = (
        delivery.queue().clone(),
        delivery.headers().clone(),
        Arc::from(delivery.body()),
    );
    if settle(
        Box::pin(delivery.dead_letter(rejection.clone())),
        counters,
        &counters.dead_lettered,
    )
    .await
        && let Ok(message) = message
    {
        // Built again here rather than kept from the start: a second copy of every job's
        // headers and bytes would be for this rare path.
        let context = JobContext {
            queue: delivery_queue,
            attempt,
            max_attempts: settings.max_attempts,
            headers: delivery_headers,
            body: delivery_body,
        };
        Box::pin(handler.dead_lettered(message, &rejection, &context)).await;
    }
}

/// Whether the delivery was settled.
async fn settle(
    settling: impl Future<Output = Result<(), BusError>>,
    counters: &Counters,
    on_success: &AtomicU64,
) -> bool {
    match settling.await {
        Ok(()) => {
            bump(on_success);
            true
        }
        Err(error) => {
            bump(&counters.settle_errors);
            warn!(message = "Failed to settle delivery; it will be redelivered.", %error);
            false
        }
    }
}

/// A token cancelled on SIGTERM or SIGINT (Ctrl-C).
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(error) => {
                        warn!(message = "Cannot listen for SIGTERM; Ctrl-C only.", %error);
                        let _ = ctrl_c.await;
                        cancel.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        info!(message = "Shutdown signal received.");
        cancel.cancel();
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_travels_and_nothing_else_does() {
        let context = JobContext {
            queue: QueueName::new("q").unwrap(),
            attempt: 2,
            max_attempts: 2,
            headers: Headers::from([
                (headers::TRACEPARENT.to_owned(), "00-aa-bb-01".to_owned()),
                (headers::ATTEMPT.to_owned(), "2".to_owned()),
                (headers::LAST_ERROR.to_owned(), "503".to_owned()),
            ]),
            body: Arc::from(&b"{}"[..]),
        };
        assert_eq!(
            context.outgoing_headers(),
            Headers::from([(headers::TRACEPARENT.to_owned(), "00-aa-bb-01".to_owned())])
        );
        assert!(context.is_last_attempt());
    }

    #[test]
    fn settings_follow_the_worker_config() {
        let config = switchyard_core::config::Config::from_parts(
            "[worker]\nconcurrency = 7\nmax_attempts = 9\n",
            "test",
            &[],
            None,
        )
        .unwrap();
        let settings = Settings::from_config(&config, Duration::from_secs(3));
        assert_eq!((settings.concurrency, settings.max_attempts), (7, 9));
        assert_eq!(settings.lease, Duration::from_secs(3));
    }
}
