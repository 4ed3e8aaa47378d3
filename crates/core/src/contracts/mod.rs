//! Every message and document Switchyard exchanges, as Rust types and as JSON Schemas.
//!
//! The JSON Schemas in `schemas/` are the contract for producers in any language; the Rust types
//! mirror them. [`decode`] is the one way bytes become a message: size limit, JSON, schema, then
//! the typed value and the checks a schema cannot express. Its errors name the offending field.

mod dead_letter;
mod event;
mod job;
mod result;
mod routed;
mod schema;
mod tag;
mod usage;

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use dead_letter::{DeadLetter, DeadLetterSchema, OriginalMessage};
pub use event::{EventSchema, JobState, LifecycleEvent};
pub use job::{
    Callback, ChatMessage, ChatRole, ChatTask, ClassifyTask, DetectParams, DetectTask,
    GenerationParams, Input, JobEnvelope, JobSchema, MAX_INLINE_BYTES, MAX_INLINE_TEXT_CHARS,
    MultiTask, Optimize, ResponseFormat, RoutingHints, Subtask, SummarizeTask, Task, TaskKind,
    TraceContext,
};
pub use result::{
    BlobRef, ChildOutcome, Classification, Detection, Detections, ImageSize, JobError, MultiOutput,
    Output, ResultDocument, ResultSchema, ResultStatus, StageTimings, TextOutput,
};
pub use routed::{Decision, ParentRef, RoutedJob, RoutedSchema, Strategy};
pub use schema::{SCHEMA_FILES, SchemaFile, precompile};
pub use usage::{UsageEvent, UsageSchema};

/// Default cap on a message's size in bytes; config may lower or raise it per bus.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Why a job failed or was dead-lettered. Closed on purpose: each new class needs a decision on
/// retrying, dead-lettering and reporting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Not UTF-8 JSON.
    Decode,
    /// JSON, but not a valid message of its schema.
    SchemaInvalid,
    /// Over the size limit.
    Oversized,
    /// No backend can serve the job.
    NoRoute,
    /// The tenant's budget is spent and policy says reject.
    BudgetExceeded,
    /// The input itself is unusable (corrupt image, unreadable reference, ...).
    InvalidInput,
    /// The provider refused the request for good (bad request, auth, content policy).
    ProviderRejected,
    /// Retryable failures until the attempts ran out.
    RetriesExhausted,
    /// The job's deadline passed.
    DeadlineExceeded,
    /// A bug or an unexpected state in Switchyard itself.
    Internal,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Decode => "decode",
            ErrorClass::SchemaInvalid => "schema_invalid",
            ErrorClass::Oversized => "oversized",
            ErrorClass::NoRoute => "no_route",
            ErrorClass::BudgetExceeded => "budget_exceeded",
            ErrorClass::InvalidInput => "invalid_input",
            ErrorClass::ProviderRejected => "provider_rejected",
            ErrorClass::RetriesExhausted => "retries_exhausted",
            ErrorClass::DeadlineExceeded => "deadline_exceeded",
            ErrorClass::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message type with a versioned schema.
pub trait Contract: Serialize + DeserializeOwned {
    /// The value of its `schema` field.
    const SCHEMA_ID: &'static str;

    /// Rules the JSON Schema cannot express. Empty when the value is fine.
    fn check(&self) -> Vec<Violation> {
        Vec::new()
    }
}

/// One thing wrong with a message, at a field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// JSON Pointer to the field (`/task/input/uri`); empty for the message as a whole.
    pub path: String,
    pub message: String,
}

impl Violation {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Violation {
        Violation {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "(root): {}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why bytes are not a valid message. Each variant maps to the [`ErrorClass`] a dead letter
/// records.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message is {size} bytes, over the limit of {limit} bytes")]
    Oversized { size: usize, limit: usize },
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("/schema: {0}")]
    UnknownSchema(String),
    #[error("{}", join_violations(.0))]
    Invalid(Vec<Violation>),
}

impl DecodeError {
    pub fn error_class(&self) -> ErrorClass {
        match self {
            DecodeError::Oversized { .. } => ErrorClass::Oversized,
            DecodeError::Json(_) => ErrorClass::Decode,
            DecodeError::UnknownSchema(_) | DecodeError::Invalid(_) => ErrorClass::SchemaInvalid,
        }
    }

    /// The fields named by the error (JSON Pointers), for tests and tooling.
    pub fn paths(&self) -> Vec<&str> {
        match self {
            DecodeError::Oversized { .. } | DecodeError::Json(_) => Vec::new(),
            DecodeError::UnknownSchema(_) => vec!["/schema"],
            DecodeError::Invalid(violations) => {
                violations.iter().map(|v| v.path.as_str()).collect()
            }
        }
    }
}

fn join_violations(violations: &[Violation]) -> String {
    let mut text = String::new();
    for (i, violation) in violations.iter().enumerate() {
        if i > 0 {
            text.push_str("; ");
        }
        text.push_str(&violation.to_string());
    }
    text
}

/// Any message, as [`decode_any`] returns it.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    Job(Box<JobEnvelope>),
    Routed(Box<RoutedJob>),
    Result(Box<ResultDocument>),
    Usage(Box<UsageEvent>),
    DeadLetter(Box<DeadLetter>),
    Event(Box<LifecycleEvent>),
}

impl Message {
    pub fn schema_id(&self) -> &'static str {
        match self {
            Message::Job(_) => JobEnvelope::SCHEMA_ID,
            Message::Routed(_) => RoutedJob::SCHEMA_ID,
            Message::Result(_) => ResultDocument::SCHEMA_ID,
            Message::Usage(_) => UsageEvent::SCHEMA_ID,
            Message::DeadLetter(_) => DeadLetter::SCHEMA_ID,
            Message::Event(_) => LifecycleEvent::SCHEMA_ID,
        }
    }
}

/// Decodes bytes as a `T`, checking size, JSON, schema and `T`'s own rules, in that order.
pub fn decode<T: Contract>(bytes: &[u8], max_bytes: usize) -> Result<T, DecodeError> {
    let value = parse(bytes, max_bytes)?;
    let found = schema::schema_id_of(&value)?;
    if found != T::SCHEMA_ID {
        return Err(DecodeError::UnknownSchema(format!(
            "expected `{}`, found `{found}`",
            T::SCHEMA_ID
        )));
    }
    typed(value, bytes)
}

/// Decodes bytes as whichever message their `schema` field names.
pub fn decode_any(bytes: &[u8], max_bytes: usize) -> Result<Message, DecodeError> {
    let value = parse(bytes, max_bytes)?;
    let found = schema::schema_id_of(&value)?;
    let message = match found {
        JobSchema::ID => Message::Job(Box::new(typed(value, bytes)?)),
        RoutedSchema::ID => Message::Routed(Box::new(typed(value, bytes)?)),
        ResultSchema::ID => Message::Result(Box::new(typed(value, bytes)?)),
        UsageSchema::ID => Message::Usage(Box::new(typed(value, bytes)?)),
        DeadLetterSchema::ID => Message::DeadLetter(Box::new(typed(value, bytes)?)),
        EventSchema::ID => Message::Event(Box::new(typed(value, bytes)?)),
        other => return Err(schema::unknown_schema(other)),
    };
    Ok(message)
}

/// Serializes a message. Infallible for these types: they hold no maps with non-string keys.
pub fn encode<T: Contract>(message: &T) -> Vec<u8> {
    match serde_json::to_vec(message) {
        Ok(bytes) => bytes,
        // serde_json fails only on non-string map keys or a failing Serialize impl; none exist
        // in the contract types, and the round-trip tests cover every type.
        Err(error) => unreachable!("contract types always serialize: {error}"),
    }
}

fn parse(bytes: &[u8], max_bytes: usize) -> Result<serde_json::Value, DecodeError> {
    if bytes.len() > max_bytes {
        return Err(DecodeError::Oversized {
            size: bytes.len(),
            limit: max_bytes,
        });
    }
    serde_json::from_slice(bytes).map_err(|error| DecodeError::Json(error.to_string()))
}

/// `bytes` are what `value` was parsed from: the error path reads them again.
fn typed<T: Contract>(value: serde_json::Value, bytes: &[u8]) -> Result<T, DecodeError> {
    schema::validate_value(T::SCHEMA_ID, &value)?;
    let message: T = from_value(value, bytes)?;
    let violations = message.check();
    if violations.is_empty() {
        Ok(message)
    } else {
        Err(DecodeError::Invalid(violations))
    }
}

/// Types a schema-valid value, taking its strings instead of copying them. Path tracking costs
/// a fifth of a decode, and a value the schema let through rarely fails here, so the path is
/// found only when it does, from `bytes` parsed again (the value is spent by then).
fn from_value<T: Contract>(value: serde_json::Value, bytes: &[u8]) -> Result<T, DecodeError> {
    let untracked = match T::deserialize(value) {
        Ok(message) => return Ok(message),
        Err(error) => error,
    };
    let tracked = serde_json::from_slice::<serde_json::Value>(bytes)
        .map(|value| serde_path_to_error::deserialize::<_, T>(&value).err());
    let violation = match tracked {
        Ok(Some(error)) => Violation::new(
            pointer_from_serde_path(&error.path().to_string()),
            error.inner().to_string(),
        ),
        // The same bytes parse and type as they did a moment ago; keep the first error.
        Ok(None) | Err(_) => Violation::new("", untracked.to_string()),
    };
    Err(DecodeError::Invalid(vec![violation]))
}

/// `task.subtasks[0].name` → `/task/subtasks/0/name`.
fn pointer_from_serde_path(path: &str) -> String {
    if path == "." {
        return String::new();
    }
    let mut pointer = String::new();
    for segment in path.split('.') {
        let mut rest = segment;
        if let Some(open) = rest.find('[') {
            pointer.push('/');
            pointer.push_str(&rest[..open]);
            rest = &rest[open..];
            for index in rest.split(['[', ']']).filter(|s| !s.is_empty()) {
                pointer.push('/');
                pointer.push_str(index);
            }
        } else {
            pointer.push('/');
            pointer.push_str(rest);
        }
    }
    pointer
}

impl Contract for JobEnvelope {
    const SCHEMA_ID: &'static str = JobSchema::ID;

    fn check(&self) -> Vec<Violation> {
        let mut violations = Vec::new();
        if let Task::Multi(multi) = &self.task {
            let mut seen = std::collections::HashSet::new();
            for (i, subtask) in multi.subtasks.iter().enumerate() {
                if !seen.insert(subtask.name.as_str()) {
                    violations.push(Violation::new(
                        format!("/task/subtasks/{i}/name"),
                        format!("subtask name `{}` is used twice", subtask.name),
                    ));
                }
            }
        }
        violations
    }
}

impl Contract for RoutedJob {
    const SCHEMA_ID: &'static str = RoutedSchema::ID;

    fn check(&self) -> Vec<Violation> {
        self.job
            .check()
            .into_iter()
            .map(|v| Violation::new(format!("/job{}", v.path), v.message))
            .collect()
    }
}

impl Contract for ResultDocument {
    const SCHEMA_ID: &'static str = ResultSchema::ID;

    fn check(&self) -> Vec<Violation> {
        let mut violations = Vec::new();
        if self.finished_at < self.started_at {
            violations.push(Violation::new(
                "/finished_at",
                "must not be earlier than started_at",
            ));
        }
        match (self.status, &self.output, &self.error) {
            (ResultStatus::Succeeded, None, _) => {
                violations.push(Violation::new(
                    "/output",
                    "a succeeded result has an output",
                ));
            }
            (ResultStatus::Failed, _, None) => {
                violations.push(Violation::new("/error", "a failed result has an error"));
            }
            (ResultStatus::Succeeded | ResultStatus::Failed | ResultStatus::Partial, _, _) => {}
        }
        violations
    }
}

impl Contract for UsageEvent {
    const SCHEMA_ID: &'static str = UsageSchema::ID;

    fn check(&self) -> Vec<Violation> {
        let prefix = format!("{}:", self.job_id);
        if self.event_id.starts_with(&prefix) {
            Vec::new()
        } else {
            vec![Violation::new(
                "/event_id",
                format!("must start with the job id (`{prefix}`)"),
            )]
        }
    }
}

impl Contract for DeadLetter {
    const SCHEMA_ID: &'static str = DeadLetterSchema::ID;

    fn check(&self) -> Vec<Violation> {
        if self.last_failed_at < self.first_failed_at {
            vec![Violation::new(
                "/last_failed_at",
                "must not be earlier than first_failed_at",
            )]
        } else {
            Vec::new()
        }
    }
}

impl Contract for LifecycleEvent {
    const SCHEMA_ID: &'static str = EventSchema::ID;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typing_error_names_its_path() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../schemas/examples/valid/job.chat.json");
        let bytes = std::fs::read(path).unwrap();
        let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(from_value::<JobEnvelope>(value.clone(), &bytes).is_ok());
        value["priority"] = "urgent".into();
        let bytes = serde_json::to_vec(&value).unwrap();
        let Err(DecodeError::Invalid(violations)) = from_value::<JobEnvelope>(value, &bytes) else {
            panic!("an unknown tier was typed");
        };
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].path, "/priority");
        assert!(
            violations[0].message.contains("urgent"),
            "{}",
            violations[0].message
        );
    }

    #[test]
    fn serde_paths_become_json_pointers() {
        assert_eq!(pointer_from_serde_path("."), "");
        assert_eq!(pointer_from_serde_path("tenant_id"), "/tenant_id");
        assert_eq!(
            pointer_from_serde_path("task.subtasks[1].task.input"),
            "/task/subtasks/1/task/input"
        );
    }

    #[test]
    fn oversized_is_refused_before_parsing() {
        let error = decode_any(b"{ not even json", 4).unwrap_err();
        assert_eq!(error, DecodeError::Oversized { size: 15, limit: 4 });
        assert_eq!(error.error_class(), ErrorClass::Oversized);
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let error = decode_any(b"\xff\xfe", 100).unwrap_err();
        assert_eq!(error.error_class(), ErrorClass::Decode);
    }

    #[test]
    fn missing_or_unknown_schema_names_the_schema_field() {
        for body in [
            r#"{"job_id": "x"}"#,
            r#"{"schema": "switchyard.job/v9"}"#,
            r#"[1]"#,
        ] {
            let error = decode_any(body.as_bytes(), 1000).unwrap_err();
            assert_eq!(error.paths(), vec!["/schema"], "{body}: {error}");
            assert!(error.to_string().starts_with("/schema"), "{error}");
        }
    }
}
