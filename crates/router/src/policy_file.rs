//! The policy as written (TOML), validated against the backend catalog.
//!
//! A policy that references an unknown backend, pins without a pin or splits without weights
//! is refused with every problem named by its key, so a reload can keep the old policy and say
//! exactly why.

use std::collections::{BTreeMap, HashSet};

use rust_decimal::Decimal;
use serde::Deserialize;
use switchyard_core::config::Backend;
use switchyard_core::contracts::TaskKind;
use switchyard_core::{BackendId, PlanName, TenantId, Tier};

use crate::policy::{
    Budget, BudgetScope, Constraints, Match, OnExceed, Policy, Rule, RuleStrategy,
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
}

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
        match scope {
            Ok(scope) => budgets.push(Budget {
                scope,
                daily_usd: budget.daily_usd,
                monthly_usd: budget.monthly_usd,
                on_exceed: match budget.on_exceed {
                    RawOnExceed::Downgrade => OnExceed::Downgrade,
                    RawOnExceed::Reject => OnExceed::Reject,
                },
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
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
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
