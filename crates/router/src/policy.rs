//! Routing policy: ordered rules, each picking a strategy over eligible backends, with
//! constraints and a fallback order.
//!
//! Architecture invariant: this module does no I/O and reads no clock; everything it needs is
//! in its arguments.

use std::fmt::Write as _;
use std::time::Duration;

use rust_decimal::Decimal;
use switchyard_core::contracts::{Optimize, Strategy, TaskKind};
use switchyard_core::{BackendId, PlanName, QueueName, TenantId, Tier};

/// A policy: the first rule that matches a job decides.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub version: String,
    pub rules: Vec<Rule>,
    /// Spend limits; a tenant's own budget wins over its plan's.
    pub budgets: Vec<Budget>,
}

/// A spend limit for a tenant or for every tenant of a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    pub scope: BudgetScope,
    pub daily_usd: Option<Decimal>,
    pub monthly_usd: Option<Decimal>,
    pub on_exceed: OnExceed,
    /// How long a routed job's estimated cost is held against the budget
    /// ([`crate::budget::Reservations`]): about the longest a job waits and runs before its
    /// charge is in the ledger's totals.
    pub reserve_for: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BudgetScope {
    Tenant(TenantId),
    Plan(PlanName),
}

/// What happens to a job that its backend's cost would take over budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExceed {
    /// Route to the cheapest backend the remaining budget still covers, or reject.
    Downgrade,
    Reject,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    pub matcher: Match,
    pub strategy: RuleStrategy,
    /// Backends this rule may choose from; empty means every backend serving the task.
    pub candidates: Vec<BackendId>,
    pub constraints: Constraints,
    /// Tried in order when no candidate is eligible.
    pub fallbacks: Vec<BackendId>,
    /// Whether the job's `optimize` hint may replace the rule's strategy.
    pub honor_hints: bool,
}

/// Conditions on a job; an empty list matches anything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Match {
    pub tasks: Vec<TaskKind>,
    pub plans: Vec<PlanName>,
    pub tiers: Vec<Tier>,
    pub tenants: Vec<TenantId>,
    /// Matches when the job has any of these tags.
    pub tags_any: Vec<String>,
    pub min_input_bytes: Option<u64>,
    pub max_input_bytes: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RuleStrategy {
    Cheapest,
    Fastest,
    MostAccurate,
    Pinned(BackendId),
    /// A deterministic split by job: `(backend, weight)`.
    Weighted(Vec<(BackendId, u32)>),
    /// A classifier LLM labels the job; the label names the backend.
    Classify(ClassifierSpec),
}

/// An `llm_classify` rule's classifier: who answers, what it is asked, and where each label
/// routes.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassifierSpec {
    /// The catalog backend (an LLM) that classifies.
    pub backend: BackendId,
    /// What the classifier is asked about the job, e.g. how complex the request is.
    pub instruction: String,
    /// `(label, backend)`, in the order the labels are offered.
    pub routes: Vec<(String, BackendId)>,
    /// Past this the rule is skipped and the next matching rule decides.
    pub timeout: Duration,
    /// How long an answer is reused for the same content.
    pub cache_ttl: Duration,
}

impl ClassifierSpec {
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|(label, _)| label.as_str())
    }

    fn route_of(&self, label: &str) -> Option<&BackendId> {
        self.routes
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, backend)| backend)
    }
}

/// What a rule's classifier answered for this job: a label it was offered, or why there is
/// none (timed out, unusable answer, no text to classify).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub rule: String,
    pub label: Result<String, String>,
    /// Whether the label came from the cache rather than a call.
    pub cached: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Constraints {
    pub max_cost_usd: Option<Decimal>,
    pub max_latency_ms: Option<u64>,
    pub min_quality: Option<f64>,
}

/// What routing needs to know about a job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobFacts {
    pub task: TaskKind,
    pub plan: PlanName,
    pub tier: Tier,
    pub tenant: TenantId,
    pub tags: Vec<String>,
    pub input_bytes: u64,
    pub optimize: Option<Optimize>,
    pub max_cost_usd: Option<Decimal>,
    pub deadline_ms: Option<u64>,
    pub pinned: Option<BackendId>,
    /// Stable per job (from its id): the same job always lands on the same side of a split.
    pub split_key: u64,
    /// The classifiers' answers so far, one per `llm_classify` rule asked
    /// ([`awaiting_classifier`] says which rule to ask next).
    pub verdicts: Vec<Verdict>,
}

impl JobFacts {
    fn verdict(&self, rule: &str) -> Option<&Verdict> {
        self.verdicts.iter().find(|v| v.rule == rule)
    }
}

/// The `llm_classify` rule whose classifier must answer before [`decide`] can: the first
/// matching rule, when it classifies, has no verdict yet and no usable pin of the job decides
/// it anyway. Rules [`decide`] would pass over (no usable label) are passed over here too, so
/// asking until this is `None` asks exactly the classifiers the decision needs and no other.
pub fn awaiting_classifier<'a>(
    job: &JobFacts,
    policy: &'a Policy,
    backends: &[BackendState],
) -> Option<&'a Rule> {
    for rule in policy
        .rules
        .iter()
        .filter(|rule| matches(&rule.matcher, job))
    {
        let RuleStrategy::Classify(spec) = &rule.strategy else {
            return None;
        };
        if pin_decides(rule, job, backends) {
            return None;
        }
        match job.verdict(&rule.name).map(|v| &v.label) {
            None => return Some(rule),
            Some(Ok(label)) if spec.route_of(label).is_some() => return None,
            Some(_) => {}
        }
    }
    None
}

/// Whether the job's pin decides `rule`: allowed by the rule, serving the task, healthy and
/// within the limits. Such a pin decides the rule before any strategy does, a classifier's
/// included.
fn pin_decides(rule: &Rule, job: &JobFacts, backends: &[BackendState]) -> bool {
    job.pinned.as_ref().is_some_and(|pinned| {
        pin_allowed(rule, pinned)
            && backends.iter().any(|b| {
                &b.id == pinned
                    && b.tasks.contains(&job.task)
                    && refusal(b, &limits_of(rule, job)).is_none()
            })
    })
}

/// A rule lets a pin count where hints count and the pin is one of its candidates (a `free`
/// plan cannot pin its way to a premium model).
fn pin_allowed(rule: &Rule, pinned: &BackendId) -> bool {
    rule.honor_hints && (rule.candidates.is_empty() || rule.candidates.contains(pinned))
}

fn limits_of(rule: &Rule, job: &JobFacts) -> Limits {
    Limits {
        max_cost_usd: min_some(rule.constraints.max_cost_usd, job.max_cost_usd),
        max_latency_ms: min_some(rule.constraints.max_latency_ms, job.deadline_ms),
        min_quality: rule.constraints.min_quality,
    }
}

/// A backend as the router sees it at decision time.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendState {
    pub id: BackendId,
    pub queue: QueueName,
    pub tasks: Vec<TaskKind>,
    pub quality: f64,
    /// Observed (or prior) latency estimate.
    pub latency_ms: u64,
    /// Estimated cost of this job on this backend.
    pub cost_usd: Decimal,
    pub health: Health,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// Too many recent errors: skipped until its cooldown ends.
    Cooling,
    /// Its queue is too deep to take more now.
    Saturated,
}

/// The outcome of a decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub backend_id: BackendId,
    pub queue: QueueName,
    pub rule: String,
    pub strategy: Strategy,
    pub reason: String,
    pub estimated_cost_usd: Decimal,
    pub estimated_latency_ms: u64,
    pub fallbacks: Vec<BackendId>,
}

/// No backend can serve the job; `trace` says what each rule and backend was refused for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoRoute {
    pub trace: String,
}

/// Decides where `job` goes.
pub fn decide(
    job: &JobFacts,
    policy: &Policy,
    backends: &[BackendState],
) -> Result<Choice, NoRoute> {
    // A classifying rule without a usable label stands aside for the next matching rule:
    // the classifier is advice, and the rules below it are what the job gets without it.
    let mut passed = String::new();
    let mut chosen = None;
    for rule in policy
        .rules
        .iter()
        .filter(|rule| matches(&rule.matcher, job))
    {
        if let RuleStrategy::Classify(spec) = &rule.strategy
            && !pin_decides(rule, job, backends)
        {
            match job.verdict(&rule.name).map(|v| &v.label) {
                Some(Ok(label)) if spec.route_of(label).is_some() => {}
                Some(Ok(label)) => {
                    let _ = write!(
                        passed,
                        "rule {} passed over: label `{label}` routes nowhere; ",
                        rule.name
                    );
                    continue;
                }
                Some(Err(why)) => {
                    let _ = write!(
                        passed,
                        "rule {} passed over: classifier {}: {why}; ",
                        rule.name, spec.backend
                    );
                    continue;
                }
                None => {
                    let _ = write!(passed, "rule {} passed over: not classified; ", rule.name);
                    continue;
                }
            }
        }
        chosen = Some(rule);
        break;
    }
    let Some(rule) = chosen else {
        return Err(NoRoute {
            trace: format!(
                "{passed}no rule of policy {} matches the job",
                policy.version
            ),
        });
    };
    match decide_by(rule, job, backends) {
        Ok(mut choice) => {
            if !passed.is_empty() {
                choice.reason.insert_str(0, &passed);
            }
            Ok(choice)
        }
        Err(mut no_route) => {
            no_route.trace.insert_str(0, &passed);
            Err(no_route)
        }
    }
}

/// The decision once `rule` is the one that decides.
fn decide_by(rule: &Rule, job: &JobFacts, backends: &[BackendState]) -> Result<Choice, NoRoute> {
    let mut trace = String::new();
    let _ = write!(trace, "rule {}: ", rule.name);

    let limits = limits_of(rule, job);
    let serves = |b: &&BackendState| b.tasks.contains(&job.task);

    // A job may pin a backend the rule allows; it still has to serve the task, be healthy
    // and keep within the limits (the job's own budget included).
    let pin = job.pinned.as_ref().filter(|pinned| {
        let allowed = pin_allowed(rule, pinned);
        if !allowed {
            let _ = write!(
                trace,
                "job pinned {pinned}, which rule {} does not allow; ",
                rule.name
            );
        }
        allowed
    });
    if let Some(pinned) = pin {
        if let Some(backend) = backends.iter().filter(serves).find(|b| &b.id == pinned) {
            match refusal(backend, &limits) {
                None => {
                    return Ok(choice(
                        backend,
                        rule,
                        Strategy::Pinned,
                        format!("pinned by the job to {pinned}"),
                        &rule.fallbacks,
                    ));
                }
                Some(why) => {
                    let _ = write!(trace, "job pinned {pinned} but it {why}; ");
                }
            }
        } else {
            let _ = write!(
                trace,
                "job pinned {pinned}, which does not serve {}; ",
                job.task.as_str()
            );
        }
    }

    let candidates: Vec<&BackendState> = backends
        .iter()
        .filter(serves)
        .filter(|b| rule.candidates.is_empty() || rule.candidates.contains(&b.id))
        .collect();
    let mut skipped = Vec::new();
    let eligible: Vec<&BackendState> = candidates
        .iter()
        .copied()
        .filter(|b| match refusal(b, &limits) {
            None => true,
            Some(why) => {
                skipped.push(format!("{} {why}", b.id));
                false
            }
        })
        .collect();

    let strategy = effective_strategy(rule, job);
    let picked = match &strategy {
        RuleStrategy::Pinned(id) => eligible.iter().copied().find(|b| &b.id == id),
        RuleStrategy::Weighted(weights) => weighted(&eligible, weights, job.split_key),
        RuleStrategy::Classify(spec) => {
            let routed = job
                .verdict(&rule.name)
                .and_then(|v| v.label.as_ref().ok())
                .and_then(|label| spec.route_of(label));
            routed.and_then(|id| eligible.iter().copied().find(|b| &b.id == id))
        }
        RuleStrategy::Cheapest => eligible.iter().copied().min_by(|a, b| {
            a.cost_usd
                .cmp(&b.cost_usd)
                .then(a.latency_ms.cmp(&b.latency_ms))
        }),
        RuleStrategy::Fastest => eligible.iter().copied().min_by(|a, b| {
            a.latency_ms
                .cmp(&b.latency_ms)
                .then(a.cost_usd.cmp(&b.cost_usd))
        }),
        RuleStrategy::MostAccurate => eligible.iter().copied().max_by(|a, b| {
            a.quality
                .total_cmp(&b.quality)
                .then(b.cost_usd.cmp(&a.cost_usd))
        }),
    };
    let skipped_text = if skipped.is_empty() {
        String::new()
    } else {
        format!("; skipped: {}", skipped.join(", "))
    };
    if let Some(backend) = picked {
        let by = match (&strategy, job.verdict(&rule.name)) {
            (
                RuleStrategy::Classify(spec),
                Some(Verdict {
                    label: Ok(label),
                    cached,
                    ..
                }),
            ) => format!(
                "classifier {}'s label `{label}`{}",
                spec.backend,
                if *cached { " (cached)" } else { "" }
            ),
            _ => strategy_name(&strategy).to_owned(),
        };
        let reason = format!("rule {} → {} by {by}{skipped_text}", rule.name, backend.id);
        let remaining = usable_fallbacks(&rule.fallbacks, &backend.id, backends, job, &limits);
        return Ok(choice(
            backend,
            rule,
            contract_strategy(&strategy),
            reason,
            &remaining,
        ));
    }

    // Fallbacks: the same limits hold (a fallback must not break the budget either).
    for (i, fallback) in rule.fallbacks.iter().enumerate() {
        let Some(backend) = backends.iter().filter(serves).find(|b| &b.id == fallback) else {
            skipped.push(format!(
                "fallback {fallback} does not serve {}",
                job.task.as_str()
            ));
            continue;
        };
        match refusal(backend, &limits) {
            None => {
                let reason = format!(
                    "rule {}: no candidate eligible{skipped_text}; fell back to {}",
                    rule.name, backend.id
                );
                return Ok(choice(
                    backend,
                    rule,
                    Strategy::Fallback,
                    reason,
                    &usable_fallbacks(
                        &rule.fallbacks[i + 1..],
                        &backend.id,
                        backends,
                        job,
                        &limits,
                    ),
                ));
            }
            Some(why) => skipped.push(format!("fallback {fallback} {why}")),
        }
    }
    let _ = write!(
        trace,
        "no eligible backend; {}",
        if skipped.is_empty() {
            format!("none serves {}", job.task.as_str())
        } else {
            skipped.join(", ")
        }
    );
    Err(NoRoute { trace })
}

struct Limits {
    max_cost_usd: Option<Decimal>,
    max_latency_ms: Option<u64>,
    min_quality: Option<f64>,
}

fn min_some<T: Ord + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn refusal(backend: &BackendState, limits: &Limits) -> Option<String> {
    match backend.health {
        Health::Ok => {}
        Health::Cooling => return Some("is cooling down".into()),
        Health::Saturated => return Some("is saturated".into()),
    }
    if let Some(max) = limits.max_cost_usd
        && backend.cost_usd > max
    {
        return Some(format!("costs ${} > ${max}", backend.cost_usd));
    }
    if let Some(max) = limits.max_latency_ms
        && backend.latency_ms > max
    {
        return Some(format!("takes {} ms > {max} ms", backend.latency_ms));
    }
    if let Some(min) = limits.min_quality
        && backend.quality < min
    {
        return Some(format!("quality {} < {min}", backend.quality));
    }
    None
}

fn matches(matcher: &Match, job: &JobFacts) -> bool {
    (matcher.tasks.is_empty() || matcher.tasks.contains(&job.task))
        && (matcher.plans.is_empty() || matcher.plans.contains(&job.plan))
        && (matcher.tiers.is_empty() || matcher.tiers.contains(&job.tier))
        && (matcher.tenants.is_empty() || matcher.tenants.contains(&job.tenant))
        && (matcher.tags_any.is_empty() || matcher.tags_any.iter().any(|t| job.tags.contains(t)))
        && matcher
            .min_input_bytes
            .is_none_or(|min| job.input_bytes >= min)
        && matcher
            .max_input_bytes
            .is_none_or(|max| job.input_bytes <= max)
}

fn effective_strategy(rule: &Rule, job: &JobFacts) -> RuleStrategy {
    match (&rule.strategy, job.optimize, rule.honor_hints) {
        (RuleStrategy::Pinned(_) | RuleStrategy::Weighted(_) | RuleStrategy::Classify(_), _, _)
        | (_, None, _)
        | (_, _, false) => rule.strategy.clone(),
        (_, Some(Optimize::Cost), true) => RuleStrategy::Cheapest,
        (_, Some(Optimize::Latency), true) => RuleStrategy::Fastest,
        (_, Some(Optimize::Accuracy), true) => RuleStrategy::MostAccurate,
    }
}

fn weighted<'a>(
    eligible: &[&'a BackendState],
    weights: &[(BackendId, u32)],
    key: u64,
) -> Option<&'a BackendState> {
    let present: Vec<(&'a BackendState, u64)> = weights
        .iter()
        .filter_map(|(id, w)| {
            eligible
                .iter()
                .find(|b| &b.id == id)
                .map(|b| (*b, u64::from(*w)))
        })
        .filter(|(_, w)| *w > 0)
        .collect();
    let total: u64 = present.iter().map(|(_, w)| w).sum();
    if total == 0 {
        return None;
    }
    let mut point = key % total;
    for (backend, weight) in present {
        if point < weight {
            return Some(backend);
        }
        point -= weight;
    }
    None
}

fn strategy_name(strategy: &RuleStrategy) -> &'static str {
    match strategy {
        RuleStrategy::Cheapest => "lowest cost",
        RuleStrategy::Fastest => "lowest latency",
        RuleStrategy::MostAccurate => "highest quality",
        RuleStrategy::Pinned(_) => "the rule's pin",
        RuleStrategy::Weighted(_) => "weighted split",
        RuleStrategy::Classify(_) => "classifier label",
    }
}

fn contract_strategy(strategy: &RuleStrategy) -> Strategy {
    match strategy {
        RuleStrategy::Cheapest => Strategy::Cheapest,
        RuleStrategy::Fastest => Strategy::Fastest,
        RuleStrategy::MostAccurate => Strategy::MostAccurate,
        RuleStrategy::Pinned(_) => Strategy::Pinned,
        RuleStrategy::Weighted(_) => Strategy::Weighted,
        RuleStrategy::Classify(_) => Strategy::LlmClassify,
    }
}

/// The fallbacks a worker may hand the job on to: those that serve the task and keep within
/// the same limits now, so a fallback later can never break the budget the decision kept.
fn usable_fallbacks(
    fallbacks: &[BackendId],
    chosen: &BackendId,
    backends: &[BackendState],
    job: &JobFacts,
    limits: &Limits,
) -> Vec<BackendId> {
    fallbacks
        .iter()
        .filter(|f| *f != chosen)
        .filter(|f| {
            backends
                .iter()
                .find(|b| b.id == **f)
                .is_some_and(|b| b.tasks.contains(&job.task) && refusal(b, limits).is_none())
        })
        .cloned()
        .collect()
}

fn choice(
    backend: &BackendState,
    rule: &Rule,
    strategy: Strategy,
    reason: String,
    fallbacks: &[BackendId],
) -> Choice {
    Choice {
        backend_id: backend.id.clone(),
        queue: backend.queue.clone(),
        rule: rule.name.clone(),
        strategy,
        reason,
        estimated_cost_usd: backend.cost_usd,
        estimated_latency_ms: backend.latency_ms,
        fallbacks: fallbacks.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn id(s: &str) -> BackendId {
        BackendId::new(s).unwrap()
    }

    fn usd(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    /// (id, tasks, quality, latency ms, cost) → a healthy backend.
    fn backend(
        name: &str,
        task: TaskKind,
        quality: f64,
        latency_ms: u64,
        cost: &str,
    ) -> BackendState {
        BackendState {
            id: id(name),
            queue: QueueName::backend(&id(name)),
            tasks: vec![task],
            quality,
            latency_ms,
            cost_usd: usd(cost),
            health: Health::Ok,
        }
    }

    fn fleet() -> Vec<BackendState> {
        vec![
            backend("nano", TaskKind::Chat, 0.55, 400, "0.0001"),
            backend("mini", TaskKind::Chat, 0.65, 600, "0.0003"),
            backend("haiku", TaskKind::Chat, 0.75, 300, "0.0020"),
            backend("sonnet", TaskKind::Chat, 0.90, 2000, "0.0100"),
            backend("yolo-cpu", TaskKind::Detect, 0.37, 45, "0.000003"),
            backend("yolo-gpu", TaskKind::Detect, 0.37, 6, "0.000008"),
        ]
    }

    fn job() -> JobFacts {
        JobFacts {
            task: TaskKind::Chat,
            plan: PlanName::new("pro").unwrap(),
            tier: Tier::Standard,
            tenant: TenantId::new("acme").unwrap(),
            tags: vec![],
            input_bytes: 1_000,
            optimize: None,
            max_cost_usd: None,
            deadline_ms: None,
            pinned: None,
            split_key: 7,
            verdicts: Vec::new(),
        }
    }

    fn rule(name: &str, strategy: RuleStrategy) -> Rule {
        Rule {
            name: name.into(),
            matcher: Match::default(),
            strategy,
            candidates: vec![],
            constraints: Constraints::default(),
            fallbacks: vec![],
            honor_hints: true,
        }
    }

    fn policy(rules: Vec<Rule>) -> Policy {
        Policy {
            version: "test-1".into(),
            rules,
            budgets: Vec::new(),
        }
    }

    fn pick(job: &JobFacts, policy: &Policy, backends: &[BackendState]) -> String {
        match decide(job, policy, backends) {
            Ok(choice) => choice.backend_id.to_string(),
            Err(no_route) => format!("no_route: {}", no_route.trace),
        }
    }

    #[test]
    fn strategies_rank_the_eligible_backends() {
        let backends = fleet();
        for (strategy, want) in [
            (RuleStrategy::Cheapest, "nano"),
            (RuleStrategy::Fastest, "haiku"),
            (RuleStrategy::MostAccurate, "sonnet"),
            (RuleStrategy::Pinned(id("mini")), "mini"),
        ] {
            let policy = policy(vec![rule("r", strategy.clone())]);
            assert_eq!(pick(&job(), &policy, &backends), want, "{strategy:?}");
        }
        let mut detect = job();
        detect.task = TaskKind::Detect;
        let policy = policy(vec![rule("r", RuleStrategy::Fastest)]);
        assert_eq!(pick(&detect, &policy, &backends), "yolo-gpu");
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let mut legal = rule("accuracy-for-legal", RuleStrategy::MostAccurate);
        legal.matcher.tags_any = vec!["legal".into(), "medical".into()];
        let mut basic = rule("basic-plan-small", RuleStrategy::Cheapest);
        basic.matcher.plans = vec![PlanName::new("basic").unwrap()];
        let mut realtime = rule("realtime-fast", RuleStrategy::Fastest);
        realtime.matcher.tiers = vec![Tier::Realtime];
        let policy = policy(vec![
            legal,
            basic,
            realtime,
            rule("default", RuleStrategy::Cheapest),
        ]);
        let backends = fleet();

        type Change = Box<dyn Fn(&mut JobFacts)>;
        let cases: Vec<(&str, Change, &str)> = vec![
            (
                "tagged legal",
                Box::new(|j| j.tags = vec!["legal".into()]),
                "sonnet",
            ),
            (
                "basic plan",
                Box::new(|j| j.plan = PlanName::new("basic").unwrap()),
                "nano",
            ),
            (
                "realtime tier",
                Box::new(|j| j.tier = Tier::Realtime),
                "haiku",
            ),
            ("nothing special", Box::new(|_| {}), "nano"),
        ];
        for (what, change, want) in cases {
            let mut job = job();
            change(&mut job);
            assert_eq!(pick(&job, &policy, &backends), want, "{what}");
        }
    }

    #[test]
    fn unhealthy_backends_are_skipped_and_the_reason_says_so() {
        let mut backends = fleet();
        backends[0].health = Health::Cooling; // nano
        backends[1].health = Health::Saturated; // mini
        let policy = policy(vec![rule("r", RuleStrategy::Cheapest)]);
        let choice = decide(&job(), &policy, &backends).unwrap();
        assert_eq!(choice.backend_id.as_str(), "haiku");
        assert!(
            choice.reason.contains("nano is cooling down"),
            "{}",
            choice.reason
        );
        assert!(
            choice.reason.contains("mini is saturated"),
            "{}",
            choice.reason
        );
    }

    #[test]
    fn a_backend_alone_in_its_group_also_cools_down() {
        let mut backends = fleet();
        backends[4].health = Health::Cooling; // yolo-cpu
        let mut only_cpu = rule("cpu-only", RuleStrategy::Cheapest);
        only_cpu.candidates = vec![id("yolo-cpu")];
        let mut detect = job();
        detect.task = TaskKind::Detect;
        let without_fallback = policy(vec![only_cpu.clone()]);
        let outcome = pick(&detect, &without_fallback, &backends);
        assert!(
            outcome.starts_with("no_route") && outcome.contains("cooling"),
            "{outcome}"
        );

        only_cpu.fallbacks = vec![id("yolo-gpu")];
        let choice = decide(&detect, &policy(vec![only_cpu]), &backends).unwrap();
        assert_eq!(choice.backend_id.as_str(), "yolo-gpu");
        assert_eq!(choice.strategy, Strategy::Fallback);
    }

    #[test]
    fn budgets_hold_through_fallbacks() {
        let backends = fleet();
        let mut accurate = rule("accurate", RuleStrategy::MostAccurate);
        accurate.candidates = vec![id("sonnet")];
        accurate.fallbacks = vec![id("haiku"), id("nano")];
        let policy = policy(vec![accurate]);
        let mut job = job();
        job.max_cost_usd = Some(usd("0.001"));
        // sonnet and haiku are over the job's budget; the fallback chain may not break it.
        let choice = decide(&job, &policy, &backends).unwrap();
        assert_eq!(choice.backend_id.as_str(), "nano");
        assert!(
            choice.reason.contains("sonnet costs $0.0100 > $0.001"),
            "{}",
            choice.reason
        );
        job.max_cost_usd = Some(usd("0.00001"));
        assert!(pick(&job, &policy, &backends).starts_with("no_route"));
    }

    #[test]
    fn deadlines_and_quality_floors_constrain() {
        let backends = fleet();
        let mut floor = rule("floor", RuleStrategy::Cheapest);
        floor.constraints.min_quality = Some(0.7);
        let policy = policy(vec![floor]);
        assert_eq!(pick(&job(), &policy, &backends), "haiku");
        let mut hurried = job();
        hurried.deadline_ms = Some(250);
        assert!(pick(&hurried, &policy, &backends).contains("takes 300 ms > 250 ms"));
    }

    #[test]
    fn job_hints_and_pins() {
        let backends = fleet();
        let policy = policy(vec![rule("r", RuleStrategy::Cheapest)]);
        let mut fast = job();
        fast.optimize = Some(Optimize::Latency);
        assert_eq!(pick(&fast, &policy, &backends), "haiku");
        let mut pinned = job();
        pinned.pinned = Some(id("sonnet"));
        let choice = decide(&pinned, &policy, &backends).unwrap();
        assert_eq!(
            (choice.backend_id.as_str(), choice.strategy),
            ("sonnet", Strategy::Pinned)
        );
        // A pin to a backend that cannot serve the task is ignored, with a trace.
        pinned.pinned = Some(id("yolo-gpu"));
        assert_eq!(pick(&pinned, &policy, &backends), "nano");
    }

    #[test]
    fn pins_stay_within_the_rule_and_the_limits() {
        let backends = fleet();
        let mut pinned = job();
        pinned.pinned = Some(id("sonnet"));
        // A rule restricted to small models: the pin does not buy its way out.
        let mut small = rule("small-only", RuleStrategy::Cheapest);
        small.candidates = vec![id("nano"), id("haiku")];
        assert_eq!(pick(&pinned, &policy(vec![small]), &backends), "nano");
        // A rule that ignores hints ignores pins too.
        let mut strict = rule("strict", RuleStrategy::Cheapest);
        strict.honor_hints = false;
        assert_eq!(pick(&pinned, &policy(vec![strict]), &backends), "nano");
        // The job's own budget holds for its pin: with nothing cheap enough, no route.
        pinned.max_cost_usd = Some(Decimal::ZERO);
        let out = pick(
            &pinned,
            &policy(vec![rule("r", RuleStrategy::Cheapest)]),
            &backends,
        );
        assert!(
            out.starts_with("no_route: rule r: job pinned sonnet but it costs $"),
            "{out}"
        );
    }

    #[test]
    fn weighted_splits_are_stable_and_proportional() {
        let backends = fleet();
        let policy = policy(vec![rule(
            "ab",
            RuleStrategy::Weighted(vec![(id("mini"), 90), (id("haiku"), 10)]),
        )]);
        let mut counts = std::collections::BTreeMap::new();
        for key in 0..1_000u64 {
            let mut job = job();
            job.split_key = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            *counts.entry(pick(&job, &policy, &backends)).or_insert(0) += 1;
            assert_eq!(
                pick(&job, &policy, &backends),
                pick(&job, &policy, &backends)
            );
        }
        let haiku = counts["haiku"];
        assert!((60..=140).contains(&haiku), "{counts:?}");
    }

    fn classifying(name: &str) -> Rule {
        rule(
            name,
            RuleStrategy::Classify(ClassifierSpec {
                backend: id("nano"),
                instruction: "How complex is the request?".into(),
                routes: vec![
                    ("simple".into(), id("nano")),
                    ("complex".into(), id("sonnet")),
                ],
                timeout: Duration::from_millis(500),
                cache_ttl: Duration::from_secs(60),
            }),
        )
    }

    fn answered(rule: &str, label: Result<&str, &str>, cached: bool) -> JobFacts {
        let mut job = job();
        job.verdicts.push(Verdict {
            rule: rule.into(),
            label: label.map(str::to_owned).map_err(str::to_owned),
            cached,
        });
        job
    }

    #[test]
    fn a_label_routes_and_without_one_the_next_rule_decides() {
        let policy = policy(vec![
            classifying("triage"),
            rule("default", RuleStrategy::MostAccurate),
        ]);
        let backends = fleet();
        assert_eq!(
            awaiting_classifier(&job(), &policy, &backends).map(|r| r.name.as_str()),
            Some("triage")
        );
        let cases = [
            (
                answered("triage", Ok("complex"), false),
                "sonnet",
                Strategy::LlmClassify,
                "rule triage → sonnet by classifier nano's label `complex`",
            ),
            (
                answered("triage", Ok("simple"), true),
                "nano",
                Strategy::LlmClassify,
                "rule triage → nano by classifier nano's label `simple` (cached)",
            ),
            (
                answered("triage", Err("timed out after 500 ms"), false),
                "sonnet",
                Strategy::MostAccurate,
                "rule triage passed over: classifier nano: timed out after 500 ms; rule default → sonnet by highest quality",
            ),
            (
                answered("triage", Ok("weird"), false),
                "sonnet",
                Strategy::MostAccurate,
                "rule triage passed over: label `weird` routes nowhere; rule default",
            ),
            (
                job(),
                "sonnet",
                Strategy::MostAccurate,
                "rule triage passed over: not classified; rule default",
            ),
        ];
        for (job, want, strategy, reason) in cases {
            let choice = decide(&job, &policy, &backends).unwrap();
            assert_eq!(choice.backend_id.as_str(), want, "{reason}");
            assert_eq!(choice.strategy, strategy, "{reason}");
            assert!(choice.reason.starts_with(reason), "{}", choice.reason);
            if !job.verdicts.is_empty() {
                assert!(awaiting_classifier(&job, &policy, &backends).is_none());
            }
        }
        let alone = policy_of_one(classifying("triage"));
        let outcome = pick(
            &answered("triage", Err("bad answer"), false),
            &alone,
            &backends,
        );
        assert_eq!(
            outcome,
            "no_route: rule triage passed over: classifier nano: bad answer; no rule of policy test-1 matches the job"
        );
    }

    fn policy_of_one(rule: Rule) -> Policy {
        policy(vec![rule])
    }

    #[test]
    fn a_labelled_backend_still_meets_the_limits_or_the_fallbacks_serve() {
        let mut backends = fleet();
        let mut triage = classifying("triage");
        triage.fallbacks = vec![id("haiku")];
        let policy = policy(vec![triage]);
        let complex = answered("triage", Ok("complex"), false);
        let mut poor = complex.clone();
        poor.max_cost_usd = Some(usd("0.005"));
        let choice = decide(&poor, &policy, &backends).unwrap();
        assert_eq!(
            (choice.backend_id.as_str(), choice.strategy),
            ("haiku", Strategy::Fallback)
        );
        assert!(
            choice.reason.contains("sonnet costs $0.0100 > $0.005"),
            "{}",
            choice.reason
        );
        backends[3].health = Health::Cooling; // sonnet
        let choice = decide(&complex, &policy, &backends).unwrap();
        assert_eq!(choice.backend_id.as_str(), "haiku");
        assert!(
            choice.reason.contains("sonnet is cooling down"),
            "{}",
            choice.reason
        );
        // A hint does not replace the classifier, as it does not replace a pin.
        let mut hinted = answered("triage", Ok("simple"), false);
        hinted.optimize = Some(Optimize::Accuracy);
        assert_eq!(pick(&hinted, &policy, &fleet()), "nano");
    }

    #[test]
    fn a_usable_pin_decides_a_classifying_rule_without_asking() {
        let triage = classifying("triage");
        let policy = policy(vec![triage, rule("default", RuleStrategy::Cheapest)]);
        let mut backends = fleet();
        let mut pinned = job();
        pinned.pinned = Some(id("haiku"));
        assert!(awaiting_classifier(&pinned, &policy, &backends).is_none());
        let choice = decide(&pinned, &policy, &backends).unwrap();
        assert_eq!(
            (
                choice.backend_id.as_str(),
                choice.strategy,
                choice.rule.as_str()
            ),
            ("haiku", Strategy::Pinned, "triage")
        );
        // A pin that would not be served leaves the rule to its classifier.
        backends[2].health = Health::Cooling; // haiku
        assert_eq!(
            awaiting_classifier(&pinned, &policy, &backends).map(|r| r.name.as_str()),
            Some("triage")
        );
        let answered = {
            let mut job = answered("triage", Ok("complex"), false);
            job.pinned = Some(id("haiku"));
            job
        };
        assert_eq!(pick(&answered, &policy, &backends), "sonnet");
    }

    #[test]
    fn only_the_classifiers_the_decision_needs_are_asked() {
        let mut legal = classifying("legal-triage");
        legal.matcher.tags_any = vec!["legal".into()];
        let mut realtime = rule("realtime", RuleStrategy::Fastest);
        realtime.matcher.tiers = vec![Tier::Realtime];
        let policy = policy(vec![
            legal,
            realtime,
            classifying("triage"),
            rule("default", RuleStrategy::Cheapest),
        ]);
        let backends = fleet();
        let waiting =
            |job: &JobFacts| awaiting_classifier(job, &policy, &backends).map(|r| r.name.clone());
        assert_eq!(waiting(&job()).as_deref(), Some("triage"));
        let mut tagged = job();
        tagged.tags = vec!["legal".into()];
        assert_eq!(waiting(&tagged).as_deref(), Some("legal-triage"));
        tagged.verdicts.push(Verdict {
            rule: "legal-triage".into(),
            label: Err("timed out".into()),
            cached: false,
        });
        assert_eq!(waiting(&tagged).as_deref(), Some("triage"));
        tagged.tier = Tier::Realtime;
        assert_eq!(
            waiting(&tagged),
            None,
            "a plain rule decides before `triage`"
        );
        assert_eq!(pick(&tagged, &policy, &fleet()), "haiku");
    }

    #[test]
    fn no_rule_no_route() {
        let mut only_detect = rule("detect-only", RuleStrategy::Cheapest);
        only_detect.matcher.tasks = vec![TaskKind::Detect];
        let outcome = pick(&job(), &policy(vec![only_detect]), &fleet());
        assert_eq!(
            outcome,
            "no_route: no rule of policy test-1 matches the job"
        );
    }
}
