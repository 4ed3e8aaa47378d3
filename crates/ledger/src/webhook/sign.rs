//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>, version 1).
//!
//! A message is signed as `base64(HMAC-SHA256(key, "{msg_id}.{timestamp}.{body}"))` and sent as
//! `webhook-signature: v1,<signature>`. During key rotation the header carries one signature per
//! key, space separated, so a receiver that still knows only the old key keeps verifying.
//!
//! Secrets never live in config files or messages: a job names a `secret_id` and the key comes
//! from the environment ([`keys_from_env`]).

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

/// The environment variable holding the key when a job names no `secret_id`.
pub const DEFAULT_SECRET_VAR: &str = "SWITCHYARD_WEBHOOK_SECRET";

/// The prefix every secret carries, so a secret pasted in the wrong place is recognisable.
pub const SECRET_PREFIX: &str = "whsec_";

/// Shorter keys are refused: the specification asks for 24 to 64 bytes.
pub const MIN_SECRET_BYTES: usize = 24;

/// One signing key, kept as a ready keyed HMAC so signing cannot fail. `Debug` never shows the
/// key.
#[derive(Clone)]
pub struct Secret {
    mac: Hmac<Sha256>,
    n_bytes: usize,
}

/// The keys a message is signed with: one normally, several while a key is being rotated.
/// Never empty.
#[derive(Clone, Debug)]
pub struct SigningKeys(Vec<Secret>);

/// Why a secret could not be used. No variant holds any part of the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a webhook secret must start with `{SECRET_PREFIX}`")]
    MissingPrefix,
    #[error("a webhook secret must be `{SECRET_PREFIX}` followed by standard base64")]
    InvalidBase64,
    #[error("a webhook secret must hold at least {MIN_SECRET_BYTES} bytes (this one holds {0})")]
    TooShort(usize),
    #[error("no webhook secret given")]
    Empty,
    #[error(
        "secret_id `{0}` maps to an environment variable with `__`, which the config loader reads \
         as a config key; use a secret_id without consecutive underscores"
    )]
    AmbiguousSecretId(String),
    /// The variable is set but its value is unusable.
    #[error("{var}: {reason}")]
    InVariable {
        var: String,
        reason: Box<SecretError>,
    },
}

/// Standard base64, padded or not: the specification's examples are padded, some generators
/// drop the padding, and the Python reference accepts both.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl Secret {
    /// Parses `whsec_<base64>`.
    pub fn parse(value: &str) -> Result<Secret, SecretError> {
        let encoded = value
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        // The decoder's error names the offending byte, which is part of the secret.
        let key = SECRET_BASE64
            .decode(encoded)
            .map_err(|_| SecretError::InvalidBase64)?;
        if key.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort(key.len()));
        }
        // HMAC accepts keys of any length; the error exists only for fixed-key-size MACs.
        let mac =
            Hmac::<Sha256>::new_from_slice(&key).map_err(|_| SecretError::TooShort(key.len()))?;
        Ok(Secret {
            mac,
            n_bytes: key.len(),
        })
    }

    /// `base64(HMAC-SHA256(key, "{msg_id}.{timestamp}.{body}"))`.
    fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        STANDARD.encode(self.mac(msg_id, timestamp, body).finalize().into_bytes())
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<redacted, {} bytes>)", self.n_bytes)
    }
}

impl SigningKeys {
    /// Parses one or more `whsec_` secrets separated by whitespace or commas (neither occurs in
    /// base64), e.g. `"whsec_new whsec_old"` during rotation.
    pub fn parse(value: &str) -> Result<SigningKeys, SecretError> {
        let keys = value
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|part| !part.is_empty())
            .map(Secret::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(SigningKeys(keys))
    }

    pub fn secrets(&self) -> &[Secret] {
        &self.0
    }

    /// The `webhook-signature` header value: `v1,<signature>` per key, space separated.
    pub fn signature_header(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        self.0
            .iter()
            .map(|key| format!("v1,{}", key.sign(msg_id, timestamp, body)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl From<Secret> for SigningKeys {
    fn from(secret: Secret) -> Self {
        SigningKeys(vec![secret])
    }
}

/// Whether any `v1` signature in `header` matches the message under any of `keys`, compared in
/// constant time. Unknown versions and malformed entries are skipped, as the specification asks.
///
/// This checks the signature only; a receiver must also refuse stale timestamps (the
/// specification suggests five minutes) to stop replays.
pub fn verify(keys: &SigningKeys, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let candidates: Vec<Vec<u8>> = header
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .collect();
    keys.0.iter().any(|key| {
        let expected = key.mac(msg_id, timestamp, body);
        candidates
            .iter()
            .any(|candidate| expected.clone().verify_slice(candidate).is_ok())
    })
}

/// The environment variable holding the keys for `secret_id`: `SWITCHYARD_WEBHOOK_SECRET`, or
/// `SWITCHYARD_WEBHOOK_SECRET_<ID>` with the id upper-cased and every other character as `_`.
pub fn env_var_for(secret_id: Option<&str>) -> String {
    match secret_id {
        None => DEFAULT_SECRET_VAR.to_owned(),
        Some(id) => {
            let suffix: String = id
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("{DEFAULT_SECRET_VAR}_{suffix}")
        }
    }
}

/// The keys for `secret_id` from the environment (`lookup` is `std::env::var(..).ok()` in
/// production). `Ok(None)` when the variable is unset: the webhook goes out unsigned. A variable
/// that is set but empty or malformed is an error, so a typo never silently drops signatures.
pub fn keys_from_env(
    secret_id: Option<&str>,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<SigningKeys>, SecretError> {
    let var = env_var_for(secret_id);
    // The config loader reads `SWITCHYARD_A__B` as the key `a.b` and refuses unknown keys, so
    // such a variable could never be set; say so instead of reporting it as unset.
    if let Some(id) = secret_id
        && var.contains("__")
    {
        return Err(SecretError::AmbiguousSecretId(id.to_owned()));
    }
    let Some(value) = lookup(&var) else {
        return Ok(None);
    };
    SigningKeys::parse(&value)
        .map(Some)
        .map_err(|reason| SecretError::InVariable {
            var,
            reason: Box::new(reason),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The published test vector of the standard-webhooks repository (checked against the
    // `standardwebhooks` Python package).
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1_614_265_330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    // 32 bytes each, distinct.
    const KEY_A: &str = "whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";
    const KEY_B: &str = "whsec_QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";

    fn keys(value: &str) -> SigningKeys {
        SigningKeys::parse(value).unwrap()
    }

    #[test]
    fn signs_the_specification_test_vector() {
        let header = keys(SPEC_SECRET).signature_header(SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY);
        assert_eq!(header, SPEC_SIGNATURE);
    }

    #[test]
    fn verifies_only_the_signed_content() {
        let spec = keys(SPEC_SECRET);
        let other = keys(KEY_A);
        let body_changed: &[u8] = br#"{"test": 2432232315}"#;
        let cases = [
            (&spec, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY, true),
            (&spec, SPEC_MSG_ID, SPEC_TIMESTAMP, body_changed, false),
            (&spec, "msg_other", SPEC_TIMESTAMP, SPEC_BODY, false),
            (&spec, SPEC_MSG_ID, SPEC_TIMESTAMP + 1, SPEC_BODY, false),
            (&other, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY, false),
        ];
        for (keys, msg_id, timestamp, body, expected) in cases {
            assert_eq!(
                verify(keys, msg_id, timestamp, body, SPEC_SIGNATURE),
                expected,
                "{msg_id} {timestamp} {body:?}"
            );
        }
    }

    #[test]
    fn verify_skips_other_versions_and_malformed_entries() {
        let keys = keys(SPEC_SECRET);
        let signature = SPEC_SIGNATURE.trim_start_matches("v1,");
        let cases = [
            (format!("v2,{signature}"), false),
            (format!("v1a,{signature}"), false),
            ("v1,not-base64!".to_owned(), false),
            (String::new(), false),
            (
                format!("v1,AAAA v1,!! v2,{signature} {SPEC_SIGNATURE}"),
                true,
            ),
            (format!("  {SPEC_SIGNATURE}  "), true),
        ];
        for (header, expected) in cases {
            assert_eq!(
                verify(&keys, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY, &header),
                expected,
                "{header:?}"
            );
        }
    }

    #[test]
    fn signs_with_every_key_during_rotation() {
        let both = keys(&format!("{KEY_A}, {KEY_B}"));
        let header = both.signature_header("msg_1", 1_700_000_000, b"{}");
        let entries: Vec<&str> = header.split(' ').collect();
        assert_eq!(entries.len(), 2, "{header}");
        assert!(entries.iter().all(|entry| entry.starts_with("v1,")));
        // A receiver that knows only one of the keys still accepts the message.
        for single in [KEY_A, KEY_B] {
            assert!(verify(
                &keys(single),
                "msg_1",
                1_700_000_000,
                b"{}",
                &header
            ));
        }
        assert_eq!(
            entries[1],
            keys(KEY_B).signature_header("msg_1", 1_700_000_000, b"{}")
        );
    }

    #[test]
    fn parses_secrets_with_and_without_padding() {
        let unpadded = KEY_A.trim_end_matches('=');
        let header = |value: &str| keys(value).signature_header("m", 1, b"x");
        assert_eq!(header(unpadded), header(KEY_A));
    }

    #[test]
    fn refuses_malformed_secrets() {
        let cases = [
            (
                "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=",
                SecretError::MissingPrefix,
            ),
            ("whsec_", SecretError::TooShort(0)),
            ("whsec_c2hvcnQ=", SecretError::TooShort(5)),
            ("whsec_QUFB*UFB", SecretError::InvalidBase64),
            // URL-safe base64 is not what the specification uses.
            (
                "whsec_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_",
                SecretError::InvalidBase64,
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(Secret::parse(value).unwrap_err(), expected, "{value}");
        }
        assert_eq!(SigningKeys::parse(" ,\n").unwrap_err(), SecretError::Empty);
        assert_eq!(
            SigningKeys::parse(&format!("{KEY_A} whsec_c2hvcnQ=")).unwrap_err(),
            SecretError::TooShort(5)
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        let keys = keys(&format!("{KEY_A} {SPEC_SECRET}"));
        let shown = format!("{keys:?} {:?}", keys.secrets()[0]);
        for secret in [KEY_A, SPEC_SECRET] {
            let encoded = secret.trim_start_matches(SECRET_PREFIX);
            assert!(!shown.contains(encoded), "{shown}");
        }
        assert!(!shown.contains("AAAA"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn names_the_environment_variable_after_the_secret_id() {
        let cases = [
            (None, "SWITCHYARD_WEBHOOK_SECRET"),
            (Some("acme"), "SWITCHYARD_WEBHOOK_SECRET_ACME"),
            (Some("Acme_Prod2"), "SWITCHYARD_WEBHOOK_SECRET_ACME_PROD2"),
            (
                Some("acme-prod.v2"),
                "SWITCHYARD_WEBHOOK_SECRET_ACME_PROD_V2",
            ),
            (Some("é"), "SWITCHYARD_WEBHOOK_SECRET__"),
        ];
        for (secret_id, expected) in cases {
            assert_eq!(env_var_for(secret_id), expected, "{secret_id:?}");
        }
    }

    #[test]
    fn reads_keys_from_the_environment() {
        let env = |name: &str| match name {
            "SWITCHYARD_WEBHOOK_SECRET" => Some(KEY_A.to_owned()),
            "SWITCHYARD_WEBHOOK_SECRET_ACME" => Some(format!("{KEY_A} {KEY_B}")),
            "SWITCHYARD_WEBHOOK_SECRET_BROKEN" => Some("hunter2hunter2".to_owned()),
            "SWITCHYARD_WEBHOOK_SECRET_EMPTY" => Some(String::new()),
            _ => None,
        };
        let header = |keys: Option<SigningKeys>| keys.unwrap().signature_header("m", 1, b"x");

        assert_eq!(
            header(keys_from_env(None, env).unwrap()),
            header(Some(keys(KEY_A)))
        );
        assert_eq!(
            header(keys_from_env(Some("acme"), env).unwrap()),
            header(Some(keys(&format!("{KEY_A} {KEY_B}"))))
        );
        assert!(keys_from_env(Some("other"), env).unwrap().is_none());

        let broken = keys_from_env(Some("broken"), env).unwrap_err();
        assert_eq!(
            broken,
            SecretError::InVariable {
                var: "SWITCHYARD_WEBHOOK_SECRET_BROKEN".into(),
                reason: Box::new(SecretError::MissingPrefix),
            }
        );
        assert!(!broken.to_string().contains("hunter2"), "{broken}");
        assert!(matches!(
            keys_from_env(Some("empty"), env).unwrap_err(),
            SecretError::InVariable { reason, .. } if *reason == SecretError::Empty
        ));
    }

    #[test]
    fn refuses_secret_ids_that_collide_with_config_keys() {
        let env = |_: &str| Some(KEY_A.to_owned());
        for secret_id in ["a__b", "a-_b", "x_"] {
            let result = keys_from_env(Some(secret_id), env);
            let collides = env_var_for(Some(secret_id)).contains("__");
            assert_eq!(
                result.is_err(),
                collides,
                "{secret_id}: {:?}",
                result.map(|keys| keys.is_some())
            );
        }
        assert_eq!(
            keys_from_env(Some("a__b"), env).unwrap_err(),
            SecretError::AmbiguousSecretId("a__b".into())
        );
    }
}
