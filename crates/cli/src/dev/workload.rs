//! The sample workload: the default policy's four scenarios, a fan-out job, and bad inputs
//! that must end in a dead-letter queue — written as producers write jobs, as JSON.

use std::fmt::Write as _;

use base64::Engine as _;
use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use switchyard_bus::any::AnyBus;
use switchyard_bus::{Bus, Outgoing};
use switchyard_core::{JobId, Tier};
use switchyard_ledger::blobs::BlobStore as _;

use super::DevLedger;

#[derive(Clone, Copy, Debug)]
pub struct TenantDef {
    pub id: &'static str,
    pub plan: &'static str,
}

const LABELCO: TenantDef = TenantDef {
    id: "labelco",
    plan: "pro",
};
const APPCO: TenantDef = TenantDef {
    id: "appco",
    plan: "pro",
};
const LEXCORP: TenantDef = TenantDef {
    id: "lexcorp",
    plan: "enterprise",
};
const SMALLCO: TenantDef = TenantDef {
    id: "smallco",
    plan: "basic",
};
const BIGCO: TenantDef = TenantDef {
    id: "bigco",
    plan: "pro",
};

/// The sample's tenants (each gets its own webhook signing secret).
pub const TENANTS: [TenantDef; 5] = [LABELCO, APPCO, LEXCORP, SMALLCO, BIGCO];

pub fn plan_of(tenant: &str) -> Option<&'static str> {
    TENANTS.iter().find(|t| t.id == tenant).map(|t| t.plan)
}

/// Images up to this size go inline; bigger ones go to the blob store by reference, as a
/// producer would put them in S3 (inline inputs are capped at 192 KiB of bytes).
const INLINE_LIMIT: usize = 96 * 1024;

/// How a submitted message should end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// A result in the store (succeeded or failed).
    Result,
    /// A dead letter with this error class.
    DeadLetter(String),
}

/// One submitted message.
#[derive(Clone, Debug)]
pub struct Item {
    pub scenario: &'static str,
    pub what: String,
    pub tier: Tier,
    pub tenant: Option<&'static str>,
    /// Absent for messages too broken to carry one.
    pub job_id: Option<JobId>,
    pub expect: Expect,
    /// Fan-out jobs: their subtasks' names.
    pub subtasks: Vec<String>,
    pub body: Vec<u8>,
    /// For messages without a job id: the body as a dead letter quotes it (base64), the one
    /// way to tell their letters apart.
    pub letter_body: Option<String>,
}

#[derive(Debug, Default)]
pub struct Sample {
    pub items: Vec<Item>,
    /// How many of the items are the `--jobs` extra load.
    pub extra: usize,
}

impl Sample {
    pub fn describe(&self) -> String {
        let mut scenarios: Vec<&str> = self.items.iter().map(|i| i.scenario).collect();
        scenarios.dedup();
        let bad = self
            .items
            .iter()
            .filter(|i| matches!(i.expect, Expect::DeadLetter(_)))
            .count();
        let mut text = format!(
            "\nSample: {} messages ({} scenarios: {}; {bad} of them bad on purpose)",
            self.items.len(),
            scenarios.len(),
            scenarios.join(", ")
        );
        if self.extra > 0 {
            let _ = write!(text, ", including {} extra jobs (--jobs)", self.extra);
        }
        text
    }
}

struct Builder<'a> {
    hooks: &'a str,
    items: Vec<Item>,
}

impl Builder<'_> {
    #[expect(
        clippy::too_many_arguments,
        reason = "a job's fields, each named at the call"
    )]
    fn job(
        &mut self,
        scenario: &'static str,
        what: String,
        tenant: TenantDef,
        tier: Tier,
        tags: &[&str],
        task: Value,
        expect: Expect,
    ) -> JobId {
        let job_id = JobId::new();
        let subtasks = task["subtasks"]
            .as_array()
            .map(|subtasks| {
                subtasks
                    .iter()
                    .filter_map(|s| s["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut body = json!({
            "schema": "switchyard.job/v1",
            "job_id": job_id.to_string(),
            "tenant_id": tenant.id,
            "plan": tenant.plan,
            "priority": tier,
            "callback": { "url": format!("{}/{}", self.hooks, tenant.id) },
            "submitted_at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            "tags": tags,
            "metadata": { "scenario": scenario },
        });
        body["task"] = task;
        self.items.push(Item {
            scenario,
            what,
            tier,
            tenant: Some(tenant.id),
            job_id: Some(job_id),
            expect,
            subtasks,
            body: body.to_string().into_bytes(),
            letter_body: None,
        });
        job_id
    }

    fn raw(&mut self, what: &str, tier: Tier, body: Vec<u8>, class: &str) {
        self.items.push(Item {
            scenario: "bad-input",
            what: what.to_owned(),
            tier,
            tenant: None,
            job_id: None,
            expect: Expect::DeadLetter(class.to_owned()),
            subtasks: Vec::new(),
            letter_body: Some(base64::engine::general_purpose::STANDARD.encode(&body)),
            body,
        });
    }
}

/// An image as a job's `input`: inline when small, else a blob reference.
#[derive(Clone, Debug)]
struct Image {
    name: String,
    input: Value,
    how: &'static str,
}

async fn images(found: &[(String, Vec<u8>)], ledger: &DevLedger) -> anyhow::Result<Vec<Image>> {
    let mut images = Vec::new();
    for (name, bytes) in found {
        let content_type = match name
            .rsplit('.')
            .next()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("png") => "image/png",
            Some("webp") => "image/webp",
            _ => "image/jpeg",
        };
        let (input, how) = if bytes.len() <= INLINE_LIMIT {
            let data = base64::engine::general_purpose::STANDARD.encode(bytes);
            (
                json!({ "type": "inline", "data_base64": data, "content_type": content_type }),
                "inline",
            )
        } else {
            let stored = ledger
                .blobs()
                .put(&format!("samples/{name}"), bytes.clone(), content_type)
                .await?;
            (
                json!({ "type": "uri", "uri": stored.uri, "content_type": content_type,
                        "size_bytes": stored.size_bytes }),
                "blob",
            )
        };
        images.push(Image {
            name: name.clone(),
            input,
            how,
        });
    }
    Ok(images)
}

fn detect(image: &Image) -> Value {
    json!({ "kind": "detect", "input": image.input })
}

fn chat(prompt: &str) -> Value {
    json!({
        "kind": "chat",
        "messages": [{ "role": "user", "content": prompt }],
        "params": { "max_tokens": 96 },
    })
}

fn summarize(text: &str) -> Value {
    json!({ "kind": "summarize", "input": { "type": "text", "text": text }, "max_words": 40 })
}

fn classify(text: &str, labels: &[&str]) -> Value {
    json!({ "kind": "classify", "input": { "type": "text", "text": text }, "labels": labels })
}

const REVIEWS: [&str; 3] = [
    "The blender arrived broken and support never answered.",
    "Works exactly as described, and the battery lasts all week.",
    "It is a phone case. It holds the phone.",
];
const SENTIMENT: [&str; 3] = ["positive", "negative", "neutral"];
const CONTRACT: &str = "This Master Services Agreement is entered into by Lexcorp LLP and the \
    Client. The Supplier shall provide the Services with reasonable skill and care. Either party \
    may terminate on 90 days' written notice; fees accrued before termination remain payable. \
    Liability is capped at the fees paid in the twelve months before the claim, except for \
    breach of confidentiality, which is uncapped.";
const DISCHARGE: &str = "Patient admitted with community-acquired pneumonia, treated with \
    amoxicillin-clavulanate for five days, afebrile for 48 hours at discharge; follow-up chest \
    X-ray in six weeks.";

/// The sample, plus `extra` jobs drawn from its good scenarios.
pub async fn build(
    found: &[(String, Vec<u8>)],
    hooks: &str,
    extra: usize,
    ledger: &DevLedger,
) -> anyhow::Result<Sample> {
    let images = images(found, ledger).await?;
    let inline: Vec<&Image> = images.iter().filter(|i| i.how == "inline").collect();
    let mut b = Builder {
        hooks,
        items: Vec::new(),
    };
    let ok = || Expect::Result;

    // 1. Low-cost batch labeling: batch-tier bulk work to the cheapest adequate backend.
    for image in images.iter().take(6) {
        b.job(
            "bulk-labeling",
            format!("detect {} ({})", image.name, image.how),
            LABELCO,
            Tier::Batch,
            &["bulk"],
            detect(image),
            ok(),
        );
    }
    for review in REVIEWS {
        b.job(
            "bulk-labeling",
            "classify a review's sentiment".to_owned(),
            LABELCO,
            Tier::Batch,
            &["bulk"],
            classify(review, &SENTIMENT),
            ok(),
        );
    }

    // 2. Real-time UI: the lowest latency, GPU-class vision and fast LLMs.
    for image in inline.iter().take(2) {
        b.job(
            "realtime-ui",
            format!("detect {} ({})", image.name, image.how),
            APPCO,
            Tier::Realtime,
            &[],
            detect(image),
            ok(),
        );
    }
    for prompt in [
        "Suggest a short title for a photo of a rocket on its launch pad.",
        "Autocomplete: 'Meet me at the'",
    ] {
        b.job(
            "realtime-ui",
            "chat (UI suggestion)".to_owned(),
            APPCO,
            Tier::Realtime,
            &[],
            chat(prompt),
            ok(),
        );
    }

    // 3. High accuracy: legal and medical work to the top-tier models.
    b.job(
        "high-accuracy",
        "summarize a contract (legal)".to_owned(),
        LEXCORP,
        Tier::Standard,
        &["legal"],
        summarize(CONTRACT),
        ok(),
    );
    b.job(
        "high-accuracy",
        "summarize a discharge note (medical)".to_owned(),
        LEXCORP,
        Tier::Standard,
        &["medical"],
        summarize(DISCHARGE),
        ok(),
    );
    b.job(
        "high-accuracy",
        "classify a clause (legal)".to_owned(),
        LEXCORP,
        Tier::Standard,
        &["legal"],
        classify(
            "Liability is capped at the fees paid in the twelve months before the claim.",
            &["limitation-of-liability", "termination", "confidentiality"],
        ),
        ok(),
    );

    // 4. SaaS plans: basic buys the small, fast models; pro buys premium ones.
    for (tenant, prompt) in [
        (SMALLCO, "Write a one-line welcome message for new users."),
        (SMALLCO, "Translate 'good morning' into French."),
        (
            BIGCO,
            "Draft a two-sentence apology for a delayed shipment.",
        ),
        (
            BIGCO,
            "Explain what a dead-letter queue is, in one sentence.",
        ),
    ] {
        b.job(
            "saas-plans",
            format!("chat ({} plan)", tenant.plan),
            tenant,
            Tier::Standard,
            &[],
            chat(prompt),
            ok(),
        );
    }

    // 5. Fan-out: detect objects and describe the image, joined into one result.
    let Some(fan_image) = images.last() else {
        anyhow::bail!("no sample images");
    };
    b.job(
        "fan-out",
        format!(
            "multi: detect + caption {} ({})",
            fan_image.name, fan_image.how
        ),
        BIGCO,
        Tier::Standard,
        &[],
        json!({ "kind": "multi", "subtasks": [
            { "name": "objects", "task": detect(fan_image) },
            { "name": "caption", "task": chat(&format!(
                "Describe the photo {} in one sentence.", fan_image.name)) },
        ]}),
        ok(),
    );

    // 6. Bad input: each must end in a dead-letter queue with its reason, none silently.
    b.raw(
        "not JSON",
        Tier::Standard,
        b"hello, is this the router?".to_vec(),
        "decode",
    );
    b.raw(
        "a job that breaks the schema",
        Tier::Standard,
        br#"{"schema":"switchyard.job/v1","priority":"urgent"}"#.to_vec(),
        "schema_invalid",
    );
    b.raw(
        "a 1.1 MB message (over the bus limit)",
        Tier::Batch,
        format!(
            r#"{{"schema":"switchyard.job/v1","pad":"{}"}}"#,
            "x".repeat(1_100_000)
        )
        .into_bytes(),
        "oversized",
    );
    let corrupt = base64::engine::general_purpose::STANDARD
        .encode(b"\xFF\xD8\xFF\xE0 this JPEG ends before its first scan");
    b.job(
        "bad-input",
        "detect on a corrupt JPEG".to_owned(),
        LABELCO,
        Tier::Batch,
        &["bulk"],
        json!({ "kind": "detect", "input": { "type": "inline", "data_base64": corrupt,
                "content_type": "image/jpeg" } }),
        Expect::DeadLetter("invalid_input".to_owned()),
    );
    if let Some(image) = inline.first() {
        b.job(
            "bad-input",
            "detect tagged medical (no backend is accurate enough)".to_owned(),
            LEXCORP,
            Tier::Standard,
            &["medical"],
            detect(image),
            Expect::DeadLetter("no_route".to_owned()),
        );
    }

    // --jobs N: more of the good scenarios, round robin.
    for n in 0..extra {
        let image = &images[n % images.len()];
        match n % 5 {
            0 => b.job(
                "load",
                format!("detect {}", image.name),
                LABELCO,
                Tier::Batch,
                &["bulk"],
                detect(image),
                ok(),
            ),
            1 => b.job(
                "load",
                "chat".to_owned(),
                SMALLCO,
                Tier::Standard,
                &[],
                chat(&format!("Give me fun fact number {n}.")),
                ok(),
            ),
            2 => b.job(
                "load",
                "classify".to_owned(),
                LABELCO,
                Tier::Batch,
                &[],
                classify(REVIEWS[n % REVIEWS.len()], &SENTIMENT),
                ok(),
            ),
            3 => b.job(
                "load",
                "chat".to_owned(),
                APPCO,
                Tier::Realtime,
                &[],
                chat(&format!("Autocomplete suggestion {n}")),
                ok(),
            ),
            _ => b.job(
                "load",
                "summarize (legal)".to_owned(),
                LEXCORP,
                Tier::Standard,
                &["legal"],
                summarize(CONTRACT),
                ok(),
            ),
        };
    }
    Ok(Sample {
        items: b.items,
        extra,
    })
}

/// Publishes every item to its tier's queue.
pub async fn submit(bus: &AnyBus, sample: &Sample) -> anyhow::Result<()> {
    for tier in Tier::ALL {
        let messages: Vec<Outgoing> = sample
            .items
            .iter()
            .filter(|item| item.tier == tier)
            .map(|item| {
                let message = Outgoing::new(item.body.clone());
                match (item.job_id, item.tenant) {
                    (Some(job_id), _) => message.with_key(job_id.to_string()),
                    (None, Some(tenant)) => message.with_key(tenant),
                    (None, None) => message,
                }
            })
            .collect();
        if !messages.is_empty() {
            bus.publish_batch(&tier.queue(), messages).await?;
        }
    }
    Ok(())
}
