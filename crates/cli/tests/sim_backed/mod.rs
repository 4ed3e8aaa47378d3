//! What the process tests of `switchyard worker llm` share: the config of a worker serving an
//! in-process simulator, and jobs routed to its backends.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: failing loudly is the point"
)]

use std::net::SocketAddr;
use std::path::Path;

use switchyard_core::BackendId;
use switchyard_core::JobId;
use switchyard_core::config::Config;
use switchyard_core::contracts::{
    self, ChatMessage, ChatRole, ChatTask, GenerationParams, JobEnvelope, RoutedJob, Task,
};

/// Local blobs under `dir`, quick LLM retries, and the OpenAI-style backend `sim-openai` on
/// `queue`, calling the simulator at `address` with the key from `SWITCHYARD_TEST_SIM_KEY`.
pub fn worker_config(dir: &Path, queue: &str, address: SocketAddr) -> String {
    format!(
        r#"
[blobs]
kind = "local"
dir = "{blobs}"
[llm]
retry_initial = "10ms"
retry_max = "50ms"
request_timeout = "5s"

[[backends]]
id = "sim-openai"
kind = "llm"
provider = "openai"
model = "gpt-4o-mini"
price = "openai/gpt-4o-mini"
tasks = ["chat", "summarize", "classify"]
quality = 0.6
latency_prior = "100ms"
queue = "{queue}"
base_url = "http://{address}/v1"
api_key_env = "SWITCHYARD_TEST_SIM_KEY"
"#,
        blobs = dir.join("blobs").display(),
    )
}

/// The example routed job as a new chat job with `prompt`, routed to `backend`.
pub fn routed(config: &Config, backend: &str, fallbacks: &[&str], prompt: &str) -> RoutedJob {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/examples/valid/routed.json"
    );
    let mut routed: RoutedJob = contracts::decode(&std::fs::read(path).unwrap(), 1 << 20).unwrap();
    let mut job: JobEnvelope = routed.job.clone();
    job.job_id = JobId::new();
    job.task = Task::Chat(ChatTask {
        messages: vec![ChatMessage {
            role: ChatRole::User,
            content: format!("{prompt} ({})", job.job_id),
        }],
        params: GenerationParams::default(),
    });
    routed.job = job;
    let backend = config.backend(backend).unwrap();
    routed.decision.backend_id = backend.id.clone();
    routed.decision.queue = backend.queue.clone();
    routed.decision.fallbacks = fallbacks
        .iter()
        .map(|f| BackendId::new(*f).unwrap())
        .collect();
    routed
}
