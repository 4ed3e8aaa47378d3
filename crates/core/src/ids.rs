//! Identifiers carried by every message.
//!
//! Job ids are ULIDs so they sort by creation time and can be made by any producer without
//! coordination. Tenant, plan and backend ids are short lowercase names: they end up in queue
//! names, metric labels and MongoDB keys, so the alphabet is deliberately narrow.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};
use ulid::Ulid;

/// The id of one job: a ULID, serialized in its canonical 26-character Crockford form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub Ulid);

impl JobId {
    pub fn new() -> JobId {
        JobId(Ulid::new())
    }
}

impl Default for JobId {
    fn default() -> Self {
        JobId::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = ulid::DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ulid::from_string(s).map(JobId)
    }
}

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} `{value}` is invalid: {why}")]
pub struct InvalidName {
    pub kind: &'static str,
    pub value: String,
    pub why: &'static str,
}

/// Checks the shared name alphabet: `^[a-z0-9][a-z0-9._-]{0,max-1}$`.
fn check_name(kind: &'static str, value: &str, max_len: usize) -> Result<(), InvalidName> {
    let fail = |why| {
        Err(InvalidName {
            kind,
            value: value.to_owned(),
            why,
        })
    };
    let Some(first) = value.bytes().next() else {
        return fail("must not be empty");
    };
    if value.len() > max_len {
        return fail("is too long");
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return fail("must start with a lowercase letter or a digit");
    }
    let ok = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return fail("may hold only lowercase letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn new(value: impl Into<String>) -> Result<Self, InvalidName> {
                let value = value.into();
                check_name($kind, &value, $max)?;
                Ok($name(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                $name::new(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// The tenant a job belongs to and is billed to.
    TenantId,
    "tenant id",
    64
);
name_type!(
    /// A SaaS plan name (`basic`, `pro`, ...); what a plan buys is routing policy, not code.
    PlanName,
    "plan",
    32
);
name_type!(
    /// A backend of the catalog (`yolov8n-cpu`, `gpt-4o-mini`, ...).
    BackendId,
    "backend id",
    64
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_the_documented_alphabet() {
        for ok in ["acme", "a", "t-1", "gpt-4.1-mini", "x_y", "0day"] {
            assert!(TenantId::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn names_reject_what_would_break_queue_names_or_keys() {
        for (bad, why) in [
            ("", "empty"),
            ("Acme", "lowercase"),
            ("-x", "start"),
            ("a b", "only"),
            ("a/b", "only"),
            ("a$b", "only"),
        ] {
            let error = TenantId::new(bad).unwrap_err();
            assert!(error.to_string().contains(why), "{bad}: {error}");
        }
        assert!(TenantId::new("a".repeat(65)).is_err());
        assert!(TenantId::new("a".repeat(64)).is_ok());
    }

    #[test]
    fn job_ids_round_trip_through_text() {
        let id = JobId::new();
        let parsed: JobId = id.to_string().parse().unwrap();
        assert_eq!(parsed, id);
        assert!("not-a-ulid".parse::<JobId>().is_err());
    }
}
