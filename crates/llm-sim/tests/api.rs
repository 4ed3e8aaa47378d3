//! The simulator over HTTP: the providers' request validation, error bodies, status codes
//! and headers, as a client sees them.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: failing loudly is the point"
)]

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Value, json};
use switchyard_llm_sim::{Fault, SimConfig, SimLimits, Simulator};
use tokio_util::sync::CancellationToken;

async fn start(config: SimConfig) -> (Arc<Simulator>, String, tokio_util::sync::DropGuard) {
    let sim = Simulator::new(config);
    let shutdown = CancellationToken::new();
    let address = sim
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)), shutdown.clone())
        .await
        .unwrap();
    (sim, format!("http://{address}"), shutdown.drop_guard())
}

async fn openai(base: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("sk-test")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap())
}

async fn anthropic(
    base: &str,
    body: Value,
    version: bool,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", "sk-ant-test")
        .json(&body);
    if version {
        request = request.header("anthropic-version", "2023-06-01");
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap())
}

#[tokio::test]
async fn openai_replies_carry_usage_and_rate_limit_headers() {
    let (_sim, base, _guard) = start(SimConfig::default()).await;
    let request = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8});
    let (status, headers, body) = openai(&base, request.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    assert!(usage["completion_tokens"].as_u64().unwrap() <= 8);
    assert!(headers.contains_key("x-ratelimit-remaining-requests"));
    assert!(headers.contains_key("x-request-id"));
    // The same prompt, the same words.
    let (_, _, again) = openai(&base, request).await;
    assert_eq!(
        again["choices"][0]["message"]["content"],
        body["choices"][0]["message"]["content"]
    );
}

#[tokio::test]
async fn openai_validates_like_openai() {
    let (_sim, base, _guard) = start(SimConfig::default()).await;
    let cases = [
        (json!({"model": "m", "messages": []}), "empty_array"),
        (json!({"model": "m"}), "missing_required_parameter"),
        (
            json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
            "invalid_value",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3}),
            "decimal_above_max_value",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": ["a","b","c","d","e"]}),
            "array_above_max_length",
        ),
    ];
    for (request, code) in cases {
        let (status, _, body) = openai(&base, request.clone()).await;
        assert_eq!(status, 400, "{request}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    // json_object mode needs the word JSON in the prompt.
    let (status, _, body) = openai(&base, json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}})).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("json"));
    // No key at all.
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn anthropic_replies_and_validates_like_anthropic() {
    let (_sim, base, _guard) = start(SimConfig::default()).await;
    let ok = json!({"model": "claude-haiku-4-5", "max_tokens": 16, "system": "be brief", "messages": [{"role": "user", "content": "hi"}]});
    let (status, headers, body) = anthropic(&base, ok.clone(), true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["type"].as_str(), body["content"][0]["type"].as_str()),
        (Some("message"), Some("text"))
    );
    assert!(["end_turn", "max_tokens"].contains(&body["stop_reason"].as_str().unwrap()));
    assert!(body["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(headers.contains_key("anthropic-ratelimit-requests-remaining"));
    let (status, _, body) = anthropic(&base, ok, false).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        "anthropic-version: header is required"
    );
    for (request, message) in [
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens: Field required",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "assistant", "content": "x"}]}),
            "first message must use the \"user\" role",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]}),
            "temperature: range: 0..1",
        ),
    ] {
        let (status, _, body) = anthropic(&base, request, true).await;
        assert_eq!(status, 400);
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(message),
            "{body}"
        );
    }
}

#[tokio::test]
async fn faults_look_like_the_real_ones() {
    let (sim, base, _guard) = start(SimConfig::default()).await;
    let request =
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    sim.script([
        Fault::Overloaded,
        Fault::RateLimited {
            retry_after: std::time::Duration::from_secs(7),
        },
    ]);
    let (status, _, body) = anthropic(&base, request.clone(), true).await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (529, Some("overloaded_error"))
    );
    let (status, headers, body) = anthropic(&base, request.clone(), true).await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (429, Some("rate_limit_error"))
    );
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(headers["anthropic-ratelimit-requests-remaining"], "0");
    // A prompt directive fails its first two requests only.
    let directed =
        json!({"model": "m", "messages": [{"role": "user", "content": "[sim:fault=500*2] go"}]});
    let statuses: Vec<u16> = three_calls(&base, &directed).await;
    assert_eq!(statuses, [500, 500, 200]);
    assert_eq!(sim.stats().by_status.get(&500), Some(&2));
}

async fn three_calls(base: &str, request: &Value) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(openai(base, request.clone()).await.0);
    }
    statuses
}

#[tokio::test]
async fn provider_side_limits_answer_429_with_the_wait() {
    let (_sim, base, _guard) = start(SimConfig {
        limits: SimLimits {
            requests_per_minute: Some(2),
            tokens_per_minute: None,
        },
        ..SimConfig::default()
    })
    .await;
    let request = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": 4});
    assert_eq!(openai(&base, request.clone()).await.0, 200);
    let (_, headers, _) = openai(&base, request.clone()).await;
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
    let (status, headers, body) = openai(&base, request).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((55..=60).contains(&wait), "{wait}");
}

#[tokio::test]
async fn long_system_prompts_are_cached_on_the_second_call() {
    let (_sim, base, _guard) = start(SimConfig::default()).await;
    let system = "You are a careful assistant. ".repeat(200);
    let request = json!({"model": "gpt-4o-mini", "max_tokens": 4, "messages": [
        {"role": "system", "content": system}, {"role": "user", "content": "hi"}]});
    let (_, _, first) = openai(&base, request.clone()).await;
    let (_, _, second) = openai(&base, request).await;
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(cached >= 1024 && cached % 128 == 0, "{cached}");
}
