//! `switchyard dev --once`: the whole system in one process on its sample workload, with its
//! summary checked against the embedded store it wrote (results, backends, the ledger's spend
//! totals), the routing of each of the default policy's scenarios, the fan-out join, the dead
//! letters and their reasons, and the webhook receiver's signature checks. Also the clear
//! errors when ONNX Runtime or the model is missing. Needs `deploy/local/up.sh ort` (ONNX
//! Runtime, the generated model and its sample photos), not the other services.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: failing loudly is the point"
)]

use std::collections::BTreeMap;
use std::process::{Command, Output};

use serde_json::Value;
use switchyard_core::config::StoreConfig;
use switchyard_core::{JobId, TenantId};
use switchyard_ledger::store::{AnyStore, Period, Store};

fn dev(args: &[&str], data_dir: &std::path::Path) -> Output {
    // ONNX Runtime, the model and the photos come from the kit, as on a newcomer's machine.
    assert!(
        std::env::var_os("ORT_DYLIB_PATH").is_some(),
        "ORT_DYLIB_PATH is not set: run `deploy/local/up.sh ort && . deploy/local/env.sh`"
    );
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("dev")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0", "--once", "--timeout-secs", "240"])
        .args(args)
        .output()
        .unwrap()
}

fn jobs_of<'a>(report: &'a Value, scenario: &str) -> Vec<&'a Value> {
    report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|job| job["scenario"] == scenario)
        .collect()
}

fn backend_of(job: &Value) -> &str {
    job["backend_id"].as_str().unwrap_or("-")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_once_runs_the_sample_and_its_summary_matches_the_store() {
    let data = tempfile_dir("dev-once");
    let out = dev(&["--json"], &data);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dev failed: {stderr}");
    assert!(stderr.contains("SIMULATED"), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("the summary is JSON");
    assert_eq!(report["llm_simulated"], true);

    // Every good job succeeded, each scenario on the backends its rule picks.
    for job in report["jobs"].as_array().unwrap() {
        if job["expected"] == "result" {
            assert_eq!(job["outcome"], "succeeded", "{job}");
        }
    }
    for job in jobs_of(&report, "bulk-labeling") {
        let want = if job["what"].as_str().unwrap().starts_with("detect") {
            // The cheapest per image: 6 ms at g4dn's hourly rate beats 45 ms at c7i's.
            "yolov8n-gpu"
        } else {
            "gpt-4.1-nano" // the cheapest LLM above the rule's minimum quality
        };
        assert_eq!(backend_of(job), want, "{job}");
    }
    for job in jobs_of(&report, "realtime-ui") {
        let want = if job["what"].as_str().unwrap().starts_with("detect") {
            "yolov8n-gpu" // the lowest latency prior
        } else {
            "gpt-4.1-nano"
        };
        assert_eq!(backend_of(job), want, "{job}");
    }
    for job in jobs_of(&report, "high-accuracy") {
        assert_eq!(backend_of(job), "gpt-5", "the most accurate: {job}");
    }
    for job in jobs_of(&report, "saas-plans") {
        let basic = job["tenant_id"] == "smallco";
        let want = if basic { "gpt-4.1-nano" } else { "gpt-5" };
        assert_eq!(backend_of(job), want, "{job}");
    }

    // The fan-out job: both children ran, and the parent's result joins them.
    let fan = &report["fan_out"].as_array().unwrap()[0];
    assert_eq!(fan["status"], "succeeded", "{fan}");
    let children: BTreeMap<&str, &str> = fan["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["status"], "succeeded", "{c}");
            (
                c["name"].as_str().unwrap(),
                c["backend_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(children.len(), 2);
    assert!(children["objects"].starts_with("yolov8n-"), "{children:?}");
    assert_eq!(children["caption"], "gpt-5", "pro plan, most accurate");

    // Every bad input is in a dead-letter queue, with the reason it was expected to have.
    let letters = report["dead_letters"].as_array().unwrap();
    let mut bad = 0;
    for job in report["jobs"].as_array().unwrap() {
        if let Some(class) = job["expected"]["dead_letter"].as_str() {
            bad += 1;
            assert_eq!(job["outcome"], "dead_lettered", "{job}");
            assert!(
                job["detail"].as_str().unwrap().starts_with(class),
                "expected {class}: {job}"
            );
        }
    }
    assert_eq!(bad, 5);
    assert_eq!(letters.len(), bad, "no other dead letters: {letters:?}");
    let no_route = letters
        .iter()
        .find(|l| l["error_class"] == "no_route")
        .unwrap();
    assert!(
        no_route["reason"]
            .as_str()
            .unwrap()
            .contains("high-accuracy"),
        "the rule trace names the rule: {no_route}"
    );

    // Webhooks: one per finished job with a callback, every one signed and verified.
    let hooks = &report["webhooks"];
    let finished = report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["outcome"] == "succeeded")
        .count() as u64;
    assert!(hooks["queued"].as_u64().unwrap() >= finished, "{hooks}");
    assert_eq!(hooks["delivered"], hooks["queued"], "{hooks}");
    assert_eq!(hooks["verified"], hooks["queued"], "{hooks}");
    assert_eq!(hooks["rejected"], 0, "{hooks}");

    // The summary against the store the run wrote.
    let store = AnyStore::open_existing(&StoreConfig::Embedded {
        path: data.join("store.sqlite"),
    })
    .await
    .unwrap();
    let mut per_backend: BTreeMap<String, u64> = BTreeMap::new();
    for job in report["jobs"].as_array().unwrap() {
        let Some(id) = job["job_id"].as_str() else {
            continue;
        };
        let job_id: JobId = id.parse().unwrap();
        let result = store.result(job_id).await.unwrap();
        if job["expected"] != "result" {
            continue;
        }
        let result = result.expect("a result for every good job");
        assert_eq!(
            result.backend_id.as_ref().map(|b| b.as_str()),
            job["backend_id"].as_str(),
            "{job}"
        );
        assert_eq!(result.latency_ms, job["latency_ms"].as_u64().unwrap());
        match &result.output {
            Some(switchyard_core::contracts::Output::Multi(multi)) => {
                for child in &multi.children {
                    let child = store.result(child.job_id).await.unwrap().unwrap();
                    *per_backend
                        .entry(child.backend_id.unwrap().as_str().to_owned())
                        .or_default() += 1;
                }
            }
            _ => {
                *per_backend
                    .entry(result.backend_id.unwrap().as_str().to_owned())
                    .or_default() += 1;
            }
        }
    }
    let reported: BTreeMap<String, u64> = report["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let simulated = b["simulated"].as_bool().unwrap();
            let id = b["backend_id"].as_str().unwrap();
            assert_eq!(simulated, !id.starts_with("yolov8n"), "{b}");
            (id.to_owned(), b["jobs"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(reported, per_backend);

    // Cost per tenant is what the ledger's spend totals say (this store saw only this run).
    let now = chrono::Utc::now();
    for tenant in report["tenants"].as_array().unwrap() {
        let id = TenantId::new(tenant["tenant_id"].as_str().unwrap().to_owned()).unwrap();
        let spent = store.spend(&id, Period::month_of(now)).await.unwrap();
        assert_eq!(spent.0, tenant["cost_micros"].as_i64().unwrap(), "{tenant}");
        assert!(
            spent.0 > 0,
            "every sample tenant ran priced calls: {tenant}"
        );
    }
    assert_eq!(report["tenants"].as_array().unwrap().len(), 5);

    // A second run on the same data directory, for people: the same store opens again, and
    // the table names every part.
    let out = dev(&[], &data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "Summary:",
        "SIMULATED",
        "JOBS PER BACKEND",
        "gpt-5 (sim)",
        "yolov8n-gpu",
        "COST (USD)",
        "Fan-out",
        "Dead letters (5)",
        "no_route",
        "Webhooks:",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
}

#[test]
fn dev_without_onnx_runtime_or_the_model_says_how_to_fix_it() {
    let empty = tempfile_dir("dev-empty-kit");
    let run = |ort: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        command
            .args(["dev", "--once", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(empty.join("data"))
            .env("SWITCHYARD_LOCAL_HOME", &empty)
            .env_remove("SWITCHYARD_VENV")
            .env_remove("SWITCHYARD_YOLO_MODEL")
            .env_remove("SWITCHYARD_SAMPLE_IMAGES")
            .env_remove("ORT_DYLIB_PATH");
        if let Some(ort) = ort {
            command.env("ORT_DYLIB_PATH", ort);
        }
        let out = command.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, stderr) = run(None);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("ONNX Runtime library was not found"),
        "{stderr}"
    );
    assert!(stderr.contains("deploy/local/up.sh ort"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let missing = empty.join("libonnxruntime.so.0");
    let (code, stderr) = run(Some(missing.to_str().unwrap()));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("ORT_DYLIB_PATH names"), "{stderr}");

    // With a library in place, the model is the next thing it asks for.
    let library = empty.join("libonnxruntime.so.1");
    std::fs::write(&library, b"").unwrap();
    let (code, stderr) = run(Some(library.to_str().unwrap()));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("YOLOv8n model is missing"), "{stderr}");
    assert!(stderr.contains("deploy/local/up.sh ort"), "{stderr}");
}

/// A fresh directory under the target dir's tmp (kept for a look after a failure).
fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
