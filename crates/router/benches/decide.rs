//! One routing decision over a realistic policy (6 rules) and catalog (12 backends).
//! The target (issue 5) is p99 ≤ 20 µs; criterion reports the mean and its interval.
//! Also what an `llm_classify` rule adds when its answer is cached: the decision with the
//! verdict, and the cache look-up (the text's SHA-256 and a map probe).

use std::hint::black_box;
use std::str::FromStr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use rust_decimal::Decimal;
use switchyard_core::contracts::TaskKind;
use switchyard_core::{BackendId, PlanName, QueueName, TenantId, Tier};
use switchyard_router::classify::{VerdictCache, cache_key};
use switchyard_router::policy::{
    BackendState, ClassifierSpec, Constraints, Health, JobFacts, Match, Policy, Rule, RuleStrategy,
    Verdict, decide,
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
        verdicts: Vec::new(),
    };
    c.bench_function("decide/pro-chat-6-rules-12-backends", |b| {
        b.iter(|| decide(black_box(&job), black_box(&policy), black_box(&backends)).is_ok());
    });

    // The same policy with a classifying rule in front of "pro", and the job's verdict in hand.
    let id = |name: &str| BackendId::new(name).unwrap_or_else(|e| panic!("{e}"));
    let spec = ClassifierSpec {
        backend: id("llm-0"),
        instruction: "How complex is this request?".into(),
        routes: vec![
            ("complex".into(), id("llm-3")),
            ("simple".into(), id("llm-1")),
        ],
        timeout: Duration::from_millis(1_500),
        cache_ttl: Duration::from_secs(3_600),
    };
    let mut classifying = policy.clone();
    let at = classifying.rules.len() - 2;
    classifying.rules.insert(
        at,
        rule(
            "triage",
            Match {
                plans: vec![plan("pro")],
                ..Match::default()
            },
            RuleStrategy::Classify(spec.clone()),
        ),
    );
    let mut classified = job.clone();
    classified.verdicts.push(Verdict {
        rule: "triage".into(),
        label: Ok("complex".into()),
        cached: true,
    });
    assert_eq!(
        decide(&classified, &classifying, &backends)
            .map(|c| c.backend_id.to_string())
            .ok()
            .as_deref(),
        Some("llm-3")
    );
    c.bench_function("decide/classified-chat-7-rules-12-backends", |b| {
        b.iter(|| {
            decide(
                black_box(&classified),
                black_box(&classifying),
                black_box(&backends),
            )
            .is_ok()
        });
    });

    // A cache of 10,000 answers; a 2,000-character chat looked up (a hit).
    let text: String = "How do I reconcile two ledgers that disagree? ".repeat(44);
    let tenant = TenantId::new("acme").unwrap_or_else(|e| panic!("{e}"));
    let now = Instant::now();
    let mut cache = VerdictCache::new(100_000);
    for i in 0..10_000 {
        let other = format!("{text}{i}");
        cache.insert(
            cache_key(&tenant, &spec, &other),
            "simple".into(),
            spec.cache_ttl,
            now,
        );
    }
    cache.insert(
        cache_key(&tenant, &spec, &text),
        "complex".into(),
        spec.cache_ttl,
        now,
    );
    c.bench_function("classify/cache-hit-2000-chars", |b| {
        b.iter(|| {
            let key = cache_key(black_box(&tenant), black_box(&spec), black_box(&text));
            cache.get(&key, now).map(str::len)
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
