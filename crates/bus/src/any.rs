//! [`AnyBus`]: the transport chosen by configuration, for binaries that serve every kind.
//!
//! Library code stays generic over [`Bus`]; only the binary picks a transport at run time, and
//! the enum dispatch here costs a branch per call, not a box per message.

use std::time::Duration;

use chrono::{DateTime, Utc};
use switchyard_core::QueueName;
use switchyard_core::config::{BusConfig, Config};

use crate::kafka::{KafkaBus, KafkaConsumer, KafkaDelivery, KafkaSettings};
use crate::memory::{MemoryBus, MemoryConsumer, MemoryDelivery};
use crate::sqs::{SqsBus, SqsConsumer, SqsDelivery, SqsSettings};
use crate::{Bus, BusError, Consumer, Delivery, Headers, Outgoing, QueueDepth, Rejection};

#[derive(Clone, Debug)]
pub enum AnyBus {
    Memory(MemoryBus),
    Kafka(KafkaBus),
    Sqs(SqsBus),
}

#[derive(Debug)]
pub enum AnyConsumer {
    Memory(MemoryConsumer),
    Kafka(KafkaConsumer),
    Sqs(SqsConsumer),
}

#[derive(Debug)]
pub enum AnyDelivery {
    Memory(MemoryDelivery),
    Kafka(KafkaDelivery),
    Sqs(SqsDelivery),
}

impl AnyBus {
    /// The configured transport. `memory` is a fresh in-process bus, so only useful to a
    /// process that runs every component itself (`switchyard dev`).
    pub async fn from_config(config: &Config) -> Result<AnyBus, BusError> {
        match &config.bus {
            BusConfig::Memory => Ok(AnyBus::Memory(MemoryBus::default())),
            BusConfig::Kafka(kafka) => {
                let mut settings = KafkaSettings::new(kafka.brokers.clone());
                settings.group_prefix.clone_from(&kafka.group_id);
                settings.properties = kafka
                    .properties
                    .iter()
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect();
                Ok(AnyBus::Kafka(KafkaBus::new(settings)?))
            }
            BusConfig::Sqs(sqs) => {
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
                if let Some(region) = &sqs.region {
                    loader = loader.region(aws_config::Region::new(region.clone()));
                }
                if let Some(endpoint) = &sqs.endpoint_url {
                    loader = loader.endpoint_url(endpoint.as_str());
                }
                let aws = loader.load().await;
                let settings = SqsSettings {
                    queue_prefix: sqs.queue_prefix.clone(),
                    claim_check_bucket: sqs.claim_check_bucket.clone(),
                    wait_time: sqs.wait_time,
                    visibility_timeout: sqs.visibility_timeout,
                    // Emulators need path-style S3; real AWS takes it too.
                    s3_force_path_style: sqs.endpoint_url.is_some(),
                    ..SqsSettings::default()
                };
                Ok(AnyBus::Sqs(SqsBus::new(&aws, settings)))
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            AnyBus::Memory(_) => "memory",
            AnyBus::Kafka(_) => "kafka",
            AnyBus::Sqs(_) => "sqs",
        }
    }

    /// A pass over the dead-letter queue `dlq`, holding (SQS) what it reads for `hold` at a
    /// time; see [`crate::dlq`]. The in-process bus has no dead letters outside the process
    /// that runs it, so it has nothing to browse from another one.
    pub async fn browse_dead_letters(
        &self,
        dlq: &QueueName,
        hold: Duration,
        max_bytes: usize,
    ) -> Result<crate::dlq::Browse, BusError> {
        match self {
            AnyBus::Memory(_) => Err(BusError::transport(
                "memory",
                "the in-process bus keeps its dead letters inside the process that runs it \
                 (`switchyard dev` reports them); configure Kafka or SQS to inspect them here",
            )),
            AnyBus::Kafka(bus) => Ok(crate::dlq::Browse::Kafka(
                bus.browse_dead_letters(dlq, max_bytes),
            )),
            AnyBus::Sqs(bus) => Ok(crate::dlq::Browse::Sqs(Box::new(
                bus.browse_dead_letters(dlq, hold, max_bytes).await?,
            ))),
        }
    }

    /// The lease a delivery starts with on this transport, for the runtime's renewals.
    pub fn lease(config: &Config) -> Duration {
        match &config.bus {
            BusConfig::Sqs(sqs) => sqs.visibility_timeout,
            // Kafka has no lease (offsets); the in-process bus's is 30 s.
            BusConfig::Memory | BusConfig::Kafka(_) => Duration::from_secs(30),
        }
    }
}

macro_rules! each {
    ($value:expr, $inner:ident => $body:expr) => {
        match $value {
            AnyBus::Memory($inner) => $body,
            AnyBus::Kafka($inner) => $body,
            AnyBus::Sqs($inner) => $body,
        }
    };
}

impl Bus for AnyBus {
    type Consumer = AnyConsumer;

    async fn ensure(&self, queues: &[QueueName]) -> Result<(), BusError> {
        each!(self, bus => bus.ensure(queues).await)
    }

    async fn publish(&self, queue: &QueueName, message: Outgoing) -> Result<(), BusError> {
        each!(self, bus => bus.publish(queue, message).await)
    }

    async fn publish_batch(
        &self,
        queue: &QueueName,
        messages: Vec<Outgoing>,
    ) -> Result<(), BusError> {
        each!(self, bus => bus.publish_batch(queue, messages).await)
    }

    async fn consume(&self, queue: &QueueName, group: &str) -> Result<AnyConsumer, BusError> {
        Ok(match self {
            AnyBus::Memory(bus) => AnyConsumer::Memory(bus.consume(queue, group).await?),
            AnyBus::Kafka(bus) => AnyConsumer::Kafka(bus.consume(queue, group).await?),
            AnyBus::Sqs(bus) => AnyConsumer::Sqs(bus.consume(queue, group).await?),
        })
    }

    async fn depth(&self, queue: &QueueName) -> Result<QueueDepth, BusError> {
        each!(self, bus => bus.depth(queue).await)
    }
}

impl Consumer for AnyConsumer {
    type Delivery = AnyDelivery;

    async fn next(&mut self) -> Result<Option<AnyDelivery>, BusError> {
        Ok(match self {
            AnyConsumer::Memory(c) => c.next().await?.map(AnyDelivery::Memory),
            AnyConsumer::Kafka(c) => c.next().await?.map(AnyDelivery::Kafka),
            AnyConsumer::Sqs(c) => c.next().await?.map(AnyDelivery::Sqs),
        })
    }

    async fn close(self) {
        match self {
            AnyConsumer::Memory(c) => c.close().await,
            AnyConsumer::Kafka(c) => c.close().await,
            AnyConsumer::Sqs(c) => c.close().await,
        }
    }
}

macro_rules! each_delivery {
    ($value:expr, $inner:ident => $body:expr) => {
        match $value {
            AnyDelivery::Memory($inner) => $body,
            AnyDelivery::Kafka($inner) => $body,
            AnyDelivery::Sqs($inner) => $body,
        }
    };
}

impl Delivery for AnyDelivery {
    fn queue(&self) -> &QueueName {
        each_delivery!(self, d => d.queue())
    }
    fn body(&self) -> &[u8] {
        each_delivery!(self, d => d.body())
    }
    fn headers(&self) -> &Headers {
        each_delivery!(self, d => d.headers())
    }
    fn key(&self) -> Option<&str> {
        each_delivery!(self, d => d.key())
    }
    fn attempt(&self) -> u32 {
        each_delivery!(self, d => d.attempt())
    }
    fn first_failed_at(&self) -> Option<DateTime<Utc>> {
        each_delivery!(self, d => d.first_failed_at())
    }
    async fn ack(self) -> Result<(), BusError> {
        each_delivery!(self, d => d.ack().await)
    }
    async fn nack(self, delay: Duration, error: &str) -> Result<(), BusError> {
        each_delivery!(self, d => d.nack(delay, error).await)
    }
    async fn extend(&self, by: Duration) -> Result<(), BusError> {
        each_delivery!(self, d => d.extend(by).await)
    }
    fn leased(&self) -> bool {
        each_delivery!(self, d => d.leased())
    }
    async fn dead_letter(self, rejection: Rejection) -> Result<(), BusError> {
        each_delivery!(self, d => d.dead_letter(rejection).await)
    }
}
