//! One behaviour suite over every Store: the embedded SQLite store and MongoDB (FerretDB from
//! `deploy/local`). Each test gets its own database file or database.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: failing loudly is the point"
)]

mod common;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use common::{embedded, mongo};
use proptest::prelude::*;
use switchyard_core::contracts::{
    JobState, Output, ResultDocument, ResultSchema, ResultStatus, TaskKind, TextOutput, UsageEvent,
    UsageSchema,
};
use switchyard_core::money::Micros;
use switchyard_core::rates::Usage;
use switchyard_core::{BackendId, JobId, TenantId};
use switchyard_ledger::store::{
    AttemptNext, DlqAudit, JobFilter, LetterAction, LetterMark, Period, StatusUpdate, Store,
    WebhookAttempt, WebhookDelivery, WebhookState, Written,
};

/// `seconds` after 2026-12-01T00:00:00Z: days 0–30 are one month, 31 on the next.
fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(seconds)
}

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

fn result(job_id: JobId, tenant_id: &TenantId, backend: &str, latency_ms: u64) -> ResultDocument {
    ResultDocument {
        schema: ResultSchema,
        job_id,
        tenant_id: tenant_id.clone(),
        parent_job_id: None,
        status: ResultStatus::Succeeded,
        task: TaskKind::Chat,
        backend_id: Some(BackendId::new(backend).unwrap()),
        model: Some("gpt-4o-mini".into()),
        output: Some(Output::Text(TextOutput {
            text: "Hello — ünïcode survives".into(),
            finish_reason: "stop".into(),
        })),
        error: None,
        attempts: 1,
        started_at: at(0),
        finished_at: at(1),
        latency_ms,
        cost_micros: Micros(615),
    }
}

fn usage(
    job_id: JobId,
    tenant_id: &TenantId,
    call: &str,
    cost: i64,
    when: DateTime<Utc>,
) -> UsageEvent {
    UsageEvent {
        schema: UsageSchema,
        event_id: UsageEvent::event_id_for(job_id, call),
        job_id,
        tenant_id: tenant_id.clone(),
        backend_id: BackendId::new("gpt-4o-mini").unwrap(),
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        usage: Usage {
            input_tokens: 1200,
            output_tokens: 300,
            requests: 1,
            ..Usage::default()
        },
        cost_micros: Micros(cost),
        rates_version: "2026-11-24".into(),
        latency_ms: 420,
        occurred_at: when,
    }
}

fn status(
    job_id: JobId,
    tenant_id: &TenantId,
    state: JobState,
    seconds: i64,
    attempt: u32,
) -> StatusUpdate {
    StatusUpdate {
        job_id,
        tenant_id: tenant_id.clone(),
        state,
        at: at(seconds),
        attempt: Some(attempt),
        backend_id: None,
        detail: None,
    }
}

fn delivery(job_id: JobId, tenant_id: &TenantId, due: DateTime<Utc>) -> WebhookDelivery {
    WebhookDelivery {
        webhook_id: WebhookDelivery::id_for(job_id),
        job_id,
        tenant_id: tenant_id.clone(),
        url: "https://hooks.example.com/in".parse().unwrap(),
        secret_id: Some("acme".into()),
        payload: r#"{"type":"job.succeeded"}"#.into(),
        state: WebhookState::Pending,
        attempts: 0,
        next_attempt_at: due,
        last_status: None,
        last_error: None,
        created_at: due,
        updated_at: due,
    }
}

macro_rules! store_suite {
    ($($make:ident),+) => {
        $(
        mod $make {

            #[tokio::test]
            async fn results_round_trip_and_the_first_write_wins() {
                super::results_round_trip_and_the_first_write_wins(super::$make().await).await;
            }
            #[tokio::test]
            async fn usage_is_recorded_and_charged_once() {
                super::usage_is_recorded_and_charged_once(super::$make().await).await;
            }
            #[tokio::test]
            async fn status_moves_forward_and_keeps_the_timeline() {
                super::status_moves_forward_and_keeps_the_timeline(super::$make().await).await;
            }
            #[tokio::test]
            async fn jobs_are_listed_newest_first_by_tenant_and_state() {
                super::jobs_are_listed_newest_first_by_tenant_and_state(super::$make().await).await;
            }
            #[tokio::test]
            async fn dashboard_aggregations_add_up() {
                super::dashboard_aggregations_add_up(super::$make().await).await;
            }
            #[tokio::test]
            async fn webhooks_are_claimed_once_and_resume_after_a_lease() {
                super::webhooks_are_claimed_once_and_resume_after_a_lease(super::$make().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_deliveries_charge_once() {
                super::concurrent_deliveries_charge_once(super::$make().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_charges_of_different_jobs_all_count() {
                super::concurrent_charges_of_different_jobs_all_count(super::$make().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_writers_keep_every_step_of_a_job() {
                super::concurrent_writers_keep_every_step_of_a_job(super::$make().await).await;
            }
            #[tokio::test]
            async fn a_redelivery_that_cost_differently_keeps_the_first_charge() {
                super::a_redelivery_that_cost_differently_keeps_the_first_charge(super::$make().await).await;
            }
            #[tokio::test]
            async fn dead_letter_marks_and_audits_round_trip() {
                super::dead_letter_marks_and_audits_round_trip(super::$make().await).await;
            }
            #[test]
            fn replayed_usage_never_double_counts() {
                super::replayed_usage_never_double_counts(super::$make);
            }
        }
        )+
    };
}

store_suite!(embedded, mongo);

async fn results_round_trip_and_the_first_write_wins(store: impl Store) {
    let acme = tenant("acme");
    let job = JobId::new();
    let first = result(job, &acme, "gpt-4o-mini", 420);
    assert_eq!(store.put_result(&first).await.unwrap(), Written::New);
    let mut second = first.clone();
    second.latency_ms = 999;
    second.status = ResultStatus::Failed;
    assert_eq!(store.put_result(&second).await.unwrap(), Written::Unchanged);
    assert_eq!(store.result(job).await.unwrap(), Some(first));
    assert_eq!(store.result(JobId::new()).await.unwrap(), None);
}

async fn usage_is_recorded_and_charged_once(store: impl Store) {
    let acme = tenant("acme");
    let other = tenant("other");
    let job = JobId::new();
    let main = usage(job, &acme, "main", 615, at(10));
    let classifier = usage(job, &acme, "classifier", 40, at(11));
    assert_eq!(
        store.record_usage(&main).await.unwrap().written,
        Written::New
    );
    assert_eq!(
        store.record_usage(&main).await.unwrap().written,
        Written::Unchanged
    );
    assert_eq!(
        store.record_usage(&classifier).await.unwrap().written,
        Written::New
    );
    store
        .record_usage(&usage(JobId::new(), &other, "main", 7, at(12)))
        .await
        .unwrap();
    // Another day of the same month, and another month.
    store
        .record_usage(&usage(JobId::new(), &acme, "main", 1000, at(86_400 * 3)))
        .await
        .unwrap();
    store
        .record_usage(&usage(JobId::new(), &acme, "main", 50_000, at(86_400 * 40)))
        .await
        .unwrap();

    assert_eq!(
        store.spend(&acme, Period::day_of(at(10))).await.unwrap(),
        Micros(655)
    );
    assert_eq!(
        store.spend(&acme, Period::month_of(at(10))).await.unwrap(),
        Micros(1655)
    );
    assert_eq!(
        store.spend(&other, Period::day_of(at(10))).await.unwrap(),
        Micros(7)
    );
    assert_eq!(
        store
            .spend(&tenant("nobody"), Period::month_of(at(10)))
            .await
            .unwrap(),
        Micros::ZERO
    );
    let events = store.usage_of_job(job).await.unwrap();
    assert_eq!(events, vec![classifier, main]);
}

async fn status_moves_forward_and_keeps_the_timeline(store: impl Store) {
    let acme = tenant("acme");
    let job = JobId::new();
    let mut routed = status(job, &acme, JobState::Routed, 1, 1);
    routed.backend_id = Some(BackendId::new("yolov8n-cpu").unwrap());
    store
        .record_status(&status(job, &acme, JobState::Submitted, 0, 0))
        .await
        .unwrap();
    store.record_status(&routed).await.unwrap();
    store
        .record_status(&status(job, &acme, JobState::Started, 2, 1))
        .await
        .unwrap();
    store
        .record_status(&status(job, &acme, JobState::DeadLettered, 3, 3))
        .await
        .unwrap();
    let record = store.job(job).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::DeadLettered);
    assert_eq!(record.attempts, 3);
    assert_eq!(
        record.backend_id.as_ref().map(BackendId::as_str),
        Some("yolov8n-cpu")
    );

    // A replay moves a dead letter on; a late duplicate never moves a finished job back.
    store
        .record_status(&status(job, &acme, JobState::Routed, 4, 1))
        .await
        .unwrap();
    assert_eq!(
        store.job(job).await.unwrap().unwrap().state,
        JobState::Routed
    );
    store
        .record_status(&status(job, &acme, JobState::Succeeded, 5, 1))
        .await
        .unwrap();
    store
        .record_status(&status(job, &acme, JobState::Started, 6, 2))
        .await
        .unwrap();
    store
        .record_status(&status(job, &acme, JobState::DeadLettered, 7, 2))
        .await
        .unwrap();
    let record = store.job(job).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Succeeded);
    assert_eq!(record.created_at, at(0));
    assert_eq!(record.updated_at, at(7));
    let states: Vec<JobState> = record.history.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [
            JobState::Submitted,
            JobState::Routed,
            JobState::Started,
            JobState::DeadLettered,
            JobState::Routed,
            JobState::Succeeded,
            JobState::Started,
            JobState::DeadLettered,
        ]
    );
    assert_eq!(store.job(JobId::new()).await.unwrap(), None);
}

async fn jobs_are_listed_newest_first_by_tenant_and_state(store: impl Store) {
    let acme = tenant("acme");
    let globex = tenant("globex");
    let mut ids = Vec::new();
    for i in 0..6 {
        let job = JobId::new();
        let owner = if i % 2 == 0 { &acme } else { &globex };
        let state = if i < 4 {
            JobState::Succeeded
        } else {
            JobState::DeadLettered
        };
        store
            .record_status(&status(job, owner, state, i64::from(i) * 10, 1))
            .await
            .unwrap();
        ids.push(job);
    }
    let all = store
        .list_jobs(&JobFilter {
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    let listed: Vec<JobId> = all.iter().map(|j| j.job_id).collect();
    let expected: Vec<JobId> = ids.iter().rev().copied().collect();
    assert_eq!(listed, expected);

    let acme_jobs = store
        .list_jobs(&JobFilter {
            tenant_id: Some(acme.clone()),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        acme_jobs.iter().map(|j| j.job_id).collect::<Vec<_>>(),
        [ids[4], ids[2], ids[0]]
    );

    let dead = store
        .list_jobs(&JobFilter {
            state: Some(JobState::DeadLettered),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        dead.iter().map(|j| j.job_id).collect::<Vec<_>>(),
        [ids[5], ids[4]]
    );

    let page = store
        .list_jobs(&JobFilter {
            updated_before: Some(at(30)),
            limit: 2,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|j| j.job_id).collect::<Vec<_>>(),
        [ids[2], ids[1]]
    );
}

async fn dashboard_aggregations_add_up(store: impl Store) {
    let acme = tenant("acme");
    let globex = tenant("globex");
    for i in 0..10u64 {
        let job = JobId::new();
        let mut r = result(
            job,
            if i < 7 { &acme } else { &globex },
            if i < 5 { "fast" } else { "slow" },
            (i + 1) * 100,
        );
        r.finished_at = at(60 * i64::try_from(i / 4).unwrap() + 5);
        if i == 9 {
            r.status = ResultStatus::Failed;
        }
        store.put_result(&r).await.unwrap();
        let mut u = usage(
            job,
            &r.tenant_id,
            "main",
            100 + i64::try_from(i).unwrap(),
            at(60 * i64::try_from(i).unwrap()),
        );
        if i % 2 == 1 {
            u.model = "claude-haiku-4-5".into();
        }
        store.record_usage(&u).await.unwrap();
    }
    let volume = store.volume_per_minute(at(0), at(3600)).await.unwrap();
    let counts: Vec<(u64, u64)> = volume.iter().map(|m| (m.succeeded, m.failed)).collect();
    assert_eq!(counts, [(4, 0), (4, 0), (1, 1)]);
    assert!(volume.windows(2).all(|w| w[0].minute < w[1].minute));
    assert!(
        store
            .volume_per_minute(at(3600), at(7200))
            .await
            .unwrap()
            .is_empty()
    );

    let latency = store.latency_by_backend(at(0), at(3600)).await.unwrap();
    let summary: Vec<(&str, u64, u64, u64)> = latency
        .iter()
        .map(|l| (l.backend_id.as_str(), l.count, l.p50_ms, l.max_ms))
        .collect();
    assert_eq!(summary, [("fast", 5, 300, 500), ("slow", 5, 800, 1000)]);

    let costs = store
        .cost_by_tenant_model_day(at(0), at(3600))
        .await
        .unwrap();
    let total: i64 = costs.iter().map(|c| c.cost_micros.0).sum();
    assert_eq!(total, (100..110).sum::<i64>());
    let acme_haiku = costs
        .iter()
        .find(|c| c.tenant_id == acme && c.model == "claude-haiku-4-5")
        .unwrap();
    assert_eq!(
        (acme_haiku.events, acme_haiku.cost_micros),
        (3, Micros(101 + 103 + 105))
    );
}

async fn webhooks_are_claimed_once_and_resume_after_a_lease(store: impl Store) {
    let acme = tenant("acme");
    let due = JobId::new();
    let later = JobId::new();
    let first = delivery(due, &acme, at(0));
    assert_eq!(store.enqueue_webhook(&first).await.unwrap(), Written::New);
    assert_eq!(
        store.enqueue_webhook(&first).await.unwrap(),
        Written::Unchanged
    );
    store
        .enqueue_webhook(&delivery(later, &acme, at(100)))
        .await
        .unwrap();

    let lease = Duration::from_secs(30);
    let claimed = store.claim_due_webhooks(at(1), lease, 10).await.unwrap();
    assert_eq!(claimed.iter().map(|d| d.job_id).collect::<Vec<_>>(), [due]);
    assert_eq!(claimed[0].payload, first.payload);
    // Held by the lease: nobody else gets it, until the lease runs out (a dead dispatcher).
    assert!(
        store
            .claim_due_webhooks(at(2), lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store.claim_due_webhooks(at(32), lease, 10).await.unwrap();
    assert_eq!(again.iter().map(|d| d.job_id).collect::<Vec<_>>(), [due]);

    let id = WebhookDelivery::id_for(due);
    // The first claimer was too slow: its lease ran out and `again` took over. Its late
    // record must change nothing, or it could undo the new holder's delivery.
    let stale = WebhookAttempt {
        claimed_until: claimed[0].next_attempt_at,
        at: at(34),
        status: Some(204),
        error: None,
        next: AttemptNext::Delivered,
    };
    assert!(!store.record_webhook_attempt(&id, &stale).await.unwrap());
    assert_eq!(store.webhook(&id).await.unwrap().unwrap().attempts, 0);
    assert!(
        store
            .record_webhook_attempt(
                &id,
                &WebhookAttempt {
                    claimed_until: again[0].next_attempt_at,
                    at: at(33),
                    status: Some(503),
                    error: Some("503 Service Unavailable".into()),
                    next: AttemptNext::RetryAt(at(40)),
                },
            )
            .await
            .unwrap()
    );
    let pending = store.webhook(&id).await.unwrap().unwrap();
    assert_eq!(
        (pending.state, pending.attempts, pending.last_status),
        (WebhookState::Pending, 1, Some(503))
    );
    assert!(
        store
            .claim_due_webhooks(at(39), lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let third = store.claim_due_webhooks(at(40), lease, 10).await.unwrap();
    assert_eq!(third.len(), 1);
    store
        .record_webhook_attempt(
            &id,
            &WebhookAttempt {
                claimed_until: third[0].next_attempt_at,
                at: at(41),
                status: Some(204),
                error: None,
                next: AttemptNext::Delivered,
            },
        )
        .await
        .unwrap();
    let done = store.webhook(&id).await.unwrap().unwrap();
    assert_eq!(
        (done.state, done.attempts, done.last_error),
        (WebhookState::Delivered, 2, None)
    );
    // Delivered ones are never claimed again; the later one comes when due.
    let claimed = store.claim_due_webhooks(at(500), lease, 10).await.unwrap();
    assert_eq!(
        claimed.iter().map(|d| d.job_id).collect::<Vec<_>>(),
        [later]
    );
}

/// Property: whatever the events and however often each is replayed, in whatever order, the
/// spend totals equal the sum of the distinct events, per day and per month.
fn replayed_usage_never_double_counts<S: Store, F: Future<Output = S>>(make: fn() -> F) {
    let config = ProptestConfig {
        cases: 12,
        ..ProptestConfig::default()
    };
    proptest!(config, |(
        costs in proptest::collection::vec((0i64..5_000_000, 0i64..(86_400 * 45), 1usize..4), 1..12),
        seed in any::<u64>(),
    )| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let acme = tenant("acme");
        let events: Vec<UsageEvent> = costs
            .iter()
            .map(|(cost, second, _)| usage(JobId::new(), &acme, "main", *cost, at(*second)))
            .collect();
        let mut writes: Vec<&UsageEvent> = events
            .iter()
            .zip(&costs)
            .flat_map(|(event, (_, _, times))| std::iter::repeat_n(event, *times))
            .collect();
        fastrand::Rng::with_seed(seed).shuffle(&mut writes);
        runtime.block_on(async {
            let store = make().await;
            let mut new = 0;
            for event in &writes {
                if store.record_usage(event).await.unwrap().written == Written::New {
                    new += 1;
                }
            }
            assert_eq!(new, events.len());
            let months: std::collections::BTreeSet<(i32, u32)> = events
                .iter()
                .map(|e| match Period::month_of(e.occurred_at) {
                    Period::Month { year, month } => (year, month),
                    Period::Day(_) => unreachable!(),
                })
                .collect();
            for (year, month) in months {
                let period = Period::Month { year, month };
                let expected: i64 = events
                    .iter()
                    .filter(|e| Period::month_of(e.occurred_at) == period)
                    .map(|e| e.cost_micros.0)
                    .sum();
                assert_eq!(store.spend(&acme, period).await.unwrap(), Micros(expected));
            }
            for event in &events {
                let day = Period::day_of(event.occurred_at);
                let expected: i64 = events
                    .iter()
                    .filter(|e| Period::day_of(e.occurred_at) == day)
                    .map(|e| e.cost_micros.0)
                    .sum();
                assert_eq!(store.spend(&acme, day).await.unwrap(), Micros(expected));
            }
        });
    });
}

/// The Mongo store's spend protocol interrupted between its steps: the redelivery finishes it
/// and the total counts the event exactly once.
/// The races above only fail when they happen; this says why up front, when the FerretDB that
/// `deploy/local` installed predates its isolation patch.
#[tokio::test]
async fn the_test_mongo_isolates_single_document_writes() {
    use mongodb::bson::doc;
    let store = mongo().await;
    let info = store
        .database()
        .run_command(doc! { "buildInfo": 1 })
        .await
        .unwrap();
    if let Ok(version) = info.get_str("ferretdbVersion") {
        assert!(
            !version.starts_with("v1.") || info.get_bool("isolatedWrites").unwrap_or(false),
            "FerretDB {version} without deploy/local/ferretdb-isolation.patch: run \
             deploy/local/down.sh ferretdb && deploy/local/up.sh"
        );
    }
}

#[tokio::test]
async fn mongo_spend_survives_a_crash_between_any_two_steps() {
    use mongodb::bson::{Document, doc};
    let store = mongo().await;
    let acme = tenant("acme");
    let event = usage(JobId::new(), &acme, "main", 615, at(10));
    let day = Period::day_of(at(10));
    let spend = store.database().collection::<Document>("spend");
    store.record_usage(&event).await.unwrap();
    let bucket = spend
        .find_one(doc! { "applied": &event.event_id })
        .await
        .unwrap()
        .unwrap()
        .get_str("_id")
        .unwrap()
        .to_owned();

    // Crashed after writing the event, before the increment.
    spend
        .update_one(
            doc! { "_id": &bucket },
            doc! { "$inc": { "cost_micros": -615_i64, "events": -1_i64 }, "$pull": { "applied": &event.event_id } },
        )
        .await
        .unwrap();
    assert_eq!(store.spend(&acme, day).await.unwrap(), Micros::ZERO);
    assert_eq!(
        store.record_usage(&event).await.unwrap().written,
        Written::Unchanged
    );
    assert_eq!(store.spend(&acme, day).await.unwrap(), Micros(615));

    // Crashed after the increment: the redelivery's guarded update matches nothing.
    store.record_usage(&event).await.unwrap();
    assert_eq!(store.spend(&acme, day).await.unwrap(), Micros(615));
    let left = spend
        .find_one(doc! { "_id": &bucket })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(left.get_i64("events").unwrap(), 1, "{left}");
}

/// Deliveries of one job racing (a lease that expired under a slow worker, a rebalance): one
/// charge, whoever wins.
async fn concurrent_deliveries_charge_once(store: impl Store) {
    let acme = tenant("acme");
    for round in 0..5 {
        let event = usage(JobId::new(), &acme, "main", 100, at(round));
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let (store, event) = (store.clone(), event.clone());
                tokio::spawn(async move { store.record_usage(&event).await.unwrap().written })
            })
            .collect();
        let mut new = 0;
        for racer in racers {
            if racer.await.unwrap() == Written::New {
                new += 1;
            }
        }
        assert_eq!(new, 1, "round {round}");
    }
    assert_eq!(
        store.spend(&acme, Period::day_of(at(0))).await.unwrap(),
        Micros(500)
    );
}

/// Many jobs of one tenant charged at once (a busy worker pool): each bucket of the day takes
/// several of them concurrently, and every charge must count.
async fn concurrent_charges_of_different_jobs_all_count(store: impl Store) {
    let acme = tenant("acme");
    let racers: Vec<_> = (0..8)
        .map(|racer| {
            let store = store.clone();
            let acme = acme.clone();
            tokio::spawn(async move {
                for n in 0..25 {
                    let event = usage(JobId::new(), &acme, "main", 1 + racer * 25 + n, at(60));
                    store.record_usage(&event).await.unwrap();
                }
            })
        })
        .collect();
    for racer in racers {
        racer.await.unwrap();
    }
    // 1 + 2 + ... + 200.
    assert_eq!(
        store.spend(&acme, Period::day_of(at(0))).await.unwrap(),
        Micros(200 * 201 / 2)
    );
}

/// A worker finishing a job while an operator's replay notes itself in the timeline, and
/// redeliveries on top: writers of one job's steps race, and no step may be lost.
async fn concurrent_writers_keep_every_step_of_a_job(store: impl Store) {
    let acme = tenant("acme");
    let job = JobId::new();
    store
        .record_status(&status(job, &acme, JobState::Submitted, 0, 0))
        .await
        .unwrap();
    let racers: Vec<_> = (1..=16)
        .map(|n| {
            let store = store.clone();
            let mut step = status(job, &acme, JobState::Routed, n, 1);
            step.detail = Some(format!("writer {n}"));
            if n == 16 {
                step.state = JobState::Succeeded;
            }
            tokio::spawn(async move { store.record_status(&step).await.unwrap() })
        })
        .collect();
    for racer in racers {
        racer.await.unwrap();
    }
    let record = store.job(job).await.unwrap().unwrap();
    let mut writers: Vec<&str> = record
        .history
        .iter()
        .filter_map(|step| step.detail.as_deref())
        .collect();
    writers.sort_unstable();
    let mut expected: Vec<String> = (1..=16).map(|n| format!("writer {n}")).collect();
    expected.sort_unstable();
    assert_eq!(writers, expected, "{record:?}");
    assert_eq!(record.state, JobState::Succeeded, "{record:?}");
}

/// A redelivery re-runs the call: another cost, perhaps after midnight. The first stored event
/// is what was charged, on its day, and is what the caller gets back.
async fn a_redelivery_that_cost_differently_keeps_the_first_charge(store: impl Store) {
    let acme = tenant("acme");
    let job = JobId::new();
    let first = usage(job, &acme, "main", 615, at(86_400 - 1));
    let mut again = first.clone();
    again.cost_micros = Micros(999);
    again.occurred_at = at(86_400 + 5);
    store.record_usage(&first).await.unwrap();
    let recorded = store.record_usage(&again).await.unwrap();
    assert_eq!(
        (recorded.written, &recorded.stored),
        (Written::Unchanged, &first)
    );
    assert_eq!(
        store
            .spend(&acme, Period::day_of(first.occurred_at))
            .await
            .unwrap(),
        Micros(615)
    );
    assert_eq!(
        store
            .spend(&acme, Period::day_of(again.occurred_at))
            .await
            .unwrap(),
        Micros::ZERO
    );
}

async fn dead_letter_marks_and_audits_round_trip(store: impl Store) {
    store.init().await.unwrap();
    let (first, second, unknown) = (ulid::Ulid::new(), ulid::Ulid::new(), ulid::Ulid::new());
    let audit_id = ulid::Ulid::new();
    let mark = |id, copies, removed, action| LetterMark {
        dead_letter_id: id,
        dlq: "switchyard.dlq.switchyard.jobs.batch".into(),
        job_id: Some(JobId::new()),
        copies,
        removed,
        last_action: action,
        last_at: at(10),
        audit_id,
    };
    store
        .mark_letter(&mark(first, 1, false, LetterAction::Copied))
        .await
        .unwrap();
    // A later action replaces the earlier mark.
    let replayed = mark(first, 2, true, LetterAction::Replayed);
    store.mark_letter(&replayed).await.unwrap();
    let purged = mark(second, 0, true, LetterAction::Purged);
    store.mark_letter(&purged).await.unwrap();
    let mut marks = store.letter_marks(&[first, unknown, second]).await.unwrap();
    marks.sort_by_key(|m| m.dead_letter_id);
    let mut expected = vec![replayed, purged];
    expected.sort_by_key(|m| m.dead_letter_id);
    assert_eq!(marks, expected);
    assert!(store.letter_marks(&[unknown]).await.unwrap().is_empty());

    let audit = |started: i64, outcome: &str| DlqAudit {
        audit_id: ulid::Ulid::new(),
        action: "replay".into(),
        operator: "sre@host".into(),
        transport: "kafka".into(),
        filters: "--tenant acme".into(),
        destination: None,
        started_at: at(started),
        finished_at: None,
        outcome: outcome.into(),
        scanned: 3,
        matched: 2,
        done: 0,
        skipped: 0,
        failed: 0,
    };
    let older = audit(1, "completed");
    let mut newer = audit(5, "running");
    store.put_dlq_audit(&older).await.unwrap();
    store.put_dlq_audit(&newer).await.unwrap();
    // The run ends: its record is rewritten, not added.
    newer.outcome = "completed".into();
    newer.done = 2;
    newer.finished_at = Some(at(6));
    store.put_dlq_audit(&newer).await.unwrap();
    assert_eq!(
        store.dlq_audits(10).await.unwrap(),
        vec![newer.clone(), older]
    );
    assert_eq!(store.dlq_audits(1).await.unwrap(), vec![newer]);
}
