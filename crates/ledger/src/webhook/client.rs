//! One webhook delivery attempt, Svix-style: a signed POST, 2xx is success, everything else is
//! a failure that is retried on the schedule — except a URL the SSRF guard refuses, which no
//! retry can fix.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{CONTENT_TYPE, HeaderValue, LOCATION};
use reqwest::{Response, redirect};
use url::Url;

use crate::webhook::guard::{GuardedResolver, Refused, SsrfGuard};
use crate::webhook::sign::SigningKeys;

/// How much of a failed response's body ends up in the error message.
pub const ERROR_BODY_LIMIT: usize = 1024;

/// Each delay of the schedule is stretched or shrunk by up to this fraction, so receivers that
/// failed together are not retried together.
pub const JITTER: f64 = 0.2;

/// Sends webhooks: no redirects, no proxy, every connection through the SSRF guard.
#[derive(Clone, Debug)]
pub struct WebhookClient {
    http: reqwest::Client,
    guard: Arc<SsrfGuard>,
    timeout: Duration,
}

/// The HTTP client could not be built (the TLS backend failed to initialise).
#[derive(Debug, thiserror::Error)]
#[error("could not build the webhook HTTP client: {0}")]
pub struct ClientError(#[source] reqwest::Error);

/// One message to one URL.
#[derive(Clone, Copy, Debug)]
pub struct WebhookRequest<'a> {
    pub url: &'a Url,
    /// `webhook-id`: the same for every attempt, so receivers can drop duplicates.
    pub msg_id: &'a str,
    /// `webhook-timestamp`: when this attempt is made; receivers refuse stale ones.
    pub timestamp: DateTime<Utc>,
    /// JSON, sent and signed byte for byte.
    pub body: &'a [u8],
    /// Unsigned when `None`.
    pub keys: Option<&'a SigningKeys>,
}

/// What one attempt came to. Errors never hold the secret or the signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered {
        status: u16,
    },
    Failed {
        /// The response status, when a response came.
        status: Option<u16>,
        error: String,
        /// Whether a later attempt could succeed.
        retryable: bool,
    },
}

impl WebhookClient {
    pub fn new(timeout: Duration, guard: SsrfGuard) -> Result<WebhookClient, ClientError> {
        let guard = Arc::new(guard);
        let http = reqwest::Client::builder()
            // A redirect would be a second, unguarded request the receiver chose.
            .redirect(redirect::Policy::none())
            .dns_resolver(GuardedResolver(Arc::clone(&guard)))
            // A proxy would connect on our behalf, after the guard, to whatever it resolves.
            .no_proxy()
            .timeout(timeout)
            .user_agent(concat!("switchyard-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError)?;
        Ok(WebhookClient {
            http,
            guard,
            timeout,
        })
    }

    /// Makes one attempt; every failure, including a refusal by the guard, is an outcome.
    pub async fn send(&self, request: WebhookRequest<'_>) -> AttemptOutcome {
        // reqwest skips the resolver for IP-literal hosts, so those are judged here.
        if let Err(refused) = self.guard.check_url(request.url) {
            return refused_outcome(&refused);
        }
        let timestamp = request.timestamp.timestamp();
        let signature = request
            .keys
            .map(|keys| keys.signature_header(request.msg_id, timestamp, request.body));
        let mut builder = self
            .http
            .post(request.url.clone())
            .header("webhook-id", request.msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(CONTENT_TYPE, "application/json")
            .body(request.body.to_vec());
        if let Some(signature) = &signature {
            match HeaderValue::from_str(signature) {
                Ok(mut value) => {
                    // Keeps it out of hyper's and reqwest's debug output.
                    value.set_sensitive(true);
                    builder = builder.header("webhook-signature", value);
                }
                Err(_) => {
                    return AttemptOutcome::Failed {
                        status: None,
                        error: "the signature is not a valid header value".to_owned(),
                        retryable: false,
                    };
                }
            }
        }
        match builder.send().await {
            Ok(response) => response_outcome(response, signature.as_deref()).await,
            Err(error) => self.error_outcome(&error),
        }
    }

    fn error_outcome(&self, error: &reqwest::Error) -> AttemptOutcome {
        if let Some(refused) = find_refusal(error) {
            return refused_outcome(refused);
        }
        let (error_text, retryable) = if error.is_timeout() {
            (format!("timed out after {:?}", self.timeout), true)
        } else if error.is_builder() {
            // A malformed `msg_id` or URL stays malformed.
            (format!("invalid request: {}", error_chain(error)), false)
        } else {
            (error_chain(error), true)
        };
        AttemptOutcome::Failed {
            status: None,
            error: error_text,
            retryable,
        }
    }
}

/// The delay before attempt `attempts_made + 1`: `schedule[attempts_made]` with ±[`JITTER`];
/// `None` once the schedule is used up.
pub fn next_delay(schedule: &[Duration], attempts_made: u32) -> Option<Duration> {
    let delay = *schedule.get(usize::try_from(attempts_made).ok()?)?;
    Some(jittered(delay, fastrand::f64()))
}

/// `delay` scaled by a factor in [1 - JITTER, 1 + JITTER), chosen by `unit` in [0, 1).
fn jittered(delay: Duration, unit: f64) -> Duration {
    let factor = 1.0 - JITTER + 2.0 * JITTER * unit.clamp(0.0, 1.0);
    // Scaling a huge delay could overflow; such a delay is as good as unjittered.
    Duration::try_from_secs_f64(delay.as_secs_f64() * factor).unwrap_or(delay)
}

fn refused_outcome(refused: &Refused) -> AttemptOutcome {
    AttemptOutcome::Failed {
        status: None,
        error: format!("refused by the SSRF guard: {refused}"),
        retryable: refused.is_retryable(),
    }
}

async fn response_outcome(response: Response, signature: Option<&str>) -> AttemptOutcome {
    let status = response.status();
    if status.is_success() {
        return AttemptOutcome::Delivered {
            status: status.as_u16(),
        };
    }
    let error = if status.is_redirection() {
        let location = response
            .headers()
            .get(LOCATION)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .unwrap_or_default();
        format!(
            "HTTP {status}: redirects are not followed (Location: {})",
            printable(&redact(&location, signature))
        )
    } else {
        let body = read_prefix(response, ERROR_BODY_LIMIT).await;
        let body = printable(&redact(&String::from_utf8_lossy(&body), signature));
        if body.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {body}")
        }
    };
    // Svix retries every non-2xx answer: receivers answer 4xx for outages too (a 404 while a
    // route is being deployed, a 401 while keys rotate).
    AttemptOutcome::Failed {
        status: Some(status.as_u16()),
        error,
        retryable: true,
    }
}

/// At most `limit` bytes of the body; what could not be read is simply left out.
async fn read_prefix(mut response: Response, limit: usize) -> Vec<u8> {
    let mut prefix = Vec::new();
    while prefix.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(limit - prefix.len());
                prefix.extend_from_slice(&chunk[..take]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    prefix
}

/// Removes our signatures from text the receiver sent back (an echo endpoint returns our
/// headers): as sent, JSON-escaped, and a cut-off start of one at the end of a truncated body.
fn redact(text: &str, signature_header: Option<&str>) -> String {
    let Some(header) = signature_header else {
        return text.to_owned();
    };
    let signatures: Vec<&str> = header
        .split(' ')
        .filter_map(|entry| entry.split_once(',').map(|(_, signature)| signature))
        .filter(|signature| !signature.is_empty())
        .collect();
    let mut redacted = text.to_owned();
    for signature in &signatures {
        redacted = redacted.replace(signature, "[signature]");
        redacted = redacted.replace(&signature.replace('/', "\\/"), "[signature]");
    }
    // Shorter tails are too likely to be ordinary text and say nothing useful about a signature.
    const MIN_TAIL: usize = 8;
    for signature in &signatures {
        let longest_tail = (MIN_TAIL..signature.len())
            .rev()
            .find(|&n| redacted.ends_with(&signature[..n]));
        if let Some(n) = longest_tail {
            redacted.truncate(redacted.len() - n);
            redacted.push_str("[signature]");
        }
    }
    redacted
}

/// One line, no control characters: the message ends up in logs and a stored document.
fn printable(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    line.trim().to_owned()
}

/// The refusal, if the guarded resolver refused the connection.
fn find_refusal(error: &reqwest::Error) -> Option<&Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<Refused>() {
            return Some(refused);
        }
        source = current.source();
    }
    None
}

/// The error and its causes, without the URL (its query may carry the receiver's token).
fn error_chain(error: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(current) = source {
        parts.push(current.to_string());
        source = current.source();
    }
    let head = if error.is_connect() {
        "could not connect"
    } else if error.is_request() {
        "request failed"
    } else if error.is_body() {
        "failed to send the body"
    } else if error.is_decode() {
        "failed to read the response"
    } else {
        "failed"
    };
    // hyper nests the same message at several levels.
    parts.dedup();
    std::iter::once(head.to_owned())
        .chain(parts)
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let ten = Duration::from_secs(10);
        let cases = [
            (ten, 0.0, Duration::from_secs(8)),
            (ten, 0.5, ten),
            (ten, 1.0, Duration::from_secs(12)),
            (Duration::ZERO, 0.0, Duration::ZERO),
            (Duration::ZERO, 0.99, Duration::ZERO),
            (Duration::MAX, 1.0, Duration::MAX),
        ];
        for (delay, unit, expected) in cases {
            let jittered = jittered(delay, unit);
            let difference = jittered.abs_diff(expected);
            assert!(
                difference < Duration::from_millis(1),
                "{delay:?} × {unit}: {jittered:?}"
            );
        }
    }

    #[test]
    fn next_delay_follows_the_schedule() {
        let schedule = [
            Duration::ZERO,
            Duration::from_secs(5),
            Duration::from_secs(300),
        ];
        assert_eq!(next_delay(&schedule, 0), Some(Duration::ZERO));
        let mut seen = Vec::new();
        for _ in 0..200 {
            let delay = next_delay(&schedule, 2).unwrap();
            assert!(
                (Duration::from_secs(240)..=Duration::from_secs(360)).contains(&delay),
                "{delay:?}"
            );
            seen.push(delay);
        }
        // Jitter actually varies (200 equal draws from fastrand are not going to happen).
        seen.dedup();
        assert!(seen.len() > 1);
        assert!(
            (Duration::from_secs(4)..=Duration::from_secs(6))
                .contains(&next_delay(&schedule, 1).unwrap())
        );
        assert_eq!(next_delay(&schedule, 3), None);
        assert_eq!(next_delay(&[], 0), None);
        assert_eq!(next_delay(&schedule, u32::MAX), None);
    }

    #[test]
    fn redacts_echoed_signatures() {
        let first = "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        let second = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";
        let header = format!("v1,{first} v1,{second}");
        let cases = [
            (format!("got {header}"), "got v1,[signature] v1,[signature]"),
            (
                format!(r#"{{"sig":"{}"}}"#, first.replace('/', "\\/")),
                r#"{"sig":"[signature]"}"#,
            ),
            (format!("bad: {}", &second[..20]), "bad: [signature]"),
            ("nothing to hide".to_owned(), "nothing to hide"),
            // Too short a tail to be worth a redaction.
            ("ends in g0hM".to_owned(), "ends in g0hM"),
        ];
        for (text, expected) in cases {
            assert_eq!(redact(&text, Some(&header)), expected, "{text}");
        }
        assert_eq!(redact(&format!("x {first}"), None), format!("x {first}"));
    }

    #[test]
    fn printable_makes_one_line() {
        assert_eq!(printable(" a\nb\r\n\tc\u{1b}[31m "), "a b   c [31m");
    }
}
