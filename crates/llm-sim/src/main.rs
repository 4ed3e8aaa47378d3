//! `switchyard-llm-sim`: the simulated OpenAI and Anthropic APIs as a server.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use switchyard_llm_sim::{Fault, Latency, SimConfig, SimLimits, Simulator};

/// A local simulator of the OpenAI Chat Completions and Anthropic Messages APIs (SIMULATED:
/// no real model answers). Point a backend's `base_url` at it.
#[derive(Debug, Parser)]
#[command(name = "switchyard-llm-sim", version)]
struct Args {
    #[arg(
        long,
        default_value = "127.0.0.1:8089",
        env = "SWITCHYARD_LLM_SIM_LISTEN"
    )]
    listen: SocketAddr,
    /// `200ms` (fixed), `50ms..400ms` (uniform) or `lognormal:200ms:0.5` (median, sigma).
    #[arg(long, default_value = "0ms")]
    latency: String,
    /// Natural reply length in tokens, `LOW..HIGH`, before `max_tokens` cuts it.
    #[arg(long, default_value = "16..64")]
    reply_tokens: String,
    /// Require the key in this environment variable (otherwise any non-empty key passes).
    #[arg(long)]
    api_key_env: Option<String>,
    /// Provider-side requests per minute; over it, 429 with Retry-After.
    #[arg(long)]
    rpm: Option<u32>,
    /// Provider-side tokens per minute (input + max_tokens).
    #[arg(long)]
    tpm: Option<u32>,
    /// A random fault and its probability, e.g. `--fault server_error=0.01`; repeatable.
    #[arg(long = "fault", value_name = "SPEC=P")]
    faults: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let api_key = match &args.api_key_env {
        Some(name) => Some(std::env::var(name).with_context(|| format!("{name} is not set"))?),
        None => None,
    };
    let config = SimConfig {
        latency: parse_latency(&args.latency)?,
        reply_tokens: parse_range(&args.reply_tokens)?,
        api_key,
        limits: SimLimits {
            requests_per_minute: args.rpm,
            tokens_per_minute: args.tpm,
        },
        random_faults: args
            .faults
            .iter()
            .map(|spec| parse_fault(spec))
            .collect::<anyhow::Result<_>>()?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let simulator = Simulator::new(config);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let bound = simulator.serve(args.listen, shutdown.clone()).await?;
        // The one line a script waits for (stdout), before any request can arrive.
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "listening on http://{bound} (SIMULATED LLM provider)"
        )?;
        stdout.flush()?;
        drop(stdout);
        tokio::signal::ctrl_c().await?;
        shutdown.cancel();
        anyhow::Ok(())
    })
}

fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    humantime_serde::re::humantime::parse_duration(text)
        .with_context(|| format!("`{text}` is not a duration"))
}

fn parse_latency(text: &str) -> anyhow::Result<Latency> {
    if let Some(rest) = text.strip_prefix("lognormal:") {
        let Some((median, sigma)) = rest.split_once(':') else {
            bail!("expected lognormal:MEDIAN:SIGMA, got `{text}`");
        };
        return Ok(Latency::LogNormal {
            median: parse_duration(median)?,
            sigma: sigma.parse().context("sigma is not a number")?,
        });
    }
    if let Some((min, max)) = text.split_once("..") {
        return Ok(Latency::Uniform {
            min: parse_duration(min)?,
            max: parse_duration(max)?,
        });
    }
    Ok(Latency::Fixed(parse_duration(text)?))
}

fn parse_range(text: &str) -> anyhow::Result<std::ops::RangeInclusive<u32>> {
    let Some((low, high)) = text.split_once("..") else {
        bail!("expected LOW..HIGH, got `{text}`");
    };
    let (low, high): (u32, u32) = (low.parse()?, high.parse()?);
    if low == 0 || low > high {
        bail!("expected 1 <= LOW <= HIGH, got `{text}`");
    }
    Ok(low..=high)
}

fn parse_fault(text: &str) -> anyhow::Result<(Fault, f64)> {
    let Some((spec, probability)) = text.rsplit_once('=') else {
        bail!("expected SPEC=PROBABILITY, got `{text}`");
    };
    let fault = spec.parse::<Fault>().map_err(anyhow::Error::msg)?;
    let probability: f64 = probability.parse().context("probability is not a number")?;
    if !(0.0..=1.0).contains(&probability) {
        bail!("probability must be within 0..1, got {probability}");
    }
    Ok((fault, probability))
}
