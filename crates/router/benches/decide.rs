//! One routing decision over a realistic policy (6 rules) and catalog (12 backends).
//! The target (issue 5) is p99 ≤ 20 µs; criterion reports the mean and its interval.

use std::hint::black_box;
use std::str::FromStr;

use criterion::{Criterion, criterion_group, criterion_main};
use rust_decimal::Decimal;
use switchyard_core::contracts::TaskKind;
use switchyard_core::{BackendId, PlanName, QueueName, TenantId, Tier};
use switchyard_router::policy::{
    BackendState, Constraints, Health, JobFacts, Match, Policy, Rule, RuleStrategy, decide,
};

fn backend(name: &str, task: TaskKind, quality: f64, latency_ms: u64, cost: &str) -> BackendState {
    let id = BackendId::new(name).unwrap_or_else(|e| panic!("{e}"));
    BackendState {
        queue: QueueName::backend(&id),
        id,
        tasks: vec![task],
        quality,
        latency_ms,
        cost_usd: Decimal::from_str(cost).unwrap_or_default(),
        health: Health::Ok,
    }
}

fn rule(name: &str, matcher: Match, strategy: RuleStrategy) -> Rule {
    Rule {
        name: name.into(),
        matcher,
        strategy,
        candidates: vec![],
        constraints: Constraints::default(),
        fallbacks: vec![],
        honor_hints: true,
    }
}

fn bench(c: &mut Criterion) {
    let mut backends = Vec::new();
    for (i, (quality, latency, cost)) in [
        (0.55, 400, "0.0001"),
        (0.65, 600, "0.0003"),
        (0.75, 300, "0.002"),
        (0.90, 2000, "0.01"),
        (0.93, 4000, "0.02"),
        (0.60, 500, "0.0002"),
        (0.70, 700, "0.001"),
        (0.85, 1500, "0.008"),
    ]
    .into_iter()
    .enumerate()
    {
        backends.push(backend(
            &format!("llm-{i}"),
            TaskKind::Chat,
            quality,
            latency,
            cost,
        ));
    }
    for (i, latency) in [45, 6, 12, 20].into_iter().enumerate() {
        backends.push(backend(
            &format!("vision-{i}"),
            TaskKind::Detect,
            0.37,
            latency,
            "0.00001",
        ));
    }
    let plan = |p: &str| PlanName::new(p).unwrap_or_else(|e| panic!("{e}"));
    let policy = Policy {
        version: "bench".into(),
        budgets: Vec::new(),
        rules: vec![
            rule(
                "legal",
                Match {
                    tags_any: vec!["legal".into(), "medical".into()],
                    ..Match::default()
                },
                RuleStrategy::MostAccurate,
            ),
            rule(
                "bulk",
                Match {
                    tags_any: vec!["bulk".into()],
                    tiers: vec![Tier::Batch],
                    ..Match::default()
                },
                RuleStrategy::Cheapest,
            ),
            rule(
                "realtime",
                Match {
                    tiers: vec![Tier::Realtime],
                    ..Match::default()
                },
                RuleStrategy::Fastest,
            ),
            rule(
                "basic",
                Match {
                    plans: vec![plan("basic")],
                    ..Match::default()
                },
                RuleStrategy::Cheapest,
            ),
            rule(
                "pro",
                Match {
                    plans: vec![plan("pro")],
                    ..Match::default()
                },
                RuleStrategy::MostAccurate,
            ),
            rule("default", Match::default(), RuleStrategy::Cheapest),
        ],
    };
    // Falls through four rules before "pro" matches.
    let job = JobFacts {
        task: TaskKind::Chat,
        plan: plan("pro"),
        tier: Tier::Standard,
        tenant: TenantId::new("acme").unwrap_or_else(|e| panic!("{e}")),
        tags: vec!["support".into()],
        input_bytes: 2_000,
        optimize: None,
        max_cost_usd: Decimal::from_str("0.015").ok(),
        deadline_ms: None,
        pinned: None,
        split_key: 42,
    };
    c.bench_function("decide/pro-chat-6-rules-12-backends", |b| {
        b.iter(|| decide(black_box(&job), black_box(&policy), black_box(&backends)).is_ok());
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
