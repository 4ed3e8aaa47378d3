//! Anthropic Messages: `POST /v1/messages`, as <https://docs.anthropic.com/en/api/messages>
//! describes it.

use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::text::{self, Stop};
use crate::{Api, ErrorKind, Prompt, Reply, Window, status_of};

pub(crate) fn authenticate(headers: &HeaderMap, expected: Option<&str>) -> Result<(), Response> {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|key| !key.is_empty());
    match (key, expected) {
        (None, _) => Err(error(
            ErrorKind::Authentication,
            "x-api-key header is required",
        )),
        (Some(key), Some(expected)) if key != expected => {
            Err(error(ErrorKind::Authentication, "invalid x-api-key"))
        }
        _ => Ok(()),
    }
}

fn invalid(message: &str) -> Response {
    error(ErrorKind::InvalidRequest, message)
}

/// Text of a `content` or `system` field: a string or a list of blocks (text blocks only; the
/// simulator has no vision or tools). The second value says whether a block asked to be cached.
fn blocks(value: &Value, field: &str) -> Result<(String, bool), Response> {
    match value {
        Value::String(text) => Ok((text.clone(), false)),
        Value::Array(blocks) => {
            let mut text = String::new();
            let mut cached = false;
            for (index, block) in blocks.iter().enumerate() {
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {}
                    _ => {
                        return Err(invalid(&format!(
                            "{field}.{index}.type: Input should be 'text'"
                        )));
                    }
                }
                let Some(part) = block.get("text").and_then(Value::as_str) else {
                    return Err(invalid(&format!("{field}.{index}.text: Field required")));
                };
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(part);
                cached |= block.get("cache_control").is_some();
            }
            Ok((text, cached))
        }
        _ => Err(invalid(&format!(
            "{field}: Input should be a valid string or list"
        ))),
    }
}

pub(crate) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Prompt, Response> {
    if headers.get("anthropic-version").is_none() {
        return Err(invalid("anthropic-version: header is required"));
    }
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
        return Err(invalid(
            "There was an issue with your request body: the body is not valid JSON.",
        ));
    };
    let Some(model) = request.get("model").and_then(Value::as_str) else {
        return Err(invalid("model: Field required"));
    };
    let Some(max_tokens) = request.get("max_tokens") else {
        return Err(invalid("max_tokens: Field required"));
    };
    let Some(max_tokens) = max_tokens.as_u64().filter(|n| *n >= 1) else {
        return Err(invalid(
            "max_tokens: Input should be greater than or equal to 1",
        ));
    };
    let Some(list) = request.get("messages").and_then(Value::as_array) else {
        return Err(invalid("messages: Field required"));
    };
    if list.is_empty() {
        return Err(invalid("messages: at least one message is required"));
    }
    let mut messages = Vec::new();
    for (index, message) in list.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        if role != "user" && role != "assistant" {
            return Err(invalid(&format!(
                "messages.{index}.role: Input should be 'user' or 'assistant'"
            )));
        }
        if index == 0 && role != "user" {
            return Err(invalid(
                "messages: first message must use the \"user\" role",
            ));
        }
        let Some(content) = message.get("content") else {
            return Err(invalid(&format!(
                "messages.{index}.content: Field required"
            )));
        };
        let (content, _) = blocks(content, &format!("messages.{index}.content"))?;
        messages.push((role.to_owned(), content));
    }
    let (system, cache_system) = match request.get("system") {
        None | Some(Value::Null) => (String::new(), false),
        Some(system) => blocks(system, "system")?,
    };
    if let Some(temperature) = request.get("temperature").filter(|v| !v.is_null())
        && !temperature
            .as_f64()
            .is_some_and(|t| (0.0..=1.0).contains(&t))
    {
        return Err(invalid("temperature: range: 0..1"));
    }
    let stops = match request.get("stop_sequences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(stops)) => stops
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(_) => return Err(invalid("stop_sequences: Input should be a valid list")),
    };
    let cache_prefix = cache_system.then(|| system.clone());
    Ok(Prompt {
        model: model.to_owned(),
        system,
        messages,
        max_tokens: max_tokens.min(u64::from(u32::MAX)) as u32,
        stops,
        schema: None,
        json: false,
        cache_prefix,
    })
}

pub(crate) fn input_tokens(prompt: &Prompt) -> u32 {
    text::tokens(&prompt.system)
        + prompt
            .messages
            .iter()
            .map(|(_, text)| text::tokens(text) + 3)
            .sum::<u32>()
}

pub(crate) fn error(kind: ErrorKind, message: &str) -> Response {
    let r#type = match kind {
        ErrorKind::InvalidRequest => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::Server => "api_error",
        ErrorKind::Overloaded => "overloaded_error",
    };
    let body = json!({ "type": "error", "error": { "type": r#type, "message": message } });
    (status_of(kind, Api::Anthropic), axum::Json(body)).into_response()
}

pub(crate) fn body(id: &str, prompt: &Prompt, reply: &Reply) -> Value {
    let (stop_reason, stop_sequence) = match reply.generated.stop {
        Stop::Natural => ("end_turn", Value::Null),
        Stop::Length => ("max_tokens", Value::Null),
        Stop::Sequence(index) => ("stop_sequence", Value::from(prompt.stops[index].clone())),
    };
    // Anthropic's input_tokens leaves out what the cache served or stored.
    let uncached = reply
        .input_tokens
        .saturating_sub(reply.cache_read_tokens + reply.cache_write_tokens);
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": prompt.model,
        "content": [{ "type": "text", "text": reply.generated.text }],
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": uncached,
            "output_tokens": reply.output_tokens,
            "cache_creation_input_tokens": reply.cache_write_tokens,
            "cache_read_input_tokens": reply.cache_read_tokens,
            "service_tier": "standard",
        },
    })
}

/// `anthropic-ratelimit-*`, resets as RFC 3339 instants.
pub(crate) fn rate_headers(window: &Window, headers: &mut HeaderMap) {
    let reset = chrono::Utc::now()
        + chrono::Duration::from_std(window.reset).unwrap_or(chrono::Duration::zero());
    let reset = reset.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for (name, value) in [
        (
            "anthropic-ratelimit-requests-limit",
            window.requests_limit.to_string(),
        ),
        (
            "anthropic-ratelimit-requests-remaining",
            window.requests_remaining.to_string(),
        ),
        ("anthropic-ratelimit-requests-reset", reset.clone()),
        (
            "anthropic-ratelimit-tokens-limit",
            window.tokens_limit.to_string(),
        ),
        (
            "anthropic-ratelimit-tokens-remaining",
            window.tokens_remaining.to_string(),
        ),
        ("anthropic-ratelimit-tokens-reset", reset),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}
