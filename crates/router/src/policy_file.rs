//! The policy as written (TOML), validated against the backend catalog.
//!
//! A policy that references an unknown backend, pins without a pin or splits without weights
//! is refused with every problem named by its key, so a reload can keep the old policy and say
//! exactly why.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use rust_decimal::Decimal;
use serde::Deserialize;
use switchyard_core::config::{Backend, BackendKind};
use switchyard_core::contracts::TaskKind;
use switchyard_core::{BackendId, PlanName, TenantId, Tier};

use crate::policy::{
    Budget, BudgetScope, ClassifierSpec, Constraints, Match, OnExceed, Policy, Rule, RuleStrategy,
};

/// The policy shipped with the project (`config/policy.toml`).
pub const DEFAULT_POLICY_TOML: &str = include_str!("../../../config/policy.toml");

#[derive(Debug, thiserror::Error)]
#[error("invalid policy {origin}:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct PolicyError {
    pub origin: String,
    pub problems: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    /// Recorded in every decision.
    version: String,
    rules: Vec<RawRule>,
    /// Spend limits per tenant or plan.
    #[serde(default)]
    budgets: Vec<RawBudget>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    /// Exactly one of `tenant` and `plan`.
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    plan: Option<String>,
    /// USD per UTC day, a decimal string.
    #[serde(default)]
    daily_usd: Option<Decimal>,
    /// USD per UTC calendar month.
    #[serde(default)]
    monthly_usd: Option<Decimal>,
    /// `downgrade` (default) or `reject`.
    #[serde(default)]
    on_exceed: RawOnExceed,
    /// Seconds a routed job's estimated cost is held against the budget, until its charge can
    /// be in the ledger's totals; 0 holds nothing.
    #[serde(default = "default_reserve_for_secs")]
    reserve_for_secs: u64,
}

const fn default_reserve_for_secs() -> u64 {
    120
}

/// A day: longer would hold yesterday's jobs against today's budget.
const MAX_RESERVE_FOR_SECS: u64 = 86_400;

#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawOnExceed {
    #[default]
    Downgrade,
    Reject,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(default, rename = "match")]
    matcher: RawMatch,
    strategy: RawStrategy,
    /// The backend of a `pinned` rule.
    #[serde(default)]
    pin: Option<String>,
    /// Backend → weight, for a `weighted` rule.
    #[serde(default)]
    weights: BTreeMap<String, u32>,
    /// The classifier of an `llm_classify` rule.
    #[serde(default)]
    classifier: Option<RawClassifier>,
    /// Label → backend, for an `llm_classify` rule.
    #[serde(default)]
    routes: BTreeMap<String, String>,
    #[serde(default)]
    candidates: Vec<String>,
    #[serde(default)]
    constraints: RawConstraints,
    #[serde(default)]
    fallbacks: Vec<String>,
    #[serde(default = "default_true")]
    honor_hints: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClassifier {
    /// A catalog LLM backend.
    backend: String,
    /// What the classifier is asked about the job.
    instruction: String,
    #[serde(default = "default_classifier_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_classifier_cache_ttl_secs")]
    cache_ttl_secs: u64,
}

fn default_classifier_timeout_ms() -> u64 {
    1_500
}

/// The longest a classifier's answer may be cached.
const MAX_CACHE_TTL_SECS: u64 = 30 * 24 * 3600;

fn default_classifier_cache_ttl_secs() -> u64 {
    3_600
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    #[serde(default)]
    tasks: Vec<TaskKind>,
    #[serde(default)]
    plans: Vec<String>,
    #[serde(default)]
    tiers: Vec<Tier>,
    #[serde(default)]
    tenants: Vec<String>,
    #[serde(default)]
    tags_any: Vec<String>,
    #[serde(default)]
    min_input_bytes: Option<u64>,
    #[serde(default)]
    max_input_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConstraints {
    #[serde(default)]
    max_cost_usd: Option<Decimal>,
    #[serde(default)]
    max_latency_ms: Option<u64>,
    #[serde(default)]
    min_quality: Option<f64>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawStrategy {
    Cheapest,
    Fastest,
    MostAccurate,
    Pinned,
    Weighted,
    LlmClassify,
}

/// An `llm_classify` rule's classifier, or every problem with it.
fn classifier_spec(
    rule: usize,
    classifier: Option<&RawClassifier>,
    routes: &BTreeMap<String, String>,
    candidates: &[String],
    catalog: &[Backend],
) -> Result<ClassifierSpec, Vec<String>> {
    let key = |field: &str| format!("rules[{rule}].{field}");
    let mut problems = Vec::new();
    let Some(classifier) = classifier else {
        return Err(vec![format!(
            "`{}`: an llm_classify rule needs `classifier`",
            key("classifier")
        )]);
    };
    let backend = match catalog.iter().find(|b| b.id.as_str() == classifier.backend) {
        Some(b) if b.kind == BackendKind::Llm => Some(b.id.clone()),
        Some(_) => {
            problems.push(format!(
                "`{}`: backend `{}` is not an LLM backend",
                key("classifier.backend"),
                classifier.backend
            ));
            None
        }
        None => {
            problems.push(format!(
                "`{}`: backend `{}` is not in the catalog",
                key("classifier.backend"),
                classifier.backend
            ));
            None
        }
    };
    if classifier.instruction.trim().is_empty() {
        problems.push(format!(
            "`{}`: must not be empty",
            key("classifier.instruction")
        ));
    }
    if classifier.timeout_ms == 0 {
        problems.push(format!(
            "`{}`: must be above 0",
            key("classifier.timeout_ms")
        ));
    }
    if classifier.cache_ttl_secs > MAX_CACHE_TTL_SECS {
        problems.push(format!(
            "`{}`: at most {MAX_CACHE_TTL_SECS} (30 days)",
            key("classifier.cache_ttl_secs")
        ));
    }
    if routes.len() < 2 {
        problems.push(format!(
            "`{}`: name at least two labels, each with its backend",
            key("routes")
        ));
    }
    let mut spec_routes = Vec::new();
    let mut seen = HashSet::new();
    for (label, target) in routes {
        // Answers are matched without regard to case, so two such labels would be one.
        if !seen.insert(label.to_lowercase()) {
            problems.push(format!(
                "`{}`: label `{label}` differs from another only in case",
                key("routes")
            ));
        }
        // Labels travel in a prompt and come back in JSON: plain, trimmed, one line.
        if label.trim() != label || label.is_empty() || label.contains(['\n', '\r']) {
            problems.push(format!(
                "`{}`: label `{label}` must be non-empty, trimmed and on one line",
                key("routes")
            ));
        }
        if !candidates.is_empty() && !candidates.contains(target) {
            problems.push(format!(
                "`{}`: label `{label}` routes to `{target}`, which is not among the rule's candidates",
                key("routes")
            ));
        }
        match catalog.iter().find(|b| b.id.as_str() == target) {
            Some(b) => spec_routes.push((label.clone(), b.id.clone())),
            None => problems.push(format!(
                "`{}`: backend `{target}` is not in the catalog",
                key("routes")
            )),
        }
    }
    match backend {
        Some(backend) if problems.is_empty() => Ok(ClassifierSpec {
            backend,
            instruction: classifier.instruction.trim().to_owned(),
            routes: spec_routes,
            timeout: Duration::from_millis(classifier.timeout_ms),
            cache_ttl: Duration::from_secs(classifier.cache_ttl_secs),
        }),
        _ => Err(problems),
    }
}

/// Parses and validates a policy against `catalog`.
pub fn load_policy(text: &str, origin: &str, catalog: &[Backend]) -> Result<Policy, PolicyError> {
    let fail = |problems| PolicyError {
        origin: origin.to_owned(),
        problems,
    };
    let raw: RawPolicy = toml::from_str(text).map_err(|error| fail(vec![error.to_string()]))?;
    let known: HashSet<&str> = catalog.iter().map(|b| b.id.as_str()).collect();
    let mut problems = Vec::new();
    let mut names = HashSet::new();
    let mut rules = Vec::new();
    if raw.version.trim().is_empty() {
        problems.push("`version` must not be empty".to_owned());
    }
    if raw.rules.is_empty() {
        problems.push("`rules` must hold at least one rule".to_owned());
    }
    for (i, rule) in raw.rules.into_iter().enumerate() {
        let key = |field: &str| format!("rules[{i}].{field}");
        if !names.insert(rule.name.clone()) {
            problems.push(format!(
                "`{}`: rule name `{}` is used twice",
                key("name"),
                rule.name
            ));
        }
        let classifying = matches!(rule.strategy, RawStrategy::LlmClassify);
        if !classifying && (rule.classifier.is_some() || !rule.routes.is_empty()) {
            problems.push(format!(
                "`{}`: only an llm_classify rule takes `classifier` and `routes`",
                key("strategy")
            ));
        }
        let classified = if classifying {
            classifier_spec(
                i,
                rule.classifier.as_ref(),
                &rule.routes,
                &rule.candidates,
                catalog,
            )
            .map_err(|found| problems.extend(found))
            .ok()
        } else {
            None
        };
        let mut backend = |field: String, id: &str| -> Option<BackendId> {
            if known.contains(id) {
                BackendId::new(id).ok()
            } else {
                problems.push(format!("`{field}`: backend `{id}` is not in the catalog"));
                None
            }
        };
        let candidates: Vec<BackendId> = rule
            .candidates
            .iter()
            .filter_map(|id| backend(key("candidates"), id))
            .collect();
        let fallbacks: Vec<BackendId> = rule
            .fallbacks
            .iter()
            .filter_map(|id| backend(key("fallbacks"), id))
            .collect();
        let strategy = match (rule.strategy, &rule.pin, rule.weights.is_empty()) {
            (RawStrategy::LlmClassify, None, true) => classified.map(RuleStrategy::Classify),
            (RawStrategy::Pinned, Some(pin), true) => {
                backend(key("pin"), pin).map(RuleStrategy::Pinned)
            }
            (RawStrategy::Weighted, None, false) => {
                let weights: Vec<(BackendId, u32)> = rule
                    .weights
                    .iter()
                    .filter_map(|(id, w)| backend(key("weights"), id).map(|b| (b, *w)))
                    .collect();
                if rule.weights.values().all(|w| *w == 0) {
                    problems.push(format!(
                        "`{}`: at least one weight must be above 0",
                        key("weights")
                    ));
                }
                Some(RuleStrategy::Weighted(weights))
            }
            (RawStrategy::Cheapest, None, true) => Some(RuleStrategy::Cheapest),
            (RawStrategy::Fastest, None, true) => Some(RuleStrategy::Fastest),
            (RawStrategy::MostAccurate, None, true) => Some(RuleStrategy::MostAccurate),
            (RawStrategy::Pinned, None, _) => {
                problems.push(format!("`{}`: a pinned rule needs `pin`", key("pin")));
                None
            }
            (RawStrategy::Weighted, _, true) => {
                problems.push(format!(
                    "`{}`: a weighted rule needs `weights`",
                    key("weights")
                ));
                None
            }
            (_, Some(_), _) => {
                problems.push(format!("`{}`: only a pinned rule takes `pin`", key("pin")));
                None
            }
            (_, None, false) => {
                problems.push(format!(
                    "`{}`: only a weighted rule takes `weights`",
                    key("weights")
                ));
                None
            }
        };
        let mut names_of = |field: &str, values: &[String], make: fn(&str) -> bool| {
            for value in values {
                if !make(value) {
                    problems.push(format!("`{}`: `{value}` is not a valid name", key(field)));
                }
            }
        };
        names_of("match.plans", &rule.matcher.plans, |v| {
            PlanName::new(v).is_ok()
        });
        names_of("match.tenants", &rule.matcher.tenants, |v| {
            TenantId::new(v).is_ok()
        });
        if let Some(q) = rule.constraints.min_quality
            && !(0.0..=1.0).contains(&q)
        {
            problems.push(format!(
                "`{}`: must be between 0 and 1",
                key("constraints.min_quality")
            ));
        }
        let Some(strategy) = strategy else {
            continue;
        };
        rules.push(Rule {
            name: rule.name,
            matcher: Match {
                tasks: rule.matcher.tasks,
                plans: rule
                    .matcher
                    .plans
                    .iter()
                    .filter_map(|p| PlanName::new(p.as_str()).ok())
                    .collect(),
                tiers: rule.matcher.tiers,
                tenants: rule
                    .matcher
                    .tenants
                    .iter()
                    .filter_map(|t| TenantId::new(t.as_str()).ok())
                    .collect(),
                tags_any: rule.matcher.tags_any,
                min_input_bytes: rule.matcher.min_input_bytes,
                max_input_bytes: rule.matcher.max_input_bytes,
            },
            strategy,
            candidates,
            constraints: Constraints {
                max_cost_usd: rule.constraints.max_cost_usd,
                max_latency_ms: rule.constraints.max_latency_ms,
                min_quality: rule.constraints.min_quality,
            },
            fallbacks,
            honor_hints: rule.honor_hints,
        });
    }
    let mut budgets = Vec::new();
    for (i, budget) in raw.budgets.into_iter().enumerate() {
        let key = |field: &str| format!("budgets[{i}].{field}");
        let scope = match (&budget.tenant, &budget.plan) {
            (Some(tenant), None) => TenantId::new(tenant.as_str())
                .map(BudgetScope::Tenant)
                .map_err(|e| format!("`{}`: {e}", key("tenant"))),
            (None, Some(plan)) => PlanName::new(plan.as_str())
                .map(BudgetScope::Plan)
                .map_err(|e| format!("`{}`: {e}", key("plan"))),
            (Some(_), Some(_)) | (None, None) => Err(format!(
                "`budgets[{i}]`: name exactly one of `tenant` and `plan`"
            )),
        };
        if budget.daily_usd.is_none() && budget.monthly_usd.is_none() {
            problems.push(format!(
                "`budgets[{i}]`: set `daily_usd`, `monthly_usd` or both"
            ));
        }
        for (field, limit) in [
            ("daily_usd", budget.daily_usd),
            ("monthly_usd", budget.monthly_usd),
        ] {
            if limit.is_some_and(|l| l < Decimal::ZERO) {
                problems.push(format!("`{}`: must not be negative", key(field)));
            }
        }
        if budget.reserve_for_secs > MAX_RESERVE_FOR_SECS {
            problems.push(format!(
                "`{}`: at most {MAX_RESERVE_FOR_SECS} (a day)",
                key("reserve_for_secs")
            ));
        }
        match scope {
            Ok(scope) => budgets.push(Budget {
                scope,
                daily_usd: budget.daily_usd,
                monthly_usd: budget.monthly_usd,
                on_exceed: match budget.on_exceed {
                    RawOnExceed::Downgrade => OnExceed::Downgrade,
                    RawOnExceed::Reject => OnExceed::Reject,
                },
                reserve_for: Duration::from_secs(budget.reserve_for_secs),
            }),
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() {
        Ok(Policy {
            version: raw.version,
            rules,
            budgets,
        })
    } else {
        Err(fail(problems))
    }
}

#[cfg(test)]
mod tests {
    use switchyard_core::config::Config;

    use super::*;

    fn catalog() -> Vec<Backend> {
        let text = include_str!("../../../switchyard.example.toml");
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        Config::from_parts(text, "example", &[], Some(&root))
            .unwrap()
            .backends
    }

    #[test]
    fn the_default_policy_is_valid_for_the_example_catalog() {
        let policy = load_policy(DEFAULT_POLICY_TOML, "default", &catalog()).unwrap();
        assert!(policy.rules.len() >= 5);
        assert_eq!(policy.rules.last().unwrap().name, "default");
    }

    #[test]
    fn every_problem_is_named_by_its_key() {
        let text = r#"
            version = "v"
            [[rules]]
            name = "a"
            strategy = "pinned"
            [[rules]]
            name = "a"
            strategy = "weighted"
            weights = { nope = 1 }
            fallbacks = ["ghost"]
            [[rules]]
            name = "b"
            strategy = "cheapest"
            pin = "gpt-5"
            match = { plans = ["Pro!"] }
            [[budgets]]
            plan = "pro"
            daily_usd = "-1"
            reserve_for_secs = 86401
        "#;
        let error = load_policy(text, "test", &catalog()).unwrap_err();
        let all = error.problems.join("\n");
        for needle in [
            "`rules[0].pin`: a pinned rule needs `pin`",
            "`rules[1].name`: rule name `a` is used twice",
            "`rules[1].weights`: backend `nope` is not in the catalog",
            "`rules[1].fallbacks`: backend `ghost` is not in the catalog",
            "`rules[2].pin`: only a pinned rule takes `pin`",
            "`rules[2].match.plans`: `Pro!` is not a valid name",
            "`budgets[0].daily_usd`: must not be negative",
            "`budgets[0].reserve_for_secs`: at most 86400 (a day)",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn a_classifying_rule_is_checked_against_the_catalog() {
        let good = r#"
            version = "v"
            [[rules]]
            name = "triage"
            strategy = "llm_classify"
            classifier = { backend = "gpt-4.1-nano", instruction = "How complex is this request?", timeout_ms = 800 }
            routes = { simple = "gpt-4o-mini", complex = "gpt-5" }
        "#;
        let policy = load_policy(good, "test", &catalog()).unwrap();
        let RuleStrategy::Classify(spec) = &policy.rules[0].strategy else {
            panic!("{:?}", policy.rules[0].strategy);
        };
        assert_eq!(spec.backend.as_str(), "gpt-4.1-nano");
        assert_eq!(spec.timeout, Duration::from_millis(800));
        assert_eq!(spec.cache_ttl, Duration::from_secs(3_600));
        assert_eq!(spec.labels().collect::<Vec<_>>(), ["complex", "simple"]);

        let bad = r#"
            version = "v"
            [[rules]]
            name = "a"
            strategy = "llm_classify"
            classifier = { backend = "yolov8n-cpu", instruction = " ", timeout_ms = 0 }
            routes = { " simple" = "ghost" }
            [[rules]]
            name = "b"
            strategy = "llm_classify"
            [[rules]]
            name = "c"
            strategy = "cheapest"
            routes = { x = "gpt-5" }
            [[rules]]
            name = "d"
            strategy = "llm_classify"
            candidates = ["gpt-4o-mini"]
            classifier = { backend = "nope", instruction = "?" }
            routes = { simple = "gpt-4o-mini", complex = "gpt-5" }
            [[rules]]
            name = "e"
            strategy = "llm_classify"
            classifier = { backend = "gpt-4.1-nano", instruction = "?", cache_ttl_secs = 18446744073709551615 }
            routes = { simple = "gpt-4o-mini", Simple = "gpt-5" }
        "#;
        let error = load_policy(bad, "test", &catalog()).unwrap_err();
        let all = error.problems.join("\n");
        for needle in [
            "`rules[0].classifier.backend`: backend `yolov8n-cpu` is not an LLM backend",
            "`rules[0].classifier.instruction`: must not be empty",
            "`rules[0].classifier.timeout_ms`: must be above 0",
            "`rules[0].routes`: name at least two labels",
            "`rules[0].routes`: label ` simple` must be non-empty, trimmed and on one line",
            "`rules[0].routes`: backend `ghost` is not in the catalog",
            "`rules[1].classifier`: an llm_classify rule needs `classifier`",
            "`rules[2].strategy`: only an llm_classify rule takes `classifier` and `routes`",
            "`rules[3].classifier.backend`: backend `nope` is not in the catalog",
            "`rules[3].routes`: label `complex` routes to `gpt-5`, which is not among the rule's candidates",
            "`rules[4].classifier.cache_ttl_secs`: at most 2592000 (30 days)",
            "`rules[4].routes`: label `simple` differs from another only in case",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn the_commented_classifier_example_is_valid() {
        let start = DEFAULT_POLICY_TOML.find("# [[rules]]").unwrap();
        let rule: String = DEFAULT_POLICY_TOML[start..]
            .lines()
            .map(|line| line.strip_prefix("# ").unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let policy =
            load_policy(&format!("version = \"v\"\n{rule}"), "example", &catalog()).unwrap();
        assert!(matches!(
            policy.rules[0].strategy,
            RuleStrategy::Classify(_)
        ));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = load_policy(
            "version = \"v\"\n[[rules]]\nname = \"a\"\nstrategy = \"cheapest\"\nstrategey = \"x\"\n",
            "test",
            &catalog(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("strategey"), "{error}");
    }
}
