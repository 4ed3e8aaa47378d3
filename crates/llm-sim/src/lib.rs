//! A local simulator of the OpenAI Chat Completions and Anthropic Messages APIs.
//!
//! Simulated on purpose and labelled so: there is no network to a real provider here. What it
//! does, it does as the providers document it: request validation with their error bodies and
//! status codes, response bodies with usage, rate-limit headers on every reply, `Retry-After`
//! on 429s. Replies are deterministic for a given model and prompt; latency follows a
//! configurable distribution; faults can be scripted (next N requests), directed by the prompt
//! (`[sim:fault=server_error*2]`) or drawn at random.
//!
//! Endpoints: `POST /v1/chat/completions` (OpenAI), `POST /v1/messages` (Anthropic), and for
//! tests and operators `GET /_sim/stats`, `POST /_sim/faults` (a JSON list of fault specs, e.g.
//! `["rate_limited:2", "server_error"]`, served to the next requests in order).

// A refused request's reply is an axum `Response`, built once and returned at once: boxing it
// would buy nothing on a path that already ends the request.
#![expect(clippy::result_large_err, reason = "see above")]

mod anthropic;
pub mod fault;
mod openai;
pub mod text;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use crate::fault::Fault;
use crate::text::{Generated, Rng, Stop};

/// How long a reply takes before any fault adds to it.
#[derive(Clone, Debug, PartialEq)]
pub enum Latency {
    Fixed(Duration),
    Uniform {
        min: Duration,
        max: Duration,
    },
    /// Heavy-tailed like real APIs: `median · e^(σ·z)`, z standard normal.
    LogNormal {
        median: Duration,
        sigma: f64,
    },
}

impl Latency {
    fn sample(&self) -> Duration {
        match *self {
            Latency::Fixed(delay) => delay,
            Latency::Uniform { min, max } => {
                let span = max.saturating_sub(min).as_micros() as u64;
                min + Duration::from_micros(fastrand::u64(0..=span))
            }
            Latency::LogNormal { median, sigma } => {
                // Box–Muller; 1 - f64() keeps the logarithm finite.
                let z = (-2.0 * (1.0 - fastrand::f64()).ln()).sqrt()
                    * (2.0 * std::f64::consts::PI * fastrand::f64()).cos();
                median.mul_f64((sigma * z).exp().min(1_000.0))
            }
        }
    }
}

/// Provider-side limits, enforced the way the providers do: over a rolling minute, answered
/// with 429 and the time until a slot frees.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimLimits {
    pub requests_per_minute: Option<u32>,
    /// Counted as the providers estimate: input tokens plus `max_tokens`.
    pub tokens_per_minute: Option<u32>,
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub latency: Latency,
    /// The natural length of a prose reply, in tokens, before `max_tokens` cuts it; picked
    /// per prompt.
    pub reply_tokens: RangeInclusive<u32>,
    /// When set, requests must carry exactly this key; otherwise any non-empty key passes.
    pub api_key: Option<String>,
    pub limits: SimLimits,
    /// Faults drawn at random, each with its probability per request.
    pub random_faults: Vec<(Fault, f64)>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            latency: Latency::Fixed(Duration::ZERO),
            reply_tokens: 16..=64,
            api_key: None,
            limits: SimLimits::default(),
            random_faults: Vec::new(),
        }
    }
}

/// What the simulator has seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub requests: u64,
    /// Replies by status code (a reset counts as 0).
    pub by_status: BTreeMap<u16, u64>,
    pub in_flight: u64,
    pub max_in_flight: u64,
    /// Requests that came over HTTP/2 (h2c: the simulator speaks both on one port).
    pub http2_requests: u64,
    /// When each request arrived, in milliseconds since the simulator started (the first
    /// 100,000).
    pub arrivals_ms: Vec<u64>,
}

const MAX_ARRIVALS: usize = 100_000;
/// The shortest prefix either provider caches.
const MIN_CACHED_TOKENS: u32 = 1024;

/// A running simulator; shared by its handlers and the test that started it.
#[derive(Debug)]
pub struct Simulator {
    config: SimConfig,
    started: Instant,
    sequence: AtomicU64,
    state: Mutex<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    script: VecDeque<Fault>,
    /// Requests seen per prompt carrying a `*N` directive.
    directed: HashMap<[u8; 8], u32>,
    /// The rolling minute: when, and how many tokens.
    window: VecDeque<(Instant, u64)>,
    /// Cached prompt prefixes.
    cached: std::collections::HashSet<[u8; 8]>,
    stats: Stats,
}

/// A request as both APIs describe it, after validation.
#[derive(Clone, Debug)]
struct Prompt {
    model: String,
    system: String,
    /// `(role, text)` in order.
    messages: Vec<(String, String)>,
    max_tokens: u32,
    stops: Vec<String>,
    /// Structured output requested with this JSON Schema.
    schema: Option<Value>,
    /// Any JSON object requested.
    json: bool,
    /// The prefix the provider would cache: OpenAI caches long prompts by itself, Anthropic
    /// what `cache_control` marks. Only prefixes of at least 1,024 tokens count.
    cache_prefix: Option<String>,
}

impl Prompt {
    fn full_text(&self) -> String {
        let mut text = self.system.clone();
        for (role, content) in &self.messages {
            text.push('\n');
            text.push_str(role);
            text.push_str(": ");
            text.push_str(content);
        }
        text
    }
}

/// The reply and its usage, before the API dresses it.
#[derive(Clone, Debug)]
struct Reply {
    generated: Generated,
    /// All input tokens, cached ones included.
    input_tokens: u32,
    output_tokens: u32,
    /// Served from the prompt cache.
    cache_read_tokens: u32,
    /// Written to the prompt cache by this request.
    cache_write_tokens: u32,
}

/// What an API module needs the shared flow to tell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ErrorKind {
    InvalidRequest,
    Authentication,
    RateLimited,
    Server,
    Overloaded,
}

/// Rate-limit state for the headers.
#[derive(Clone, Copy, Debug)]
struct Window {
    requests_limit: u64,
    requests_remaining: u64,
    tokens_limit: u64,
    tokens_remaining: u64,
    /// Until the oldest request in the window leaves it.
    reset: Duration,
}

/// Both APIs' wire formats, dispatched by endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    OpenAi,
    Anthropic,
}

impl Api {
    fn authenticate(self, headers: &HeaderMap, expected: Option<&str>) -> Result<(), Response> {
        match self {
            Api::OpenAi => openai::authenticate(headers, expected),
            Api::Anthropic => anthropic::authenticate(headers, expected),
        }
    }

    fn parse(self, headers: &HeaderMap, body: &[u8]) -> Result<Prompt, Response> {
        match self {
            Api::OpenAi => openai::parse(body),
            Api::Anthropic => anthropic::parse(headers, body),
        }
    }

    fn input_tokens(self, prompt: &Prompt) -> u32 {
        match self {
            Api::OpenAi => openai::input_tokens(prompt),
            Api::Anthropic => anthropic::input_tokens(prompt),
        }
    }

    fn error(self, kind: ErrorKind, message: &str) -> Response {
        match self {
            Api::OpenAi => openai::error(kind, message),
            Api::Anthropic => anthropic::error(kind, message),
        }
    }

    fn body(self, id: &str, prompt: &Prompt, reply: &Reply) -> Value {
        match self {
            Api::OpenAi => openai::body(id, prompt, reply),
            Api::Anthropic => anthropic::body(id, prompt, reply),
        }
    }

    fn rate_headers(self, window: &Window, response: &mut Response) {
        match self {
            Api::OpenAi => openai::rate_headers(window, response.headers_mut()),
            Api::Anthropic => anthropic::rate_headers(window, response.headers_mut()),
        }
    }

    fn id(self, sequence: u64) -> String {
        match self {
            Api::OpenAi => format!("chatcmpl-sim{sequence:016x}"),
            Api::Anthropic => format!("msg_sim{sequence:016x}"),
        }
    }
}

/// Decrements the in-flight count however the handler ends.
struct InFlight<'a>(&'a Simulator);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.lock().stats.in_flight -= 1;
    }
}

impl Simulator {
    pub fn new(config: SimConfig) -> Arc<Simulator> {
        Arc::new(Simulator {
            config,
            started: Instant::now(),
            sequence: AtomicU64::new(0),
            state: Mutex::new(Shared::default()),
        })
    }

    /// The HTTP routes, for serving or embedding.
    pub fn router(self: &Arc<Simulator>) -> axum::Router {
        axum::Router::new()
            .route("/v1/chat/completions", post(openai_chat))
            .route("/v1/messages", post(anthropic_messages))
            .route("/_sim/stats", get(stats))
            .route("/_sim/faults", post(script))
            .with_state(self.clone())
    }

    /// Serves on `address` (port 0 picks one) until `shutdown`; returns the bound address.
    pub async fn serve(
        self: &Arc<Simulator>,
        address: SocketAddr,
        shutdown: CancellationToken,
    ) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let bound = listener.local_addr()?;
        let app = self.router();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::warn!(message = "Simulator stopped.", %error);
            }
        });
        Ok(bound)
    }

    /// Serves the next requests these faults, in order, before any other rule applies.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().script.extend(faults);
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic elsewhere leaves plain counters behind: still fine to read.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn handle(
        &self,
        api: Api,
        version: axum::http::Version,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response {
        {
            let mut shared = self.lock();
            shared.stats.requests += 1;
            if version == axum::http::Version::HTTP_2 {
                shared.stats.http2_requests += 1;
            }
            shared.stats.in_flight += 1;
            shared.stats.max_in_flight = shared.stats.max_in_flight.max(shared.stats.in_flight);
            if shared.stats.arrivals_ms.len() < MAX_ARRIVALS {
                let at = self.started.elapsed().as_millis() as u64;
                shared.stats.arrivals_ms.push(at);
            }
        }
        let _in_flight = InFlight(self);
        let response = self.respond(api, headers, body).await;
        let status = response.status().as_u16();
        *self.lock().stats.by_status.entry(status).or_default() += 1;
        response
    }

    async fn respond(&self, api: Api, headers: &HeaderMap, body: &[u8]) -> Response {
        if let Err(refused) = api.authenticate(headers, self.config.api_key.as_deref()) {
            return refused;
        }
        let prompt = match api.parse(headers, body) {
            Ok(prompt) => prompt,
            Err(refused) => return refused,
        };
        let full_text = prompt.full_text();
        let input_tokens = api.input_tokens(&prompt);
        let window = match self.admit(u64::from(input_tokens) + u64::from(prompt.max_tokens)) {
            Ok(window) => window,
            Err((window, what, wait)) => {
                let message = format!(
                    "Rate limit reached for {} on {what} per min. Please try again in {}ms.",
                    prompt.model,
                    wait.as_millis()
                );
                let mut response = api.error(ErrorKind::RateLimited, &message);
                api.rate_headers(&window, &mut response);
                retry_after(&mut response, wait);
                return response;
            }
        };
        let fault = match self.fault_for(&full_text) {
            Ok(fault) => fault,
            Err(problem) => return api.error(ErrorKind::InvalidRequest, &problem),
        };
        let mut delay = self.config.latency.sample();
        if let Some(Fault::Slow(extra)) = fault {
            delay += extra;
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let mut response = match fault {
            Some(Fault::RateLimited { retry_after: wait }) => {
                let exhausted = Window {
                    requests_remaining: 0,
                    reset: wait,
                    ..window
                };
                let mut response = api.error(
                    ErrorKind::RateLimited,
                    &format!(
                        "Rate limit reached for {}. Please try again in {}s.",
                        prompt.model,
                        wait.as_secs()
                    ),
                );
                api.rate_headers(&exhausted, &mut response);
                retry_after(&mut response, wait);
                return response;
            }
            Some(Fault::ServerError) => api.error(
                ErrorKind::Server,
                "The server had an error while processing your request. Sorry about that!",
            ),
            Some(Fault::Overloaded) => api.error(ErrorKind::Overloaded, "Overloaded"),
            Some(Fault::BadRequest) => api.error(
                ErrorKind::InvalidRequest,
                "Your request was rejected as a result of our safety system.",
            ),
            Some(Fault::Unauthorized) => api.error(
                ErrorKind::Authentication,
                "Incorrect API key provided: the key was revoked.",
            ),
            Some(Fault::Reset) => {
                let broken = futures_util::stream::once(async {
                    Err::<Bytes, _>(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "simulated connection reset",
                    ))
                });
                Response::new(Body::from_stream(broken))
            }
            Some(Fault::Truncated | Fault::InvalidJson | Fault::Slow(_)) | None => {
                let reply = self.reply(&prompt, &full_text, input_tokens);
                let body = api.body(&api.id(sequence), &prompt, &reply).to_string();
                let body = match fault {
                    Some(Fault::Truncated) => body[..body.len() / 2].to_owned(),
                    Some(Fault::InvalidJson) => "<html>502 Bad Gateway</html>".to_owned(),
                    _ => body,
                };
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response()
            }
        };
        api.rate_headers(&window, &mut response);
        let request_id = format!("req_sim{sequence:016x}");
        if let Ok(value) = request_id.parse() {
            let name = match api {
                Api::OpenAi => "x-request-id",
                Api::Anthropic => "request-id",
            };
            response.headers_mut().insert(name, value);
        }
        response
    }

    /// Takes a slot in the rolling minute, or says which limit is full and for how long.
    fn admit(&self, tokens: u64) -> Result<Window, (Window, &'static str, Duration)> {
        let limits = &self.config.limits;
        let now = Instant::now();
        let minute = Duration::from_secs(60);
        let mut shared = self.lock();
        while shared
            .window
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= minute)
        {
            shared.window.pop_front();
        }
        let used_requests = shared.window.len() as u64;
        let used_tokens: u64 = shared.window.iter().map(|(_, t)| t).sum();
        let requests_limit = limits.requests_per_minute.map_or(1_000_000, u64::from);
        let tokens_limit = limits.tokens_per_minute.map_or(1_000_000_000, u64::from);
        let reset = shared
            .window
            .front()
            .map_or(Duration::ZERO, |(at, _)| minute.saturating_sub(now - *at));
        let mut window = Window {
            requests_limit,
            requests_remaining: requests_limit.saturating_sub(used_requests),
            tokens_limit,
            tokens_remaining: tokens_limit.saturating_sub(used_tokens),
            reset,
        };
        // Without a configured limit the headers still read like a provider's, but nothing is
        // refused.
        if limits.requests_per_minute.is_some() && used_requests >= requests_limit {
            return Err((window, "requests", reset));
        }
        if limits.tokens_per_minute.is_some()
            && used_tokens + tokens > tokens_limit
            && used_tokens > 0
        {
            return Err((window, "tokens", reset));
        }
        shared.window.push_back((now, tokens));
        window.requests_remaining -= 1;
        window.tokens_remaining = window.tokens_remaining.saturating_sub(tokens);
        Ok(window)
    }

    fn fault_for(&self, full_text: &str) -> Result<Option<Fault>, String> {
        let mut shared = self.lock();
        if let Some(fault) = shared.script.pop_front() {
            return Ok(Some(fault));
        }
        if let Some(directive) = fault::directive(full_text) {
            let directive = directive?;
            let Some(times) = directive.times else {
                return Ok(Some(directive.fault));
            };
            let key = prompt_key(full_text);
            let seen = shared.directed.entry(key).or_default();
            *seen += 1;
            return Ok((*seen <= times).then_some(directive.fault));
        }
        drop(shared);
        Ok(self
            .config
            .random_faults
            .iter()
            .find(|(_, probability)| fastrand::f64() < *probability)
            .map(|(fault, _)| fault.clone()))
    }

    fn reply(&self, prompt: &Prompt, full_text: &str, input_tokens: u32) -> Reply {
        let mut rng = Rng::for_prompt(&[&prompt.model, full_text]);
        let last_user = prompt
            .messages
            .iter()
            .rev()
            .find(|(role, _)| role == "user")
            .map_or("", |(_, text)| text.as_str());
        let labels = text::listed_labels(last_user);
        let json = if let Some(schema) = &prompt.schema {
            Some(text::from_schema(&mut rng, schema))
        } else if !labels.is_empty() {
            let pick = &labels[rng.below(labels.len() as u64) as usize];
            Some(serde_json::json!({ "labels": [pick] }))
        } else if prompt.json {
            let generated = text::prose(&mut rng, 12, 12, &[]);
            Some(serde_json::json!({ "text": generated.text }))
        } else {
            None
        };
        let generated = match json {
            Some(value) => {
                let text = value.to_string();
                if text::tokens(&text) > prompt.max_tokens {
                    let keep = prompt.max_tokens as usize * 4;
                    Generated {
                        text: text.chars().take(keep).collect(),
                        stop: Stop::Length,
                    }
                } else {
                    Generated {
                        text,
                        stop: Stop::Natural,
                    }
                }
            }
            None => {
                let (low, high) = (
                    *self.config.reply_tokens.start(),
                    *self.config.reply_tokens.end(),
                );
                let natural = low + rng.below(u64::from(high.saturating_sub(low)) + 1) as u32;
                text::prose(&mut rng, natural, prompt.max_tokens, &prompt.stops)
            }
        };
        let output_tokens = text::tokens(&generated.text);
        let (cache_read_tokens, cache_write_tokens) = match &prompt.cache_prefix {
            Some(prefix) if text::tokens(prefix) >= MIN_CACHED_TOKENS => {
                // OpenAI caches in 128-token steps; Anthropic the whole marked prefix.
                let tokens = text::tokens(prefix).min(input_tokens);
                if self.lock().cached.insert(prompt_key(prefix)) {
                    (0, tokens)
                } else {
                    (tokens, 0)
                }
            }
            _ => (0, 0),
        };
        Reply {
            generated,
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_write_tokens,
        }
    }
}

fn prompt_key(full_text: &str) -> [u8; 8] {
    Rng::for_prompt(&[full_text]).next_u64().to_le_bytes()
}

fn retry_after(response: &mut Response, wait: Duration) {
    let headers = response.headers_mut();
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    if let Ok(value) = seconds.to_string().parse() {
        headers.insert(axum::http::header::RETRY_AFTER, value);
    }
    if let Ok(value) = wait.as_millis().to_string().parse() {
        headers.insert("retry-after-ms", value);
    }
}

fn status_of(kind: ErrorKind, api: Api) -> StatusCode {
    match (kind, api) {
        (ErrorKind::InvalidRequest, _) => StatusCode::BAD_REQUEST,
        (ErrorKind::Authentication, _) => StatusCode::UNAUTHORIZED,
        (ErrorKind::RateLimited, _) => StatusCode::TOO_MANY_REQUESTS,
        (ErrorKind::Server, _) => StatusCode::INTERNAL_SERVER_ERROR,
        (ErrorKind::Overloaded, Api::OpenAi) => StatusCode::SERVICE_UNAVAILABLE,
        // Anthropic's own, non-standard code.
        (ErrorKind::Overloaded, Api::Anthropic) => {
            StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

async fn openai_chat(
    State(sim): State<Arc<Simulator>>,
    version: axum::http::Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sim.handle(Api::OpenAi, version, &headers, &body).await
}

async fn anthropic_messages(
    State(sim): State<Arc<Simulator>>,
    version: axum::http::Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sim.handle(Api::Anthropic, version, &headers, &body).await
}

async fn stats(State(sim): State<Arc<Simulator>>) -> Response {
    axum::Json(sim.stats()).into_response()
}

async fn script(State(sim): State<Arc<Simulator>>, body: Bytes) -> Response {
    let specs: Vec<String> = match serde_json::from_slice(&body) {
        Ok(specs) => specs,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("expected a JSON list of fault specs: {error}"),
            )
                .into_response();
        }
    };
    match specs
        .iter()
        .map(|spec| spec.parse())
        .collect::<Result<Vec<Fault>, _>>()
    {
        Ok(faults) => {
            let count = faults.len();
            sim.script(faults);
            axum::Json(serde_json::json!({ "scripted": count })).into_response()
        }
        Err(problem) => (StatusCode::BAD_REQUEST, problem).into_response(),
    }
}
