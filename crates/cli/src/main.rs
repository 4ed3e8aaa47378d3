//! `switchyard`: the one binary. Subcommands arrive with the issues that build them.

mod detect;
mod dev;
mod dlq;
mod jobs;
mod router;
mod worker;

use std::future::Future;
use std::io::{self, IsTerminal as _, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchyard_core::config::Config;
use switchyard_core::contracts::{self, DEFAULT_MAX_MESSAGE_BYTES, Message};

#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about = "Queue-native inference router")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate messages (any Switchyard envelope or document) against their schema.
    ///
    /// Prints `ok` lines on stdout and one line per problem on stderr, naming the field. Exits 1
    /// when any input is invalid.
    Validate {
        /// Files to check; `-` reads standard input.
        #[arg(required = true)]
        files: Vec<String>,
        /// Size limit in bytes, as the bus enforces it.
        #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
        max_bytes: usize,
    },
    /// Route jobs: read the tier queues, decide by policy, publish to the backends' queues.
    Router {
        /// The config file; defaults apply when absent.
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        args: router::RouterArgs,
    },
    /// Serve backends' queues.
    Worker {
        /// The config file; defaults apply when absent.
        #[arg(long, short, env = "SWITCHYARD_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: worker::WorkerCommand,
    },
    /// What the store knows about jobs.
    Jobs {
        /// The config file; defaults (the embedded store) apply when absent.
        #[arg(long, short, env = "SWITCHYARD_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: jobs::JobsCommand,
    },
    /// Dead letters: list, inspect, replay and purge them (Kafka and SQS).
    Dlq {
        /// The config file; defaults apply when absent.
        #[arg(long, short, env = "SWITCHYARD_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Run a YOLO detection model on images, as the vision worker does (to try a model).
    Detect(detect::DetectArgs),
    /// Run the whole system in this process on a sample workload: in-process bus, router,
    /// vision and (simulated) LLM workers, embedded store, webhooks to a local receiver.
    Dev(dev::DevArgs),
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Load, overlay the environment, validate and summarize a config file.
    Check {
        /// The config file; defaults apply when absent.
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
    },
}

// Every hop allocates per message (JSON values, envelopes, headers) on several runtime
// threads at once, where glibc's arenas contend; see docs/benchmarks.md (router through Kafka).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { files, max_bytes } => validate(&files, max_bytes),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => config_check(config.as_deref()),
        Command::Router { config, args } => {
            serve(config.as_deref(), |config| router::run(config, args))
        }
        Command::Worker { config, command } => {
            serve(config.as_deref(), |config| worker::run(config, command))
        }
        Command::Dlq { config, command } => Config::load(config.as_deref())
            .map_err(anyhow::Error::from)
            .and_then(|config| dlq::run(&config, command)),
        Command::Detect(args) => {
            init_logs("warn");
            detect::run(&args)
        }
        Command::Dev(args) => dev::run(&args),
        Command::Jobs { config, command } => Config::load(config.as_deref())
            .map_err(anyhow::Error::from)
            .and_then(|config| jobs::run(&config, command)),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            let _ = writeln!(io::stderr(), "error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// The configured bus and store, which every long-lived service opens first.
async fn bus_and_store(
    config: &Config,
) -> anyhow::Result<(
    switchyard_bus::any::AnyBus,
    switchyard_ledger::store::AnyStore,
)> {
    let bus = switchyard_bus::any::AnyBus::from_config(config)
        .await
        .context("cannot reach the bus")?;
    let store = switchyard_ledger::store::AnyStore::open(&config.store)
        .await
        .context("cannot open the store")?;
    Ok((bus, store))
}

/// Runs a long-lived service: logs on stderr (`RUST_LOG`, JSON with `SWITCHYARD_LOG=json`),
/// a multi-threaded runtime, exit status 0 after a graceful shutdown.
fn serve<F, Fut>(config: Option<&Path>, service: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Config) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let config = Config::load(config)?;
    init_logs("info");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(service(config))?;
    Ok(ExitCode::SUCCESS)
}

/// Logs on stderr: `RUST_LOG` (else `default`), JSON with `SWITCHYARD_LOG=json`.
fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        // Colour codes only for people: a log file or a collector gets plain text.
        .with_ansi(io::stderr().is_terminal());
    if std::env::var("SWITCHYARD_LOG").is_ok_and(|v| v == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
}

fn validate(files: &[String], max_bytes: usize) -> anyhow::Result<ExitCode> {
    let mut stdout = io::stdout().lock();
    let mut stderr = io::stderr().lock();
    let mut invalid = 0usize;
    for file in files {
        let bytes = read_input(file)?;
        match contracts::decode_any(&bytes, max_bytes) {
            Ok(message) => writeln!(stdout, "{file}: ok ({})", describe(&message))?,
            Err(error) => {
                invalid += 1;
                match &error {
                    contracts::DecodeError::Invalid(violations) => {
                        for violation in violations {
                            writeln!(stderr, "{file}: {violation}")?;
                        }
                    }
                    contracts::DecodeError::Oversized { .. }
                    | contracts::DecodeError::Json(_)
                    | contracts::DecodeError::UnknownSchema(_) => {
                        writeln!(stderr, "{file}: {error}")?;
                    }
                }
            }
        }
    }
    Ok(if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn read_input(file: &str) -> anyhow::Result<Vec<u8>> {
    if file == "-" {
        let mut bytes = Vec::new();
        io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read standard input")?;
        Ok(bytes)
    } else {
        std::fs::read(file).with_context(|| format!("cannot read {file}"))
    }
}

fn describe(message: &Message) -> String {
    let detail = match message {
        Message::Job(job) => format!("job {} of {}", job.job_id, job.tenant_id),
        Message::Routed(routed) => format!(
            "job {} routed to {}",
            routed.job.job_id, routed.decision.backend_id
        ),
        Message::Result(result) => format!("result of job {}", result.job_id),
        Message::Usage(usage) => format!("usage event {}", usage.event_id),
        Message::DeadLetter(letter) => format!("dead letter {}", letter.dead_letter_id),
        Message::Event(event) => format!("event {}", event.event_id),
    };
    format!("{}, {detail}", message.schema_id())
}

fn config_check(path: Option<&Path>) -> anyhow::Result<ExitCode> {
    match Config::load(path) {
        Ok(config) => {
            let mut stdout = io::stdout().lock();
            writeln!(
                stdout,
                "ok: bus {:?}, store {}, {} backends, rates {}",
                bus_name(&config),
                store_name(&config),
                config.backends.len(),
                config.rates.version
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            writeln!(io::stderr(), "{error}")?;
            Ok(ExitCode::FAILURE)
        }
    }
}

fn bus_name(config: &Config) -> &'static str {
    use switchyard_core::config::BusConfig;
    match config.bus {
        BusConfig::Memory => "memory",
        BusConfig::Kafka(_) => "kafka",
        BusConfig::Sqs(_) => "sqs",
    }
}

fn store_name(config: &Config) -> &'static str {
    use switchyard_core::config::StoreConfig;
    match config.store {
        StoreConfig::Embedded { .. } => "embedded",
        StoreConfig::Mongo { .. } => "mongo",
    }
}
