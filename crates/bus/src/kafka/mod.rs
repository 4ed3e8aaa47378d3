//! Kafka (rdkafka): topics are the logical queue names.
//!
//! - Producer: idempotent (`enable.idempotence`), `acks=all`; a publish returns once the broker
//!   has the message.
//! - Consumer: a consumer group with manual commits. Offsets are committed only up to the first
//!   unfinished message of each partition ([`tracker`]), periodically and on close; on a
//!   rebalance the revoked partitions' finished work is committed before they go.
//! - Delayed retry without blocking the partition: `nack(delay)` republishes the message to a
//!   retry topic for its delay tier (`<queue>.retry.<tier>`, the Spring Kafka / Karafka
//!   pattern) with a not-before time and the attempt raised, then settles the original. A relay
//!   per tier waits for each message's time and moves it back to the queue. Within a tier,
//!   delays are alike, so one waiting message barely holds up the next. Delays are capped at
//!   10 minutes so a waiting relay stays inside `max.poll.interval.ms`.
//! - A delivery dropped unsettled (a failed settle, a crash) holds its partition's commit point
//!   until the consumer restarts or the partition moves: nothing is lost, and the work after it
//!   is processed again then. The runtime turns handler panics into retries so this stays rare.
//! - Dead letters go to the `switchyard.dlq.<queue>` topic; the original is settled after the
//!   letter is durable.
//! - Kafka has no per-message lease: `extend` is a no-op, and `max.poll.interval.ms` is raised
//!   so that long jobs do not cost the consumer its group membership.

mod tracker;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use switchyard_core::QueueName;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    Bus, BusError, Consumer, Delivery, Headers, Outgoing, QueueDepth, Rejection,
    dead_letter_message, headers,
};
use tracker::OffsetTracker;

const TRANSPORT: &str = "kafka";
/// Header with the RFC 3339 time before which a retried message must not be processed.
const NOT_BEFORE: &str = "switchyard-not-before";
/// Header naming the queue a retried message goes back to.
const RETRY_TO: &str = "switchyard-retry-to";
/// Retry delay tiers: a nack goes to the largest tier not longer than its delay.
const RETRY_TIERS: [(&str, Duration); 4] = [
    ("1s", Duration::from_secs(1)),
    ("10s", Duration::from_secs(10)),
    ("1m", Duration::from_secs(60)),
    ("10m", Duration::from_secs(600)),
];
/// Longest retry delay. A relay waits for a message without polling its consumer, so a wait
/// must stay well inside `max.poll.interval.ms` (15 min) or the relay loses its partitions.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);
/// Dead letters hold the original base64-encoded: room for a 1 MiB message and its envelope.
const DEAD_LETTER_MAX_BYTES: &str = "4194304";
/// The producer's default wait to fill a batch (`linger.ms`; `[bus.kafka.properties]` may
/// change it): librdkafka's own default. At 2 ms the router drained a backlog more slowly in
/// 10 of 11 side-by-side runs (fuller batches mean fewer produce requests for the client and
/// the broker to serve; docs/benchmarks.md), for at most 3 ms less per hop when traffic is
/// light.
const PRODUCER_LINGER_MS: &str = "5";
/// How often finished work is committed while consuming.
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);

/// Kafka settings, from `[bus.kafka]`.
#[derive(Clone, Debug)]
pub struct KafkaSettings {
    pub brokers: String,
    /// Prefix of consumer group ids: a consumer of group `g` joins `<prefix>.<g>`.
    pub group_prefix: String,
    /// Extra librdkafka properties.
    pub properties: Vec<(String, String)>,
    /// Partitions of topics that `ensure` creates.
    pub partitions: i32,
    pub replication: i32,
    /// Whose lag `depth` reports for queues this process does not consume.
    pub depth_group: String,
}

impl KafkaSettings {
    pub fn new(brokers: impl Into<String>) -> KafkaSettings {
        KafkaSettings {
            brokers: brokers.into(),
            group_prefix: "switchyard".into(),
            properties: Vec::new(),
            partitions: 6,
            replication: 1,
            depth_group: "router".into(),
        }
    }

    fn client_config(&self) -> ClientConfig {
        self.client_config_over(&[])
    }

    /// Batching and timeouts are the operator's to tune through the properties; the delivery
    /// guarantees every hop relies on, and room for a dead letter, are not, so they are set
    /// last.
    fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config_over(&[
            ("linger.ms", PRODUCER_LINGER_MS),
            ("message.timeout.ms", "30000"),
        ]);
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.max.bytes", DEAD_LETTER_MAX_BYTES);
        config
    }

    /// `defaults`, then the configured properties over them.
    fn client_config_over(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

#[derive(Clone)]
pub struct KafkaBus {
    inner: Arc<KafkaInner>,
}

struct KafkaInner {
    settings: KafkaSettings,
    /// The group this process consumes each queue with: whose lag `depth` reports.
    groups: Mutex<std::collections::HashMap<QueueName, String>>,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus")
            .field("brokers", &self.inner.settings.brokers)
            .finish_non_exhaustive()
    }
}

fn kafka_error(error: impl std::fmt::Display) -> BusError {
    BusError::transport(TRANSPORT, error)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl KafkaBus {
    pub fn new(settings: KafkaSettings) -> Result<KafkaBus, BusError> {
        let producer: FutureProducer = settings.producer_config().create().map_err(kafka_error)?;
        let admin = settings.client_config().create().map_err(kafka_error)?;
        Ok(KafkaBus {
            inner: Arc::new(KafkaInner {
                settings,
                groups: Mutex::new(std::collections::HashMap::new()),
                producer,
                admin,
            }),
        })
    }

    fn retry_topic(queue: &QueueName, tier: &str) -> String {
        format!("{queue}.retry.{tier}")
    }

    fn tier_for(delay: Duration) -> &'static str {
        RETRY_TIERS
            .iter()
            .rev()
            .find(|(_, length)| *length <= delay)
            .map_or(RETRY_TIERS[0].0, |(name, _)| name)
    }

    /// Hands a message to the producer's queue; the returned future resolves when the broker
    /// has it. Waits for room when the queue is full.
    async fn enqueue(
        &self,
        topic: &str,
        message: &Outgoing,
    ) -> Result<rdkafka::producer::DeliveryFuture, BusError> {
        loop {
            let mut kafka_headers = OwnedHeaders::new_with_capacity(message.headers.len());
            for (name, value) in &message.headers {
                kafka_headers = kafka_headers.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
            let mut record = FutureRecord::to(topic)
                .payload(&message.body)
                .headers(kafka_headers);
            if let Some(key) = &message.key {
                record = record.key(key);
            }
            match self.inner.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    _,
                )) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) => return Err(kafka_error(error)),
            }
        }
    }

    async fn send(&self, topic: &str, message: &Outgoing) -> Result<(), BusError> {
        let delivery = self.enqueue(topic, message).await?;
        confirm(delivery).await
    }

    /// `send` with a few retries: used where a failure would leave a delivery unsettled (and
    /// its partition's commits held back until a restart).
    async fn send_settling(&self, topic: &str, message: &Outgoing) -> Result<(), BusError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.send(topic, message).await {
                Ok(()) => return Ok(()),
                Err(error) if attempt >= 4 => return Err(error),
                Err(error) => {
                    let delay =
                        crate::backoff(attempt, Duration::from_millis(200), Duration::from_secs(5));
                    warn!(message = "Send failed while settling; retrying.", %error, topic, attempt);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn create_topics(&self, names: &[String]) -> Result<(), BusError> {
        let settings = &self.inner.settings;
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|name| {
                NewTopic::new(
                    name,
                    settings.partitions,
                    TopicReplication::Fixed(settings.replication),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = self
            .inner
            .admin
            .create_topics(&topics, &options)
            .await
            .map_err(kafka_error)?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(kafka_error(format!("cannot create topic {topic}: {code}")));
                }
            }
        }
        Ok(())
    }

    fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut config = self.inner.settings.client_config();
        config
            .set(
                "group.id",
                format!("{}.{group}", self.inner.settings.group_prefix),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("max.poll.interval.ms", "900000")
            // A member that joins a formed group (the router's second and third tier
            // consumers, a worker scaling out) waits for the others to rejoin, which they do on
            // their next heartbeat: 1 s rather than librdkafka's 3 s stalls its topics less.
            .set("heartbeat.interval.ms", "1000")
            .set("partition.assignment.strategy", "cooperative-sticky");
        // A new group starts at the beginning, so no queued job is skipped; a configured reset
        // policy (tests on shared topics, replaying tools) still wins.
        for (key, value) in &self.inner.settings.properties {
            if key == "auto.offset.reset" {
                config.set(key, value);
            }
        }
        config
    }

    /// Moves retried messages of one tier back to their queue when they are due.
    fn spawn_relay(
        &self,
        queue: &QueueName,
        group: &str,
        tier: &str,
        stop: CancellationToken,
    ) -> Result<(), BusError> {
        let topic = KafkaBus::retry_topic(queue, tier);
        // Always from the start: a relay that skipped waiting retries would lose them.
        let consumer: StreamConsumer = self
            .consumer_config(&format!("{group}.retry"))
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(kafka_error)?;
        consumer.subscribe(&[&topic]).map_err(kafka_error)?;
        let bus = self.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    () = stop.cancelled() => break,
                    received = consumer.recv() => received,
                };
                let message = match received {
                    Ok(message) => message.detach(),
                    Err(error) => {
                        warn!(message = "Retry relay failed to fetch.", %error, %topic);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let outgoing = outgoing_from(&message);
                if let Some(due) = outgoing
                    .headers
                    .get(NOT_BEFORE)
                    .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
                {
                    let wait = (due.with_timezone(&Utc) - Utc::now())
                        .to_std()
                        .unwrap_or_default();
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                let mut back = outgoing;
                back.headers.remove(NOT_BEFORE);
                back.headers.remove(RETRY_TO);
                // Publish first, commit after: a crash in between repeats the retry, never
                // loses it.
                loop {
                    match bus.send(queue.as_str(), &back).await {
                        Ok(()) => break,
                        Err(error) => {
                            warn!(message = "Retry relay failed to republish; trying again.", %error, %queue);
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
                let mut offsets = TopicPartitionList::new();
                let _ = offsets.add_partition_offset(
                    message.topic(),
                    message.partition(),
                    Offset::Offset(message.offset() + 1),
                );
                if let Err(error) = consumer.commit(&offsets, CommitMode::Async) {
                    warn!(message = "Retry relay failed to commit.", %error, %topic);
                }
            }
            // Leaving the group blocks; keep it off the async threads.
            let _ = tokio::task::spawn_blocking(move || {
                consumer.unsubscribe();
                drop(consumer);
            })
            .await;
        });
        Ok(())
    }
}

/// The message's key, headers and body, copied once.
fn outgoing_from(message: &impl rdkafka::Message) -> Outgoing {
    let mut headers = Headers::new();
    if let Some(kafka_headers) = message.headers() {
        for header in kafka_headers.iter() {
            if let Some(value) = header.value.and_then(|v| std::str::from_utf8(v).ok()) {
                headers.insert(header.key.to_owned(), value.to_owned());
            }
        }
    }
    Outgoing {
        key: message
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .map(str::to_owned),
        headers,
        body: message.payload().unwrap_or_default().to_vec(),
    }
}

impl Bus for KafkaBus {
    type Consumer = KafkaConsumer;

    async fn ensure(&self, queues: &[QueueName]) -> Result<(), BusError> {
        let mut names = Vec::new();
        for queue in queues {
            names.push(queue.to_string());
            names.push(queue.dead_letter().to_string());
            for (tier, _) in RETRY_TIERS {
                names.push(KafkaBus::retry_topic(queue, tier));
            }
        }
        self.create_topics(&names).await
    }

    async fn publish(&self, queue: &QueueName, message: Outgoing) -> Result<(), BusError> {
        self.send(queue.as_str(), &message).await
    }

    async fn publish_batch(
        &self,
        queue: &QueueName,
        messages: Vec<Outgoing>,
    ) -> Result<(), BusError> {
        // Queue them all, then wait: the producer batches what is in flight together.
        let mut deliveries = Vec::with_capacity(messages.len());
        for message in &messages {
            deliveries.push(self.enqueue(queue.as_str(), message).await?);
        }
        for delivery in deliveries {
            confirm(delivery).await?;
        }
        Ok(())
    }

    async fn consume(&self, queue: &QueueName, group: &str) -> Result<KafkaConsumer, BusError> {
        lock(&self.inner.groups).insert(queue.clone(), group.to_owned());
        let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
        let context = TrackingContext {
            tracker: tracker.clone(),
        };
        let consumer: StreamConsumer<TrackingContext> = self
            .consumer_config(group)
            .create_with_context(context)
            .map_err(kafka_error)?;
        consumer.subscribe(&[queue.as_str()]).map_err(kafka_error)?;
        let consumer = Arc::new(consumer);
        let stop = CancellationToken::new();
        // Dead-letter queues are not retried: replay is an SRE's decision.
        if !queue.as_str().starts_with("switchyard.dlq.") {
            for (tier, _) in RETRY_TIERS {
                self.spawn_relay(queue, group, tier, stop.clone())?;
            }
        }
        // Commit finished work in the background, so a slow stream of acks still commits.
        let committer = {
            let consumer = consumer.clone();
            let tracker = tracker.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(COMMIT_INTERVAL);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        _ = tick.tick() => commit(&consumer, &tracker, CommitMode::Async),
                    }
                }
            })
        };
        Ok(KafkaConsumer {
            queue: queue.clone(),
            consumer,
            tracker,
            bus: self.clone(),
            stop,
            committer: Some(committer),
        })
    }

    async fn depth(&self, queue: &QueueName) -> Result<QueueDepth, BusError> {
        let bus = self.clone();
        let queue = queue.clone();
        let group = lock(&self.inner.groups)
            .get(&queue)
            .cloned()
            .unwrap_or_else(|| self.inner.settings.depth_group.clone());
        // Watermark and committed-offset look-ups block: keep them off the async threads.
        tokio::task::spawn_blocking(move || bus.lag(&queue, &group))
            .await
            .map_err(kafka_error)?
    }
}

impl KafkaBus {
    /// Consumer lag of `group` on `queue`: what is written and not yet committed. Blocking.
    pub fn lag(&self, queue: &QueueName, group: &str) -> Result<QueueDepth, BusError> {
        let reader = self.lag_reader(group)?;
        reader
            .lag_and_commits(queue, LAG_TIMEOUT)
            .map(|(depth, _)| depth)
    }

    /// [`LagReader::active_lag`] once, with a reader made for the purpose. Blocking.
    pub fn active_lag(
        &self,
        queue: &QueueName,
        group: &str,
    ) -> Result<Option<QueueDepth>, BusError> {
        self.lag_reader(group)?.active_lag(queue)
    }

    /// Moves `group`'s committed offsets on `queue` to its end, so that the group reads only
    /// what is written from now on: `kafka-consumer-groups --reset-offsets --to-latest`. For a
    /// group with no live members (a live one keeps committing its own positions). Blocking.
    pub fn reset_to_end(&self, queue: &QueueName, group: &str) -> Result<(), BusError> {
        let consumer: BaseConsumer = self.consumer_config(group).create().map_err(kafka_error)?;
        let mut offsets = TopicPartitionList::new();
        for element in partitions_of(&consumer, queue, LAG_TIMEOUT)?.elements() {
            let high = high_watermark(&consumer, element.topic(), element.partition())?;
            offsets
                .add_partition_offset(element.topic(), element.partition(), Offset::Offset(high))
                .map_err(kafka_error)?;
        }
        if offsets.count() == 0 {
            return Err(kafka_error(format!("topic {queue} has no partitions")));
        }
        consumer
            .commit(&offsets, CommitMode::Sync)
            .map_err(kafka_error)
    }

    /// A reader of `group`'s lag that keeps its connections between look-ups: what to poll
    /// with, where a fresh client per look-up would mean new threads, broker connections and a
    /// coordinator look-up every time.
    pub fn lag_reader(&self, group: &str) -> Result<LagReader, BusError> {
        let consumer: BaseConsumer = self.consumer_config(group).create().map_err(kafka_error)?;
        Ok(LagReader { consumer })
    }
}

/// A partition's high watermark. Blocking. A topic created a moment ago has no leader yet
/// (the broker says so until its election ends), so that answer is asked again, up to
/// `LAG_TIMEOUT`.
fn high_watermark(consumer: &BaseConsumer, topic: &str, partition: i32) -> Result<i64, BusError> {
    let started = std::time::Instant::now();
    loop {
        match consumer.fetch_watermarks(topic, partition, LAG_TIMEOUT) {
            Ok((_, high)) => return Ok(high),
            Err(rdkafka::error::KafkaError::MetadataFetch(
                RDKafkaErrorCode::NotLeaderForPartition | RDKafkaErrorCode::LeaderNotAvailable,
            )) if started.elapsed() < LAG_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(error) => return Err(kafka_error(error)),
        }
    }
}

/// Every partition of `queue`'s topic, from the broker's metadata. Blocking.
fn partitions_of(
    consumer: &BaseConsumer,
    queue: &QueueName,
    timeout: Duration,
) -> Result<TopicPartitionList, BusError> {
    let metadata = consumer
        .fetch_metadata(Some(queue.as_str()), timeout)
        .map_err(kafka_error)?;
    let mut partitions = TopicPartitionList::new();
    for topic in metadata.topics() {
        for partition in topic.partitions() {
            partitions.add_partition(topic.name(), partition.id());
        }
    }
    Ok(partitions)
}

/// How long one lag look-up (metadata, committed offsets, a watermark) may take.
const LAG_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads one consumer group's lag; see [`KafkaBus::lag_reader`]. Every method blocks.
pub struct LagReader {
    consumer: BaseConsumer,
}

impl std::fmt::Debug for LagReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagReader").finish_non_exhaustive()
    }
}

impl LagReader {
    /// The lag of the group on `queue` while it is consuming there; `None` while it has
    /// committed on none of its partitions. Such a group has not started, or starts at the
    /// topic's end (`auto.offset.reset = latest`), so counting from the low watermark would
    /// call a fresh backend saturated. Once it has committed anywhere, a partition it has not
    /// committed on counts from the low watermark: that is work waiting for it.
    pub fn active_lag(&self, queue: &QueueName) -> Result<Option<QueueDepth>, BusError> {
        self.lag_and_commits(queue, LAG_TIMEOUT)
            .map(|(depth, committed)| committed.then_some(depth))
    }

    fn lag_and_commits(
        &self,
        queue: &QueueName,
        timeout: Duration,
    ) -> Result<(QueueDepth, bool), BusError> {
        let consumer = &self.consumer;
        let partitions = partitions_of(consumer, queue, timeout)?;
        let committed = consumer
            .committed_offsets(partitions, timeout)
            .map_err(kafka_error)?;
        let mut ready = 0u64;
        let mut any_committed = false;
        for element in committed.elements() {
            let (low, high) = consumer
                .fetch_watermarks(element.topic(), element.partition(), timeout)
                .map_err(kafka_error)?;
            let from = match element.offset() {
                Offset::Offset(offset) => {
                    any_committed = true;
                    offset
                }
                _ => low,
            };
            ready += u64::try_from(high - from).unwrap_or(0);
        }
        Ok((
            QueueDepth {
                ready,
                in_flight: 0,
            },
            any_committed,
        ))
    }
}

impl KafkaBus {
    /// A pass over the dead-letter topic `dlq`; see [`crate::dlq`].
    pub fn browse_dead_letters(
        &self,
        dlq: &QueueName,
        max_bytes: usize,
    ) -> crate::dlq::KafkaBrowse {
        crate::dlq::KafkaBrowse::start(self, dlq, max_bytes)
    }

    /// Reads `topic` from each partition's low to its high watermark (as they are now) into
    /// `tx`, without a group: nothing is committed. Blocking; returns when every partition
    /// is read or the receiver is gone.
    pub(crate) fn read_topic(
        &self,
        topic: &QueueName,
        max_bytes: usize,
        tx: &tokio::sync::mpsc::Sender<Result<crate::dlq::Letter, BusError>>,
    ) -> Result<(), BusError> {
        let timeout = Duration::from_secs(10);
        let consumer: BaseConsumer = self
            .inner
            .settings
            .client_config()
            .set(
                "group.id",
                format!("{}.dlq-browser", self.inner.settings.group_prefix),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.message.max.bytes", DEAD_LETTER_MAX_BYTES)
            .create()
            .map_err(kafka_error)?;
        let metadata = consumer
            .fetch_metadata(Some(topic.as_str()), timeout)
            .map_err(kafka_error)?;
        let mut assignment = TopicPartitionList::new();
        // Partition → the offset the pass ends before.
        let mut ends = std::collections::HashMap::new();
        for found in metadata.topics() {
            // A topic that does not exist holds no letters.
            if found.error().is_some() {
                continue;
            }
            for partition in found.partitions() {
                let (low, high) = consumer
                    .fetch_watermarks(found.name(), partition.id(), timeout)
                    .map_err(kafka_error)?;
                if high > low {
                    assignment
                        .add_partition_offset(found.name(), partition.id(), Offset::Offset(low))
                        .map_err(kafka_error)?;
                    ends.insert(partition.id(), high);
                }
            }
        }
        if ends.is_empty() {
            return Ok(());
        }
        consumer.assign(&assignment).map_err(kafka_error)?;
        let mut idle = Duration::ZERO;
        while !ends.is_empty() {
            if tx.is_closed() {
                return Ok(());
            }
            let Some(polled) = consumer.poll(Duration::from_millis(500)) else {
                // The last offsets may hold no message (transaction markers): a partition
                // whose position has reached its end is read.
                if let Ok(positions) = consumer.position() {
                    for element in positions.elements() {
                        if let (Offset::Offset(at), Some(&end)) =
                            (element.offset(), ends.get(&element.partition()))
                            && at >= end
                        {
                            ends.remove(&element.partition());
                        }
                    }
                }
                idle += Duration::from_millis(500);
                if idle >= Duration::from_secs(60) {
                    return Err(kafka_error(format!(
                        "no progress reading {topic} for 60 s; {} partitions unread",
                        ends.len()
                    )));
                }
                continue;
            };
            idle = Duration::ZERO;
            let message = polled.map_err(kafka_error)?.detach();
            let partition = message.partition();
            let Some(&end) = ends.get(&partition) else {
                continue;
            };
            if message.offset() >= end {
                ends.remove(&partition);
                continue;
            }
            if message.offset() + 1 >= end {
                ends.remove(&partition);
            }
            let written_at = message
                .timestamp()
                .to_millis()
                .and_then(DateTime::<Utc>::from_timestamp_millis);
            let outgoing = outgoing_from(&message);
            let letter = crate::dlq::read_letter(
                topic,
                format!("{partition}:{}", message.offset()),
                written_at,
                &outgoing.body,
                outgoing.headers,
                outgoing.key,
                max_bytes,
            );
            if tx.blocking_send(Ok(letter)).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

async fn confirm(delivery: rdkafka::producer::DeliveryFuture) -> Result<(), BusError> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => Err(kafka_error(error)),
        Err(_) => Err(kafka_error("the producer was dropped before delivery")),
    }
}

fn commit<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    tracker: &Mutex<OffsetTracker>,
    mode: CommitMode,
) {
    let points = lock(tracker).take_commits();
    commit_points(consumer, &points, mode);
}

fn commit_points<C: ConsumerContext, K: rdkafka::consumer::Consumer<C>>(
    consumer: &K,
    points: &[(String, i32, i64)],
    mode: CommitMode,
) {
    if points.is_empty() {
        return;
    }
    let mut offsets = TopicPartitionList::new();
    for (topic, partition, offset) in points {
        let _ = offsets.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    if let Err(error) = consumer.commit(&offsets, mode) {
        warn!(message = "Failed to commit offsets.", %error);
    }
}

/// Commits the finished work of revoked partitions before they move to another consumer.
struct TrackingContext {
    tracker: Arc<Mutex<OffsetTracker>>,
}

impl ClientContext for TrackingContext {}

impl ConsumerContext for TrackingContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            let revoked: Vec<(String, i32)> = partitions
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect();
            let points = lock(&self.tracker).revoke(&revoked);
            debug!(
                message = "Partitions revoked; committing finished work.",
                n = revoked.len()
            );
            commit_points(consumer, &points, CommitMode::Sync);
        }
    }
}

pub struct KafkaConsumer {
    queue: QueueName,
    consumer: Arc<StreamConsumer<TrackingContext>>,
    tracker: Arc<Mutex<OffsetTracker>>,
    bus: KafkaBus,
    stop: CancellationToken,
    committer: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        // Stops the relays and the committer even when the consumer was not closed.
        self.stop.cancel();
    }
}

impl Consumer for KafkaConsumer {
    type Delivery = KafkaDelivery;

    async fn next(&mut self) -> Result<Option<KafkaDelivery>, BusError> {
        // Copied out and dropped here: librdkafka cannot close a consumer while a borrowed
        // message lives. Copied once, straight from librdkafka's buffer (`detach` would copy
        // first and the delivery again).
        let message = self.consumer.recv().await.map_err(kafka_error)?;
        let (partition, offset) = (message.partition(), message.offset());
        lock(&self.tracker).delivered(message.topic(), partition, offset);
        let outgoing = outgoing_from(&message);
        drop(message);
        let attempt = outgoing
            .headers
            .get(headers::ATTEMPT)
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let first_failed_at = headers::first_failed_at(&outgoing.headers);
        Ok(Some(KafkaDelivery {
            queue: self.queue.clone(),
            partition,
            offset,
            message: outgoing,
            attempt,
            first_failed_at,
            tracker: self.tracker.clone(),
            bus: self.bus.clone(),
        }))
    }

    async fn close(mut self) {
        self.stop.cancel();
        if let Some(committer) = self.committer.take() {
            let _ = committer.await;
        }
        let consumer = self.consumer.clone();
        let tracker = self.tracker.clone();
        drop(self);
        let unsettled = lock(&tracker).pending();
        if unsettled > 0 {
            debug!(
                message = "Closing with unsettled deliveries; they will be redelivered.",
                unsettled
            );
        }
        let committing = consumer.clone();
        let _ =
            tokio::task::spawn_blocking(move || commit(&committing, &tracker, CommitMode::Sync))
                .await;
        let consumer = match Arc::try_unwrap(consumer) {
            Ok(consumer) => consumer,
            Err(shared) => {
                warn!(message = "Consumer still shared at close; leaving the group on drop.");
                drop(shared);
                return;
            }
        };
        // Leaving the group blocks until the broker answers: do it off the async threads.
        let _ = tokio::task::spawn_blocking(move || {
            consumer.unsubscribe();
            drop(consumer);
        })
        .await;
    }
}

#[derive(Debug)]
pub struct KafkaDelivery {
    /// Also the topic: a consumer reads its queue's topic and no other.
    queue: QueueName,
    partition: i32,
    offset: i64,
    message: Outgoing,
    attempt: u32,
    first_failed_at: Option<DateTime<Utc>>,
    tracker: Arc<Mutex<OffsetTracker>>,
    bus: KafkaBus,
}

impl KafkaDelivery {
    fn settle(&self) -> Result<(), BusError> {
        if lock(&self.tracker).settled(self.queue.as_str(), self.partition, self.offset) {
            Ok(())
        } else {
            Err(BusError::LeaseExpired)
        }
    }
}

impl Delivery for KafkaDelivery {
    fn queue(&self) -> &QueueName {
        &self.queue
    }

    fn body(&self) -> &[u8] {
        &self.message.body
    }

    fn headers(&self) -> &Headers {
        &self.message.headers
    }

    fn key(&self) -> Option<&str> {
        self.message.key.as_deref()
    }

    fn attempt(&self) -> u32 {
        self.attempt
    }

    fn first_failed_at(&self) -> Option<DateTime<Utc>> {
        self.first_failed_at
    }

    async fn ack(self) -> Result<(), BusError> {
        self.settle()
    }

    async fn nack(self, delay: Duration, error: &str) -> Result<(), BusError> {
        if self.queue.as_str().starts_with("switchyard.dlq.") {
            return Err(kafka_error(
                "dead-letter queues are not retried: replay the letter instead",
            ));
        }
        let delay = delay.min(MAX_RETRY_DELAY);
        let now = Utc::now();
        let mut retry = self.message.clone();
        retry
            .headers
            .insert(headers::ATTEMPT.into(), (self.attempt + 1).to_string());
        retry.headers.insert(
            headers::FIRST_FAILED_AT.into(),
            self.first_failed_at
                .unwrap_or(now)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
        retry.headers.insert(
            headers::LAST_ERROR.into(),
            error.chars().take(1024).collect(),
        );
        let due = now + chrono::Duration::from_std(delay).unwrap_or_default();
        retry.headers.insert(
            NOT_BEFORE.into(),
            due.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
        retry
            .headers
            .insert(RETRY_TO.into(), self.queue.to_string());
        let topic = KafkaBus::retry_topic(&self.queue, KafkaBus::tier_for(delay));
        self.bus.send_settling(&topic, &retry).await?;
        self.settle()
    }

    async fn extend(&self, _by: Duration) -> Result<(), BusError> {
        Ok(())
    }

    fn leased(&self) -> bool {
        false
    }

    async fn dead_letter(self, rejection: Rejection) -> Result<(), BusError> {
        let outgoing = dead_letter_message(
            &self.queue,
            &self.message.body,
            &self.message.headers,
            self.message.key.as_deref(),
            self.attempt,
            self.first_failed_at,
            &rejection,
        );
        self.bus
            .send(self.queue.dead_letter().as_str(), &outgoing)
            .await?;
        self.settle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_tune_the_producer_but_cannot_weaken_its_guarantees() {
        let mut settings = KafkaSettings::new("127.0.0.1:9092");
        let defaults = settings.producer_config();
        assert_eq!(defaults.get("linger.ms"), Some(PRODUCER_LINGER_MS));
        assert_eq!(defaults.get("acks"), Some("all"));

        settings.properties = vec![
            ("linger.ms".into(), "20".into()),
            ("security.protocol".into(), "SASL_SSL".into()),
            ("acks".into(), "1".into()),
            ("enable.idempotence".into(), "false".into()),
            ("message.max.bytes".into(), "1000".into()),
        ];
        let config = settings.producer_config();
        assert_eq!(config.get("linger.ms"), Some("20"));
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("message.max.bytes"), Some(DEAD_LETTER_MAX_BYTES));
    }
}
