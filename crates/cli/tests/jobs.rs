//! `switchyard jobs get | list` end to end: the binary reading an embedded store that another
//! process (this test) wrote.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: failing loudly is the point"
)]

use std::path::Path;
use std::process::{Command, Output};

use chrono::{TimeZone as _, Utc};
use switchyard_core::contracts::{
    JobState, ResultDocument, ResultSchema, ResultStatus, TaskKind, UsageEvent, UsageSchema,
};
use switchyard_core::money::Micros;
use switchyard_core::rates::Usage;
use switchyard_core::{BackendId, JobId, TenantId};
use switchyard_ledger::store::{EmbeddedStore, StatusUpdate, Store};

fn switchyard(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("SWITCHYARD_STORE__EMBEDDED__PATH", data_dir)
        .env_remove("SWITCHYARD_CONFIG")
        .output()
        .unwrap()
}

async fn seed(dir: &Path) -> (JobId, JobId) {
    let store = EmbeddedStore::open(&dir.join("switchyard.sqlite3")).unwrap();
    store.init().await.unwrap();
    let acme = TenantId::new("acme").unwrap();
    let globex = TenantId::new("globex").unwrap();
    let done = JobId::new();
    let dead = JobId::new();
    let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
    for (job, tenant, states) in [
        (
            done,
            &acme,
            &[JobState::Submitted, JobState::Routed, JobState::Succeeded][..],
        ),
        (
            dead,
            &globex,
            &[JobState::Submitted, JobState::DeadLettered][..],
        ),
    ] {
        for (i, state) in states.iter().enumerate() {
            store
                .record_status(&StatusUpdate {
                    job_id: job,
                    tenant_id: tenant.clone(),
                    state: *state,
                    at: t0 + chrono::Duration::seconds(i64::try_from(i).unwrap()),
                    attempt: Some(1),
                    backend_id: Some(BackendId::new("gpt-4o-mini").unwrap()),
                    detail: (*state == JobState::DeadLettered)
                        .then(|| "no_route: nothing serves detect".to_owned()),
                })
                .await
                .unwrap();
        }
    }
    store
        .put_result(&ResultDocument {
            schema: ResultSchema,
            job_id: done,
            tenant_id: acme.clone(),
            parent_job_id: None,
            status: ResultStatus::Succeeded,
            task: TaskKind::Chat,
            backend_id: Some(BackendId::new("gpt-4o-mini").unwrap()),
            model: Some("gpt-4o-mini".into()),
            output: None,
            error: None,
            attempts: 1,
            started_at: t0,
            finished_at: t0 + chrono::Duration::seconds(2),
            latency_ms: 2000,
            cost_micros: Micros(615),
        })
        .await
        .unwrap();
    store
        .record_usage(&UsageEvent {
            schema: UsageSchema,
            event_id: UsageEvent::event_id_for(done, "main"),
            job_id: done,
            tenant_id: acme,
            backend_id: BackendId::new("gpt-4o-mini").unwrap(),
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            usage: Usage {
                input_tokens: 1000,
                output_tokens: 500,
                requests: 1,
                ..Usage::default()
            },
            cost_micros: Micros(615),
            rates_version: "2026-11-24".into(),
            latency_ms: 1900,
            occurred_at: t0,
        })
        .await
        .unwrap();
    (done, dead)
}

#[tokio::test]
async fn get_and_list_read_what_the_workers_wrote() {
    let dir = std::env::temp_dir().join(format!("switchyard-cli-jobs-{}", ulid::Ulid::new()));
    let (done, dead) = seed(&dir).await;

    let got = switchyard(&dir, &["jobs", "get", &done.to_string()]);
    assert!(got.status.success(), "{got:?}");
    let text = String::from_utf8(got.stdout).unwrap();
    assert!(text.contains("state     succeeded"), "{text}");
    assert!(text.contains("cost $0.000615"), "{text}");
    assert!(
        text.contains(&format!("charge    {done}:main  openai gpt-4o-mini")),
        "{text}"
    );

    let json = switchyard(&dir, &["jobs", "get", &dead.to_string(), "--json"]);
    let view: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(view["job"]["state"], "dead_lettered");
    assert_eq!(
        view["job"]["history"][1]["detail"],
        "no_route: nothing serves detect"
    );
    assert!(view.get("result").is_none(), "{view}");

    let listed = switchyard(
        &dir,
        &["jobs", "list", "--status", "dead_lettered", "--json"],
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["job_id"], dead.to_string());

    let table = switchyard(&dir, &["jobs", "list", "--tenant", "acme"]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.starts_with("UPDATED (UTC)"), "{table}");
    assert!(
        table.contains(&done.to_string()) && !table.contains(&dead.to_string()),
        "{table}"
    );

    let missing = switchyard(&dir, &["jobs", "get", &JobId::new().to_string()]);
    assert_eq!(missing.status.code(), Some(1));
    let bad = switchyard(&dir, &["jobs", "list", "--status", "finished"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8(bad.stderr)
            .unwrap()
            .contains("expected one of submitted")
    );
}
