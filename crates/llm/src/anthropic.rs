//! Anthropic Messages (`POST {base}/v1/messages`): wire types, converters, error mapping.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use switchyard_core::contracts::{ChatRole, ResponseFormat};
use switchyard_core::rates::Usage;
use url::Url;

use crate::provider::{self, ApiKey, ChatRequest, ChatResponse, HttpPool, ProviderError};

const DEFAULT_BASE: &str = "https://api.anthropic.com";
const API_VERSION: &str = "2023-06-01";
/// The Messages API requires `max_tokens`; this is what a job that names none gets.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

#[derive(Clone, Debug)]
pub struct Anthropic {
    endpoint: Url,
    key: ApiKey,
    http: HttpPool,
}

#[derive(Debug, Serialize)]
struct AnthropicRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    messages: Vec<AnthropicMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stop_sequences: &'a [String],
}

#[derive(Debug, Serialize)]
struct AnthropicMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Debug, Deserialize)]
struct AnthropicResponse {
    #[serde(default)]
    id: Option<String>,
    model: String,
    content: Vec<AnthropicBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    usage: AnthropicUsage,
}

#[derive(Debug, Deserialize)]
struct AnthropicBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AnthropicUsage {
    input_tokens: u64,
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct AnthropicErrorBody {
    error: AnthropicError,
}

#[derive(Debug, Deserialize)]
struct AnthropicError {
    #[serde(rename = "type")]
    kind: String,
    message: String,
}

impl Anthropic {
    pub fn new(base_url: Option<Url>, key: ApiKey, http: HttpPool) -> Result<Anthropic, String> {
        Ok(Anthropic {
            endpoint: crate::endpoint(base_url, DEFAULT_BASE, "v1/messages")?,
            key,
            http,
        })
    }

    pub(crate) fn request(&self, request: &ChatRequest) -> reqwest::RequestBuilder {
        self.http
            .pick()
            .post(self.endpoint.clone())
            .header("x-api-key", self.key.expose())
            .header("anthropic-version", API_VERSION)
            .json(&to_wire(request))
    }
}

fn to_wire(request: &ChatRequest) -> AnthropicRequest<'_> {
    // Anthropic has one top-level system prompt: system turns fold into it, and a JSON
    // response format becomes an instruction there (the reply is checked on our side).
    let mut system: Vec<String> = request.system.iter().cloned().collect();
    system.extend(
        request
            .messages
            .iter()
            .filter(|m| m.role == ChatRole::System)
            .map(|m| m.content.clone()),
    );
    match &request.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            system.push("Reply with a single JSON object and nothing else.".to_owned());
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => system.push(format!(
            "Reply with a single JSON object and nothing else, valid against this JSON Schema: {schema}"
        )),
    }
    AnthropicRequest {
        model: &request.model,
        max_tokens: request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        messages: request
            .messages
            .iter()
            .filter(|m| m.role != ChatRole::System)
            .map(|m| AnthropicMessage {
                role: if m.role == ChatRole::Assistant {
                    "assistant"
                } else {
                    "user"
                },
                content: &m.content,
            })
            .collect(),
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        temperature: request.temperature,
        top_p: request.top_p,
        stop_sequences: &request.stop,
    }
}

pub(crate) fn parse(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<ChatResponse, ProviderError> {
    if !(200..300).contains(&status) {
        let parsed = serde_json::from_slice::<AnthropicErrorBody>(body)
            .ok()
            .map(|AnthropicErrorBody { error }| (error.kind, error.message));
        return Err(provider::failure(
            status,
            headers,
            body,
            parsed,
            rate_limit_reset(headers),
        ));
    }
    let response: AnthropicResponse = provider::decode(body)?;
    let text = response
        .content
        .iter()
        .filter(|block| block.kind == "text")
        .filter_map(|block| block.text.as_deref())
        .collect::<Vec<_>>()
        .join("");
    let finish_reason = match response.stop_reason.as_deref() {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_use",
        Some("refusal") => "content_filter",
        _ => "stop",
    };
    let usage = &response.usage;
    Ok(ChatResponse {
        text,
        finish_reason: finish_reason.to_owned(),
        // Cache writes are billed as input here: the rates table has no cache-write price.
        usage: Usage {
            input_tokens: usage.input_tokens + usage.cache_creation_input_tokens.unwrap_or(0),
            cached_input_tokens: usage.cache_read_input_tokens.unwrap_or(0),
            output_tokens: usage.output_tokens,
            requests: 1,
            ..Usage::default()
        },
        model: response.model,
        request_id: provider::header(headers, "request-id").or(response.id),
    })
}

/// When a 429 carries no Retry-After: the reset instant of whichever limit is exhausted.
fn rate_limit_reset(headers: &HeaderMap) -> Option<Duration> {
    let now = chrono::Utc::now();
    ["requests", "tokens", "input-tokens", "output-tokens"]
        .into_iter()
        .filter(|limit| {
            headers
                .get(format!("anthropic-ratelimit-{limit}-remaining"))
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim() == "0")
        })
        .filter_map(|limit| {
            let reset = headers
                .get(format!("anthropic-ratelimit-{limit}-reset"))?
                .to_str()
                .ok()?;
            let at = chrono::DateTime::parse_from_rfc3339(reset).ok()?;
            (at.with_timezone(&chrono::Utc) - now).to_std().ok()
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::contracts::ChatMessage;

    fn message(role: ChatRole, content: &str) -> ChatMessage {
        ChatMessage {
            role,
            content: content.to_owned(),
        }
    }

    #[test]
    fn system_turns_and_json_formats_fold_into_the_system_prompt() {
        let request = ChatRequest {
            model: "claude-haiku-4-5".into(),
            system: Some("be brief".into()),
            messages: vec![
                message(ChatRole::System, "in French"),
                message(ChatRole::User, "hi"),
            ],
            max_tokens: None,
            temperature: Some(0.2),
            top_p: None,
            stop: vec![],
            response_format: Some(ResponseFormat::JsonObject),
        };
        let wire = serde_json::to_value(to_wire(&request)).unwrap();
        let system = wire["system"].as_str().unwrap();
        assert!(system.starts_with("be brief\n\nin French\n\n") && system.contains("JSON"));
        assert_eq!(wire["messages"].as_array().unwrap().len(), 1);
        assert_eq!(wire["max_tokens"], DEFAULT_MAX_TOKENS);
        assert!(wire.get("stop_sequences").is_none());
    }

    #[test]
    fn cache_reads_are_cached_input_and_writes_are_input() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}],
            "stop_reason":"max_tokens","stop_sequence":null,
            "usage":{"input_tokens":10,"output_tokens":3,"cache_creation_input_tokens":1100,"cache_read_input_tokens":2048}}"#;
        let response = parse(200, &HeaderMap::new(), body).unwrap();
        assert_eq!(response.text, "ab");
        assert_eq!(response.finish_reason, "length");
        assert_eq!(
            (
                response.usage.input_tokens,
                response.usage.cached_input_tokens
            ),
            (1110, 2048)
        );
    }

    #[test]
    fn overloaded_is_retryable_and_auth_is_not() {
        let overloaded =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert!(matches!(
            parse(529, &HeaderMap::new(), overloaded),
            Err(ProviderError::Overloaded { status: 529, .. })
        ));
        let auth = br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#;
        match parse(401, &HeaderMap::new(), auth) {
            Err(error @ ProviderError::Rejected { .. }) => {
                assert!(!error.is_retryable());
                assert!(error.to_string().contains("invalid x-api-key"));
            }
            other => panic!("{other:?}"),
        }
    }
}
