//! OpenAI Chat Completions (`POST {base}/chat/completions`), and every server that speaks it
//! (vLLM, Ollama, OpenRouter): wire types, converters, error mapping.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use switchyard_core::contracts::{ChatRole, ResponseFormat};
use switchyard_core::rates::Usage;
use url::Url;

use crate::provider::{self, ApiKey, ChatRequest, ChatResponse, HttpPool, ProviderError};

const DEFAULT_BASE: &str = "https://api.openai.com/v1";

#[derive(Clone, Debug)]
pub struct OpenAi {
    endpoint: Url,
    key: ApiKey,
    http: HttpPool,
}

#[derive(Debug, Serialize)]
struct OpenAiRequest<'a> {
    model: &'a str,
    messages: Vec<OpenAiMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<OpenAiResponseFormat<'a>>,
}

#[derive(Debug, Serialize)]
struct OpenAiMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OpenAiResponseFormat<'a> {
    Text,
    JsonObject,
    JsonSchema { json_schema: OpenAiJsonSchema<'a> },
}

#[derive(Debug, Serialize)]
struct OpenAiJsonSchema<'a> {
    name: &'a str,
    schema: &'a serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct OpenAiResponse {
    #[serde(default)]
    id: Option<String>,
    model: String,
    choices: Vec<OpenAiChoice>,
    usage: OpenAiUsage,
}

#[derive(Debug, Deserialize)]
struct OpenAiChoice {
    message: OpenAiResponseMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct OpenAiResponseMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Debug, Deserialize)]
struct OpenAiUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<OpenAiPromptDetails>,
}

#[derive(Debug, Deserialize)]
struct OpenAiPromptDetails {
    #[serde(default)]
    cached_tokens: u64,
}

#[derive(Debug, Deserialize)]
struct OpenAiErrorBody {
    error: OpenAiError,
}

#[derive(Debug, Deserialize)]
struct OpenAiError {
    message: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
}

impl OpenAi {
    pub fn new(base_url: Option<Url>, key: ApiKey, http: HttpPool) -> Result<OpenAi, String> {
        Ok(OpenAi {
            endpoint: crate::endpoint(base_url, DEFAULT_BASE, "chat/completions")?,
            key,
            http,
        })
    }

    pub(crate) fn request(&self, request: &ChatRequest) -> reqwest::RequestBuilder {
        self.http
            .pick()
            .post(self.endpoint.clone())
            .bearer_auth(self.key.expose())
            .json(&to_wire(request))
    }
}

fn to_wire(request: &ChatRequest) -> OpenAiRequest<'_> {
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if let Some(system) = &request.system {
        messages.push(OpenAiMessage {
            role: "system",
            content: system,
        });
    }
    messages.extend(request.messages.iter().map(|message| OpenAiMessage {
        role: match message.role {
            ChatRole::System => "system",
            ChatRole::User => "user",
            ChatRole::Assistant => "assistant",
        },
        content: &message.content,
    }));
    OpenAiRequest {
        model: &request.model,
        messages,
        max_completion_tokens: request.max_tokens,
        temperature: request.temperature,
        top_p: request.top_p,
        stop: &request.stop,
        response_format: request.response_format.as_ref().map(|format| match format {
            ResponseFormat::Text => OpenAiResponseFormat::Text,
            ResponseFormat::JsonObject => OpenAiResponseFormat::JsonObject,
            ResponseFormat::JsonSchema { name, schema } => OpenAiResponseFormat::JsonSchema {
                json_schema: OpenAiJsonSchema { name, schema },
            },
        }),
    }
}

pub(crate) fn parse(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<ChatResponse, ProviderError> {
    if !(200..300).contains(&status) {
        let parsed = serde_json::from_slice::<OpenAiErrorBody>(body).ok().map(
            |OpenAiErrorBody { error }| {
                let code = match error.code {
                    Some(serde_json::Value::String(code)) => Some(code),
                    _ => None,
                };
                (
                    code.or(error.kind).unwrap_or_else(|| "error".to_owned()),
                    error.message,
                )
            },
        );
        return Err(provider::failure(
            status,
            headers,
            body,
            parsed,
            rate_limit_reset(headers),
        ));
    }
    let response: OpenAiResponse = provider::decode(body)?;
    let Some(choice) = response.choices.into_iter().next() else {
        return Err(ProviderError::InvalidResponse("no choices".to_owned()));
    };
    let (text, finish_reason) = match (choice.message.content, choice.message.refusal) {
        (_, Some(refusal)) => (refusal, "content_filter".to_owned()),
        (Some(text), None) => (text, normalise(choice.finish_reason.as_deref())),
        (None, None) => (String::new(), normalise(choice.finish_reason.as_deref())),
    };
    let cached = response
        .usage
        .prompt_tokens_details
        .map_or(0, |details| details.cached_tokens);
    Ok(ChatResponse {
        text,
        finish_reason,
        // prompt_tokens includes the cached ones; the ledger prices them apart.
        usage: Usage {
            input_tokens: response.usage.prompt_tokens.saturating_sub(cached),
            cached_input_tokens: cached,
            output_tokens: response.usage.completion_tokens,
            requests: 1,
            ..Usage::default()
        },
        model: response.model,
        request_id: provider::header(headers, "x-request-id").or(response.id),
    })
}

fn normalise(reason: Option<&str>) -> String {
    match reason {
        Some("length") => "length",
        Some("content_filter") => "content_filter",
        Some("tool_calls" | "function_call") => "tool_use",
        _ => "stop",
    }
    .to_owned()
}

/// When a 429 carries no Retry-After: the reset of whichever limit is exhausted.
fn rate_limit_reset(headers: &HeaderMap) -> Option<Duration> {
    ["requests", "tokens"]
        .into_iter()
        .filter(|limit| {
            headers
                .get(format!("x-ratelimit-remaining-{limit}"))
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim() == "0")
        })
        .filter_map(|limit| {
            headers
                .get(format!("x-ratelimit-reset-{limit}"))
                .and_then(|v| v.to_str().ok())
                .and_then(go_duration)
        })
        .max()
}

/// OpenAI writes resets as Go durations: `1s`, `6m0s`, `1.5s`, `120ms`, `1h2m3s`.
pub(crate) fn go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    Some(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::contracts::ChatMessage;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(go_duration("120ms"), Some(Duration::from_millis(120)));
        assert_eq!(go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(go_duration("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(go_duration("soon"), None);
    }

    #[test]
    fn system_goes_first_and_json_schema_nests() {
        let request = ChatRequest {
            model: "gpt-4o-mini".into(),
            system: Some("be brief".into()),
            messages: vec![ChatMessage {
                role: ChatRole::User,
                content: "hi".into(),
            }],
            max_tokens: Some(5),
            temperature: None,
            top_p: None,
            stop: vec!["END".into()],
            response_format: Some(ResponseFormat::JsonSchema {
                name: "answer".into(),
                schema: serde_json::json!({"type": "object"}),
            }),
        };
        let wire = serde_json::to_value(to_wire(&request)).unwrap();
        assert_eq!(wire["messages"][0]["role"], "system");
        assert_eq!(wire["messages"][1]["content"], "hi");
        assert_eq!(wire["max_completion_tokens"], 5);
        assert_eq!(wire["stop"][0], "END");
        assert_eq!(wire["response_format"]["type"], "json_schema");
        assert_eq!(wire["response_format"]["json_schema"]["name"], "answer");
        assert!(wire.get("temperature").is_none());
    }

    #[test]
    fn cached_tokens_are_split_from_input() {
        let body = br#"{"id":"x","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"length"}],
            "usage":{"prompt_tokens":2000,"completion_tokens":7,"total_tokens":2007,"prompt_tokens_details":{"cached_tokens":1536}}}"#;
        let response = parse(200, &HeaderMap::new(), body).unwrap();
        assert_eq!(
            (
                response.usage.input_tokens,
                response.usage.cached_input_tokens,
                response.usage.output_tokens
            ),
            (464, 1536, 7)
        );
        assert_eq!(response.finish_reason, "length");
    }

    #[test]
    fn errors_keep_the_providers_message() {
        let body = br#"{"error":{"message":"Invalid 'messages'","type":"invalid_request_error","param":"messages","code":"empty_array"}}"#;
        match parse(400, &HeaderMap::new(), body) {
            Err(ProviderError::Rejected {
                status: 400,
                kind,
                message,
            }) => {
                assert_eq!(
                    (kind.as_str(), message.as_str()),
                    ("empty_array", "Invalid 'messages'")
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
