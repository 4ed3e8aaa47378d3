//! The router worker: reads the tier queues by weight, decides, republishes.
//!
//! One [`Router`] is the runtime's handler for `switchyard.job/v1`. Per job: the facts and the
//! catalog's estimates, live state folded in, the tenant's spend (cached briefly), the
//! decision within budget, then the routed job (`switchyard.routed/v1`) published to the chosen
//! backend's queue — keyed by tenant, trace context carried on — before the job is acked. No
//! route or an exhausted budget dead-letters the job with the reason and the rule trace.
//!
//! The policy is behind a [`PolicyHandle`]: a reload validates the new file first and keeps
//! the old policy, with the errors, when it is invalid.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use chrono::Utc;
use switchyard_bus::runtime::{Failure, Handler, JobContext};
use switchyard_bus::{Bus, Outgoing, headers};
use switchyard_core::config::Backend;
use switchyard_core::contracts::{
    self, Decision, ErrorClass, JobEnvelope, MultiTask, ParentRef, RoutedJob, RoutedSchema, Task,
};
use switchyard_core::rates::RatesTable;
use switchyard_core::{BackendId, JobId, PlanName, QueueName, TenantId};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::budget::{self, Spent};
use crate::classify::{self, ChargeSink, Classifier, ClassifyRequest, VerdictCache};
use crate::estimate;
use crate::live::{LiveSettings, LiveState};
use crate::policy::{
    self, BackendState, Choice, Health, JobFacts, Policy, Rule, RuleStrategy, Verdict,
};
use crate::policy_file::{PolicyError, load_policy};

/// Where the router learns what a tenant spent: the ledger's spend totals in production.
pub trait SpendSource: Send + Sync + 'static {
    fn spent(&self, tenant: &TenantId) -> impl Future<Output = Result<Spent, String>> + Send;
}

/// No spend source: budgets are never binding (for tests and stores without totals).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSpend;

impl SpendSource for NoSpend {
    async fn spent(&self, _tenant: &TenantId) -> Result<Spent, String> {
        Err("no spend source configured".to_owned())
    }
}

/// The current policy, swappable while jobs are being routed.
#[derive(Debug)]
pub struct PolicyHandle {
    current: RwLock<Arc<Policy>>,
    source: Option<PathBuf>,
    modified: Mutex<Option<SystemTime>>,
}

impl PolicyHandle {
    pub fn new(policy: Policy, source: Option<PathBuf>) -> PolicyHandle {
        let modified = source.as_deref().and_then(modified_at);
        PolicyHandle {
            current: RwLock::new(Arc::new(policy)),
            source,
            modified: Mutex::new(modified),
        }
    }

    pub fn current(&self) -> Arc<Policy> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Loads the policy file again; an invalid one leaves the current policy in place.
    pub fn reload(&self, catalog: &[Backend]) -> Result<Option<String>, PolicyError> {
        let Some(path) = &self.source else {
            return Ok(None);
        };
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| PolicyError {
            origin: origin.clone(),
            problems: vec![format!("cannot read the file: {error}")],
        })?;
        let policy = load_policy(&text, &origin, catalog)?;
        let version = policy.version.clone();
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(policy);
        Ok(Some(version))
    }

    /// Reloads when the file changed since the last look.
    pub fn reload_if_changed(&self, catalog: &[Backend]) -> Result<Option<String>, PolicyError> {
        let Some(path) = &self.source else {
            return Ok(None);
        };
        let now = modified_at(path);
        {
            let mut seen = lock(&self.modified);
            if *seen == now {
                return Ok(None);
            }
            *seen = now;
        }
        self.reload(catalog)
    }
}

/// A poisoned lock only means a panic elsewhere mid-update of plain data; keep going.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn modified_at(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// How long past a rule's timeout the router waits on a classifier that overruns it.
const OVERRUN_GRACE: Duration = Duration::from_millis(50);

/// Router settings.
#[derive(Clone, Debug)]
pub struct RouterSettings {
    /// How long a tenant's spend is reused before the ledger is asked again.
    pub spend_ttl: Duration,
    /// Longest wait for the ledger's answer; past it the job is routed without the check.
    pub spend_timeout: Duration,
    /// Longest wait to record a classifier call's charge; past it the job is retried (the
    /// charge is idempotent per job), so a slow store holds no job indefinitely.
    pub charge_timeout: Duration,
}

impl Default for RouterSettings {
    fn default() -> Self {
        RouterSettings {
            spend_ttl: Duration::from_secs(5),
            spend_timeout: Duration::from_millis(500),
            charge_timeout: Duration::from_secs(5),
        }
    }
}

/// What `llm_classify` rules need: the classifier, where its calls are charged, the cache of
/// answers and a breaker per classifier backend (apart from the jobs' breakers, whose latency
/// averages a classifier's short calls would skew).
pub struct Classifying {
    classifier: Arc<dyn Classifier>,
    charges: Arc<dyn ChargeSink>,
    /// The longest text sent to a classifier, in characters.
    pub max_text_chars: usize,
    cache: Mutex<VerdictCache>,
    breaker: Mutex<LiveState>,
}

impl Classifying {
    pub fn new(classifier: Arc<dyn Classifier>, charges: Arc<dyn ChargeSink>) -> Classifying {
        Classifying {
            classifier,
            charges,
            max_text_chars: 8_000,
            cache: Mutex::new(VerdictCache::new(100_000)),
            breaker: Mutex::new(LiveState::new(LiveSettings::default())),
        }
    }
}

impl std::fmt::Debug for Classifying {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifying")
            .field("cached", &lock(&self.cache).len())
            .finish_non_exhaustive()
    }
}

/// The router's handler.
pub struct Router<B, S> {
    bus: B,
    catalog: Arc<[Backend]>,
    rates: Arc<RatesTable>,
    policy: Arc<PolicyHandle>,
    live: Arc<Mutex<LiveState>>,
    spend: S,
    spend_cache: Mutex<HashMap<TenantId, (Instant, Option<Spent>)>>,
    reservations: Mutex<budget::Reservations>,
    settings: RouterSettings,
    classifying: Option<Classifying>,
}

impl<B, S> std::fmt::Debug for Router<B, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("backends", &self.catalog.len())
            .field("policy", &self.policy.current().version)
            .finish_non_exhaustive()
    }
}

impl<B: Bus, S: SpendSource> Router<B, S> {
    pub fn new(
        bus: B,
        catalog: Arc<[Backend]>,
        rates: Arc<RatesTable>,
        policy: Arc<PolicyHandle>,
        live: Arc<Mutex<LiveState>>,
        spend: S,
        settings: RouterSettings,
    ) -> Router<B, S> {
        Router {
            bus,
            catalog,
            rates,
            policy,
            live,
            spend,
            spend_cache: Mutex::new(HashMap::new()),
            reservations: Mutex::new(budget::Reservations::default()),
            settings,
            classifying: None,
        }
    }

    /// Lets `llm_classify` rules ask a classifier; without one they are always passed over.
    pub fn with_classifier(mut self, classifying: Classifying) -> Router<B, S> {
        self.classifying = Some(classifying);
        self
    }

    /// Every backend queue, for `ensure` at start-up.
    pub fn backend_queues(&self) -> Vec<QueueName> {
        self.catalog.iter().map(|b| b.queue.clone()).collect()
    }

    async fn spent(&self, tenant: &TenantId, plan: &PlanName, policy: &Policy) -> Option<Spent> {
        budget::budget_for(&policy.budgets, tenant, plan)?;
        if let Some((_, spent)) = lock(&self.spend_cache)
            .get(tenant)
            .filter(|(at, _)| at.elapsed() < self.settings.spend_ttl)
        {
            return *spent;
        }
        // A slow or failing store must not stall routing for every tenant: bounded, and a
        // failure is remembered for the same TTL as a success.
        let spent = match tokio::time::timeout(
            self.settings.spend_timeout,
            self.spend.spent(tenant),
        )
        .await
        {
            Ok(Ok(spent)) => Some(spent),
            Ok(Err(error)) => {
                warn!(message = "Cannot read spend; routing without the budget check.", tenant_id = %tenant, %error);
                None
            }
            Err(_) => {
                warn!(message = "Spend read timed out; routing without the budget check.", tenant_id = %tenant, timeout_ms = self.settings.spend_timeout.as_millis() as u64);
                None
            }
        };
        lock(&self.spend_cache).insert(tenant.clone(), (Instant::now(), spent));
        spent
    }
}

fn all_healthy(states: &[BackendState]) -> Vec<BackendState> {
    states
        .iter()
        .cloned()
        .map(|mut s| {
            s.health = Health::Ok;
            s
        })
        .collect()
}

/// A rough token budget for the estimate: what the job asks for.
fn max_tokens(task: &Task) -> Option<u32> {
    match task {
        Task::Chat(t) => t.params.max_tokens,
        Task::Summarize(t) => t.params.max_tokens,
        Task::Classify(t) => t.params.max_tokens,
        Task::Detect(_) | Task::Multi(_) => None,
    }
}

impl<B: Bus, S: SpendSource> Handler for Router<B, S> {
    type Message = JobEnvelope;

    async fn handle(&self, job: JobEnvelope, context: JobContext) -> Result<(), Failure> {
        let policy = self.policy.current();
        if let Task::Multi(multi) = &job.task {
            return self.fan_out(&job, multi, &policy, &context).await;
        }
        let choice = self.choose(&job, &policy).await?;
        let decision = decision(choice, &policy);
        // The job goes on as its producer wrote it: a copy of the bytes it was decoded from,
        // not a second encoding of it.
        let body = RoutedJob::encode_around(&context.body, &decision, None);
        self.publish(&decision.queue, &job.tenant_id, body, &context)
            .await
    }
}

impl<B: Bus, S: SpendSource> Router<B, S> {
    async fn choose(&self, job: &JobEnvelope, policy: &Policy) -> Result<Choice, Failure> {
        let mut facts = JobFacts::from_job(job);
        let mut states =
            estimate::backend_states(&self.catalog, &self.rates, &facts, max_tokens(&job.task));
        lock(&self.live).apply(&mut states, Instant::now());
        let read = self.spent(&job.tenant_id, &job.plan, policy).await;
        let window = budget::budget_for(&policy.budgets, &job.tenant_id, &job.plan)
            .map_or(Duration::ZERO, |b| b.reserve_for);
        // A tenant with nothing left is not charged for advice on where to spend it.
        let broke = budget::exhausted(
            &facts,
            policy,
            read.map(|read| {
                lock(&self.reservations).add_to(read, &job.tenant_id, window, Instant::now())
            }),
        );
        while let Some(rule) = policy::awaiting_classifier(&facts, policy, &states) {
            let verdict = self.verdict(job, rule, broke.as_deref()).await?;
            facts.verdicts.push(verdict);
        }
        let (routed, spent) = match read {
            // No budget applies (or the ledger could not say): nothing to hold.
            None => (budget::route(&facts, policy, &states, None), None),
            // Checked and held under one lock: two jobs of a tenant routed at once cannot both
            // take the last of its budget.
            Some(read) => {
                let mut reservations = lock(&self.reservations);
                let now = Instant::now();
                let spent = Some(reservations.add_to(read, &job.tenant_id, window, now));
                let routed = budget::route(&facts, policy, &states, spent);
                if let Ok(choice) = &routed {
                    reservations.reserve(&job.tenant_id, choice.estimated_cost_usd, window, now);
                }
                (routed, spent)
            }
        };
        let choice = match routed {
            Ok(choice) => choice,
            // Only cooling or saturated backends stood in the way: that passes, so the job
            // waits (retry with backoff) instead of going to the dead-letter queue.
            Err(refusal)
                if refusal.class == ErrorClass::NoRoute
                    && states.iter().any(|s| s.health != Health::Ok)
                    && budget::route(&facts, policy, &all_healthy(&states), spent).is_ok() =>
            {
                debug!(message = "Every eligible backend is unhealthy; retrying later.", job_id = %job.job_id);
                return Err(Failure::Retry(format!(
                    "every eligible backend is cooling down or saturated: {}",
                    refusal.reason
                )));
            }
            Err(refusal) => {
                info!(message = "Job not routed.", job_id = %job.job_id, tenant_id = %job.tenant_id, class = %refusal.class, reason = %refusal.reason);
                return Err(Failure::reject(refusal.class, refusal.reason));
            }
        };
        debug!(message = "Routed.", job_id = %job.job_id, backend = %choice.backend_id, rule = %choice.rule);
        Ok(choice)
    }

    /// What `rule`'s classifier says of `job`: from the cache, else asked within the rule's
    /// timeout unless `broke` says why the tenant cannot pay for the call. Only a failed
    /// charge fails the job (a retry, so no call goes uncharged); everything else that goes
    /// wrong is a verdict without a label, and the rule is passed over.
    async fn verdict(
        &self,
        job: &JobEnvelope,
        rule: &Rule,
        broke: Option<&str>,
    ) -> Result<Verdict, Failure> {
        let failed = |why: String| {
            debug!(message = "Classifier gave no label.", job_id = %job.job_id, rule = %rule.name, reason = %why);
            Ok(Verdict {
                rule: rule.name.clone(),
                label: Err(why),
                cached: false,
            })
        };
        let RuleStrategy::Classify(spec) = &rule.strategy else {
            return failed("the rule does not classify".to_owned());
        };
        let Some(classifying) = &self.classifying else {
            return failed("no classifier is configured in this router".to_owned());
        };
        let text = match classify::text_of(&job.task, classifying.max_text_chars) {
            Ok(text) => text,
            Err(why) => return failed(why),
        };
        let key = classify::cache_key(&job.tenant_id, spec, &text);
        let now = Instant::now();
        if let Some(label) = lock(&classifying.cache).get(&key, now) {
            return Ok(Verdict {
                rule: rule.name.clone(),
                label: Ok(label.to_owned()),
                cached: true,
            });
        }
        if let Some(why) = broke {
            return failed(format!("not asked: {why}"));
        }
        if lock(&classifying.breaker).cooling(&spec.backend, now)
            || lock(&self.live).cooling(&spec.backend, now)
        {
            return failed("is cooling down".to_owned());
        }
        let request = ClassifyRequest {
            backend: spec.backend.clone(),
            instruction: spec.instruction.clone(),
            labels: spec.labels().map(str::to_owned).collect(),
            text,
            deadline: spec.timeout,
        };
        let started = Instant::now();
        // The classifier keeps its own deadline and says whose fault a miss was; this bound is
        // for one that does not.
        let outcome = tokio::time::timeout(
            spec.timeout + OVERRUN_GRACE,
            classifying.classifier.classify(&request),
        )
        .await;
        let observe = |outcome: Result<u64, ()>| {
            lock(&classifying.breaker).observe(&spec.backend, outcome, Instant::now());
        };
        let answer = match outcome {
            Err(_) => {
                observe(Err(()));
                return failed(format!("timed out after {} ms", spec.timeout.as_millis()));
            }
            Ok(Err(error)) => {
                if error.backend_at_fault {
                    observe(Err(()));
                }
                return failed(error.message);
            }
            Ok(Ok(answer)) => answer,
        };
        // Whatever it answered, the call was made and is charged.
        let call = format!("route.classify.{}", rule.name);
        let charged = tokio::time::timeout(
            self.settings.charge_timeout,
            classifying
                .charges
                .charge(job, &call, &spec.backend, &answer),
        )
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "timed out after {} ms",
                self.settings.charge_timeout.as_millis()
            ))
        });
        charged.map_err(|error| {
            Failure::Retry(format!("cannot charge the classifier call: {error}"))
        })?;
        // An answer is a healthy backend whatever it says: a prompt that steers the
        // classifier off its labels must not open the breaker for every tenant.
        observe(Ok(started.elapsed().as_millis() as u64));
        let label = match answer.label {
            Ok(label) if request.labels.contains(&label) => label,
            Ok(label) => {
                return failed(format!(
                    "answered `{label}`, which is not one of the offered labels"
                ));
            }
            Err(why) => return failed(format!("unusable answer: {why}")),
        };
        lock(&classifying.cache).insert(key, label.clone(), spec.cache_ttl, now);
        Ok(Verdict {
            rule: rule.name.clone(),
            label: Ok(label),
            cached: false,
        })
    }

    /// The Map state: each subtask becomes a child job (a deterministic id, so a redelivered
    /// parent republishes the same children and the workers' idempotency absorbs it), routed
    /// on its own; the children carry what the ledger's join needs to finish the parent. All
    /// or nothing: if one subtask cannot be routed, nothing is published and the parent is
    /// dead-lettered naming it.
    async fn fan_out(
        &self,
        job: &JobEnvelope,
        multi: &MultiTask,
        policy: &Policy,
        context: &JobContext,
    ) -> Result<(), Failure> {
        let siblings: Vec<String> = multi.subtasks.iter().map(|s| s.name.clone()).collect();
        let mut children = Vec::with_capacity(multi.subtasks.len());
        let mut refused = Vec::new();
        for subtask in &multi.subtasks {
            let mut child = job.clone();
            child.job_id = child_id(job.job_id, &subtask.name);
            child.task = subtask.task.clone();
            child.callback = None;
            child.idempotency_key = None;
            match self.choose(&child, policy).await {
                Ok(choice) => children.push((child, choice, subtask.name.clone())),
                Err(Failure::Reject(rejection)) => refused.push((subtask.name.clone(), rejection)),
                Err(retry @ Failure::Retry(_)) => return Err(retry),
            }
        }
        if let Some((_, first)) = refused.first() {
            let names: Vec<String> = refused
                .iter()
                .map(|(name, r)| format!("subtask {name}: {}", r.reason))
                .collect();
            return Err(Failure::reject(
                first.class,
                format!("no subtask was published; {}", names.join("; ")),
            ));
        }
        for (child, choice, name) in children {
            let parent = ParentRef {
                job_id: job.job_id,
                subtask: name,
                siblings: siblings.clone(),
                callback: job.callback.clone(),
            };
            let routed = RoutedJob {
                schema: RoutedSchema,
                decision: decision(choice, policy),
                parent: Some(parent),
                job: child,
            };
            let body = contracts::encode(&routed);
            self.publish(&routed.decision.queue, &routed.job.tenant_id, body, context)
                .await?;
        }
        Ok(())
    }

    /// Publishes a routed job's bytes, keyed by tenant so that a tenant's jobs keep their
    /// order on a partitioned queue.
    async fn publish(
        &self,
        queue: &QueueName,
        tenant_id: &TenantId,
        body: Vec<u8>,
        context: &JobContext,
    ) -> Result<(), Failure> {
        let mut message = Outgoing::new(body)
            .with_key(tenant_id.as_str())
            .with_header(headers::CONTENT_TYPE, "application/json");
        message.headers.extend(context.outgoing_headers());
        self.bus
            .publish(queue, message)
            .await
            .map_err(|error| Failure::Retry(format!("publishing to {queue}: {error}")))
    }
}

fn decision(choice: Choice, policy: &Policy) -> Decision {
    Decision {
        backend_id: choice.backend_id,
        queue: choice.queue,
        rule: choice.rule,
        strategy: choice.strategy,
        reason: choice.reason,
        // The contract carries at most 12 decimals; round up so it never understates.
        estimated_cost_usd: choice
            .estimated_cost_usd
            .round_dp_with_strategy(12, rust_decimal::RoundingStrategy::AwayFromZero)
            .normalize(),
        estimated_latency_ms: choice.estimated_latency_ms,
        fallbacks: choice.fallbacks,
        policy_version: policy.version.clone(),
        decided_at: Utc::now(),
    }
}

/// A child's job id: the parent's timestamp and 80 bits of a stable hash (FNV-1a, 128 bit) of
/// the parent id and the subtask name. Stable across processes and releases, unlike std's
/// hasher, so every router derives the same children.
pub fn child_id(parent: JobId, subtask: &str) -> JobId {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut hash = OFFSET;
    for byte in parent
        .0
        .to_bytes()
        .iter()
        .chain([0u8].iter())
        .chain(subtask.as_bytes())
    {
        hash ^= u128::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    JobId(ulid::Ulid::from_parts(parent.0.timestamp_ms(), hash))
}

/// Polls the policy file for changes (and reloads on SIGHUP) until `shutdown`.
pub async fn watch_policy(
    policy: Arc<PolicyHandle>,
    catalog: Arc<[Backend]>,
    every: Duration,
    shutdown: CancellationToken,
) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let forced = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await.is_some(),
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let forced = std::future::pending::<bool>();
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            _ = forced => policy.reload(&catalog),
            () = tokio::time::sleep(every) => policy.reload_if_changed(&catalog),
        };
        match result {
            Ok(Some(version)) => info!(message = "Policy reloaded.", version = %version),
            Ok(None) => {}
            Err(error) => {
                warn!(message = "Rejected the new policy; keeping the current one.", %error);
            }
        }
    }
}

/// Feeds queue depths of every backend into `live` every `every`, until `shutdown`.
pub async fn watch_depths<B: Bus>(
    bus: B,
    backends: Vec<(BackendId, QueueName)>,
    live: Arc<Mutex<LiveState>>,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        for (backend, queue) in &backends {
            match bus.depth(queue).await {
                Ok(depth) => lock(&live).observe_depth(backend, depth.ready),
                Err(error) => {
                    debug!(message = "Cannot read queue depth.", %error, queue = %queue);
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Spend in USD from micro-dollar totals.
pub fn spent_from_micros(day: switchyard_core::Micros, month: switchyard_core::Micros) -> Spent {
    Spent {
        day: day.to_usd(),
        month: month.to_usd(),
        in_flight: rust_decimal::Decimal::ZERO,
    }
}

/// Feeds finished jobs (lifecycle events on `topic`) into `live`, until `shutdown`: a success
/// is a latency sample, a failure on a backend counts against its breaker.
pub async fn watch_outcomes<B: Bus>(
    bus: B,
    topic: QueueName,
    group: &str,
    live: Arc<Mutex<LiveState>>,
    shutdown: CancellationToken,
) -> Result<(), switchyard_bus::BusError> {
    use switchyard_bus::{Consumer as _, Delivery as _};
    use switchyard_core::contracts::{JobState, LifecycleEvent};

    let mut consumer = bus.consume(&topic, group).await?;
    loop {
        let delivery = tokio::select! {
            () = shutdown.cancelled() => break,
            next = consumer.next() => match next {
                Ok(Some(delivery)) => delivery,
                Ok(None) => break,
                Err(error) => {
                    warn!(message = "Cannot read outcomes.", %error);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        match contracts::decode::<LifecycleEvent>(
            delivery.body(),
            contracts::DEFAULT_MAX_MESSAGE_BYTES,
        ) {
            // A new router reads the topic from its start: history says nothing about now.
            Ok(event) if Utc::now() - event.at > chrono::Duration::minutes(5) => {}
            Ok(event) => {
                let outcome = match (event.state, event.latency_ms) {
                    (JobState::Succeeded, Some(latency)) => Some(Ok(latency)),
                    (JobState::Failed | JobState::DeadLettered, _) => event
                        .error
                        .as_ref()
                        .is_some_and(|e| backend_at_fault(e.class))
                        .then_some(Err(())),
                    _ => None,
                };
                if let (Some(backend), Some(outcome)) = (&event.backend_id, outcome) {
                    lock(&live).observe(backend, outcome, Instant::now());
                }
            }
            Err(error) => debug!(message = "Ignoring an undecodable outcome.", %error),
        }
        // Observations are advisory: losing one on a crash changes an estimate, nothing more.
        if let Err(error) = delivery.ack().await {
            debug!(message = "Cannot ack an outcome.", %error);
        }
    }
    consumer.close().await;
    Ok(())
}

/// Whether a failure of this class says something about the backend. A tenant's corrupt
/// images or refused prompts must not open the breaker for every tenant.
pub fn backend_at_fault(class: ErrorClass) -> bool {
    match class {
        ErrorClass::RetriesExhausted | ErrorClass::DeadlineExceeded | ErrorClass::Internal => true,
        ErrorClass::Decode
        | ErrorClass::SchemaInvalid
        | ErrorClass::Oversized
        | ErrorClass::NoRoute
        | ErrorClass::BudgetExceeded
        | ErrorClass::InvalidInput
        | ErrorClass::ProviderRejected => false,
    }
}
