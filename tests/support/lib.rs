//! Helpers for tests against the real local services that `deploy/local/up.sh` starts.
//!
//! Tests read endpoints from the environment `deploy/local/env.sh` exports. A missing variable
//! is a setup error and fails the test with instructions: these tests never skip silently.

use std::time::Duration;

/// The value of `var`, or a failure that says how to set the environment up.
pub fn endpoint(var: &str) -> String {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{var} is not set. These tests need the local services: run \
             `deploy/local/up.sh && . deploy/local/env.sh` first (or use `scripts/test.sh`)."
        ),
    }
}

/// A name no other test (or earlier run) uses: `prefix-<ulid>` in lower case.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    )
}

/// How long a test waits for a real service to deliver something before failing.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
