//! What every provider is asked and answers, and how calls fail; the HTTP client that
//! dispatches to the provider modules through a closed enum.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::header::HeaderMap;
use switchyard_core::config::{Backend, HttpVersion, Provider as ProviderKind};
use switchyard_core::contracts::{ChatMessage, ResponseFormat};
use switchyard_core::rates::Usage;
use url::Url;

use crate::{anthropic, openai};

/// A chat request in the terms both APIs share; each provider module converts it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub system: Option<String>,
    /// User and assistant turns, in order.
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Vec<String>,
    pub response_format: Option<ResponseFormat>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChatResponse {
    pub text: String,
    /// Normalised: `stop`, `length`, `content_filter`, `tool_use`.
    pub finish_reason: String,
    /// As the provider reported it. Never a provider's cost field: cost comes from the rates
    /// table.
    pub usage: Usage,
    /// The model that answered, as the provider names it.
    pub model: String,
    pub request_id: Option<String>,
}

/// How a call failed. Closed: each variant has a decision in `is_retryable`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// 429.
    #[error("rate limited (429): {message}")]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    /// Anthropic's 529, OpenAI's 503.
    #[error("overloaded ({status}): {message}")]
    Overloaded {
        status: u16,
        retry_after: Option<Duration>,
        message: String,
    },
    /// Other 5xx (and 408, 409, which the providers document as retryable).
    #[error("server error ({status}): {message}")]
    Server { status: u16, message: String },
    #[error("timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    /// Connect failures, resets, bodies cut off.
    #[error("transport: {0}")]
    Transport(String),
    /// A 2xx whose body is not the provider's response format.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// Bad request, authentication, permission, not found, content policy: retrying the same
    /// request cannot help. The provider's own message is kept for the dead letter.
    #[error("rejected ({status} {kind}): {message}")]
    Rejected {
        status: u16,
        kind: String,
        message: String,
    },
}

impl ProviderError {
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::RateLimited { .. }
            | ProviderError::Overloaded { .. }
            | ProviderError::Server { .. }
            | ProviderError::Timeout(_)
            | ProviderError::Transport(_)
            | ProviderError::InvalidResponse(_) => true,
            ProviderError::Rejected { .. } => false,
        }
    }

    /// The wait the provider asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. }
            | ProviderError::Overloaded { retry_after, .. } => *retry_after,
            ProviderError::Server { .. }
            | ProviderError::Timeout(_)
            | ProviderError::Transport(_)
            | ProviderError::InvalidResponse(_)
            | ProviderError::Rejected { .. } => None,
        }
    }
}

/// An API key: read from the environment, never printed.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    /// The key in environment variable `name`.
    pub fn from_env(name: &str) -> Result<ApiKey, String> {
        match std::env::var(name) {
            Ok(key) if !key.trim().is_empty() => Ok(ApiKey(key.trim().to_owned())),
            Ok(_) => Err(format!("environment variable {name} is empty")),
            Err(_) => Err(format!("environment variable {name} is not set")),
        }
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// The HTTP clients every provider shares, calls spread over them in turn.
///
/// Why several: hyper keeps one HTTP/2 connection per host and, as RFC 9113 asks, never opens
/// a second when the server's stream limit is reached; calls past it wait. Each client here
/// holds its own connection, so the pool carries about `connections` × the stream limit. Under
/// HTTP/2 thousands of calls in flight cost a few connections instead of one keep-alive
/// connection each (about 48 KB of buffers and state apiece under HTTP/1.1).
#[derive(Clone, Debug)]
pub struct HttpPool {
    clients: Arc<[reqwest::Client]>,
    next: Arc<AtomicUsize>,
}

impl HttpPool {
    /// `connections` clients speaking `version`. Proxies from the environment
    /// (`HTTPS_PROXY`) apply, as egress to a provider usually needs them.
    pub fn new(version: HttpVersion, connections: usize) -> Result<HttpPool, String> {
        let clients = (0..connections.max(1))
            .map(|_| {
                // HTTP/2 pings find a connection a load balancer dropped while idle before a
                // call is put on it (a no-op on HTTP/1.1 connections).
                let builder = reqwest::Client::builder()
                    .pool_idle_timeout(Duration::from_secs(90))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .http2_keep_alive_timeout(Duration::from_secs(10))
                    .http2_keep_alive_while_idle(true);
                let builder = match version {
                    HttpVersion::Auto => builder,
                    HttpVersion::Http1 => builder.http1_only(),
                    HttpVersion::H2PriorKnowledge => builder.http2_prior_knowledge(),
                };
                builder
                    .build()
                    .map_err(|error| format!("cannot build the HTTP client: {error}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(HttpPool {
            clients: clients.into(),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The client for the next call.
    pub fn pick(&self) -> &reqwest::Client {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        &self.clients[turn % self.clients.len()]
    }
}

/// One provider endpoint, with its wire format.
#[derive(Clone, Debug)]
pub enum ProviderClient {
    OpenAi(openai::OpenAi),
    Anthropic(anthropic::Anthropic),
}

impl ProviderClient {
    /// The client for a catalog backend: its base URL (or the provider's public one) and the
    /// key in its `api_key_env`.
    pub fn for_backend(backend: &Backend, http: HttpPool) -> Result<ProviderClient, String> {
        let key = match &backend.api_key_env {
            Some(name) => ApiKey::from_env(name)?,
            None => {
                return Err(format!(
                    "backend `{}` names no api_key_env",
                    backend.id.as_str()
                ));
            }
        };
        ProviderClient::new(backend.provider, backend.base_url.clone(), key, http)
    }

    pub fn new(
        provider: ProviderKind,
        base_url: Option<Url>,
        key: ApiKey,
        http: HttpPool,
    ) -> Result<ProviderClient, String> {
        match provider {
            ProviderKind::Openai => Ok(ProviderClient::OpenAi(openai::OpenAi::new(
                base_url, key, http,
            )?)),
            ProviderKind::Anthropic => Ok(ProviderClient::Anthropic(anthropic::Anthropic::new(
                base_url, key, http,
            )?)),
            ProviderKind::Onnx => {
                Err("the onnx provider is served by the vision worker".to_owned())
            }
        }
    }

    /// `openai` or `anthropic`, as usage events name the provider.
    pub fn name(&self) -> &'static str {
        match self {
            ProviderClient::OpenAi(_) => "openai",
            ProviderClient::Anthropic(_) => "anthropic",
        }
    }

    /// One call, within `timeout` (connect to last byte).
    pub async fn chat(
        &self,
        request: &ChatRequest,
        timeout: Duration,
    ) -> Result<ChatResponse, ProviderError> {
        let (builder, parse): (reqwest::RequestBuilder, Parse) = match self {
            ProviderClient::OpenAi(client) => (client.request(request), openai::parse),
            ProviderClient::Anthropic(client) => (client.request(request), anthropic::parse),
        };
        let response = builder
            .timeout(timeout)
            .send()
            .await
            .map_err(|error| transport(&error, timeout))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|error| transport(&error, timeout))?;
        parse(status, &headers, &body)
    }
}

type Parse = fn(u16, &HeaderMap, &[u8]) -> Result<ChatResponse, ProviderError>;

fn transport(error: &reqwest::Error, timeout: Duration) -> ProviderError {
    if error.is_timeout() {
        return ProviderError::Timeout(timeout);
    }
    // The source chain says what happened (reset, refused); the URL is ours and holds no key.
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    ProviderError::Transport(text)
}

/// A non-2xx reply as an error: the provider's own `(kind, message)` when its error body
/// parsed (else the body's start), the wait from Retry-After or else from `limit_reset`.
pub(crate) fn failure(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    parsed: Option<(String, String)>,
    limit_reset: Option<Duration>,
) -> ProviderError {
    let (kind, message) = parsed.unwrap_or_else(|| ("error".to_owned(), crate::snippet(body)));
    let retry_after = retry_after_header(headers).or(limit_reset);
    classify_status(status, kind, message, retry_after)
}

/// A 2xx body as the provider's response type.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|error| {
        ProviderError::InvalidResponse(format!("{error} in {}", crate::snippet(body)))
    })
}

/// A header's value as text, when present and printable.
pub(crate) fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The shared rule for statuses a provider module did not special-case.
pub(crate) fn classify_status(
    status: u16,
    kind: String,
    message: String,
    retry_after: Option<Duration>,
) -> ProviderError {
    match status {
        429 => ProviderError::RateLimited {
            retry_after,
            message,
        },
        503 | 529 => ProviderError::Overloaded {
            status,
            retry_after,
            message,
        },
        408 | 409 | 500..=599 => ProviderError::Server { status, message },
        _ => ProviderError::Rejected {
            status,
            kind,
            message,
        },
    }
}

/// `retry-after-ms` (OpenAI), then `retry-after` in seconds or as an HTTP date.
pub(crate) fn retry_after_header(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok())
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = text("retry-after")?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn retry_after_in_its_three_spellings() {
        assert_eq!(
            retry_after_header(&headers(&[("retry-after-ms", "250"), ("retry-after", "1")])),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            retry_after_header(&headers(&[("retry-after", "3")])),
            Some(Duration::from_secs(3))
        );
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let wait = retry_after_header(&headers(&[("retry-after", &later)])).unwrap();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
        assert_eq!(retry_after_header(&HeaderMap::new()), None);
    }

    #[test]
    fn statuses_sort_into_retryable_and_permanent() {
        let class = |status| classify_status(status, "k".into(), "m".into(), None);
        assert!(class(429).is_retryable());
        assert!(class(529).is_retryable());
        assert!(class(500).is_retryable());
        assert!(class(408).is_retryable());
        for permanent in [400, 401, 403, 404, 413, 422] {
            assert!(!class(permanent).is_retryable(), "{permanent}");
        }
    }

    #[test]
    fn keys_never_print() {
        let key = ApiKey::new("sk-very-secret");
        assert!(!format!("{key:?}").contains("secret"));
    }
}
