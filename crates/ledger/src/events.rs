//! Lifecycle event sinks: where a job's `switchyard.event/v1` events are announced.
//!
//! - [`EventBridgeSink`]: `PutEvents` on an event bus, source `switchyard`, detail-type from the
//!   state (`Job Succeeded`), detail the event JSON; consumers route with EventBridge rules;
//! - [`BusSink`]: the encoded event on a bus topic (`switchyard.events` by default), keyed by
//!   job id so one job's events keep their order on Kafka;
//! - [`NoEvents`]: nothing, for setups that announce nothing.
//!
//! Delivery is at-least-once: a retried publish may announce an event twice, and consumers
//! deduplicate by `event_id` (`<job_id>:<state>`).

use std::future::Future;
use std::ops::Range;
use std::time::Duration;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use switchyard_bus::{Bus, BusError, Outgoing, headers};
use switchyard_core::QueueName;
use switchyard_core::config::EventsConfig;
use switchyard_core::contracts::{LifecycleEvent, encode};
use tracing::warn;

/// The EventBridge `source` of every event.
pub const SOURCE: &str = "switchyard";
/// The bus topic [`BusSink`] publishes to unless configured otherwise.
pub const DEFAULT_TOPIC: &str = "switchyard.events";
/// Most entries one `PutEvents` call takes.
pub const MAX_ENTRIES_PER_CALL: usize = 10;
/// Most bytes one `PutEvents` call (and so one entry) may hold, as EventBridge counts them.
pub const MAX_CALL_BYTES: usize = 256 * 1024;

/// Something lifecycle events can be announced to.
pub trait EventSink: Clone + Send + Sync + 'static {
    /// Announces `events`; returns once every one is accepted, or says what was not.
    fn publish(
        &self,
        events: &[LifecycleEvent],
    ) -> impl Future<Output = Result<(), EventError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("events config: {0}")]
    Config(String),
    /// An event no `PutEvents` call can carry; nothing of the publish was sent.
    #[error("event `{event_id}` is {size} bytes, over EventBridge's limit of {limit} bytes")]
    TooLarge {
        event_id: String,
        size: usize,
        limit: usize,
    },
    /// Entries still refused when the retries ran out. Later calls of the same publish are not
    /// sent: the caller retries the publish whole, and consumers deduplicate by `event_id`.
    #[error(
        "EventBridge rejected {failed} of the {total} events of a PutEvents call after {attempts} attempts; first: {code}: {message}"
    )]
    Rejected {
        failed: usize,
        total: usize,
        attempts: u32,
        code: String,
        message: String,
    },
    #[error("EventBridge PutEvents failed: {0}")]
    Transport(String),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// How often and how patiently entries EventBridge rejected are sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls per entry, the first included.
    pub attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// Announces nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoEvents;

impl EventSink for NoEvents {
    async fn publish(&self, _events: &[LifecycleEvent]) -> Result<(), EventError> {
        Ok(())
    }
}

/// `PutEvents` on one EventBridge event bus.
#[derive(Clone, Debug)]
pub struct EventBridgeSink {
    client: aws_sdk_eventbridge::Client,
    event_bus: String,
    retry: RetryPolicy,
}

impl EventBridgeSink {
    pub fn new(aws: &aws_config::SdkConfig, event_bus: impl Into<String>) -> EventBridgeSink {
        EventBridgeSink {
            client: aws_sdk_eventbridge::Client::new(aws),
            event_bus: event_bus.into(),
            retry: RetryPolicy::default(),
        }
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> EventBridgeSink {
        self.retry = retry;
        self
    }

    pub fn event_bus(&self) -> &str {
        &self.event_bus
    }
}

impl EventSink for EventBridgeSink {
    async fn publish(&self, events: &[LifecycleEvent]) -> Result<(), EventError> {
        let entries: Vec<Entry> = events
            .iter()
            .map(|event| Entry::new(event, &self.event_bus))
            .collect();
        let sizes: Vec<usize> = entries.iter().map(|entry| entry.size).collect();
        // Every entry is checked before any is sent, so an oversized one fails the publish
        // whole instead of after its neighbours went out.
        let calls = chunks(&sizes).map_err(|oversized| EventError::TooLarge {
            event_id: events[oversized.index].event_id.clone(),
            size: oversized.size,
            limit: MAX_CALL_BYTES,
        })?;
        for call in calls {
            let batch = entries[call].iter().map(|entry| entry.request.clone());
            put_with_retries(&self.client, batch.collect(), &self.retry).await?;
        }
        Ok(())
    }
}

/// Each event's encoded bytes on a bus topic, keyed by job id.
///
/// The topic must exist (`Bus::ensure`) before the first publish.
#[derive(Clone, Debug)]
pub struct BusSink<B> {
    bus: B,
    topic: QueueName,
}

impl<B: Bus> BusSink<B> {
    pub fn new(bus: B, topic: QueueName) -> BusSink<B> {
        BusSink { bus, topic }
    }

    pub fn topic(&self) -> &QueueName {
        &self.topic
    }
}

impl<B: Bus> EventSink for BusSink<B> {
    async fn publish(&self, events: &[LifecycleEvent]) -> Result<(), EventError> {
        if events.is_empty() {
            return Ok(());
        }
        let messages = events.iter().map(bus_message).collect();
        self.bus.publish_batch(&self.topic, messages).await?;
        Ok(())
    }
}

/// The sink the configuration asks for.
#[derive(Clone, Debug)]
pub enum AnyEventSink<B: Bus> {
    None(NoEvents),
    EventBridge(EventBridgeSink),
    Bus(BusSink<B>),
}

impl<B: Bus> AnyEventSink<B> {
    /// `aws` is needed only for EventBridge; `bus` is used only for `kafka` events.
    pub fn from_config(
        config: &EventsConfig,
        aws: Option<&aws_config::SdkConfig>,
        bus: B,
    ) -> Result<AnyEventSink<B>, EventError> {
        match config {
            EventsConfig::None => Ok(AnyEventSink::None(NoEvents)),
            EventsConfig::EventBridge { event_bus } => {
                let aws = aws.ok_or_else(|| {
                    EventError::Config(
                        "`events.kind = \"eventbridge\"` needs an AWS configuration".to_owned(),
                    )
                })?;
                Ok(AnyEventSink::EventBridge(EventBridgeSink::new(
                    aws, event_bus,
                )))
            }
            EventsConfig::Kafka { topic } => {
                let topic = QueueName::new(topic.as_str())
                    .map_err(|error| EventError::Config(format!("`events.topic`: {error}")))?;
                Ok(AnyEventSink::Bus(BusSink::new(bus, topic)))
            }
        }
    }
}

impl<B: Bus> EventSink for AnyEventSink<B> {
    async fn publish(&self, events: &[LifecycleEvent]) -> Result<(), EventError> {
        match self {
            AnyEventSink::None(sink) => sink.publish(events).await,
            AnyEventSink::EventBridge(sink) => sink.publish(events).await,
            AnyEventSink::Bus(sink) => sink.publish(events).await,
        }
    }
}

fn bus_message(event: &LifecycleEvent) -> Outgoing {
    let mut message = Outgoing::new(encode(event))
        .with_key(event.job_id.to_string())
        .with_header(headers::CONTENT_TYPE, "application/json");
    if let Some(trace) = &event.trace {
        message = message.with_header(headers::TRACEPARENT, trace.traceparent.as_str());
        if let Some(tracestate) = &trace.tracestate {
            message = message.with_header(headers::TRACESTATE, tracestate.as_str());
        }
    }
    message
}

/// A `PutEvents` entry and its size as EventBridge counts it.
struct Entry {
    request: PutEventsRequestEntry,
    size: usize,
}

impl Entry {
    fn new(event: &LifecycleEvent, event_bus: &str) -> Entry {
        // `encode` writes JSON, which is UTF-8, so nothing is replaced here.
        let detail = String::from_utf8_lossy(&encode(event)).into_owned();
        let detail_type = event.state.detail_type();
        let size = entry_size(SOURCE, detail_type, &detail);
        let time =
            aws_sdk_eventbridge::primitives::DateTime::from_millis(event.at.timestamp_millis());
        let request = PutEventsRequestEntry::builder()
            .event_bus_name(event_bus)
            .source(SOURCE)
            .detail_type(detail_type)
            .detail(detail)
            .time(time)
            .build();
        Entry { request, size }
    }
}

/// EventBridge's documented entry size: 14 bytes for a `Time`, plus the UTF-8 bytes of source,
/// detail-type and detail (and of resources, which these entries have none of).
fn entry_size(source: &str, detail_type: &str, detail: &str) -> usize {
    14 + source.len() + detail_type.len() + detail.len()
}

/// An entry that cannot go in any call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Oversized {
    index: usize,
    size: usize,
}

/// Splits entries of `sizes` into runs of consecutive entries, each run one `PutEvents` call:
/// at most [`MAX_ENTRIES_PER_CALL`] entries and [`MAX_CALL_BYTES`] bytes.
fn chunks(sizes: &[usize]) -> Result<Vec<Range<usize>>, Oversized> {
    let mut calls = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (index, &size) in sizes.iter().enumerate() {
        if size > MAX_CALL_BYTES {
            return Err(Oversized { index, size });
        }
        let full = index - start == MAX_ENTRIES_PER_CALL || bytes + size > MAX_CALL_BYTES;
        if full {
            calls.push(start..index);
            start = index;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        calls.push(start..sizes.len());
    }
    Ok(calls)
}

/// Why EventBridge refused one entry of a call.
#[derive(Clone, Debug, PartialEq, Eq)]
struct EntryFailure {
    code: String,
    message: String,
}

/// One `PutEvents` call. A trait so that the retry of partial failures can be tested without
/// EventBridge.
trait PutEvents: Sync {
    /// The outcome of each entry, in request order: `None` when accepted.
    fn put_events(
        &self,
        entries: Vec<PutEventsRequestEntry>,
    ) -> impl Future<Output = Result<Vec<Option<EntryFailure>>, EventError>> + Send;
}

impl PutEvents for aws_sdk_eventbridge::Client {
    async fn put_events(
        &self,
        entries: Vec<PutEventsRequestEntry>,
    ) -> Result<Vec<Option<EntryFailure>>, EventError> {
        let sent = entries.len();
        let output = self
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|error| {
                EventError::Transport(
                    aws_sdk_eventbridge::error::DisplayErrorContext(error).to_string(),
                )
            })?;
        let results = output.entries();
        // Results pair with entries by position; without one per entry, which ones failed is
        // unknowable, and guessing could drop an event.
        if results.len() != sent {
            return Err(EventError::Transport(format!(
                "PutEvents answered {} results for {sent} entries",
                results.len()
            )));
        }
        let outcomes: Vec<Option<EntryFailure>> = results
            .iter()
            .map(|result| {
                result.error_code().map(|code| EntryFailure {
                    code: code.to_owned(),
                    message: result.error_message().unwrap_or_default().to_owned(),
                })
            })
            .collect();
        let failed = outcomes.iter().filter(|outcome| outcome.is_some()).count();
        if usize::try_from(output.failed_entry_count()).ok() != Some(failed) {
            return Err(EventError::Transport(format!(
                "PutEvents reported {} failed entries but gave error codes for {failed}",
                output.failed_entry_count()
            )));
        }
        Ok(outcomes)
    }
}

/// Sends `entries` in one call, then again only those that failed, with backoff, until all are
/// accepted or the attempts run out.
async fn put_with_retries(
    client: &impl PutEvents,
    entries: Vec<PutEventsRequestEntry>,
    retry: &RetryPolicy,
) -> Result<(), EventError> {
    let total = entries.len();
    let mut pending = entries;
    let mut attempt = 1;
    loop {
        let outcomes = client.put_events(pending.clone()).await?;
        let (failed, failures): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .zip(outcomes)
            .filter_map(|(entry, outcome)| outcome.map(|failure| (entry, failure)))
            .unzip();
        let Some(first) = failures.first() else {
            return Ok(());
        };
        if attempt >= retry.attempts {
            return Err(EventError::Rejected {
                failed: failed.len(),
                total,
                attempts: attempt,
                code: first.code.clone(),
                message: first.message.clone(),
            });
        }
        warn!(
            message = "EventBridge rejected events; retrying them.",
            failed = failed.len(),
            total,
            attempt,
            code = %first.code,
            error = %first.message,
        );
        tokio::time::sleep(switchyard_bus::backoff(
            attempt,
            retry.backoff_initial,
            retry.backoff_max,
        ))
        .await;
        pending = failed;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use chrono::{TimeZone, Utc};
    use switchyard_core::JobId;
    use switchyard_core::contracts::{EventSchema, JobState};

    use super::*;

    /// `expected`: each call as `(first, end)` indices into `sizes`.
    fn check_chunks(sizes: &[usize], expected: &[(usize, usize)]) {
        let calls: Vec<(usize, usize)> = chunks(sizes)
            .unwrap()
            .into_iter()
            .map(|call| (call.start, call.end))
            .collect();
        assert_eq!(calls, expected, "sizes {sizes:?}");
    }

    #[test]
    fn chunks_hold_at_most_ten_entries() {
        check_chunks(&[], &[]);
        check_chunks(&[100; 3], &[(0, 3)]);
        check_chunks(&[100; 10], &[(0, 10)]);
        check_chunks(&[100; 11], &[(0, 10), (10, 11)]);
        check_chunks(&[100; 25], &[(0, 10), (10, 20), (20, 25)]);
    }

    #[test]
    fn chunks_hold_at_most_256_kib() {
        let half = MAX_CALL_BYTES / 2;
        check_chunks(&[half, half], &[(0, 2)]);
        check_chunks(&[half, half, 1], &[(0, 2), (2, 3)]);
        check_chunks(&[half + 1, half], &[(0, 1), (1, 2)]);
        check_chunks(
            &[MAX_CALL_BYTES, 1, MAX_CALL_BYTES],
            &[(0, 1), (1, 2), (2, 3)],
        );
        check_chunks(&[1, MAX_CALL_BYTES - 1, 1], &[(0, 2), (2, 3)]);
    }

    #[test]
    fn chunks_refuse_an_entry_over_the_limit() {
        assert_eq!(
            chunks(&[10, MAX_CALL_BYTES + 1, 10]),
            Err(Oversized {
                index: 1,
                size: MAX_CALL_BYTES + 1
            })
        );
    }

    fn event(state: JobState) -> LifecycleEvent {
        let job_id = JobId::new();
        LifecycleEvent {
            schema: EventSchema,
            event_id: format!("{job_id}:{}", state.as_str()),
            job_id,
            tenant_id: switchyard_core::TenantId::new("acme").unwrap(),
            state,
            at: Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap(),
            backend_id: None,
            attempt: Some(1),
            error: None,
            cost_micros: None,
            latency_ms: Some(24),
            trace: None,
        }
    }

    #[test]
    fn entries_carry_the_event_and_count_their_size() {
        let event = event(JobState::DeadLettered);
        let entry = Entry::new(&event, "jobs");
        let request = &entry.request;
        assert_eq!(request.source(), Some("switchyard"));
        assert_eq!(request.detail_type(), Some("Job Dead Lettered"));
        assert_eq!(request.event_bus_name(), Some("jobs"));
        assert!(request.resources().is_empty());
        let detail: LifecycleEvent = serde_json::from_str(request.detail().unwrap()).unwrap();
        assert_eq!(detail, event);
        assert_eq!(
            request.time().unwrap().secs(),
            event.at.timestamp(),
            "time is the event's, not the call's"
        );
        let detail_len = request.detail().unwrap().len();
        assert_eq!(
            entry.size,
            14 + "switchyard".len() + "Job Dead Lettered".len() + detail_len
        );
    }

    #[test]
    fn bus_messages_are_keyed_by_job_and_carry_the_trace() {
        let mut event = event(JobState::Succeeded);
        event.trace = Some(switchyard_core::contracts::TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: None,
        });
        let message = bus_message(&event);
        assert_eq!(message.key, Some(event.job_id.to_string()));
        assert_eq!(message.headers[headers::CONTENT_TYPE], "application/json");
        assert_eq!(
            message.headers[headers::TRACEPARENT],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert!(!message.headers.contains_key(headers::TRACESTATE));
        assert_eq!(message.body, encode(&event));
    }

    /// Answers each call with the next scripted outcome per entry, recording what was sent.
    struct Scripted {
        answers: Mutex<VecDeque<Vec<bool>>>,
        calls: Mutex<Vec<Vec<String>>>,
    }

    impl Scripted {
        /// `answers[n][i]`: whether entry `i` of call `n` is accepted.
        fn new(answers: &[&[bool]]) -> Scripted {
            Scripted {
                answers: Mutex::new(answers.iter().map(|a| a.to_vec()).collect()),
                calls: Mutex::new(Vec::new()),
            }
        }

        fn calls(&self) -> Vec<Vec<String>> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl PutEvents for Scripted {
        async fn put_events(
            &self,
            entries: Vec<PutEventsRequestEntry>,
        ) -> Result<Vec<Option<EntryFailure>>, EventError> {
            let details = entries
                .iter()
                .map(|e| e.detail().unwrap().to_owned())
                .collect();
            self.calls.lock().unwrap().push(details);
            let answer = self.answers.lock().unwrap().pop_front().unwrap();
            assert_eq!(answer.len(), entries.len(), "script out of step");
            Ok(answer
                .into_iter()
                .map(|accepted| {
                    (!accepted).then(|| EntryFailure {
                        code: "ThrottlingException".into(),
                        message: "Rate exceeded".into(),
                    })
                })
                .collect())
        }
    }

    fn requests(details: &[&str]) -> Vec<PutEventsRequestEntry> {
        details
            .iter()
            .map(|d| PutEventsRequestEntry::builder().detail(*d).build())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn retries_only_the_failed_entries() {
        let client = Scripted::new(&[&[true, false, true, false], &[false, true], &[true]]);
        put_with_retries(
            &client,
            requests(&["a", "b", "c", "d"]),
            &RetryPolicy::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            client.calls(),
            [vec!["a", "b", "c", "d"], vec!["b", "d"], vec!["b"]]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_last_attempt_naming_the_failure() {
        let client = Scripted::new(&[&[false, true, false], &[false, false], &[true, false]]);
        let retry = RetryPolicy {
            attempts: 3,
            ..RetryPolicy::default()
        };
        let started = tokio::time::Instant::now();
        let error = put_with_retries(&client, requests(&["a", "b", "c"]), &retry)
            .await
            .unwrap_err();
        match error {
            EventError::Rejected {
                failed,
                total,
                attempts,
                code,
                message,
            } => {
                assert_eq!((failed, total, attempts), (1, 3, 3));
                assert_eq!(code, "ThrottlingException");
                assert_eq!(message, "Rate exceeded");
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
        assert_eq!(client.calls().len(), 3);
        // Two backoffs of at least half of 100 ms and 200 ms went by between the calls.
        assert!(started.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test(start_paused = true)]
    async fn one_call_when_everything_is_accepted() {
        let client = Scripted::new(&[&[true, true]]);
        put_with_retries(&client, requests(&["a", "b"]), &RetryPolicy::default())
            .await
            .unwrap();
        assert_eq!(client.calls().len(), 1);
    }

    #[tokio::test]
    async fn an_oversized_event_fails_before_anything_is_sent() {
        // No AWS is reachable or needed: the size check comes before any call.
        let aws = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let sink = EventBridgeSink::new(&aws, "jobs");
        let mut big = event(JobState::Failed);
        big.error = Some(switchyard_core::contracts::JobError {
            class: switchyard_core::contracts::ErrorClass::ProviderRejected,
            message: "x".repeat(MAX_CALL_BYTES),
        });
        let error = sink
            .publish(&[event(JobState::Succeeded), big.clone()])
            .await
            .unwrap_err();
        match error {
            EventError::TooLarge {
                event_id, limit, ..
            } => {
                assert_eq!(event_id, big.event_id);
                assert_eq!(limit, MAX_CALL_BYTES);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn config_picks_the_sink() {
        let bus = switchyard_bus::memory::MemoryBus::default();
        let none = AnyEventSink::from_config(&EventsConfig::None, None, bus.clone()).unwrap();
        assert!(matches!(none, AnyEventSink::None(_)));

        let kafka = EventsConfig::Kafka {
            topic: DEFAULT_TOPIC.into(),
        };
        match AnyEventSink::from_config(&kafka, None, bus.clone()).unwrap() {
            AnyEventSink::Bus(sink) => assert_eq!(sink.topic().as_str(), DEFAULT_TOPIC),
            other => panic!("expected a bus sink, got {other:?}"),
        }

        let bad_topic = EventsConfig::Kafka {
            topic: "Not A Topic".into(),
        };
        let error = AnyEventSink::from_config(&bad_topic, None, bus.clone()).unwrap_err();
        assert!(error.to_string().contains("events.topic"), "{error}");

        let eventbridge = EventsConfig::EventBridge {
            event_bus: "jobs".into(),
        };
        let error = AnyEventSink::from_config(&eventbridge, None, bus.clone()).unwrap_err();
        assert!(matches!(error, EventError::Config(_)), "{error}");
        let aws = aws_config::SdkConfig::builder().build();
        match AnyEventSink::from_config(&eventbridge, Some(&aws), bus).unwrap() {
            AnyEventSink::EventBridge(sink) => assert_eq!(sink.event_bus(), "jobs"),
            other => panic!("expected EventBridge, got {other:?}"),
        }
    }
}
