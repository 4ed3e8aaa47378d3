//! Spend budgets in the decision: pure, like the policy itself.
//!
//! The check is made on the backend actually chosen — fallbacks included — and a downgrade
//! re-decides with the remaining budget as a hard cost limit, so neither a fallback nor a
//! downgrade is chosen past the budget (LiteLLM has charged over-budget keys through
//! fallbacks), and the fallbacks a decision hands on keep within the same limit.
//!
//! Budgets are soft by what is in flight: spend moves when workers finish (and the router
//! caches it for a few seconds), so jobs routed meanwhile are not reserved against it. A
//! reservation per routed estimate is the next step.

use rust_decimal::Decimal;
use switchyard_core::contracts::{ErrorClass, Optimize};
use switchyard_core::{PlanName, TenantId};

use crate::policy::{
    BackendState, Budget, BudgetScope, Choice, JobFacts, OnExceed, Policy, decide,
};

/// What a tenant has spent so far, in USD.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spent {
    pub day: Decimal,
    pub month: Decimal,
}

/// Why a job is not routed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub class: ErrorClass,
    pub reason: String,
}

/// The budget that applies: the tenant's own, else its plan's.
pub fn budget_for<'a>(
    budgets: &'a [Budget],
    tenant: &TenantId,
    plan: &PlanName,
) -> Option<&'a Budget> {
    budgets
        .iter()
        .find(|b| b.scope == BudgetScope::Tenant(tenant.clone()))
        .or_else(|| {
            budgets
                .iter()
                .find(|b| b.scope == BudgetScope::Plan(plan.clone()))
        })
}

/// Money left under `budget`, and which limit binds (`daily`, `monthly`).
pub fn remaining(budget: &Budget, spent: Spent) -> Option<(Decimal, &'static str)> {
    let day = budget.daily_usd.map(|limit| (limit - spent.day, "daily"));
    let month = budget
        .monthly_usd
        .map(|limit| (limit - spent.month, "monthly"));
    match (day, month) {
        (Some(d), Some(m)) => Some(if m.0 < d.0 { m } else { d }),
        (d, m) => d.or(m),
    }
}

/// Why the tenant has nothing left to spend under its budget, if so: what a paid call made on
/// the job's behalf before the decision (a classifier's) is not made for.
pub fn exhausted(job: &JobFacts, policy: &Policy, spent: Option<Spent>) -> Option<String> {
    let budget = budget_for(&policy.budgets, &job.tenant, &job.plan)?;
    let (left, which) = remaining(budget, spent?)?;
    (left <= Decimal::ZERO).then(|| format!("tenant {} has no {which} budget left", job.tenant))
}

/// Decides where `job` goes under `policy`, within the tenant's budget given what it `spent`.
pub fn route(
    job: &JobFacts,
    policy: &Policy,
    backends: &[BackendState],
    spent: Option<Spent>,
) -> Result<Choice, Refusal> {
    let decided = decide(job, policy, backends).map_err(|no_route| Refusal {
        class: ErrorClass::NoRoute,
        reason: no_route.trace,
    })?;
    let Some(budget) = budget_for(&policy.budgets, &job.tenant, &job.plan) else {
        return Ok(decided);
    };
    let Some((left, which)) = spent.and_then(|spent| remaining(budget, spent)) else {
        return Ok(decided);
    };
    if decided.estimated_cost_usd <= left {
        return Ok(decided);
    }
    let over = format!(
        "tenant {} has ${} left of its {which} budget; {} would cost ${}",
        job.tenant,
        left.max(Decimal::ZERO),
        decided.backend_id,
        decided.estimated_cost_usd
    );
    match budget.on_exceed {
        OnExceed::Reject => Err(Refusal {
            class: ErrorClass::BudgetExceeded,
            reason: over,
        }),
        OnExceed::Downgrade => {
            let mut cheaper = job.clone();
            let limit = left.max(Decimal::ZERO);
            cheaper.max_cost_usd = Some(cheaper.max_cost_usd.map_or(limit, |m| m.min(limit)));
            cheaper.optimize = Some(Optimize::Cost);
            cheaper.pinned = None;
            match decide(&cheaper, policy, backends) {
                Ok(mut choice) => {
                    choice.reason = format!("{}; downgraded: {over}", choice.reason);
                    Ok(choice)
                }
                Err(no_route) => Err(Refusal {
                    class: ErrorClass::BudgetExceeded,
                    reason: format!("{over}; no cheaper backend fits: {}", no_route.trace),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use switchyard_core::contracts::TaskKind;
    use switchyard_core::{BackendId, QueueName, Tier};

    use super::*;
    use crate::policy::{Constraints, Health, Match, Rule, RuleStrategy};

    fn usd(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    fn backend(id: &str, cost: &str, quality: f64) -> BackendState {
        let id = BackendId::new(id).unwrap();
        BackendState {
            queue: QueueName::backend(&id),
            id,
            tasks: vec![TaskKind::Chat],
            quality,
            latency_ms: 500,
            cost_usd: usd(cost),
            health: Health::Ok,
        }
    }

    fn policy(on_exceed: OnExceed, fallbacks: &[&str]) -> Policy {
        Policy {
            version: "t".into(),
            rules: vec![Rule {
                name: "best".into(),
                matcher: Match::default(),
                strategy: RuleStrategy::MostAccurate,
                candidates: vec![BackendId::new("premium").unwrap()],
                constraints: Constraints::default(),
                fallbacks: fallbacks
                    .iter()
                    .map(|f| BackendId::new(*f).unwrap())
                    .collect(),
                honor_hints: true,
            }],
            budgets: vec![Budget {
                scope: BudgetScope::Plan(PlanName::new("pro").unwrap()),
                daily_usd: Some(usd("1.00")),
                monthly_usd: Some(usd("10.00")),
                on_exceed,
            }],
        }
    }

    fn job() -> JobFacts {
        JobFacts {
            task: TaskKind::Chat,
            plan: PlanName::new("pro").unwrap(),
            tier: Tier::Standard,
            tenant: TenantId::new("acme").unwrap(),
            tags: vec![],
            input_bytes: 100,
            optimize: None,
            max_cost_usd: None,
            deadline_ms: None,
            pinned: None,
            split_key: 7,
            verdicts: Vec::new(),
        }
    }

    fn check(on_exceed: OnExceed, fallbacks: &[&str], spent: Option<Spent>) -> String {
        let backends = [
            backend("premium", "0.30", 0.9),
            backend("mid", "0.05", 0.6),
            backend("small", "0.01", 0.4),
        ];
        match route(&job(), &policy(on_exceed, fallbacks), &backends, spent) {
            Ok(choice) => format!("{} ({})", choice.backend_id, choice.reason),
            Err(refusal) => format!("{}: {}", refusal.class, refusal.reason),
        }
    }

    fn spent(day: &str, month: &str) -> Option<Spent> {
        Some(Spent {
            day: usd(day),
            month: usd(month),
        })
    }

    #[test]
    fn within_budget_the_policy_decides() {
        assert!(check(OnExceed::Reject, &[], spent("0.10", "2")).starts_with("premium ("));
        // Unknown spend (the ledger is unreachable) does not block routing.
        assert!(check(OnExceed::Reject, &[], None).starts_with("premium ("));
    }

    #[test]
    fn over_budget_rejects_when_the_policy_says_so() {
        let out = check(OnExceed::Reject, &[], spent("0.80", "2"));
        assert_eq!(
            out,
            "budget_exceeded: tenant acme has $0.20 left of its daily budget; premium would cost $0.30"
        );
    }

    #[test]
    fn a_budget_is_exhausted_only_when_nothing_is_left() {
        let policy = policy(OnExceed::Reject, &[]);
        let at = |day: &str, month: &str| exhausted(&job(), &policy, spent(day, month));
        assert_eq!(at("0.99", "2"), None);
        assert_eq!(
            at("1.00", "2").as_deref(),
            Some("tenant acme has no daily budget left")
        );
        assert_eq!(
            at("0.10", "10.50").as_deref(),
            Some("tenant acme has no monthly budget left")
        );
        assert_eq!(exhausted(&job(), &policy, None), None);
        let mut other = job();
        other.plan = PlanName::new("free").unwrap();
        assert_eq!(exhausted(&other, &policy, spent("5", "50")), None);
    }

    #[test]
    fn the_tighter_limit_binds() {
        let out = check(OnExceed::Reject, &[], spent("0.10", "9.95"));
        assert!(out.contains("$0.05 left of its monthly budget"), "{out}");
    }

    #[test]
    fn downgrades_go_through_the_fallbacks_under_the_remaining_budget() {
        // The rule only names `premium`; its fallbacks are tried under the same cost limit, and
        // a fallback over the budget is skipped, never charged.
        let out = check(OnExceed::Downgrade, &["mid", "small"], spent("0.97", "2"));
        assert!(out.starts_with("small ("), "{out}");
        assert!(
            out.contains("downgraded: tenant acme has $0.03 left"),
            "{out}"
        );
        let out = check(OnExceed::Downgrade, &["mid", "small"], spent("0.93", "2"));
        assert!(out.starts_with("mid ("), "{out}");
    }

    #[test]
    fn handed_on_fallbacks_keep_within_the_remaining_budget() {
        let backends = [
            backend("premium", "0.30", 0.9),
            backend("mid", "0.05", 0.6),
            backend("small", "0.01", 0.4),
        ];
        let policy = policy(OnExceed::Downgrade, &["mid", "small"]);
        let choice = route(&job(), &policy, &backends, spent("0.97", "2")).unwrap();
        assert_eq!(choice.backend_id.as_str(), "small");
        // `mid` would cost $0.05 of the $0.03 left: a worker must not fall back to it.
        assert!(choice.fallbacks.is_empty(), "{:?}", choice.fallbacks);
        let roomy = route(&job(), &policy, &backends, spent("0", "0")).unwrap();
        assert_eq!(roomy.backend_id.as_str(), "premium");
        let names: Vec<&str> = roomy.fallbacks.iter().map(BackendId::as_str).collect();
        assert_eq!(names, ["mid", "small"]);
    }

    #[test]
    fn a_downgrade_with_nothing_cheap_enough_is_a_budget_refusal() {
        let out = check(OnExceed::Downgrade, &["mid"], spent("0.995", "2"));
        assert!(
            out.starts_with("budget_exceeded: tenant acme has $0.005 left"),
            "{out}"
        );
        let out = check(OnExceed::Downgrade, &["mid", "small"], spent("1.50", "2"));
        assert!(
            out.starts_with("budget_exceeded: tenant acme has $0 left"),
            "{out}"
        );
    }

    #[test]
    fn a_tenant_budget_wins_over_its_plan_budget() {
        let mut policy = policy(OnExceed::Reject, &[]);
        policy.budgets.insert(
            0,
            Budget {
                scope: BudgetScope::Tenant(TenantId::new("acme").unwrap()),
                daily_usd: Some(usd("100")),
                monthly_usd: None,
                on_exceed: OnExceed::Reject,
            },
        );
        let found = budget_for(
            &policy.budgets,
            &TenantId::new("acme").unwrap(),
            &PlanName::new("pro").unwrap(),
        );
        assert_eq!(found.unwrap().daily_usd, Some(usd("100")));
        let other = budget_for(
            &policy.budgets,
            &TenantId::new("globex").unwrap(),
            &PlanName::new("pro").unwrap(),
        );
        assert_eq!(other.unwrap().daily_usd, Some(usd("1.00")));
        assert!(
            budget_for(
                &policy.budgets,
                &TenantId::new("globex").unwrap(),
                &PlanName::new("free").unwrap()
            )
            .is_none()
        );
    }
}
