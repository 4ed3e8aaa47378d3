//! The JSON Schemas, compiled once, and the schema step of decoding.

use std::collections::HashMap;
use std::sync::OnceLock;

use jsonschema::{Draft, Registry, Validator};
use serde_json::Value;

use crate::contracts::{DecodeError, Violation};

/// One schema file of `schemas/`, embedded in the binary.
#[derive(Clone, Copy, Debug)]
pub struct SchemaFile {
    /// The message's `schema` value; `None` for shared definitions.
    pub message: Option<&'static str>,
    /// The schema's `$id`.
    pub uri: &'static str,
    /// Path from the repository root.
    pub path: &'static str,
    pub text: &'static str,
}

macro_rules! schema_file {
    ($message:expr, $name:literal) => {
        SchemaFile {
            message: $message,
            uri: concat!("https://schemas.switchyard.dev/", $name),
            path: concat!("schemas/", $name),
            text: include_str!(concat!("../../../../schemas/", $name)),
        }
    };
}

pub const SCHEMA_FILES: &[SchemaFile] = &[
    schema_file!(None, "common.schema.json"),
    schema_file!(Some("switchyard.job/v1"), "job.schema.json"),
    schema_file!(Some("switchyard.routed/v1"), "routed.schema.json"),
    schema_file!(Some("switchyard.result/v1"), "result.schema.json"),
    schema_file!(Some("switchyard.usage/v1"), "usage.schema.json"),
    schema_file!(Some("switchyard.deadletter/v1"), "deadletter.schema.json"),
    schema_file!(Some("switchyard.event/v1"), "event.schema.json"),
];

/// At most this many violations are reported; the first few are what a person fixes first.
const MAX_VIOLATIONS: usize = 10;
/// Long values (a base64 image, say) are cut in error messages.
const MAX_MESSAGE_CHARS: usize = 240;

struct Compiled {
    validators: HashMap<&'static str, Validator>,
}

fn compiled() -> &'static Compiled {
    static COMPILED: OnceLock<Compiled> = OnceLock::new();
    COMPILED.get_or_init(|| match compile() {
        Ok(compiled) => compiled,
        // The schemas are compiled into the binary and compiled in every test run
        // (`every_schema_compiles`), so this is a build defect, not a runtime condition.
        Err(error) => panic!("embedded JSON Schemas are invalid: {error}"),
    })
}

fn compile() -> Result<Compiled, String> {
    let mut documents = Vec::new();
    for file in SCHEMA_FILES {
        let value: Value =
            serde_json::from_str(file.text).map_err(|error| format!("{}: {error}", file.path))?;
        documents.push((file, value));
    }
    let mut builder = Registry::new();
    for (file, value) in &documents {
        builder = builder
            .add(file.uri, value.clone())
            .map_err(|error| format!("{}: {error}", file.path))?;
    }
    let registry = builder.prepare().map_err(|error| error.to_string())?;
    let mut validators = HashMap::new();
    for (file, value) in &documents {
        let Some(message) = file.message else {
            continue;
        };
        let validator = jsonschema::options()
            .with_draft(Draft::Draft202012)
            .should_validate_formats(true)
            .offline()
            .with_registry(&registry)
            .build(value)
            .map_err(|error| format!("{}: {error}", file.path))?;
        validators.insert(message, validator);
    }
    Ok(Compiled { validators })
}

/// Compiles the schemas now rather than on the first message; returns how many. Workers call it
/// at start-up so the first message pays no compile cost.
pub fn precompile() -> usize {
    compiled().validators.len()
}

pub(crate) fn unknown_schema(found: &str) -> DecodeError {
    let known: Vec<&str> = SCHEMA_FILES.iter().filter_map(|f| f.message).collect();
    DecodeError::UnknownSchema(format!(
        "unknown schema `{found}`; expected one of {}",
        known.join(", ")
    ))
}

/// Reads the `schema` field and checks it names a known schema.
pub(crate) fn schema_id_of(value: &Value) -> Result<&'static str, DecodeError> {
    let Some(object) = value.as_object() else {
        return Err(DecodeError::UnknownSchema(
            "the message must be a JSON object with a `schema` field".into(),
        ));
    };
    let Some(field) = object.get("schema") else {
        return Err(DecodeError::UnknownSchema(
            "missing; every message names its schema (e.g. `switchyard.job/v1`)".into(),
        ));
    };
    let Some(found) = field.as_str() else {
        return Err(DecodeError::UnknownSchema("must be a string".into()));
    };
    SCHEMA_FILES
        .iter()
        .filter_map(|f| f.message)
        .find(|known| *known == found)
        .ok_or_else(|| unknown_schema(found))
}

pub(crate) fn validate_value(schema_id: &str, value: &Value) -> Result<(), DecodeError> {
    let Some(validator) = compiled().validators.get(schema_id) else {
        return Err(unknown_schema(schema_id));
    };
    if validator.is_valid(value) {
        return Ok(());
    }
    let violations: Vec<Violation> = validator
        .iter_errors(value)
        .take(MAX_VIOLATIONS)
        .map(|error| {
            Violation::new(
                error.instance_path().as_str().to_owned(),
                truncate(&error.to_string()),
            )
        })
        .collect();
    Err(DecodeError::Invalid(violations))
}

fn truncate(message: &str) -> String {
    if message.chars().count() <= MAX_MESSAGE_CHARS {
        return message.to_owned();
    }
    let cut: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
    format!("{cut}… (truncated)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_compiles() {
        let messages = SCHEMA_FILES.iter().filter(|f| f.message.is_some()).count();
        assert_eq!(precompile(), messages);
    }

    #[test]
    fn every_schema_declares_its_id_and_draft() {
        for file in SCHEMA_FILES {
            let value: Value = serde_json::from_str(file.text).unwrap();
            assert_eq!(value["$id"], file.uri, "{}", file.path);
            assert_eq!(
                value["$schema"], "https://json-schema.org/draft/2020-12/schema",
                "{}",
                file.path
            );
            if let Some(message) = file.message {
                assert_eq!(
                    value["properties"]["schema"]["const"], message,
                    "{}",
                    file.path
                );
            }
        }
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "x".repeat(10_000);
        let cut = truncate(&long);
        assert!(cut.len() < 300 && cut.ends_with("(truncated)"));
    }
}
