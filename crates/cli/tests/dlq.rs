//! `switchyard dlq` end to end, once on Apache Kafka with FerretDB and once on SQS (moto) with
//! the embedded store, all from `deploy/local`: an LLM worker with a wrong API key dead-letters
//! three jobs with the provider's reason; the key is fixed; one letter is copied, then moved,
//! then replayed again (the job still has exactly one result and one charge, and the last
//! replay sends nothing); another is purged and the third stays; every replay and purge is
//! audited and noted in the job's timeline.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: failing loudly is the point"
)]

mod common;
mod sim_backed;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Process, service_env};
use switchyard_bus::Bus as _;
use switchyard_bus::Outgoing;
use switchyard_bus::any::AnyBus;
use switchyard_core::config::Config;
use switchyard_core::contracts::{self, JobState, RoutedJob};
use switchyard_core::{JobId, TenantId};
use switchyard_ledger::store::{AnyStore, Store as _};
use switchyard_llm_sim::{SimConfig, Simulator};

const KEY: &str = "sk-sim-dlq-right-key-7";
const WRONG_KEY: &str = "sk-sim-dlq-rotated-away-3";

struct Setup {
    dir: PathBuf,
    config_path: PathBuf,
    env: Vec<(String, String)>,
    config: Config,
    tenant: TenantId,
}

impl Setup {
    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        command
            .env_remove("SWITCHYARD_CONFIG")
            .env("SWITCHYARD_OPERATOR", "test-sre")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    fn worker(&self, key: &str, log: &Path) -> Process {
        let child = self
            .command()
            .args(["worker", "llm", "--config"])
            .arg(&self.config_path)
            .env("SWITCHYARD_TEST_SIM_KEY", key)
            .env("RUST_LOG", "info,switchyard_llm=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Process::new(child)
    }

    /// Runs `switchyard dlq ARGS...` to completion, standard input not a terminal.
    async fn dlq(&self, args: &[&str]) -> Output {
        let mut command = self.command();
        command
            .arg("dlq")
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null());
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap()
    }

    async fn dlq_ok(&self, args: &[&str]) -> String {
        let output = self.dlq(args).await;
        assert!(
            output.status.success(),
            "dlq {args:?}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    async fn letters(&self) -> Vec<serde_json::Value> {
        self.dlq_ok(&["list", "--tenant", self.tenant.as_str(), "--json"])
            .await
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

fn routed(config: &Config, tenant: &TenantId, prompt: &str) -> RoutedJob {
    let mut routed = sim_backed::routed(config, "sim-openai", &[], prompt);
    routed.job.tenant_id = tenant.clone();
    routed.job.callback = None;
    routed
}

/// Waits for `check` to hold, looking every 200 ms: each check reads the place where the
/// awaited outcome becomes visible. On a timeout, the end of the worker's log says why.
async fn until<F, Fut>(what: &str, log: &Path, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let waited = tokio::time::timeout(Duration::from_secs(90), async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    if waited.is_err() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        panic!("{what}: not within 90 s; the worker's log ends:\n{tail}");
    }
}

fn setup(run: &str, bus_and_store: &str, env: Vec<(String, String)>, address: SocketAddr) -> Setup {
    let dir = std::env::temp_dir().join(format!("switchyard-dlq-{run}"));
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "{bus_and_store}\n{}",
        sim_backed::worker_config(&dir, &format!("t.dlq.{run}.openai"), address)
    );
    let config_path = dir.join("switchyard.toml");
    std::fs::write(&config_path, &text).unwrap();
    let config = Config::from_parts(&text, "test", &env, Some(&dir)).unwrap();
    Setup {
        dir,
        config_path,
        env,
        config,
        tenant: TenantId::new(format!("dlq-{run}")).unwrap(),
    }
}

async fn scenario(setup: Setup, sim: &Simulator) {
    let bus = AnyBus::from_config(&setup.config).await.unwrap();
    let store = AnyStore::open(&setup.config.store).await.unwrap();
    let queue = setup.config.backend("sim-openai").unwrap().queue.clone();
    bus.ensure(std::slice::from_ref(&queue)).await.unwrap();

    // The key was rotated and the worker not told: every call is refused, for good.
    let log = setup.dir.join("worker-1.log");
    let worker = setup.worker(WRONG_KEY, &log);
    let jobs: Vec<RoutedJob> = ["replay me", "purge me", "leave me"]
        .iter()
        .map(|prompt| routed(&setup.config, &setup.tenant, prompt))
        .collect();
    let (replayed, purged, left) = (jobs[0].job.job_id, jobs[1].job.job_id, jobs[2].job.job_id);
    for job in &jobs {
        bus.publish(
            &queue,
            Outgoing::new(contracts::encode(job)).with_key(job.job.tenant_id.as_str()),
        )
        .await
        .unwrap();
    }
    until("three dead letters", &log, || async {
        setup.letters().await.len() == 3
    })
    .await;
    let letters = setup.letters().await;
    for letter in &letters {
        assert_eq!(letter["error_class"], "provider_rejected", "{letter}");
        assert!(
            letter["reason"]
                .as_str()
                .unwrap()
                .contains("Incorrect API key"),
            "{letter}"
        );
        assert_eq!(letter["source_queue"], queue.as_str());
    }
    let letter_of = |job: JobId| -> String {
        letters
            .iter()
            .find(|l| l["job_id"] == job.to_string())
            .unwrap()["dead_letter_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(worker.terminate().await.success());
    // The worker noted each dead letter in its job's timeline.
    let record = store.job(replayed).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::DeadLettered, "{record:?}");
    assert!(
        record
            .history
            .iter()
            .any(|step| step.state == JobState::DeadLettered
                && step
                    .detail
                    .as_deref()
                    .is_some_and(|d| d.contains("provider_rejected"))),
        "{record:?}"
    );

    // `show`: the reason and the payload, decoded; `--raw`: the bytes as they failed.
    let shown = setup.dlq_ok(&["show", &letter_of(replayed)]).await;
    assert!(shown.contains("provider_rejected"), "{shown}");
    assert!(
        shown.contains(&format!("\"job_id\": \"{replayed}\"")),
        "{shown}"
    );
    let raw = setup.dlq(&["show", &letter_of(replayed), "--raw"]).await;
    let original: RoutedJob = contracts::decode(&raw.stdout, 1 << 20).unwrap();
    assert_eq!(original.job.job_id, replayed);

    let stats = setup
        .dlq_ok(&["stats", "--tenant", setup.tenant.as_str(), "--json"])
        .await;
    let stats: serde_json::Value = serde_json::from_str(stats.trim()).unwrap();
    assert_eq!(
        (stats["count"].as_u64(), stats["error_class"].as_str()),
        (Some(3), Some("provider_rejected"))
    );

    // The fix: the worker gets the current key.
    let log = setup.dir.join("worker-2.log");
    let worker = setup.worker(KEY, &log);
    let tenant = setup.tenant.as_str();
    let only = |job: JobId| {
        vec![
            "--tenant".to_owned(),
            tenant.to_owned(),
            "--job-id".into(),
            job.to_string(),
        ]
    };
    let args = |verb: &str, job: JobId, extra: &[&str]| -> Vec<String> {
        let mut args = vec![verb.to_owned()];
        args.extend(only(job));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let run = |args: Vec<String>| {
        let setup = &setup;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            setup.dlq_ok(&args).await
        }
    };

    let dry = run(args("replay", replayed, &["--dry-run"])).await;
    assert!(dry.contains(&letter_of(replayed)), "{dry}");
    assert!(dry.contains("1 letter would be replayed"), "{dry}");
    assert_eq!(store.result(replayed).await.unwrap(), None);

    // A copy, the letter kept: the job is answered once.
    let copied = run(args("replay", replayed, &["--keep"])).await;
    assert!(copied.contains("copied 1 of 1 matching letter"), "{copied}");
    until("the replayed job's result", &log, || async {
        store.result(replayed).await.unwrap().is_some()
    })
    .await;
    let first = store.result(replayed).await.unwrap().unwrap();
    assert_eq!(store.usage_of_job(replayed).await.unwrap().len(), 1);
    let kept = setup.letters().await;
    assert_eq!(kept.len(), 3, "--keep leaves the letter");
    let mark = &kept
        .iter()
        .find(|l| l["job_id"] == replayed.to_string())
        .unwrap()["mark"];
    assert_eq!(
        (mark["copies"].as_u64(), mark["removed"].as_bool()),
        (Some(1), Some(false))
    );

    // The same letter again, moved this time: the worker sees the job has its result and
    // neither calls the provider nor charges again.
    let moved = run(args("replay", replayed, &[])).await;
    assert!(moved.contains("replayed 1 of 1 matching letter"), "{moved}");
    let announced = format!("job_id={replayed}");
    until("the second copy to be handled", &log, || async {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .any(|l| l.contains("Already finished; announced again.") && l.contains(&announced))
    })
    .await;
    assert_eq!(store.result(replayed).await.unwrap().unwrap(), first);
    assert_eq!(store.usage_of_job(replayed).await.unwrap().len(), 1);
    assert_eq!(sim.stats().by_status.get(&200), Some(&1));

    // Replayed once for good: a third replay sends nothing.
    let again = run(args("replay", replayed, &[])).await;
    assert!(
        again.contains("replayed 0 of 0 matching letters"),
        "{again}"
    );

    // Purge: refused without --yes off a terminal, and without any filter; then only what
    // the filter names goes.
    let refused = setup
        .dlq(&["purge", "--tenant", tenant, "--job-id", &purged.to_string()])
        .await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    let refused = setup.dlq(&["purge", "--yes"]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--all"));
    let purge = run(args("purge", purged, &["--yes"])).await;
    assert!(purge.contains("purged 1 of 1 matching letter"), "{purge}");
    let rest = setup.letters().await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0]["job_id"], left.to_string());
    assert_eq!(store.result(left).await.unwrap(), None);

    // The audit trail: who did what, with which filters, and how it went.
    let audits: Vec<serde_json::Value> = setup
        .dlq_ok(&["audit", "--json", "--limit", "50"])
        .await
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .filter(|a: &serde_json::Value| a["filters"].as_str().unwrap().contains(tenant))
        .collect();
    let summary: Vec<(String, u64, u64)> = audits
        .iter()
        .map(|a| {
            assert_eq!(
                a["operator"].as_str().unwrap().split('@').next(),
                Some("test-sre")
            );
            assert_eq!(a["outcome"], "completed");
            (
                a["action"].as_str().unwrap().to_owned(),
                a["done"].as_u64().unwrap(),
                a["skipped"].as_u64().unwrap(),
            )
        })
        .collect();
    let kafka = matches!(bus, AnyBus::Kafka(_));
    // Newest first. Kafka still holds the replayed letter and skips it; SQS deleted it.
    assert_eq!(
        summary,
        vec![
            ("purge".into(), 1, 0),
            ("replay".into(), 0, u64::from(kafka)),
            ("replay".into(), 1, 0),
            ("replay".into(), 1, 0),
        ]
    );

    let timeline = store.job(replayed).await.unwrap().unwrap();
    assert_eq!(
        timeline.state,
        JobState::Succeeded,
        "a replay moves the job on"
    );
    let replays = timeline
        .history
        .iter()
        .filter(|step| {
            step.detail
                .as_deref()
                .is_some_and(|d| d.contains("replayed from"))
        })
        .count();
    assert_eq!(replays, 2, "{timeline:?}");

    assert!(worker.terminate().await.success());
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(!logs.contains(KEY), "the API key reached the logs");
    let _ = std::fs::remove_dir_all(&setup.dir);
}

async fn simulator() -> (
    std::sync::Arc<Simulator>,
    SocketAddr,
    tokio_util::sync::DropGuard,
) {
    let sim = Simulator::new(SimConfig {
        api_key: Some(KEY.to_owned()),
        ..SimConfig::default()
    });
    let shutdown = tokio_util::sync::CancellationToken::new();
    let address = sim
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)), shutdown.clone())
        .await
        .unwrap();
    (sim, address, shutdown.drop_guard())
}

fn run_id() -> String {
    // Short: SQS queue names hold 80 characters, prefix and DLQ prefix included.
    let id = ulid::Ulid::new().to_string().to_ascii_lowercase();
    id[id.len() - 12..].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_purge_on_kafka_with_ferretdb() {
    let (brokers, mongo_uri) = (
        service_env("SWITCHYARD_KAFKA_BROKERS"),
        service_env("SWITCHYARD_MONGO_URI"),
    );
    let (sim, address, _stop) = simulator().await;
    let run = run_id();
    let bus_and_store = format!(
        r#"
[bus]
kind = "kafka"
[bus.kafka]
brokers = "{brokers}"
group_id = "test-dlq-{run}"
[store]
kind = "mongo"
[store.mongo]
database = "dlq_{run}"
"#
    );
    let env = vec![("SWITCHYARD_MONGO_URI".to_owned(), mongo_uri)];
    scenario(setup(&run, &bus_and_store, env, address), &sim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_purge_on_sqs_with_the_embedded_store() {
    let endpoint = service_env("AWS_ENDPOINT_URL");
    let (sim, address, _stop) = simulator().await;
    let run = run_id();
    let dir = std::env::temp_dir().join(format!("switchyard-dlq-{run}"));
    let bus_and_store = format!(
        r#"
[bus]
kind = "sqs"
[bus.sqs]
endpoint_url = "{endpoint}"
region = "us-east-1"
queue_prefix = "sy-"
wait_time = "1s"
[store]
kind = "embedded"
[store.embedded]
path = "{store}"
"#,
        store = dir.join("store").display()
    );
    scenario(setup(&run, &bus_and_store, Vec::new(), address), &sim).await;
}
