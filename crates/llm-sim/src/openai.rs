//! OpenAI Chat Completions: `POST /v1/chat/completions`, as
//! <https://platform.openai.com/docs/api-reference/chat> describes it.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::text::{self, Stop};
use crate::{Api, ErrorKind, Prompt, Reply, Window, status_of};

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];
/// What the API answers with when `max_tokens` is absent: the model's own limit.
const DEFAULT_MAX_TOKENS: u32 = 16_384;

pub(crate) fn authenticate(headers: &HeaderMap, expected: Option<&str>) -> Result<(), Response> {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|key| !key.is_empty());
    match (key, expected) {
        (None, _) => Err(error_with(
            ErrorKind::Authentication,
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            None,
            None,
        )),
        (Some(key), Some(expected)) if key != expected => Err(error_with(
            ErrorKind::Authentication,
            &format!(
                "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                redact(key)
            ),
            None,
            Some("invalid_api_key"),
        )),
        _ => Ok(()),
    }
}

/// The way OpenAI echoes a wrong key: its first three and last four characters.
fn redact(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

fn invalid(message: &str, param: Option<&str>, code: Option<&str>) -> Response {
    error_with(ErrorKind::InvalidRequest, message, param, code)
}

pub(crate) fn parse(body: &[u8]) -> Result<Prompt, Response> {
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
        return Err(invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
            None,
            None,
        ));
    };
    let model = match request.get("model") {
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        _ => {
            return Err(invalid("you must provide a model parameter", None, None));
        }
    };
    let Some(list) = request.get("messages") else {
        return Err(invalid(
            "Missing required parameter: 'messages'.",
            Some("messages"),
            Some("missing_required_parameter"),
        ));
    };
    let Some(list) = list.as_array() else {
        return Err(invalid(
            "Invalid type for 'messages': expected an array, but got something else instead.",
            Some("messages"),
            Some("invalid_type"),
        ));
    };
    if list.is_empty() {
        return Err(invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            Some("messages"),
            Some("empty_array"),
        ));
    }
    let mut system = String::new();
    let mut messages = Vec::new();
    for (index, message) in list.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        if !ROLES.contains(&role) {
            return Err(invalid(
                &format!(
                    "Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'."
                ),
                Some(&format!("messages[{index}].role")),
                Some("invalid_value"),
            ));
        }
        let content = match message.get("content") {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter(|part| part.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => {
                return Err(invalid(
                    &format!("Missing required parameter: 'messages[{index}].content'."),
                    Some(&format!("messages[{index}].content")),
                    Some("missing_required_parameter"),
                ));
            }
        };
        if role == "system" || role == "developer" {
            if !system.is_empty() {
                system.push('\n');
            }
            system.push_str(&content);
        } else {
            messages.push((role.to_owned(), content));
        }
    }
    if let Some(temperature) = request.get("temperature").filter(|v| !v.is_null()) {
        match temperature.as_f64() {
            Some(t) if (0.0..=2.0).contains(&t) => {}
            Some(t) if t > 2.0 => {
                return Err(invalid(
                    &format!(
                        "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got {t} instead."
                    ),
                    Some("temperature"),
                    Some("decimal_above_max_value"),
                ));
            }
            _ => {
                return Err(invalid(
                    "Invalid 'temperature': expected a number between 0 and 2.",
                    Some("temperature"),
                    Some("invalid_value"),
                ));
            }
        }
    }
    let max_tokens = match request
        .get("max_completion_tokens")
        .or_else(|| request.get("max_tokens"))
        .filter(|v| !v.is_null())
    {
        None => DEFAULT_MAX_TOKENS,
        Some(value) => match value.as_u64() {
            Some(n) if n >= 1 => n.min(u64::from(u32::MAX)) as u32,
            _ => {
                return Err(invalid(
                    "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1.",
                    Some("max_tokens"),
                    Some("integer_below_min_value"),
                ));
            }
        },
    };
    let stops = match request.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(stop)) => vec![stop.clone()],
        Some(Value::Array(stops)) if stops.len() > 4 => {
            return Err(invalid(
                &format!(
                    "Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with length {} instead.",
                    stops.len()
                ),
                Some("stop"),
                Some("array_above_max_length"),
            ));
        }
        Some(Value::Array(stops)) => stops
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(_) => {
            return Err(invalid(
                "Invalid type for 'stop': expected a string or an array of strings.",
                Some("stop"),
                Some("invalid_type"),
            ));
        }
    };
    let (schema, json) = match request.get("response_format") {
        None | Some(Value::Null) => (None, false),
        Some(format) => match format.get("type").and_then(Value::as_str) {
            Some("text") => (None, false),
            Some("json_object") => {
                let mentions_json = std::iter::once(system.as_str())
                    .chain(messages.iter().map(|(_, text)| text.as_str()))
                    .any(|text| text.to_lowercase().contains("json"));
                if !mentions_json {
                    return Err(invalid(
                        "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
                        Some("messages"),
                        None,
                    ));
                }
                (None, true)
            }
            Some("json_schema") => match format.pointer("/json_schema/schema") {
                Some(schema) if schema.is_object() => (Some(schema.clone()), true),
                _ => {
                    return Err(invalid(
                        "Missing required parameter: 'response_format.json_schema.schema'.",
                        Some("response_format.json_schema.schema"),
                        Some("missing_required_parameter"),
                    ));
                }
            },
            _ => {
                return Err(invalid(
                    "Invalid value for 'response_format.type': supported values are 'text', 'json_object' and 'json_schema'.",
                    Some("response_format.type"),
                    Some("invalid_value"),
                ));
            }
        },
    };
    let cache_prefix = (!system.is_empty()).then(|| system.clone());
    Ok(Prompt {
        model,
        system,
        messages,
        max_tokens,
        stops,
        schema,
        json,
        cache_prefix,
    })
}

/// Each message costs its content plus a few tokens of framing, as OpenAI's cookbook counts.
pub(crate) fn input_tokens(prompt: &Prompt) -> u32 {
    let system = if prompt.system.is_empty() {
        0
    } else {
        text::tokens(&prompt.system) + 4
    };
    system
        + prompt
            .messages
            .iter()
            .map(|(_, text)| text::tokens(text) + 4)
            .sum::<u32>()
        + 3
}

pub(crate) fn error(kind: ErrorKind, message: &str) -> Response {
    let code = match kind {
        ErrorKind::RateLimited => Some("rate_limit_exceeded"),
        ErrorKind::InvalidRequest
        | ErrorKind::Authentication
        | ErrorKind::Server
        | ErrorKind::Overloaded => None,
    };
    error_with(kind, message, None, code)
}

fn error_with(kind: ErrorKind, message: &str, param: Option<&str>, code: Option<&str>) -> Response {
    let r#type = match kind {
        ErrorKind::InvalidRequest | ErrorKind::Authentication => "invalid_request_error",
        ErrorKind::RateLimited => "requests",
        ErrorKind::Server | ErrorKind::Overloaded => "server_error",
    };
    let body = json!({
        "error": { "message": message, "type": r#type, "param": param, "code": code }
    });
    (status_of(kind, Api::OpenAi), axum::Json(body)).into_response()
}

pub(crate) fn body(id: &str, prompt: &Prompt, reply: &Reply) -> Value {
    let finish_reason = match reply.generated.stop {
        Stop::Natural | Stop::Sequence(_) => "stop",
        Stop::Length => "length",
    };
    json!({
        "id": id,
        "object": "chat.completion",
        "created": chrono::Utc::now().timestamp(),
        "model": prompt.model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": reply.generated.text, "refusal": null, "annotations": [] },
            "logprobs": null,
            "finish_reason": finish_reason,
        }],
        "usage": {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
            "prompt_tokens_details": { "cached_tokens": reply.cache_read_tokens / 128 * 128, "audio_tokens": 0 },
            "completion_tokens_details": {
                "reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_switchyard_sim",
    })
}

/// `x-ratelimit-*`, resets written the way OpenAI does (`1s`, `6m0s`, `120ms`).
pub(crate) fn rate_headers(window: &Window, headers: &mut HeaderMap) {
    let reset = go_duration(window.reset);
    for (name, value) in [
        (
            "x-ratelimit-limit-requests",
            window.requests_limit.to_string(),
        ),
        ("x-ratelimit-limit-tokens", window.tokens_limit.to_string()),
        (
            "x-ratelimit-remaining-requests",
            window.requests_remaining.to_string(),
        ),
        (
            "x-ratelimit-remaining-tokens",
            window.tokens_remaining.to_string(),
        ),
        ("x-ratelimit-reset-requests", reset.clone()),
        ("x-ratelimit-reset-tokens", reset),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}

fn go_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1_000 {
        return format!("{millis}ms");
    }
    let seconds = duration.as_secs_f64();
    if seconds < 60.0 {
        return format!("{}s", (seconds * 1000.0).round() / 1000.0);
    }
    let minutes = (seconds / 60.0).floor();
    format!("{minutes}m{}s", (seconds - minutes * 60.0).round())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_read_like_openais() {
        assert_eq!(go_duration(Duration::from_millis(120)), "120ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
    }

    #[test]
    fn wrong_keys_are_echoed_redacted() {
        assert_eq!(redact("sk-abcdefghijkl"), "sk-********ijkl");
        assert_eq!(redact("short"), "*****");
    }
}
