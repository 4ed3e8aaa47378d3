//! What can go wrong on purpose: scripted, per-prompt or random faults.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// One injected failure. The API-specific modules turn each into that provider's real
/// status, headers and error body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `Retry-After` (and the provider's rate-limit headers at zero).
    RateLimited { retry_after: Duration },
    /// 500 with the provider's server-error body.
    ServerError,
    /// Anthropic's 529 `overloaded_error`; OpenAI's 503 "engine is currently overloaded".
    Overloaded,
    /// The reply comes, but this much later than the latency model says.
    Slow(Duration),
    /// 200 and a body cut off halfway.
    Truncated,
    /// 200 and a body that is not JSON.
    InvalidJson,
    /// The connection drops after the status line, before a body.
    Reset,
    /// 400 `invalid_request_error`, as for a content-policy refusal.
    BadRequest,
    /// 401, as for a revoked key.
    Unauthorized,
}

impl FromStr for Fault {
    type Err = String;

    /// `rate_limited[:SECONDS]`, `server_error`, `overloaded`, `slow:MILLISECONDS`,
    /// `truncated`, `invalid_json`, `reset`, `bad_request`, `unauthorized`.
    fn from_str(text: &str) -> Result<Fault, String> {
        let (name, argument) = match text.split_once(':') {
            Some((name, argument)) => (name, Some(argument)),
            None => (text, None),
        };
        let number = |default: u64| -> Result<u64, String> {
            argument.map_or(Ok(default), |a| {
                a.parse()
                    .map_err(|_| format!("fault `{text}`: `{a}` is not a number"))
            })
        };
        Ok(match name {
            "rate_limited" | "429" => Fault::RateLimited {
                retry_after: Duration::from_secs(number(1)?),
            },
            "server_error" | "500" => Fault::ServerError,
            "overloaded" | "529" | "503" => Fault::Overloaded,
            "slow" => Fault::Slow(Duration::from_millis(number(5_000)?)),
            "truncated" => Fault::Truncated,
            "invalid_json" => Fault::InvalidJson,
            "reset" => Fault::Reset,
            "bad_request" | "400" => Fault::BadRequest,
            "unauthorized" | "401" => Fault::Unauthorized,
            _ => return Err(format!("unknown fault `{text}`")),
        })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::RateLimited { retry_after } => {
                write!(f, "rate_limited:{}", retry_after.as_secs())
            }
            Fault::ServerError => f.write_str("server_error"),
            Fault::Overloaded => f.write_str("overloaded"),
            Fault::Slow(delay) => write!(f, "slow:{}", delay.as_millis()),
            Fault::Truncated => f.write_str("truncated"),
            Fault::InvalidJson => f.write_str("invalid_json"),
            Fault::Reset => f.write_str("reset"),
            Fault::BadRequest => f.write_str("bad_request"),
            Fault::Unauthorized => f.write_str("unauthorized"),
        }
    }
}

/// A directive in a prompt: `[sim:fault=SPEC]` fails every request with this prompt;
/// `[sim:fault=SPEC*N]` only its first N. Lets a job on a queue script its own failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    pub fault: Fault,
    pub times: Option<u32>,
}

pub fn directive(prompt: &str) -> Option<Result<Directive, String>> {
    let start = prompt.find("[sim:fault=")? + "[sim:fault=".len();
    let end = start + prompt[start..].find(']')?;
    let spec = &prompt[start..end];
    Some(match spec.split_once('*') {
        Some((fault, times)) => match times.parse() {
            Ok(times) => fault.parse().map(|fault| Directive {
                fault,
                times: Some(times),
            }),
            Err(_) => Err(format!("directive `{spec}`: `{times}` is not a count")),
        },
        None => spec.parse().map(|fault| Directive { fault, times: None }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_round_trip_through_text() {
        for fault in [
            Fault::RateLimited {
                retry_after: Duration::from_secs(3),
            },
            Fault::ServerError,
            Fault::Overloaded,
            Fault::Slow(Duration::from_millis(250)),
            Fault::Truncated,
            Fault::InvalidJson,
            Fault::Reset,
            Fault::BadRequest,
            Fault::Unauthorized,
        ] {
            assert_eq!(fault.to_string().parse::<Fault>(), Ok(fault));
        }
        assert!("teapot".parse::<Fault>().is_err());
    }

    #[test]
    fn directives_in_prompts() {
        assert_eq!(directive("hello"), None);
        assert_eq!(
            directive("x [sim:fault=500*2] y"),
            Some(Ok(Directive {
                fault: Fault::ServerError,
                times: Some(2)
            }))
        );
        assert_eq!(
            directive("[sim:fault=reset]"),
            Some(Ok(Directive {
                fault: Fault::Reset,
                times: None
            }))
        );
        assert!(matches!(directive("[sim:fault=nope]"), Some(Err(_))));
    }
}
