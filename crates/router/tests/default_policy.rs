//! The default policy expresses the four routing scenarios of the original design, over the
//! example catalog and the default rates.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: failing loudly is the point"
)]

use std::path::Path;

use switchyard_core::config::Config;
use switchyard_core::contracts::{self, JobEnvelope, Optimize, Task};
use switchyard_core::{PlanName, Tier};
use switchyard_router::estimate::backend_states;
use switchyard_router::policy::{JobFacts, decide};
use switchyard_router::policy_file::{DEFAULT_POLICY_TOML, load_policy};

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn config() -> Config {
    let text = std::fs::read_to_string(root().join("switchyard.example.toml")).unwrap();
    Config::from_parts(&text, "example", &[], Some(&root())).unwrap()
}

fn example(name: &str) -> JobEnvelope {
    let bytes = std::fs::read(root().join("schemas/examples/valid").join(name)).unwrap();
    contracts::decode(&bytes, 1 << 20).unwrap()
}

/// Routes `job` with the default policy; returns the backend and the rule.
fn route(job: &JobEnvelope) -> (String, String) {
    let config = config();
    let policy = load_policy(DEFAULT_POLICY_TOML, "default", &config.backends).unwrap();
    let facts = JobFacts::from_job(job);
    let max_tokens = match &job.task {
        Task::Chat(chat) => chat.params.max_tokens,
        _ => None,
    };
    let states = backend_states(&config.backends, &config.rates, &facts, max_tokens);
    let choice = decide(&facts, &policy, &states).unwrap();
    (choice.backend_id.to_string(), choice.rule)
}

fn with(mut job: JobEnvelope, tier: Tier, plan: &str, tags: &[&str]) -> JobEnvelope {
    job.priority = tier;
    job.plan = PlanName::new(plan).unwrap();
    job.tags = tags.iter().map(|t| (*t).to_owned()).collect();
    job.routing = Default::default();
    job
}

#[test]
fn low_cost_bulk_labeling_takes_the_cheapest_adequate_backend() {
    let detect = with(
        example("job.detect-s3.json"),
        Tier::Batch,
        "basic",
        &["bulk"],
    );
    // Per image, a T4 at 6 ms ($0.526/h) is cheaper than a CPU at 45 ms ($0.1785/h).
    assert_eq!(
        route(&detect),
        ("yolov8n-gpu".into(), "bulk-labeling".into())
    );
    let classify = with(example("job.classify.json"), Tier::Batch, "pro", &["bulk"]);
    assert_eq!(
        route(&classify),
        ("gpt-4.1-nano".into(), "bulk-labeling".into())
    );
}

#[test]
fn realtime_ui_takes_the_lowest_latency() {
    let detect = with(
        example("job.detect-inline.json"),
        Tier::Realtime,
        "pro",
        &[],
    );
    assert_eq!(route(&detect), ("yolov8n-gpu".into(), "realtime-ui".into()));
    let chat = with(example("job.chat.json"), Tier::Realtime, "pro", &[]);
    assert_eq!(route(&chat), ("gpt-4.1-nano".into(), "realtime-ui".into()));
}

#[test]
fn legal_and_medical_work_takes_top_tier_models() {
    for tag in ["legal", "medical"] {
        let summarize = with(
            example("job.summarize.json"),
            Tier::Standard,
            "basic",
            &[tag],
        );
        assert_eq!(
            route(&summarize),
            ("gpt-5".into(), "high-accuracy".into()),
            "{tag}"
        );
    }
    // A cost hint does not downgrade high-accuracy work: that rule ignores hints.
    let mut hinted = with(
        example("job.summarize.json"),
        Tier::Standard,
        "basic",
        &["legal"],
    );
    hinted.routing.optimize = Some(Optimize::Cost);
    assert_eq!(route(&hinted).0, "gpt-5");
}

#[test]
fn plans_buy_different_models() {
    let basic = with(example("job.chat.json"), Tier::Standard, "basic", &[]);
    assert_eq!(route(&basic), ("gpt-4.1-nano".into(), "basic-plan".into()));
    let pro = with(example("job.chat.json"), Tier::Standard, "pro", &[]);
    assert_eq!(route(&pro), ("gpt-5".into(), "premium-plans".into()));
    // Pro under a tight budget: the most accurate model that fits.
    let mut frugal = pro;
    frugal.routing.max_cost_usd = Some("0.001".parse().unwrap());
    assert_eq!(route(&frugal).0, "claude-haiku-4-5");
}
