//! Reading dead-letter queues for the tools that inspect, replay and purge them.
//!
//! A [`Browse`] is one pass over one dead-letter queue: every letter once, in the order the
//! transport keeps them.
//! - Kafka: the topic is read by offset, from each partition's low to its high watermark as
//!   they were when the pass began; nothing is consumed or committed, so a pass changes
//!   nothing. The topic is append-only: [`Browse::remove`] cannot delete a letter, and the
//!   caller remembers what it replayed or purged elsewhere (the store).
//! - SQS: letters are received and *held* (their visibility timeout renewed while the pass
//!   runs) so none is seen twice; [`Browse::remove`] deletes one, and [`Browse::finish`] makes
//!   every letter still held visible again at once. A pass that dies leaves its letters to come
//!   back when the hold runs out: nothing is lost.
//!
//! A message on a dead-letter queue that is not a Switchyard dead letter (SQS's own redrive
//! policy moves the raw original after `maxReceiveCount` receives) is read as a dead letter of
//! its own bytes, with a reason that says so, so it can be replayed like any other.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use switchyard_core::QueueName;
use switchyard_core::contracts::{self, DeadLetter, DeadLetterSchema, ErrorClass, OriginalMessage};

use crate::kafka::KafkaBus;
use crate::sqs::SqsBus;
use crate::{BusError, Headers, Outgoing, headers};

/// Prefix of every dead-letter queue's name.
pub const DLQ_PREFIX: &str = "switchyard.dlq.";

/// Header naming the dead letter a replayed message is a copy of.
pub const REPLAY_OF: &str = "switchyard-replay-of";

/// One letter read from a dead-letter queue.
#[derive(Clone, Debug, PartialEq)]
pub struct Letter {
    /// The dead-letter queue it was read from.
    pub dlq: QueueName,
    /// Where it sits: `partition:offset` on Kafka, the message id on SQS.
    pub position: String,
    pub letter: DeadLetter,
    /// Set when the message was not a Switchyard dead letter: why it could not be read as one.
    pub foreign: Option<String>,
}

impl Letter {
    /// The original bytes, as they failed.
    pub fn original_body(&self) -> Result<Vec<u8>, BusError> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.letter.original.body_base64)
            .map_err(|error| {
                BusError::transport(
                    "dlq",
                    format!(
                        "dead letter {} holds a body that is not base64: {error}",
                        self.letter.dead_letter_id
                    ),
                )
            })
    }

    /// The message a replay publishes: the original bytes, key and headers, without the
    /// transports' own bookkeeping (attempt count, first failure, retry and claim-check
    /// headers: the copy starts with a fresh attempt count), marked as a replay.
    pub fn replay_message(&self) -> Result<Outgoing, BusError> {
        let original = &self.letter.original;
        let mut headers: Headers = original
            .headers
            .iter()
            .filter(|(name, _)| !name.starts_with("switchyard-"))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        headers.insert(
            headers::REPLAYS.to_owned(),
            (self.letter.replays + 1).to_string(),
        );
        headers.insert(REPLAY_OF.to_owned(), self.letter.dead_letter_id.to_string());
        Ok(Outgoing {
            key: original.key.clone(),
            headers,
            body: self.original_body()?,
        })
    }
}

/// The queue whose dead letters `dlq` holds.
pub fn source_of(dlq: &QueueName) -> Option<QueueName> {
    dlq.as_str()
        .strip_prefix(DLQ_PREFIX)
        .and_then(|name| QueueName::new(name).ok())
}

/// Reads one message of a dead-letter queue. A foreign message's synthesized letter is named
/// after its position, so that every pass calls it the same.
pub(crate) fn read_letter(
    dlq: &QueueName,
    position: String,
    written_at: Option<DateTime<Utc>>,
    body: &[u8],
    headers: Headers,
    key: Option<String>,
    max_bytes: usize,
) -> Letter {
    match contracts::decode::<DeadLetter>(body, max_bytes) {
        Ok(letter) => Letter {
            dlq: dlq.clone(),
            position,
            letter,
            foreign: None,
        },
        Err(error) => {
            let at = written_at.unwrap_or_else(Utc::now);
            let (job_id, tenant_id) = crate::ids_of(body);
            let why = format!("not a Switchyard dead letter ({error})");
            let letter = DeadLetter {
                schema: DeadLetterSchema,
                dead_letter_id: stable_ulid(at, &format!("{dlq}/{position}")),
                source_queue: source_of(dlq).unwrap_or_else(|| dlq.clone()),
                error_class: ErrorClass::RetriesExhausted,
                reason: format!(
                    "moved to the dead-letter queue by the transport, not by a worker (on SQS: \
                     the redrive policy's maxReceiveCount); {why}"
                ),
                attempts: 0,
                first_failed_at: at,
                last_failed_at: at,
                dead_lettered_at: at,
                job_id,
                tenant_id,
                replays: headers
                    .get(headers::REPLAYS)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                original: OriginalMessage {
                    body_base64: base64::engine::general_purpose::STANDARD.encode(body),
                    headers,
                    key,
                },
            };
            Letter {
                dlq: dlq.clone(),
                position,
                letter,
                foreign: Some(why),
            }
        }
    }
}

/// A ULID for `seed` at `at` that is the same on every pass: FNV-1a, twice, for 80 bits.
fn stable_ulid(at: DateTime<Utc>, seed: &str) -> ulid::Ulid {
    let fnv = |offset: u64| {
        seed.bytes().fold(offset, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let random = (u128::from(fnv(0xcbf2_9ce4_8422_2325)) << 64) | u128::from(fnv(0x84222325));
    ulid::Ulid::from_parts(
        u64::try_from(at.timestamp_millis()).unwrap_or(0),
        random & ((1u128 << 80) - 1),
    )
}

/// One pass over a dead-letter queue; see the module documentation.
#[derive(Debug)]
pub enum Browse {
    Kafka(KafkaBrowse),
    Sqs(Box<SqsBrowse>),
}

impl Browse {
    /// The next letter; `None` once every letter of the pass was read.
    pub async fn next(&mut self) -> Result<Option<Letter>, BusError> {
        match self {
            Browse::Kafka(browse) => browse.next().await,
            Browse::Sqs(browse) => browse.next().await,
        }
    }

    /// Whether [`Browse::remove`] deletes letters; `false` for an append-only log, where a
    /// letter's removal has to be remembered by the caller.
    pub fn can_remove(&self) -> bool {
        matches!(self, Browse::Sqs(_))
    }

    /// Deletes a letter read in this pass (see [`Browse::can_remove`]).
    pub async fn remove(&mut self, letter: &Letter) -> Result<(), BusError> {
        match self {
            Browse::Kafka(_) => Err(BusError::transport(
                "kafka",
                "a Kafka topic is append-only: letters cannot be deleted one by one",
            )),
            Browse::Sqs(browse) => browse.remove(letter).await,
        }
    }

    /// Ends the pass; letters read and not removed stay on the queue (on SQS, visible again
    /// at once).
    pub async fn finish(self) {
        match self {
            Browse::Kafka(browse) => browse.finish(),
            Browse::Sqs(browse) => browse.finish().await,
        }
    }
}

/// A pass over a Kafka dead-letter topic, read on a thread of its own.
#[derive(Debug)]
pub struct KafkaBrowse {
    letters: tokio::sync::mpsc::Receiver<Result<Letter, BusError>>,
}

impl KafkaBrowse {
    pub(crate) fn start(bus: &KafkaBus, dlq: &QueueName, max_bytes: usize) -> KafkaBrowse {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let bus = bus.clone();
        let dlq = dlq.clone();
        std::thread::Builder::new()
            .name("dlq-browse".into())
            .spawn(move || {
                if let Err(error) = bus.read_topic(&dlq, max_bytes, &tx) {
                    let _ = tx.blocking_send(Err(error));
                }
            })
            .map_or_else(
                |error| {
                    let (tx, rx) = tokio::sync::mpsc::channel(1);
                    let _ = tx.try_send(Err(BusError::transport("kafka", error)));
                    KafkaBrowse { letters: rx }
                },
                |_| KafkaBrowse { letters: rx },
            )
    }

    async fn next(&mut self) -> Result<Option<Letter>, BusError> {
        self.letters.recv().await.transpose()
    }

    fn finish(mut self) {
        // Dropping the receiver stops the reading thread at its next letter.
        self.letters.close();
    }
}

/// What SQS needs to delete or release a held letter.
#[derive(Debug)]
struct Held {
    receipt: String,
    claim_check: Option<String>,
}

/// A pass over an SQS dead-letter queue.
#[derive(Debug)]
pub struct SqsBrowse {
    bus: SqsBus,
    dlq: QueueName,
    /// `None` when the queue does not exist: the pass is empty.
    url: Option<String>,
    hold: Duration,
    max_bytes: usize,
    buffer: VecDeque<Letter>,
    held: HashMap<String, Held>,
    seen: HashSet<String>,
    drained: bool,
    /// The last receive came back empty: the next one long-polls to be sure.
    confirming: bool,
    renewed_at: tokio::time::Instant,
}

impl SqsBrowse {
    pub(crate) async fn start(
        bus: &SqsBus,
        dlq: &QueueName,
        hold: Duration,
        max_bytes: usize,
    ) -> Result<SqsBrowse, BusError> {
        let url = match bus.queue_url(dlq).await {
            Ok(url) => Some(url),
            Err(BusError::UnknownQueue(_)) => None,
            Err(error) => return Err(error),
        };
        Ok(SqsBrowse {
            bus: bus.clone(),
            dlq: dlq.clone(),
            url,
            hold: hold.max(Duration::from_secs(30)),
            max_bytes,
            buffer: VecDeque::new(),
            held: HashMap::new(),
            seen: HashSet::new(),
            drained: false,
            confirming: false,
            renewed_at: tokio::time::Instant::now(),
        })
    }

    async fn next(&mut self) -> Result<Option<Letter>, BusError> {
        let Some(url) = self.url.clone() else {
            return Ok(None);
        };
        loop {
            self.renew(&url).await?;
            if let Some(letter) = self.buffer.pop_front() {
                return Ok(Some(letter));
            }
            if self.drained {
                return Ok(None);
            }
            // Short polls while letters keep coming; an empty one is confirmed by a long poll,
            // which asks every SQS server, before the pass counts as read.
            let wait = if self.confirming { 1 } else { 0 };
            let received = self.bus.receive_held(&url, self.hold, wait).await?;
            if received.is_empty() {
                self.drained = self.confirming;
                self.confirming = true;
                continue;
            }
            self.confirming = false;
            for message in received {
                if !self.seen.insert(message.id.clone()) {
                    // Back after its hold ran out: only its receipt is new.
                    if let Some(held) = self.held.get_mut(&message.id) {
                        held.receipt = message.receipt;
                    }
                    continue;
                }
                self.held.insert(
                    message.id.clone(),
                    Held {
                        receipt: message.receipt,
                        claim_check: message.claim_check,
                    },
                );
                self.buffer.push_back(read_letter(
                    &self.dlq,
                    message.id.clone(),
                    message.sent_at,
                    &message.body,
                    message.headers,
                    message.key,
                    self.max_bytes,
                ));
            }
        }
    }

    /// Renews the hold on every held letter once a third of it has passed.
    async fn renew(&mut self, url: &str) -> Result<(), BusError> {
        if self.renewed_at.elapsed() < self.hold / 3 || self.held.is_empty() {
            return Ok(());
        }
        let receipts: Vec<&str> = self.held.values().map(|h| h.receipt.as_str()).collect();
        self.bus
            .set_visibility_all(url, &receipts, self.hold)
            .await?;
        self.renewed_at = tokio::time::Instant::now();
        Ok(())
    }

    async fn remove(&mut self, letter: &Letter) -> Result<(), BusError> {
        let (Some(url), Some(held)) = (&self.url, self.held.get(&letter.position)) else {
            return Err(BusError::transport(
                "sqs",
                format!("letter {} is not held by this pass", letter.position),
            ));
        };
        self.bus.delete_held(url, &held.receipt).await?;
        if let Some(location) = &held.claim_check {
            self.bus.delete_claim_of(location).await;
        }
        self.held.remove(&letter.position);
        Ok(())
    }

    async fn finish(self) {
        if let Some(url) = &self.url {
            let receipts: Vec<&str> = self.held.values().map(|h| h.receipt.as_str()).collect();
            if let Err(error) = self
                .bus
                .set_visibility_all(url, &receipts, Duration::ZERO)
                .await
            {
                tracing::warn!(message = "Failed to release held dead letters; they come back when their hold runs out.", %error);
            }
        }
    }
}

/// A message received from an SQS dead-letter queue, its body made whole.
#[derive(Debug)]
pub(crate) struct HeldMessage {
    pub id: String,
    pub receipt: String,
    pub claim_check: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub body: Vec<u8>,
    pub headers: Headers,
    pub key: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_starts_afresh_and_says_what_it_replays() {
        let queue = QueueName::new("switchyard.jobs.batch").unwrap();
        let headers = Headers::from([
            (headers::TRACEPARENT.to_owned(), "00-aa-bb-01".to_owned()),
            (headers::ATTEMPT.to_owned(), "5".to_owned()),
            (headers::REPLAYS.to_owned(), "1".to_owned()),
            ("switchyard-claim-check".to_owned(), "s3://b/k".to_owned()),
        ]);
        let message = crate::dead_letter_message(
            &queue,
            b"{\"job_id\":1}",
            &headers,
            Some("acme"),
            5,
            None,
            &crate::Rejection {
                class: ErrorClass::NoRoute,
                reason: "no backend".into(),
            },
        );
        let letter = read_letter(
            &queue.dead_letter(),
            "0:7".into(),
            None,
            &message.body,
            message.headers,
            message.key,
            1 << 22,
        );
        assert_eq!(letter.foreign, None);
        assert_eq!(letter.letter.replays, 1);
        let replay = letter.replay_message().unwrap();
        assert_eq!(replay.body, b"{\"job_id\":1}");
        assert_eq!(replay.key.as_deref(), Some("acme"));
        assert_eq!(
            replay.headers,
            Headers::from([
                (headers::TRACEPARENT.to_owned(), "00-aa-bb-01".to_owned()),
                (headers::REPLAYS.to_owned(), "2".to_owned()),
                (
                    REPLAY_OF.to_owned(),
                    letter.letter.dead_letter_id.to_string()
                ),
            ])
        );
    }

    #[test]
    fn a_foreign_message_is_a_letter_of_its_own_bytes_with_a_stable_id() {
        let dlq = QueueName::new("switchyard.dlq.switchyard.jobs.batch").unwrap();
        let at = Utc::now();
        let body = br#"{"job_id":"01JDQ3Z4W5X6Y7Z8A9B0C1D2E3","tenant_id":"acme"}"#;
        let read = || {
            read_letter(
                &dlq,
                "m-1".into(),
                Some(at),
                body,
                Headers::new(),
                None,
                1 << 22,
            )
        };
        let (first, second) = (read(), read());
        assert!(first.foreign.is_some());
        assert_eq!(first.letter.dead_letter_id, second.letter.dead_letter_id);
        assert_eq!(first.letter.source_queue.as_str(), "switchyard.jobs.batch");
        assert_eq!(first.letter.tenant_id.as_ref().unwrap().as_str(), "acme");
        assert_eq!(first.original_body().unwrap(), body);
        let other = read_letter(
            &dlq,
            "m-2".into(),
            Some(at),
            body,
            Headers::new(),
            None,
            1 << 22,
        );
        assert_ne!(other.letter.dead_letter_id, first.letter.dead_letter_id);
    }
}
