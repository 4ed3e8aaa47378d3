//! Spend budgets in the decision: pure, like the policy itself.
//!
//! The check is made on the backend actually chosen — fallbacks included — and a downgrade
//! re-decides with the remaining budget as a hard cost limit, so neither a fallback nor a
//! downgrade is chosen past the budget (LiteLLM has charged over-budget keys through
//! fallbacks), and the fallbacks a decision hands on keep within the same limit.
//!
//! The ledger's totals move only when workers finish (and the router caches them for a few
//! seconds), so each routed job's estimated cost is held against its tenant's budget for the
//! budget's `reserve_for` ([`Reservations`]): a burst routed within one spend read cannot all
//! pass a budget that pays for only some of it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

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
    /// Estimates of jobs routed lately whose charges the totals may not show yet; counted
    /// against the day and the month alike.
    pub in_flight: Decimal,
}

/// Estimated costs of the jobs a router routed lately, per tenant, in one-second buckets (a
/// busy tenant holds a few dozen entries, not one per job).
///
/// A reservation is held for the budget's `reserve_for` after routing, whether or not its
/// charge has landed meanwhile: a charge already in the totals counts twice until then, which
/// errs on the budget's side. Each router holds its own; routers sharing tenants each see
/// only what they routed.
#[derive(Debug, Default)]
pub struct Reservations {
    by_tenant: HashMap<TenantId, Held>,
    swept_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Held {
    /// (bucket start, estimates reserved in it), oldest first.
    buckets: VecDeque<(Instant, Decimal)>,
    total: Decimal,
    window: Duration,
}

const BUCKET: Duration = Duration::from_secs(1);

impl Held {
    /// Drops the buckets whose newest reservation is older than `window`.
    fn expire(&mut self, now: Instant) {
        while let Some(&(start, sum)) = self.buckets.front() {
            if now.saturating_duration_since(start) < self.window + BUCKET {
                break;
            }
            self.buckets.pop_front();
            self.total -= sum;
        }
    }
}

impl Reservations {
    /// Holds `cost` against `tenant` for `window`.
    pub fn reserve(&mut self, tenant: &TenantId, cost: Decimal, window: Duration, now: Instant) {
        if cost <= Decimal::ZERO || window.is_zero() {
            return;
        }
        self.sweep(now);
        let held = self.by_tenant.entry(tenant.clone()).or_default();
        held.window = window;
        match held.buckets.back_mut() {
            Some((start, sum)) if now.saturating_duration_since(*start) < BUCKET => *sum += cost,
            _ => held.buckets.push_back((now, cost)),
        }
        held.total += cost;
    }

    /// What `tenant`'s reservations of the last `window` add up to.
    pub fn held(&mut self, tenant: &TenantId, window: Duration, now: Instant) -> Decimal {
        let Some(held) = self.by_tenant.get_mut(tenant) else {
            return Decimal::ZERO;
        };
        held.window = window;
        held.expire(now);
        held.total
    }

    /// `spent` with what `tenant` holds in flight.
    pub fn add_to(
        &mut self,
        spent: Spent,
        tenant: &TenantId,
        window: Duration,
        now: Instant,
    ) -> Spent {
        Spent {
            in_flight: self.held(tenant, window, now),
            ..spent
        }
    }

    /// Tenants that stopped sending are forgotten, once a minute.
    fn sweep(&mut self, now: Instant) {
        if self
            .swept_at
            .is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(60))
        {
            return;
        }
        self.swept_at = Some(now);
        self.by_tenant.retain(|_, held| {
            held.expire(now);
            !held.buckets.is_empty()
        });
    }

    /// Tenants with something held.
    pub fn tenants(&self) -> usize {
        self.by_tenant.len()
    }
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
    let day = budget
        .daily_usd
        .map(|limit| (limit - spent.day - spent.in_flight, "daily"));
    let month = budget
        .monthly_usd
        .map(|limit| (limit - spent.month - spent.in_flight, "monthly"));
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
    let Some(spent) = spent else {
        return Ok(decided);
    };
    let Some((left, which)) = remaining(budget, spent) else {
        return Ok(decided);
    };
    if decided.estimated_cost_usd <= left {
        return Ok(decided);
    }
    let held = if spent.in_flight > Decimal::ZERO {
        format!(" (${} is held for jobs in flight)", spent.in_flight)
    } else {
        String::new()
    };
    let over = format!(
        "tenant {} has ${} left of its {which} budget{held}; {} would cost ${}",
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
                reserve_for: Duration::from_secs(120),
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
            in_flight: Decimal::ZERO,
        })
    }

    #[test]
    fn what_is_in_flight_counts_against_the_day_and_the_month() {
        let held = Spent {
            in_flight: usd("0.75"),
            ..spent("0.10", "2").unwrap()
        };
        // $0.15 left of the day: premium ($0.30) does not fit, mid ($0.05) does.
        let routed = check(OnExceed::Downgrade, &["mid", "small"], Some(held));
        assert!(routed.starts_with("mid ("), "{routed}");
        assert!(
            routed.contains("$0.15 left of its daily budget ($0.75 is held for jobs in flight)"),
            "{routed}"
        );
        let month = Spent {
            in_flight: usd("0.05"),
            ..spent("0", "9.90").unwrap()
        };
        let refused = check(OnExceed::Reject, &[], Some(month));
        assert_eq!(
            refused,
            "budget_exceeded: tenant acme has $0.05 left of its monthly budget ($0.05 is held \
             for jobs in flight); premium would cost $0.30"
        );
    }

    #[test]
    fn reservations_are_held_for_their_window_then_let_go() {
        let acme = TenantId::new("acme").unwrap();
        let other = TenantId::new("other").unwrap();
        let window = Duration::from_secs(10);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut reservations = Reservations::default();
        reservations.reserve(&acme, usd("0.30"), window, at(0));
        reservations.reserve(&acme, usd("0.20"), window, at(900));
        reservations.reserve(&acme, usd("0.05"), window, at(2_000));
        reservations.reserve(&other, usd("1"), window, at(0));
        // Nothing costs nothing, and a zero window holds nothing.
        reservations.reserve(&acme, Decimal::ZERO, window, at(2_000));
        reservations.reserve(&acme, usd("5"), Duration::ZERO, at(2_000));
        assert_eq!(reservations.held(&acme, window, at(2_000)), usd("0.55"));
        assert_eq!(reservations.held(&other, window, at(2_000)), usd("1"));
        // The first bucket (0.30 and 0.20, from 0 and 0.9 s) goes once its newest could be
        // older than the window: at 11 s, not before.
        assert_eq!(reservations.held(&acme, window, at(10_999)), usd("0.55"));
        assert_eq!(reservations.held(&acme, window, at(11_000)), usd("0.05"));
        assert_eq!(reservations.held(&acme, window, at(13_000)), Decimal::ZERO);
        let spent = reservations.add_to(spent("1", "2").unwrap(), &other, window, at(500));
        assert_eq!((spent.day, spent.in_flight), (usd("1"), usd("1")));
        // A tenant that stopped sending is forgotten by the next sweep, a minute on.
        reservations.reserve(&acme, usd("0.01"), window, at(60_000));
        reservations.reserve(&acme, usd("0.01"), window, at(120_000));
        assert_eq!(reservations.tenants(), 1);
        assert_eq!(
            reservations.held(&TenantId::new("nobody").unwrap(), window, at(0)),
            Decimal::ZERO
        );
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
                reserve_for: Duration::from_secs(120),
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
