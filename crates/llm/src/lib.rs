//! The LLM side of Switchyard: provider clients (`openai`, `anthropic`) behind one closed
//! enum ([`provider::ProviderClient`]), per-backend rate limits ([`limits`]), the task
//! templates ([`tasks`]), the worker that serves LLM backends' queues ([`worker`]) and the
//! router's classifier ([`classifier`]).

pub mod anthropic;
pub mod classifier;
pub mod limits;
pub mod openai;
pub mod provider;
pub mod tasks;
pub mod worker;

use url::Url;

/// The URL of `path` under the configured base URL, or under the provider's public one.
pub(crate) fn endpoint(base: Option<Url>, default: &str, path: &str) -> Result<Url, String> {
    let base = match base {
        Some(base) => base,
        None => Url::parse(default).map_err(|error| format!("{default}: {error}"))?,
    };
    join(&base, path)
}

/// `base` joined with `path` whether or not `base` ends in a slash (`…/v1` and `…/v1/` both
/// become `…/v1/chat/completions`).
pub(crate) fn join(base: &Url, path: &str) -> Result<Url, String> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let with_slash = format!("{}/", base.path());
        base.set_path(&with_slash);
    }
    base.join(path)
        .map_err(|error| format!("cannot join {base} and {path}: {error}"))
}

/// The start of a body, for error messages: enough to recognise, never the whole payload.
pub(crate) fn snippet(body: &[u8]) -> String {
    const LIMIT: usize = 200;
    let text = String::from_utf8_lossy(body);
    let mut cut: String = text.chars().take(LIMIT).collect();
    if text.chars().count() > LIMIT {
        cut.push('…');
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_with_or_without_a_trailing_slash() {
        for base in ["http://h:1/v1", "http://h:1/v1/"] {
            let url = join(&Url::parse(base).unwrap(), "chat/completions").unwrap();
            assert_eq!(url.as_str(), "http://h:1/v1/chat/completions");
        }
        let url = join(&Url::parse("http://h:1").unwrap(), "v1/messages").unwrap();
        assert_eq!(url.as_str(), "http://h:1/v1/messages");
    }
}
