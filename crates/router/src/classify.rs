//! LLM-assisted routing: what an `llm_classify` rule asks, the cache of answers, and the
//! seams to the classifier and to the ledger.
//!
//! The classifier is advice. A timeout, an error, an answer that is not one of the offered
//! labels, a breaker that is open or a job with no text all end the same way: the rule is
//! passed over and the next matching rule decides (see [`crate::policy::awaiting_classifier`]).
//! The classifier has the rule's `timeout_ms` for its answer, rate-limit waits included; the
//! router stops waiting a moment after that even if it overruns.
//!
//! Answers are cached by a SHA-256 of the tenant, the classifier (backend, instruction,
//! labels) and the text, for the rule's TTL. The tenant is part of the key so that one tenant
//! cannot learn from a cache hit (faster, free) that another sent the same text.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use switchyard_core::contracts::{ChatRole, Input, JobEnvelope, Task};
use switchyard_core::rates::Usage;
use switchyard_core::{BackendId, TenantId};

use crate::policy::ClassifierSpec;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One question to a classifier: choose one of `labels` for `text`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassifyRequest {
    pub backend: BackendId,
    pub instruction: String,
    pub labels: Vec<String>,
    pub text: String,
    /// The rule's timeout: the classifier answers or fails within it, rate-limit waits
    /// included, and says which of the two ran out (see [`ClassifyError::backend_at_fault`]).
    pub deadline: Duration,
}

/// A classifier's answer, with what the call cost in tokens so it can be charged.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// The label chosen, or why the reply is unusable (not JSON, no label).
    pub label: Result<String, String>,
    pub provider: String,
    /// The model that answered, as the provider names it.
    pub model: String,
    pub usage: Usage,
    pub latency_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ClassifyError {
    pub message: String,
    /// Whether the failure says something about the backend's health (5xx, overload,
    /// timeouts, resets, broken bodies), so it counts against the classifier's breaker. A
    /// refused request, a 429 or a wait on this router's own rate limits does not.
    pub backend_at_fault: bool,
}

/// Asks a classifier LLM. Implemented over the llm crate's provider clients by the binary.
pub trait Classifier: Send + Sync + 'static {
    fn classify<'a>(
        &'a self,
        request: &'a ClassifyRequest,
    ) -> BoxFuture<'a, Result<Answer, ClassifyError>>;
}

/// Where a classifier call is charged to the job's tenant: the ledger's usage events in
/// production. The charge must be idempotent per job (a redelivered job is charged once).
pub trait ChargeSink: Send + Sync + 'static {
    /// Charges `answer`'s call as the job's call named `call` (stable across deliveries).
    fn charge<'a>(
        &'a self,
        job: &'a JobEnvelope,
        call: &'a str,
        backend: &'a BackendId,
        answer: &'a Answer,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// No charging (tests, and a router without a store).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCharge;

impl ChargeSink for NoCharge {
    fn charge<'a>(
        &'a self,
        _job: &'a JobEnvelope,
        _call: &'a str,
        _backend: &'a BackendId,
        _answer: &'a Answer,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// The text a classifier reads for `task`, cut to `max_chars`; why there is none otherwise.
pub fn text_of(task: &Task, max_chars: usize) -> Result<String, String> {
    let text = match task {
        Task::Chat(chat) => {
            let mut text = String::new();
            for message in &chat.messages {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(match message.role {
                    ChatRole::System => "system",
                    ChatRole::User => "user",
                    ChatRole::Assistant => "assistant",
                });
                text.push_str(": ");
                text.push_str(&message.content);
                if text.len() >= max_chars * 4 {
                    break;
                }
            }
            text
        }
        Task::Summarize(t) => input_text(&t.input)?,
        Task::Classify(t) => input_text(&t.input)?,
        Task::Detect(_) | Task::Multi(_) => {
            return Err(format!("a {} job has no text", task.kind().as_str()));
        }
    };
    if text.trim().is_empty() {
        return Err("the job's text is empty".to_owned());
    }
    Ok(match text.char_indices().nth(max_chars) {
        Some((at, _)) => text[..at].to_owned(),
        None => text,
    })
}

fn input_text(input: &Input) -> Result<String, String> {
    match input {
        Input::Text { text } => Ok(text.clone()),
        Input::Inline { data_base64, .. } => base64::engine::general_purpose::STANDARD
            .decode(data_base64)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| "the inline input is not UTF-8 text".to_owned()),
        // Fetching is the worker's job; the router stays fast and holds no blob credentials.
        Input::Uri { .. } => {
            Err("the input is a reference, which the router does not fetch".to_owned())
        }
    }
}

/// A cache key: SHA-256 over length-prefixed fields, so no two field lists share one.
pub fn cache_key(tenant: &TenantId, spec: &ClassifierSpec, text: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    field(tenant.as_str().as_bytes());
    field(spec.backend.as_str().as_bytes());
    field(spec.instruction.as_bytes());
    for label in spec.labels() {
        field(label.as_bytes());
    }
    field(text.as_bytes());
    hash.finalize().into()
}

/// Labels by content, each for its own TTL, at most `capacity` of them (the oldest go first).
#[derive(Debug)]
pub struct VerdictCache {
    capacity: usize,
    entries: HashMap<[u8; 32], (String, Instant)>,
    order: VecDeque<[u8; 32]>,
}

impl VerdictCache {
    pub fn new(capacity: usize) -> VerdictCache {
        VerdictCache {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn get(&self, key: &[u8; 32], at: Instant) -> Option<&str> {
        self.entries
            .get(key)
            .filter(|(_, until)| at < *until)
            .map(|(label, _)| label.as_str())
    }

    pub fn insert(&mut self, key: [u8; 32], label: String, ttl: Duration, at: Instant) {
        let Some(until) = at
            .checked_add(ttl)
            .filter(|_| self.capacity > 0 && !ttl.is_zero())
        else {
            return;
        };
        if self.entries.insert(key, (label, until)).is_none() {
            self.order.push_back(key);
        }
        while self.entries.len() > self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use switchyard_core::contracts::{ChatMessage, ChatTask, DetectTask, SummarizeTask};

    use super::*;

    fn spec(instruction: &str) -> ClassifierSpec {
        ClassifierSpec {
            backend: BackendId::new("nano").unwrap(),
            instruction: instruction.into(),
            routes: vec![
                ("simple".into(), BackendId::new("nano").unwrap()),
                ("complex".into(), BackendId::new("big").unwrap()),
            ],
            timeout: Duration::from_millis(100),
            cache_ttl: Duration::from_secs(10),
        }
    }

    #[test]
    fn texts_of_each_task() {
        let chat = Task::Chat(ChatTask {
            messages: vec![
                ChatMessage {
                    role: ChatRole::System,
                    content: "be brief".into(),
                },
                ChatMessage {
                    role: ChatRole::User,
                    content: "héllo wörld".into(),
                },
            ],
            params: Default::default(),
        });
        assert_eq!(
            text_of(&chat, 100).unwrap(),
            "system: be brief\nuser: héllo wörld"
        );
        // Cut on a character, not a byte.
        assert_eq!(text_of(&chat, 25).unwrap(), "system: be brief\nuser: hé");
        let summarize = |input| {
            Task::Summarize(SummarizeTask {
                input,
                max_words: None,
                params: Default::default(),
            })
        };
        let inline = Input::Inline {
            data_base64: base64::engine::general_purpose::STANDARD.encode("inline text"),
            content_type: None,
        };
        assert_eq!(text_of(&summarize(inline), 100).unwrap(), "inline text");
        let binary = Input::Inline {
            data_base64: base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe]),
            content_type: None,
        };
        assert!(
            text_of(&summarize(binary), 100)
                .unwrap_err()
                .contains("UTF-8")
        );
        let uri = Input::Uri {
            uri: "s3://b/k".parse().unwrap(),
            content_type: None,
            size_bytes: None,
        };
        assert!(
            text_of(&summarize(uri), 100)
                .unwrap_err()
                .contains("reference")
        );
        let blank = Input::Text { text: "  ".into() };
        assert!(
            text_of(&summarize(blank), 100)
                .unwrap_err()
                .contains("empty")
        );
        let detect = Task::Detect(DetectTask {
            input: Input::Text { text: "x".into() },
            params: Default::default(),
        });
        assert_eq!(
            text_of(&detect, 100).unwrap_err(),
            "a detect job has no text"
        );
    }

    #[test]
    fn keys_differ_by_tenant_classifier_and_text() {
        let acme = TenantId::new("acme").unwrap();
        let other = TenantId::new("other").unwrap();
        let base = cache_key(&acme, &spec("How complex?"), "text");
        assert_eq!(base, cache_key(&acme, &spec("How complex?"), "text"));
        assert_ne!(base, cache_key(&other, &spec("How complex?"), "text"));
        assert_ne!(base, cache_key(&acme, &spec("Which domain?"), "text"));
        assert_ne!(base, cache_key(&acme, &spec("How complex?"), "text!"));
        // Length prefixes: moving bytes between fields changes the key.
        assert_ne!(
            cache_key(&acme, &spec("ab"), "c"),
            cache_key(&acme, &spec("a"), "bc")
        );
    }

    #[test]
    fn the_cache_expires_and_evicts_the_oldest() {
        let now = Instant::now();
        let mut cache = VerdictCache::new(2);
        cache.insert([1; 32], "a".into(), Duration::from_secs(5), now);
        cache.insert([2; 32], "b".into(), Duration::from_secs(50), now);
        assert_eq!(cache.get(&[1; 32], now), Some("a"));
        assert_eq!(cache.get(&[1; 32], now + Duration::from_secs(6)), None);
        cache.insert([3; 32], "c".into(), Duration::from_secs(50), now);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&[1; 32], now), None, "the oldest is evicted");
        assert_eq!(cache.get(&[3; 32], now), Some("c"));
        // A refresh keeps one entry per key.
        cache.insert([3; 32], "d".into(), Duration::from_secs(50), now);
        assert_eq!((cache.len(), cache.get(&[3; 32], now)), (2, Some("d")));
        cache.insert([4; 32], "e".into(), Duration::ZERO, now);
        assert_eq!(cache.get(&[4; 32], now), None, "a zero TTL caches nothing");
    }
}
