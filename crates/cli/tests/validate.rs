//! `switchyard validate` end to end: the binary, on the schema examples.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/examples")
}

#[expect(
    clippy::unwrap_used,
    reason = "a test helper: failing loudly is the point"
)]
fn switchyard(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

#[test]
fn valid_files_pass() {
    let file = examples().join("valid/job.multi.json");
    let output = switchyard(&["validate", file.to_str().unwrap()], None);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains("ok (switchyard.job/v1, job 01JDQ3Z4W5X6Y7Z8A9B0C1D2E5 of acme)"),
        "{stdout}"
    );
}

#[test]
fn invalid_files_fail_naming_the_field() {
    let bad = examples().join("invalid/job.ftp-uri.json");
    let good = examples().join("valid/routed.json");
    let output = switchyard(
        &["validate", good.to_str().unwrap(), bad.to_str().unwrap()],
        None,
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("job.ftp-uri.json: /task/input/uri:"),
        "{stderr}"
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("routed.json: ok"), "{stdout}");
}

#[test]
fn reads_standard_input() {
    let bytes = std::fs::read(examples().join("invalid/job.unknown-tier.json")).unwrap();
    let output = switchyard(&["validate", "-"], Some(&bytes));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("-: /priority:"), "{stderr}");
}

#[test]
fn size_limit_applies() {
    let bytes = std::fs::read(examples().join("valid/job.chat.json")).unwrap();
    let output = switchyard(&["validate", "--max-bytes", "100", "-"], Some(&bytes));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("over the limit of 100 bytes"), "{stderr}");
}

#[test]
fn missing_file_is_an_error_not_a_verdict() {
    let output = switchyard(&["validate", "/nonexistent/job.json"], None);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("cannot read /nonexistent/job.json"),
        "{stderr}"
    );
}

#[test]
fn config_check_names_the_bad_key_and_its_variable() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../switchyard.example.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["config", "check", "--config", example.to_str().unwrap()])
        .env("SWITCHYARD_BUS__KIND", "kafka")
        .env("SWITCHYARD_BUS__KAFKA__BROKERS", "")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("`bus.kafka.brokers`"), "{stderr}");
    assert!(
        stderr.contains("SWITCHYARD_BUS__KAFKA__BROKERS"),
        "{stderr}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["config", "check", "--config", example.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}
