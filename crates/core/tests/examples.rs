//! The schema examples are the contract's test vectors: every valid one decodes, validates and
//! round-trips through the Rust types; every invalid one is refused with an error naming the
//! field that `expected.json` lists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use switchyard_core::contracts::{
    self, Contract, DEFAULT_MAX_MESSAGE_BYTES, DecodeError, Input, JobEnvelope, Message, RoutedJob,
    Task,
};

#[expect(
    clippy::unwrap_used,
    reason = "a test helper: failing loudly is the point"
)]
fn examples(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../schemas/examples")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension().is_some_and(|e| e == "json")
                && path.file_name().is_some_and(|n| n != "expected.json")
        })
        .collect();
    files.sort();
    files
}

fn round_trip<T: Contract + PartialEq + std::fmt::Debug>(value: &T) {
    let bytes = contracts::encode(value);
    let again: T = contracts::decode(&bytes, DEFAULT_MAX_MESSAGE_BYTES)
        .unwrap_or_else(|error| panic!("re-encoded {} is invalid: {error}", T::SCHEMA_ID));
    assert_eq!(&again, value);
}

#[test]
fn every_valid_example_decodes_and_round_trips() {
    let files = examples("valid");
    assert!(files.len() >= 15, "only {} valid examples", files.len());
    let mut seen = BTreeMap::new();
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let message = contracts::decode_any(&bytes, DEFAULT_MAX_MESSAGE_BYTES)
            .unwrap_or_else(|error| panic!("{}: {error}", file.display()));
        *seen.entry(message.schema_id()).or_insert(0) += 1;
        match &message {
            Message::Job(m) => round_trip(m.as_ref()),
            Message::Routed(m) => round_trip(m.as_ref()),
            Message::Result(m) => round_trip(m.as_ref()),
            Message::Usage(m) => round_trip(m.as_ref()),
            Message::DeadLetter(m) => round_trip(m.as_ref()),
            Message::Event(m) => round_trip(m.as_ref()),
        }
    }
    let schemas: Vec<&str> = contracts::SCHEMA_FILES
        .iter()
        .filter_map(|f| f.message)
        .collect();
    for schema in schemas {
        assert!(seen.contains_key(schema), "no valid example of {schema}");
    }
}

#[derive(Deserialize)]
struct Expected {
    field: Option<String>,
    error_class: String,
}

#[test]
fn every_invalid_example_is_refused_naming_the_field() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/examples/invalid");
    let expected: BTreeMap<String, Expected> =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let files = examples("invalid");
    assert_eq!(
        files.len(),
        expected.len(),
        "every invalid example needs an entry in expected.json"
    );
    for file in files {
        let name = file.file_name().unwrap().to_str().unwrap();
        let want = expected
            .get(name)
            .unwrap_or_else(|| panic!("{name} is missing from expected.json"));
        let bytes = std::fs::read(&file).unwrap();
        let error = match contracts::decode_any(&bytes, DEFAULT_MAX_MESSAGE_BYTES) {
            Ok(message) => panic!("{name} was accepted as {}", message.schema_id()),
            Err(error) => error,
        };
        assert_eq!(
            error.error_class().as_str(),
            want.error_class,
            "{name}: {error}"
        );
        if let Some(field) = &want.field {
            let text = error.to_string();
            let named = error.paths().iter().any(|path| path == field)
                || (!field.starts_with('/') && text.contains(field.as_str()));
            assert!(named, "{name}: error does not name `{field}`: {text}");
        }
    }
}

#[expect(
    clippy::unwrap_used,
    reason = "a test helper: failing loudly is the point"
)]
fn sample_job() -> JobEnvelope {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/examples/valid");
    let bytes = std::fs::read(dir.join("job.detect-inline.json")).unwrap();
    contracts::decode(&bytes, DEFAULT_MAX_MESSAGE_BYTES).unwrap()
}

#[test]
fn inline_input_is_capped_at_its_documented_size() {
    let mut job = sample_job();
    let at_cap = "A".repeat(contracts::MAX_INLINE_BYTES / 3 * 4);
    job.task = Task::Detect(contracts::DetectTask {
        input: Input::Inline {
            data_base64: at_cap,
            content_type: None,
        },
        params: Default::default(),
    });
    round_trip(&job);

    let Task::Detect(detect) = &mut job.task else {
        unreachable!()
    };
    detect.input = Input::Inline {
        data_base64: "A".repeat(contracts::MAX_INLINE_BYTES / 3 * 4 + 4),
        content_type: None,
    };
    let error: DecodeError =
        contracts::decode::<JobEnvelope>(&contracts::encode(&job), DEFAULT_MAX_MESSAGE_BYTES)
            .unwrap_err();
    assert_eq!(error.paths(), vec!["/task/input/data_base64"], "{error}");
    // The message quotes the value, cut short: a 256 KiB error line helps nobody.
    assert!(error.to_string().len() < 1_000);
}

#[test]
fn decode_refuses_a_valid_message_of_another_type() {
    let bytes = contracts::encode(&sample_job());
    let error = contracts::decode::<contracts::ResultDocument>(&bytes, DEFAULT_MAX_MESSAGE_BYTES)
        .unwrap_err();
    assert_eq!(error.paths(), vec!["/schema"]);
    assert!(
        error.to_string().contains("switchyard.result/v1"),
        "{error}"
    );
}

#[test]
fn jobs_built_in_rust_validate_against_the_schema() {
    let mut job = sample_job();
    job.job_id = switchyard_core::JobId::new();
    job.submitted_at = chrono::Utc::now();
    job.trace = None;
    job.callback = None;
    round_trip(&job);
}

#[test]
fn a_routed_job_around_the_jobs_own_bytes_reads_as_the_encoded_one() {
    let routed: Vec<RoutedJob> = examples("valid")
        .iter()
        .filter(|file| {
            file.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("routed"))
        })
        .map(|file| {
            contracts::decode(&std::fs::read(file).unwrap(), DEFAULT_MAX_MESSAGE_BYTES).unwrap()
        })
        .collect();
    assert!(
        routed.iter().any(|r| r.parent.is_some()) && routed.iter().any(|r| r.parent.is_none()),
        "the routed examples cover a job with a parent and one without"
    );
    let jobs: Vec<PathBuf> = examples("valid")
        .into_iter()
        .filter(|file| {
            file.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("job."))
        })
        .collect();
    assert!(jobs.len() >= 5, "only {} job examples", jobs.len());
    for file in jobs {
        let compact = std::fs::read(&file).unwrap();
        // A producer's own layout (indentation, a trailing newline) travels on as it came.
        let value: serde_json::Value = serde_json::from_slice(&compact).unwrap();
        let mut pretty = serde_json::to_vec_pretty(&value).unwrap();
        pretty.push(b'\n');
        for job_bytes in [compact, pretty] {
            let job: JobEnvelope =
                contracts::decode(&job_bytes, DEFAULT_MAX_MESSAGE_BYTES).unwrap();
            for example in &routed {
                let bytes = RoutedJob::encode_around(
                    &job_bytes,
                    &example.decision,
                    example.parent.as_ref(),
                );
                let read: RoutedJob = contracts::decode(&bytes, DEFAULT_MAX_MESSAGE_BYTES)
                    .unwrap_or_else(|error| panic!("{}: {error}", file.display()));
                let encoded = RoutedJob {
                    job: job.clone(),
                    decision: example.decision.clone(),
                    parent: example.parent.clone(),
                    ..example.clone()
                };
                assert_eq!(read, encoded, "{}", file.display());
                assert!(
                    bytes
                        .windows(job_bytes.len())
                        .any(|w| w == job_bytes.as_slice()),
                    "{}: the job's bytes are not in the routed job as they came",
                    file.display()
                );
            }
        }
    }
}
