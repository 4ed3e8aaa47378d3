//! `switchyard.toml`: read raw, overlaid with `SWITCHYARD_...` environment variables, validated,
//! resolved into a [`Config`] without `Option`s.
//!
//! Any key can be set from the environment: the path in upper case with `__` between levels
//! (`SWITCHYARD_BUS__KIND=kafka`, `SWITCHYARD_WORKER__CONCURRENCY=64`,
//! `SWITCHYARD_BACKENDS__0__QUALITY=0.9`). Values are TOML literals where they parse as one
//! (numbers, booleans, arrays) and strings otherwise. Two shorthands match the local kit's
//! `env.sh`: `SWITCHYARD_KAFKA_BROKERS` and `SWITCHYARD_MONGO_URI`. Secrets never live in this
//! file: it names the environment variables that hold them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::contracts::{DEFAULT_MAX_MESSAGE_BYTES, TaskKind};
use crate::ids::BackendId;
use crate::rates::RatesTable;
use crate::tier::{QueueName, Tier};

const ENV_PREFIX: &str = "SWITCHYARD_";
/// Shorthand variables and the keys they set.
const ENV_ALIASES: &[(&str, &str)] = &[
    ("SWITCHYARD_KAFKA_BROKERS", "bus.kafka.brokers"),
    ("SWITCHYARD_MONGO_URI", "store.mongo.uri"),
];

// ---------------------------------------------------------------------------------------------
// Raw: exactly what the file may say.
// ---------------------------------------------------------------------------------------------

/// The file as written. Every table is optional; defaults run the embedded mode.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where messages travel.
    #[serde(default)]
    pub bus: RawBus,
    /// Where results, usage events and job status are kept.
    #[serde(default)]
    pub store: RawStore,
    /// Where large inputs and outputs are kept.
    #[serde(default)]
    pub blobs: RawBlobs,
    /// Where lifecycle events are published.
    #[serde(default)]
    pub events: RawEvents,
    /// How the tier queues share a consumer.
    #[serde(default)]
    pub tiers: RawTiers,
    /// The shared worker runtime.
    #[serde(default)]
    pub worker: RawWorker,
    /// The LLM worker's calls to providers.
    #[serde(default)]
    pub llm: RawLlm,
    /// The vision worker's models, batching and image inputs.
    #[serde(default)]
    pub vision: RawVision,
    /// The rates table used for pricing.
    #[serde(default)]
    pub rates: RawRates,
    /// Webhook delivery.
    #[serde(default)]
    pub webhooks: RawWebhooks,
    /// The backend catalog.
    #[serde(default)]
    pub backends: Vec<RawBackend>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusKind {
    /// In-process; for `switchyard dev` and tests.
    #[default]
    Memory,
    Kafka,
    Sqs,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBus {
    /// `memory`, `kafka` or `sqs`. The other tables may stay: only the chosen one is used.
    #[serde(default)]
    pub kind: BusKind,
    /// Larger messages are dead-lettered as oversized (SQS bodies over its limit go through the
    /// claim-check bucket instead).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    #[serde(default)]
    pub kafka: RawKafka,
    #[serde(default)]
    pub sqs: RawSqs,
}

impl Default for RawBus {
    fn default() -> Self {
        RawBus {
            kind: BusKind::default(),
            max_message_bytes: default_max_message_bytes(),
            kafka: RawKafka::default(),
            sqs: RawSqs::default(),
        }
    }
}

fn default_max_message_bytes() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
    /// Bootstrap servers, comma-separated (`host:port,host:port`).
    #[serde(default)]
    pub brokers: Option<String>,
    /// Consumer group prefix; each worker kind appends its role.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Extra librdkafka properties (`security.protocol`, `sasl.mechanism`, ...). Credentials
    /// belong in the environment: `sasl.password` here is refused.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl Default for RawKafka {
    fn default() -> Self {
        RawKafka {
            brokers: None,
            group_id: default_group_id(),
            properties: BTreeMap::new(),
        }
    }
}

fn default_group_id() -> String {
    "switchyard".to_owned()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSqs {
    /// AWS region; falls back to the SDK's own resolution (`AWS_REGION`, profile).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint override (the local emulator); `AWS_ENDPOINT_URL` also works.
    #[serde(default)]
    pub endpoint_url: Option<Url>,
    /// Prefix of the physical queue names (logical `switchyard.jobs.batch` becomes
    /// `<prefix>jobs-batch`).
    #[serde(default = "default_sqs_prefix")]
    pub queue_prefix: String,
    /// S3 bucket for bodies over SQS's size limit.
    #[serde(default)]
    pub claim_check_bucket: Option<String>,
    /// Long-poll wait, at most 20 s.
    #[serde(default = "default_sqs_wait", with = "humantime_serde")]
    pub wait_time: Duration,
    /// Initial visibility timeout; the lease heartbeat extends it for long jobs.
    #[serde(default = "default_sqs_visibility", with = "humantime_serde")]
    pub visibility_timeout: Duration,
}

impl Default for RawSqs {
    fn default() -> Self {
        RawSqs {
            region: None,
            endpoint_url: None,
            queue_prefix: default_sqs_prefix(),
            claim_check_bucket: None,
            wait_time: default_sqs_wait(),
            visibility_timeout: default_sqs_visibility(),
        }
    }
}

fn default_sqs_prefix() -> String {
    "switchyard-".to_owned()
}
fn default_sqs_wait() -> Duration {
    Duration::from_secs(20)
}
fn default_sqs_visibility() -> Duration {
    Duration::from_secs(60)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// A local file; for `switchyard dev`.
    #[default]
    Embedded,
    Mongo,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `embedded` or `mongo`.
    #[serde(default)]
    pub kind: StoreKind,
    #[serde(default)]
    pub mongo: RawMongo,
    #[serde(default)]
    pub embedded: RawEmbedded,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMongo {
    /// Connection string. Put credentials in it through the environment
    /// (`SWITCHYARD_MONGO_URI`), not in this file.
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default = "default_database")]
    pub database: String,
}

impl Default for RawMongo {
    fn default() -> Self {
        RawMongo {
            uri: None,
            database: default_database(),
        }
    }
}

fn default_database() -> String {
    "switchyard".to_owned()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmbedded {
    /// Directory of the embedded store's file.
    #[serde(default = "default_data_dir")]
    pub path: PathBuf,
}

impl Default for RawEmbedded {
    fn default() -> Self {
        RawEmbedded {
            path: default_data_dir(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".switchyard/data")
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobKind {
    #[default]
    Local,
    S3,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBlobs {
    /// `local` or `s3`.
    #[serde(default)]
    pub kind: BlobKind,
    /// Directory for `local`.
    #[serde(default = "default_blob_dir")]
    pub dir: PathBuf,
    /// Bucket for `s3`.
    #[serde(default)]
    pub bucket: Option<String>,
    /// Key prefix inside the bucket.
    #[serde(default)]
    pub prefix: String,
    /// Path-style addressing, which S3 emulators need.
    #[serde(default)]
    pub force_path_style: bool,
    /// Outputs larger than this go to the blob store and are referenced.
    #[serde(default = "default_inline_output_limit")]
    pub inline_output_limit_bytes: usize,
    /// Lifetime of presigned links handed out in webhooks.
    #[serde(default = "default_presign_ttl", with = "humantime_serde")]
    pub presign_ttl: Duration,
}

impl Default for RawBlobs {
    fn default() -> Self {
        RawBlobs {
            kind: BlobKind::default(),
            dir: default_blob_dir(),
            bucket: None,
            prefix: String::new(),
            force_path_style: false,
            inline_output_limit_bytes: default_inline_output_limit(),
            presign_ttl: default_presign_ttl(),
        }
    }
}

fn default_blob_dir() -> PathBuf {
    PathBuf::from(".switchyard/blobs")
}
fn default_inline_output_limit() -> usize {
    64 * 1024
}
fn default_presign_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventsKind {
    #[default]
    None,
    Eventbridge,
    Kafka,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvents {
    /// `none`, `eventbridge` or `kafka`.
    #[serde(default)]
    pub kind: EventsKind,
    /// EventBridge bus name.
    #[serde(default = "default_event_bus")]
    pub event_bus: String,
    /// Kafka topic for lifecycle events.
    #[serde(default = "default_event_topic")]
    pub topic: String,
}

impl Default for RawEvents {
    fn default() -> Self {
        RawEvents {
            kind: EventsKind::default(),
            event_bus: default_event_bus(),
            topic: default_event_topic(),
        }
    }
}

fn default_event_bus() -> String {
    "default".to_owned()
}
fn default_event_topic() -> String {
    "switchyard.events".to_owned()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTiers {
    /// Relative share of consumer slots per tier; every tier keeps at least its share, so none
    /// starves.
    #[serde(default = "default_weights")]
    pub weights: BTreeMap<Tier, u32>,
}

impl Default for RawTiers {
    fn default() -> Self {
        RawTiers {
            weights: default_weights(),
        }
    }
}

fn default_weights() -> BTreeMap<Tier, u32> {
    BTreeMap::from([(Tier::Realtime, 8), (Tier::Standard, 3), (Tier::Batch, 1)])
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorker {
    /// Messages processed at once per worker process.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Attempts before a retryable failure is dead-lettered.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Per-message processing limit.
    #[serde(default = "default_message_timeout", with = "humantime_serde")]
    pub message_timeout: Duration,
    /// First retry delay; doubles per attempt, with jitter.
    #[serde(default = "default_backoff_initial", with = "humantime_serde")]
    pub backoff_initial: Duration,
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    /// How long shutdown waits for in-flight work before releasing it.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for RawWorker {
    fn default() -> Self {
        RawWorker {
            concurrency: default_concurrency(),
            max_attempts: default_max_attempts(),
            message_timeout: default_message_timeout(),
            backoff_initial: default_backoff_initial(),
            backoff_max: default_backoff_max(),
            shutdown_grace: default_shutdown_grace(),
        }
    }
}

fn default_concurrency() -> usize {
    32
}
fn default_max_attempts() -> u32 {
    5
}
fn default_message_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_backoff_initial() -> Duration {
    Duration::from_secs(1)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(300)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(30)
}

/// `[llm]`: how the LLM worker calls providers. Rate limits are per backend (`limits`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLlm {
    /// One call's limit, connect to last byte; a job's deadline shortens it.
    #[serde(default = "default_llm_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Calls per delivery before the job goes to the policy's fallback (or back to the queue).
    #[serde(default = "default_llm_call_attempts")]
    pub call_attempts: u32,
    /// First wait between calls; doubles per call, with jitter, unless the provider says how
    /// long (Retry-After).
    #[serde(default = "default_llm_retry_initial", with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(default = "default_llm_retry_max", with = "humantime_serde")]
    pub retry_max: Duration,
    /// Largest text input read by reference (`s3://`, `file://`).
    #[serde(default = "default_llm_max_input_bytes")]
    pub max_input_bytes: u64,
    /// Which HTTP the provider clients speak.
    #[serde(default)]
    pub http_version: HttpVersion,
    /// HTTP clients each provider's calls are spread over. Under HTTP/2 each holds one
    /// connection per host and multiplexes its calls on it, and providers cap the streams of
    /// a connection (about 100), so this bounds the calls in flight to one host at about
    /// 100 × connections; under HTTP/1.1 each keeps its own keep-alive pool. Default:
    /// `[worker] concurrency` / 100, at least 4.
    #[serde(default)]
    pub connections: Option<usize>,
}

/// `[llm] http_version`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpVersion {
    /// HTTP/2 where the server offers it when TLS is negotiated (ALPN: the OpenAI and
    /// Anthropic APIs do), else HTTP/1.1.
    #[default]
    Auto,
    Http1,
    /// HTTP/2 from the first byte, without negotiation: for servers that speak it over plain
    /// TCP (h2c), such as the simulator.
    H2PriorKnowledge,
}

impl Default for RawLlm {
    fn default() -> Self {
        RawLlm {
            request_timeout: default_llm_request_timeout(),
            call_attempts: default_llm_call_attempts(),
            retry_initial: default_llm_retry_initial(),
            retry_max: default_llm_retry_max(),
            max_input_bytes: default_llm_max_input_bytes(),
            http_version: HttpVersion::default(),
            connections: None,
        }
    }
}

fn default_llm_request_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_llm_call_attempts() -> u32 {
    3
}
fn default_llm_retry_initial() -> Duration {
    Duration::from_millis(500)
}
fn default_llm_retry_max() -> Duration {
    Duration::from_secs(20)
}
fn default_llm_max_input_bytes() -> u64 {
    4 * 1024 * 1024
}

/// Where the vision worker runs inference. CUDA and TensorRT need an ONNX Runtime built with
/// them (the `onnxruntime-gpu` wheel); where they are absent the worker falls back to the CPU
/// and says so.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    #[default]
    Cpu,
    Cuda,
    #[serde(rename = "tensorrt")]
    TensorRt,
}

impl ExecutionProvider {
    /// `cpu`, `cuda` or `tensorrt`, as the config file spells them.
    pub fn parse(name: &str) -> Result<ExecutionProvider, String> {
        match name {
            "cpu" => Ok(ExecutionProvider::Cpu),
            "cuda" => Ok(ExecutionProvider::Cuda),
            "tensorrt" => Ok(ExecutionProvider::TensorRt),
            other => Err(format!(
                "unknown execution provider `{other}` (cpu, cuda, tensorrt)"
            )),
        }
    }
}

/// `[vision]`: how the vision worker runs its models and reads its images.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVision {
    /// ONNX Runtime's intra-op threads per model; 0 leaves its default (one per core).
    #[serde(default)]
    pub intra_threads: usize,
    /// Whether ONNX Runtime's threads spin between operators (its default, and faster for a
    /// model of many small operators); off yields the cores between operators instead.
    #[serde(default = "default_true")]
    pub intra_op_spinning: bool,
    /// `cpu`, `cuda` or `tensorrt`. A GPU provider that this ONNX Runtime lacks falls back to
    /// the CPU, with a warning.
    #[serde(default)]
    pub execution_provider: ExecutionProvider,
    #[serde(default)]
    pub device_id: i32,
    /// `libonnxruntime.so`; `ORT_DYLIB_PATH` when absent.
    #[serde(default)]
    pub ort_library: Option<PathBuf>,
    /// Images per inference run, at most.
    #[serde(default = "default_vision_max_batch")]
    pub max_batch: usize,
    /// How long the first image of a batch waits for more.
    #[serde(default = "default_vision_max_queue_delay", with = "humantime_serde")]
    pub max_queue_delay: Duration,
    /// Largest image read (inline, blob store or https).
    #[serde(default = "default_vision_max_image_bytes")]
    pub max_image_bytes: u64,
    /// Largest image decoded, width × height, checked from the header before decoding.
    #[serde(default = "default_vision_max_pixels")]
    pub max_pixels: u64,
    /// One `https://` fetch, connect to last byte.
    #[serde(default = "default_vision_fetch_timeout", with = "humantime_serde")]
    pub fetch_timeout: Duration,
    /// Private hosts or CIDRs an `https://` input may still reach (everything private,
    /// loopback and link-local is refused otherwise, as for webhooks).
    #[serde(default)]
    pub fetch_allow: Vec<String>,
}

impl Default for RawVision {
    fn default() -> Self {
        RawVision {
            intra_threads: 0,
            intra_op_spinning: true,
            execution_provider: ExecutionProvider::Cpu,
            device_id: 0,
            ort_library: None,
            max_batch: default_vision_max_batch(),
            max_queue_delay: default_vision_max_queue_delay(),
            max_image_bytes: default_vision_max_image_bytes(),
            max_pixels: default_vision_max_pixels(),
            fetch_timeout: default_vision_fetch_timeout(),
            fetch_allow: Vec::new(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_vision_max_batch() -> usize {
    8
}
fn default_vision_max_queue_delay() -> Duration {
    Duration::from_millis(2)
}
fn default_vision_max_image_bytes() -> u64 {
    20 * 1024 * 1024
}
fn default_vision_max_pixels() -> u64 {
    40_000_000
}
fn default_vision_fetch_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRates {
    /// A rates file; the built-in table when absent.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhooks {
    /// Per-attempt timeout.
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Delay before each attempt; the first is usually zero.
    #[serde(default = "default_webhook_schedule", deserialize_with = "durations")]
    pub schedule: Vec<Duration>,
    /// Hosts or CIDRs that may be called although private (loopback for tests, say).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Larger outputs are sent as a blob link.
    #[serde(default = "default_webhook_body_limit")]
    pub max_body_bytes: usize,
}

impl Default for RawWebhooks {
    fn default() -> Self {
        RawWebhooks {
            timeout: default_webhook_timeout(),
            schedule: default_webhook_schedule(),
            allow: Vec::new(),
            max_body_bytes: default_webhook_body_limit(),
        }
    }
}

fn durations<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Duration>, D::Error> {
    let parsed: Vec<humantime_serde::Serde<Duration>> = Deserialize::deserialize(deserializer)?;
    Ok(parsed
        .into_iter()
        .map(humantime_serde::Serde::into_inner)
        .collect())
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_webhook_schedule() -> Vec<Duration> {
    // Svix's schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}
fn default_webhook_body_limit() -> usize {
    256 * 1024
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    Vision,
    Llm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// YOLO through ONNX Runtime, in the vision worker.
    Onnx,
    /// OpenAI Chat Completions, or any compatible base URL.
    Openai,
    /// Anthropic Messages.
    Anthropic,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub id: String,
    pub kind: BackendKind,
    pub provider: Provider,
    /// The provider's model name, or the ONNX file for vision.
    pub model: String,
    /// The rates table entry this backend is billed under.
    pub price: String,
    /// Task kinds it can serve.
    pub tasks: Vec<TaskKind>,
    /// Relative accuracy, 0 to 1; what the accuracy strategy ranks on.
    pub quality: f64,
    /// Latency before observations exist.
    #[serde(with = "humantime_serde")]
    pub latency_prior: Duration,
    /// Queue override; `switchyard.backend.<id>` by default.
    #[serde(default)]
    pub queue: Option<String>,
    /// API base URL (OpenAI-compatible servers, the simulator).
    #[serde(default)]
    pub base_url: Option<Url>,
    /// Name of the environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub limits: RawLimits,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    #[serde(default)]
    pub tokens_per_minute: Option<u32>,
    #[serde(default)]
    pub max_concurrency: Option<u32>,
}

// ---------------------------------------------------------------------------------------------
// Resolved: what the rest of the code uses.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Config {
    pub bus: BusConfig,
    pub max_message_bytes: usize,
    pub store: StoreConfig,
    pub blobs: BlobsConfig,
    pub events: EventsConfig,
    pub tier_weights: BTreeMap<Tier, u32>,
    pub worker: RawWorker,
    pub llm: RawLlm,
    pub vision: RawVision,
    pub rates: RatesTable,
    pub webhooks: RawWebhooks,
    pub backends: Vec<Backend>,
}

#[derive(Clone, Debug)]
pub enum BusConfig {
    Memory,
    Kafka(KafkaConfig),
    Sqs(SqsConfig),
}

#[derive(Clone, Debug)]
pub struct KafkaConfig {
    pub brokers: String,
    pub group_id: String,
    pub properties: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
pub struct SqsConfig {
    pub region: Option<String>,
    pub endpoint_url: Option<Url>,
    pub queue_prefix: String,
    pub claim_check_bucket: Option<String>,
    pub wait_time: Duration,
    pub visibility_timeout: Duration,
}

#[derive(Clone, Debug)]
pub enum StoreConfig {
    Embedded { path: PathBuf },
    Mongo { uri: String, database: String },
}

#[derive(Clone, Debug)]
pub enum BlobsConfig {
    Local {
        dir: PathBuf,
        inline_output_limit_bytes: usize,
    },
    S3 {
        bucket: String,
        prefix: String,
        force_path_style: bool,
        inline_output_limit_bytes: usize,
        presign_ttl: Duration,
    },
}

#[derive(Clone, Debug)]
pub enum EventsConfig {
    None,
    EventBridge { event_bus: String },
    Kafka { topic: String },
}

/// A catalog entry, validated.
#[derive(Clone, Debug)]
pub struct Backend {
    pub id: BackendId,
    pub kind: BackendKind,
    pub provider: Provider,
    pub model: String,
    pub price: String,
    pub tasks: Vec<TaskKind>,
    pub quality: f64,
    pub latency_prior: Duration,
    pub queue: QueueName,
    pub base_url: Option<Url>,
    pub api_key_env: Option<String>,
    pub limits: RawLimits,
}

// ---------------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------------

/// One problem, at one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key (`bus.kafka.brokers`, `backends[2].price`).
    pub key: String,
    pub message: String,
    /// The environment variable that set the key, when one did.
    pub env_var: Option<String>,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)?;
        if let Some(var) = &self.env_var {
            write!(f, " (set by {var})")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Toml { path: String, message: String },
    #[error("invalid configuration in {origin}:\n{}", list(.problems))]
    Invalid {
        origin: String,
        problems: Vec<ConfigProblem>,
    },
}

impl ConfigError {
    pub fn problems(&self) -> &[ConfigProblem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            ConfigError::Read { .. } | ConfigError::Toml { .. } => &[],
        }
    }
}

fn list(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// Loading.
// ---------------------------------------------------------------------------------------------

impl Config {
    /// Loads `path` (or nothing: all defaults) and the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Config::from_parts(&text, &path.display().to_string(), &env, path.parent())
            }
            None => Config::from_parts("", "defaults", &env, None),
        }
    }

    /// Builds a config from TOML text and environment pairs; `base_dir` resolves relative file
    /// paths inside the config (the rates file).
    pub fn from_parts(
        text: &str,
        origin: &str,
        env: &[(String, String)],
        base_dir: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|error| ConfigError::Toml {
            path: origin.to_owned(),
            message: error.to_string(),
        })?;
        let env_keys = overlay_env(&mut table, env).map_err(|problems| ConfigError::Invalid {
            origin: origin.to_owned(),
            problems,
        })?;
        let invalid = |problems| ConfigError::Invalid {
            origin: origin.to_owned(),
            problems,
        };
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|error| {
                let key = error.path().to_string();
                let env_var = env_var_for(&env_keys, &key);
                invalid(vec![ConfigProblem {
                    key,
                    message: error.into_inner().to_string(),
                    env_var,
                }])
            })?;
        raw.resolve(base_dir).map_err(|mut problems| {
            for problem in &mut problems {
                problem.env_var = env_var_for(&env_keys, &problem.key);
            }
            invalid(problems)
        })
    }

    pub fn backend(&self, id: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.id.as_str() == id)
    }
}

/// Which env var set which key (dotted path), most specific first.
fn env_var_for(env_keys: &HashMap<String, String>, key: &str) -> Option<String> {
    let mut candidate = key;
    loop {
        if let Some(var) = env_keys.get(candidate) {
            return Some(var.clone());
        }
        let cut = candidate.rfind(['.', '['])?;
        candidate = &candidate[..cut];
    }
}

/// Applies `SWITCHYARD_A__B__C=value` to `table`; returns the dotted keys it set and by which
/// variable.
fn overlay_env(
    table: &mut toml::Table,
    env: &[(String, String)],
) -> Result<HashMap<String, String>, Vec<ConfigProblem>> {
    let mut settings: Vec<(Vec<String>, &str, &str)> = Vec::new();
    for (name, value) in env {
        if let Some((_, key)) = ENV_ALIASES.iter().find(|(alias, _)| alias == name) {
            let path = key.split('.').map(str::to_owned).collect();
            // Aliases first, so an explicit `__` variable for the same key wins.
            settings.insert(0, (path, name, value));
            continue;
        }
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if !rest.contains("__") {
            continue;
        }
        let path = rest.split("__").map(str::to_ascii_lowercase).collect();
        settings.push((path, name, value));
    }
    let mut set_by = HashMap::new();
    let mut problems = Vec::new();
    for (path, name, value) in settings {
        let key = dotted(&path);
        if let Err(message) = set_path(table, &path, parse_env_value(value)) {
            problems.push(ConfigProblem {
                key: key.clone(),
                message,
                env_var: Some(name.to_owned()),
            });
        }
        set_by.insert(key, name.to_owned());
    }
    if problems.is_empty() {
        Ok(set_by)
    } else {
        Err(problems)
    }
}

/// `["backends", "0", "price"]` → `backends[0].price` (serde_path_to_error's notation).
fn dotted(path: &[String]) -> String {
    let mut key = String::new();
    for segment in path {
        if segment.bytes().all(|b| b.is_ascii_digit()) && !key.is_empty() {
            key.push_str(&format!("[{segment}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(segment);
        }
    }
    key
}

fn parse_env_value(value: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {value}")) {
        Ok(mut parsed) => match parsed.remove("v") {
            // A bare date would become a TOML datetime; config keys never want one.
            Some(toml::Value::Datetime(_)) | None => toml::Value::String(value.to_owned()),
            Some(parsed) => parsed,
        },
        Err(_) => toml::Value::String(value.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else {
        return Err("empty key".into());
    };
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return Ok(());
    }
    let child = table
        .entry(first.clone())
        .or_insert_with(|| empty_container(&rest[0]));
    set_in_value(child, rest, value)
}

fn empty_container(next_segment: &str) -> toml::Value {
    if next_segment.bytes().all(|b| b.is_ascii_digit()) {
        toml::Value::Array(Vec::new())
    } else {
        toml::Value::Table(toml::Table::new())
    }
}

fn set_in_value(node: &mut toml::Value, path: &[String], value: toml::Value) -> Result<(), String> {
    match node {
        toml::Value::Table(table) => set_path(table, path, value),
        toml::Value::Array(items) => {
            let Some((first, rest)) = path.split_first() else {
                return Err("empty key".into());
            };
            let index: usize = first
                .parse()
                .map_err(|_| format!("`{first}` is not an index into a list"))?;
            if index > items.len() {
                return Err(format!(
                    "index {index} skips entries: the list has {} entries",
                    items.len()
                ));
            }
            if index == items.len() {
                items.push(if rest.is_empty() {
                    value.clone()
                } else {
                    empty_container(&rest[0])
                });
            }
            if rest.is_empty() {
                items[index] = value;
                Ok(())
            } else {
                set_in_value(&mut items[index], rest, value)
            }
        }
        _ => Err("cannot set a key inside a value that is not a table or a list".into()),
    }
}

impl RawConfig {
    fn resolve(self, base_dir: Option<&Path>) -> Result<Config, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| {
            problems.push(ConfigProblem {
                key: key.to_owned(),
                message,
                env_var: None,
            });
        };

        let bus = match self.bus.kind {
            BusKind::Memory => BusConfig::Memory,
            BusKind::Kafka => match self.bus.kafka.brokers.as_deref().map(str::trim) {
                Some(brokers) if !brokers.is_empty() => {
                    for secret_key in ["sasl.password", "ssl.key.password", "ssl.keystore.password"]
                    {
                        if self.bus.kafka.properties.contains_key(secret_key) {
                            problem(
                                &format!("bus.kafka.properties.{secret_key}"),
                                "secrets are not read from the config file; set it through \
                                 the environment (SWITCHYARD_BUS__KAFKA__PROPERTIES__...)"
                                    .into(),
                            );
                        }
                    }
                    for (managed, why) in MANAGED_KAFKA_PROPERTIES {
                        if self.bus.kafka.properties.contains_key(*managed) {
                            problem(&format!("bus.kafka.properties.{managed}"), (*why).into());
                        }
                    }
                    BusConfig::Kafka(KafkaConfig {
                        brokers: brokers.to_owned(),
                        group_id: self.bus.kafka.group_id.clone(),
                        properties: self.bus.kafka.properties.clone(),
                    })
                }
                _ => {
                    problem(
                        "bus.kafka.brokers",
                        "required when bus.kind = \"kafka\"".into(),
                    );
                    BusConfig::Memory
                }
            },
            BusKind::Sqs => {
                let sqs = &self.bus.sqs;
                if sqs.wait_time > Duration::from_secs(20) {
                    problem(
                        "bus.sqs.wait_time",
                        "SQS long polling waits at most 20s".into(),
                    );
                }
                if sqs.visibility_timeout > Duration::from_secs(12 * 3600) {
                    problem(
                        "bus.sqs.visibility_timeout",
                        "SQS allows at most 12h".into(),
                    );
                }
                if !sqs
                    .queue_prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    problem(
                        "bus.sqs.queue_prefix",
                        "SQS queue names allow only letters, digits, '-' and '_'".into(),
                    );
                }
                BusConfig::Sqs(SqsConfig {
                    region: sqs.region.clone(),
                    endpoint_url: sqs.endpoint_url.clone(),
                    queue_prefix: sqs.queue_prefix.clone(),
                    claim_check_bucket: sqs.claim_check_bucket.clone(),
                    wait_time: sqs.wait_time,
                    visibility_timeout: sqs.visibility_timeout,
                })
            }
        };
        if self.bus.max_message_bytes < 1024 {
            problem(
                "bus.max_message_bytes",
                "must be at least 1024 bytes".into(),
            );
        }

        let store = match self.store.kind {
            StoreKind::Embedded => StoreConfig::Embedded {
                path: self.store.embedded.path.clone(),
            },
            StoreKind::Mongo => match &self.store.mongo.uri {
                Some(uri) if uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://") => {
                    StoreConfig::Mongo {
                        uri: uri.clone(),
                        database: self.store.mongo.database.clone(),
                    }
                }
                Some(_) => {
                    // The URI may hold a password: never echo it.
                    problem(
                        "store.mongo.uri",
                        "must start with mongodb:// or mongodb+srv://".into(),
                    );
                    StoreConfig::Embedded {
                        path: PathBuf::new(),
                    }
                }
                None => {
                    problem(
                        "store.mongo.uri",
                        "required when store.kind = \"mongo\" (or set SWITCHYARD_MONGO_URI)".into(),
                    );
                    StoreConfig::Embedded {
                        path: PathBuf::new(),
                    }
                }
            },
        };

        let blobs = match self.blobs.kind {
            BlobKind::Local => BlobsConfig::Local {
                dir: self.blobs.dir.clone(),
                inline_output_limit_bytes: self.blobs.inline_output_limit_bytes,
            },
            BlobKind::S3 => {
                let bucket = self.blobs.bucket.clone().unwrap_or_default();
                if bucket.is_empty() {
                    problem("blobs.bucket", "required when blobs.kind = \"s3\"".into());
                }
                BlobsConfig::S3 {
                    bucket,
                    prefix: self.blobs.prefix.clone(),
                    force_path_style: self.blobs.force_path_style,
                    inline_output_limit_bytes: self.blobs.inline_output_limit_bytes,
                    presign_ttl: self.blobs.presign_ttl,
                }
            }
        };

        let events = match self.events.kind {
            EventsKind::None => EventsConfig::None,
            EventsKind::Eventbridge => EventsConfig::EventBridge {
                event_bus: self.events.event_bus.clone(),
            },
            EventsKind::Kafka => {
                if !matches!(bus, BusConfig::Kafka(_)) {
                    problem(
                        "events.kind",
                        "\"kafka\" events need bus.kind = \"kafka\" (they use its brokers)".into(),
                    );
                }
                EventsConfig::Kafka {
                    topic: self.events.topic.clone(),
                }
            }
        };

        for tier in Tier::ALL {
            match self.tiers.weights.get(&tier) {
                Some(0) | None => problem(
                    &format!("tiers.weights.{tier}"),
                    "every tier needs a weight of at least 1, or it would starve".into(),
                ),
                Some(_) => {}
            }
        }

        let llm = self.llm.clone();
        if llm.call_attempts == 0 {
            problem("llm.call_attempts", "must be at least 1".into());
        }
        if llm.connections.is_some_and(|n| !(1..=1024).contains(&n)) {
            problem("llm.connections", "must be between 1 and 1024".into());
        }
        if llm.request_timeout.is_zero() {
            problem("llm.request_timeout", "must be longer than zero".into());
        }
        if llm.retry_initial > llm.retry_max {
            problem("llm.retry_initial", "must not exceed llm.retry_max".into());
        }
        let vision = self.vision.clone();
        if !(1..=256).contains(&vision.max_batch) {
            problem("vision.max_batch", "must be between 1 and 256".into());
        }
        if vision.max_pixels == 0 {
            problem("vision.max_pixels", "must be at least 1".into());
        }
        if vision.fetch_timeout.is_zero() {
            problem("vision.fetch_timeout", "must be longer than zero".into());
        }
        let worker = self.worker.clone();
        if worker.concurrency == 0 {
            problem("worker.concurrency", "must be at least 1".into());
        }
        if worker.max_attempts == 0 {
            problem("worker.max_attempts", "must be at least 1".into());
        }
        if worker.backoff_initial > worker.backoff_max {
            problem(
                "worker.backoff_initial",
                "must not exceed worker.backoff_max".into(),
            );
        }

        let rates = match &self.rates.file {
            None => RatesTable::default_table(),
            Some(file) => {
                let path = match base_dir {
                    Some(dir) if file.is_relative() => dir.join(file),
                    _ => file.clone(),
                };
                RatesTable::load(&path)
            }
        };
        let rates = match rates {
            Ok(rates) => Some(rates),
            Err(error) => {
                problem("rates.file", error.to_string());
                None
            }
        };

        if self.webhooks.schedule.is_empty() {
            problem("webhooks.schedule", "needs at least one attempt".into());
        }

        let mut backends = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, raw) in self.backends.iter().enumerate() {
            let key = |field: &str| format!("backends[{i}].{field}");
            let id = match BackendId::new(raw.id.clone()) {
                Ok(id) => id,
                Err(error) => {
                    problem(&key("id"), error.to_string());
                    continue;
                }
            };
            if !seen.insert(id.clone()) {
                problem(&key("id"), format!("backend `{id}` is defined twice"));
            }
            if raw.tasks.is_empty() {
                problem(&key("tasks"), "must list at least one task kind".into());
            }
            if raw.tasks.contains(&TaskKind::Multi) {
                problem(
                    &key("tasks"),
                    "`multi` is fanned out by the router, never served by a backend".into(),
                );
            }
            let (allowed, kind_name): (&[TaskKind], _) = match raw.kind {
                BackendKind::Vision => (&[TaskKind::Detect], "vision"),
                BackendKind::Llm => (
                    &[TaskKind::Chat, TaskKind::Summarize, TaskKind::Classify],
                    "llm",
                ),
            };
            for task in &raw.tasks {
                if *task != TaskKind::Multi && !allowed.contains(task) {
                    problem(
                        &key("tasks"),
                        format!("a {kind_name} backend cannot serve `{}`", task.as_str()),
                    );
                }
            }
            match (raw.kind, raw.provider) {
                (BackendKind::Vision, Provider::Onnx)
                | (BackendKind::Llm, Provider::Openai | Provider::Anthropic) => {}
                (BackendKind::Vision, Provider::Openai | Provider::Anthropic)
                | (BackendKind::Llm, Provider::Onnx) => problem(
                    &key("provider"),
                    format!("provider does not match kind `{kind_name}`"),
                ),
            }
            if !(0.0..=1.0).contains(&raw.quality) {
                problem(&key("quality"), "must be between 0 and 1".into());
            }
            if let Some(rates) = &rates
                && rates.price(&raw.price).is_err()
            {
                problem(
                    &key("price"),
                    format!("`{}` is not in rates table {}", raw.price, rates.version),
                );
            }
            if let Some(var) = &raw.api_key_env
                && (var.is_empty()
                    || !var
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'))
            {
                problem(
                    &key("api_key_env"),
                    "must name an environment variable (A-Z, 0-9, _), not hold a key".into(),
                );
            }
            let queue = match &raw.queue {
                None => QueueName::backend(&id),
                Some(name) => match QueueName::new(name.clone()) {
                    Ok(queue) => queue,
                    Err(message) => {
                        problem(&key("queue"), message);
                        QueueName::backend(&id)
                    }
                },
            };
            backends.push(Backend {
                id,
                kind: raw.kind,
                provider: raw.provider,
                // A vision model is a file, found relative to the config file as `rates.file` is.
                model: match (raw.kind, base_dir) {
                    (BackendKind::Vision, Some(dir)) if Path::new(&raw.model).is_relative() => {
                        dir.join(&raw.model).to_string_lossy().into_owned()
                    }
                    _ => raw.model.clone(),
                },
                price: raw.price.clone(),
                tasks: raw.tasks.clone(),
                quality: raw.quality,
                latency_prior: raw.latency_prior,
                queue,
                base_url: raw.base_url.clone(),
                api_key_env: raw.api_key_env.clone(),
                limits: raw.limits.clone(),
            });
        }

        match (problems.is_empty(), rates) {
            (true, Some(rates)) => Ok(Config {
                bus,
                max_message_bytes: self.bus.max_message_bytes,
                store,
                blobs,
                events,
                tier_weights: self.tiers.weights,
                worker,
                llm,
                vision,
                rates,
                webhooks: self.webhooks,
                backends,
            }),
            _ => Err(problems),
        }
    }
}

/// librdkafka properties that switchyard sets itself, and why one in `[bus.kafka.properties]`
/// is refused rather than silently overridden.
const MANAGED_KAFKA_PROPERTIES: &[(&str, &str)] = &[
    (
        "bootstrap.servers",
        "set by switchyard from bus.kafka.brokers; set that instead",
    ),
    (
        "group.id",
        "set by switchyard from bus.kafka.group_id and the queue; set that instead",
    ),
    (
        "acks",
        "set by switchyard: every hop acknowledges a message only once the next one has it \
         (acks = all)",
    ),
    (
        "enable.idempotence",
        "set by switchyard: retried sends must not duplicate messages",
    ),
    (
        "enable.auto.commit",
        "set by switchyard: offsets are committed only for finished work",
    ),
    (
        "enable.auto.offset.store",
        "set by switchyard: offsets are committed only for finished work",
    ),
    (
        "message.max.bytes",
        "set by switchyard: a dead letter carries the whole message it wraps; bus.max_message_bytes limits jobs",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn load(text: &str, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_parts(text, "test.toml", &env(pairs), None)
    }

    fn problem_keys(error: &ConfigError) -> Vec<String> {
        error.problems().iter().map(|p| p.key.clone()).collect()
    }

    #[test]
    fn vision_execution_provider_is_one_of_three() {
        let config = load("[vision]\nexecution_provider = \"tensorrt\"\n", &[]).unwrap();
        assert_eq!(
            config.vision.execution_provider,
            ExecutionProvider::TensorRt
        );
        let error = load("[vision]\nexecution_provider = \"gpu\"\n", &[]).unwrap_err();
        assert!(error.to_string().contains("gpu"), "{error}");
        assert_eq!(
            ExecutionProvider::parse("cuda"),
            Ok(ExecutionProvider::Cuda)
        );
        assert!(ExecutionProvider::parse("gpu").is_err());
    }

    #[test]
    fn empty_config_is_the_embedded_mode() {
        let config = load("", &[]).unwrap();
        assert!(matches!(config.bus, BusConfig::Memory));
        assert!(matches!(config.store, StoreConfig::Embedded { .. }));
        assert_eq!(config.tier_weights[&Tier::Realtime], 8);
        assert_eq!(config.worker.max_attempts, 5);
    }

    #[test]
    fn the_example_file_in_the_repo_is_valid() {
        let text = include_str!("../../../switchyard.example.toml");
        let config = Config::from_parts(
            text,
            "switchyard.example.toml",
            &[],
            Some(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../..")
                    .as_path(),
            ),
        )
        .unwrap();
        assert!(config.backends.len() >= 4);
        assert!(
            config
                .backends
                .iter()
                .any(|b| b.kind == BackendKind::Vision)
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let error = load("[bus]\nknd = \"kafka\"\n", &[]).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("bus.knd"), "{text}");
        assert!(text.contains("unknown field"), "{text}");
    }

    #[test]
    fn the_llm_http_settings_parse_and_are_checked() {
        let config = load(
            "[llm]\nhttp_version = \"h2_prior_knowledge\"\n",
            &[("SWITCHYARD_LLM__CONNECTIONS", "64")],
        )
        .unwrap();
        assert_eq!(config.llm.http_version, HttpVersion::H2PriorKnowledge);
        assert_eq!(config.llm.connections, Some(64));
        assert_eq!(load("", &[]).unwrap().llm.connections, None);
        let error = load("[llm]\nconnections = 0\n", &[]).unwrap_err();
        assert_eq!(problem_keys(&error), ["llm.connections"]);
        let error = load("[llm]\nhttp_version = \"http3\"\n", &[]).unwrap_err();
        assert_eq!(problem_keys(&error), ["llm.http_version"]);
    }

    #[test]
    fn wrong_types_are_named_with_their_key() {
        let error = load("[worker]\nconcurrency = \"many\"\n", &[]).unwrap_err();
        assert_eq!(problem_keys(&error), ["worker.concurrency"]);
    }

    #[test]
    fn env_overrides_file_and_is_named_in_errors() {
        let config = load(
            "[worker]\nconcurrency = 4\n",
            &[
                ("SWITCHYARD_WORKER__CONCURRENCY", "64"),
                ("SWITCHYARD_WORKER__MESSAGE_TIMEOUT", "5s"),
            ],
        )
        .unwrap();
        assert_eq!(config.worker.concurrency, 64);
        assert_eq!(config.worker.message_timeout, Duration::from_secs(5));

        let error = load("", &[("SWITCHYARD_WORKER__MAX_ATTEMPTS", "0")]).unwrap_err();
        let problem = &error.problems()[0];
        assert_eq!(problem.key, "worker.max_attempts");
        assert_eq!(
            problem.env_var.as_deref(),
            Some("SWITCHYARD_WORKER__MAX_ATTEMPTS")
        );
        assert!(
            error
                .to_string()
                .contains("(set by SWITCHYARD_WORKER__MAX_ATTEMPTS)")
        );
    }

    #[test]
    fn env_typos_are_caught_like_file_typos() {
        let error = load("", &[("SWITCHYARD_BUS__KAFKA__BROKERZ", "x:1")]).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("bus.kafka.brokerz"), "{text}");
        assert!(text.contains("SWITCHYARD_BUS__KAFKA__BROKERZ"), "{text}");
    }

    #[test]
    fn aliases_match_the_local_kit_and_explicit_keys_win() {
        let config = load(
            "[bus]\nkind = \"kafka\"\n",
            &[("SWITCHYARD_KAFKA_BROKERS", "127.0.0.1:9092")],
        )
        .unwrap();
        let BusConfig::Kafka(kafka) = &config.bus else {
            panic!("expected kafka")
        };
        assert_eq!(kafka.brokers, "127.0.0.1:9092");

        let config = load(
            "[bus]\nkind = \"kafka\"\n",
            &[
                ("SWITCHYARD_BUS__KAFKA__BROKERS", "explicit:9092"),
                ("SWITCHYARD_KAFKA_BROKERS", "alias:9092"),
            ],
        )
        .unwrap();
        let BusConfig::Kafka(kafka) = &config.bus else {
            panic!("expected kafka")
        };
        assert_eq!(kafka.brokers, "explicit:9092");
    }

    #[test]
    fn unrelated_switchyard_variables_are_ignored() {
        assert!(
            load(
                "",
                &[("SWITCHYARD_VENV", "/x"), ("SWITCHYARD_LOG", "debug")]
            )
            .is_ok()
        );
    }

    #[test]
    fn kind_specific_requirements_name_their_key() {
        let error = load("[bus]\nkind = \"kafka\"\n", &[]).unwrap_err();
        assert_eq!(problem_keys(&error), ["bus.kafka.brokers"]);
        let error = load("[store]\nkind = \"mongo\"\n", &[]).unwrap_err();
        assert_eq!(problem_keys(&error), ["store.mongo.uri"]);
        let error = load("[blobs]\nkind = \"s3\"\n", &[]).unwrap_err();
        assert_eq!(problem_keys(&error), ["blobs.bucket"]);
    }

    #[test]
    fn mongo_uri_errors_never_echo_the_uri() {
        let error = load(
            "[store]\nkind = \"mongo\"\n",
            &[("SWITCHYARD_MONGO_URI", "postgres://user:hunter2@db")],
        )
        .unwrap_err();
        let text = error.to_string();
        assert!(text.contains("store.mongo.uri"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn kafka_secrets_in_the_file_are_refused() {
        let error = load(
            "[bus]\nkind = \"kafka\"\n[bus.kafka]\nbrokers = \"b:9092\"\n[bus.kafka.properties]\n\"sasl.password\" = \"x\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(problem_keys(&error), ["bus.kafka.properties.sasl.password"]);
    }

    #[test]
    fn kafka_properties_switchyard_sets_itself_are_refused() {
        let error = load(
            "[bus]\nkind = \"kafka\"\n[bus.kafka]\nbrokers = \"b:9092\"\n[bus.kafka.properties]\n\"acks\" = \"1\"\n\"group.id\" = \"g\"\n\"linger.ms\" = \"20\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(
            problem_keys(&error),
            ["bus.kafka.properties.group.id", "bus.kafka.properties.acks"]
        );
        assert!(error.to_string().contains("bus.kafka.group_id"), "{error}");
    }

    #[test]
    fn a_zero_tier_weight_would_starve_and_is_refused() {
        let error = load(
            "[tiers.weights]\nrealtime = 8\nstandard = 3\nbatch = 0\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(problem_keys(&error), ["tiers.weights.batch"]);
    }

    const BACKEND: &str = r#"
        [[backends]]
        id = "gpt-4o-mini"
        kind = "llm"
        provider = "openai"
        model = "gpt-4o-mini"
        price = "openai/gpt-4o-mini"
        tasks = ["chat", "summarize"]
        quality = 0.7
        latency_prior = "800ms"
        api_key_env = "OPENAI_API_KEY"
    "#;

    #[test]
    fn backends_resolve_with_their_queue() {
        let config = load(BACKEND, &[]).unwrap();
        let backend = config.backend("gpt-4o-mini").unwrap();
        assert_eq!(backend.queue.as_str(), "switchyard.backend.gpt-4o-mini");
        assert_eq!(backend.latency_prior, Duration::from_millis(800));
    }

    #[test]
    fn backend_problems_name_the_entry_and_field() {
        let broken = BACKEND
            .replace("openai/gpt-4o-mini", "openai/gpt-0")
            .replace("\"summarize\"", "\"detect\"")
            .replace("OPENAI_API_KEY", "sk-live-123");
        let error = load(&broken, &[]).unwrap_err();
        let mut keys = problem_keys(&error);
        keys.sort();
        assert_eq!(
            keys,
            [
                "backends[0].api_key_env",
                "backends[0].price",
                "backends[0].tasks"
            ]
        );
        let twice = format!("{BACKEND}{BACKEND}");
        let error = load(&twice, &[]).unwrap_err();
        assert_eq!(problem_keys(&error), ["backends[1].id"]);
    }

    #[test]
    fn env_can_reach_into_lists() {
        let config = load(BACKEND, &[("SWITCHYARD_BACKENDS__0__QUALITY", "0.95")]).unwrap();
        assert_eq!(config.backends[0].quality, 0.95);
        let error = load(BACKEND, &[("SWITCHYARD_BACKENDS__5__QUALITY", "0.95")]).unwrap_err();
        assert_eq!(
            error.problems()[0].env_var.as_deref(),
            Some("SWITCHYARD_BACKENDS__5__QUALITY")
        );
    }

    #[test]
    fn env_values_are_toml_literals_or_strings() {
        assert_eq!(parse_env_value("8"), toml::Value::Integer(8));
        assert_eq!(parse_env_value("true"), toml::Value::Boolean(true));
        assert_eq!(
            parse_env_value("a:9092"),
            toml::Value::String("a:9092".into())
        );
        assert_eq!(
            parse_env_value("2026-01-01"),
            toml::Value::String("2026-01-01".into())
        );
    }
}
