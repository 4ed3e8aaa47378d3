//! `switchyard dlq list | stats | show | replay | purge | audit`: dead letters, for the SRE on
//! call.
//!
//! Safety rules, in the order an incident needs them:
//! - reading changes nothing (`list`, `stats`, `show`; on SQS the letters are held while read
//!   and released at once after);
//! - a letter leaves its queue only after its copy is durable on the destination, so a
//!   replay killed at any point loses nothing; the worst case is one copy too many, which the
//!   job id makes harmless (the first result and charge win);
//! - what was replayed or purged is remembered in the store, so a repeated replay sends
//!   nothing twice (Kafka cannot delete a letter from its topic; on SQS this finishes a replay
//!   that was killed between sending and deleting);
//! - copies go only to queues this config knows, never to a typo that a broker would create;
//! - `purge` refuses without a filter or `--all`, and without `--yes` off a terminal;
//! - every replay and purge leaves an audit record (who, when, filters, counts) in the store.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal as _, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use switchyard_bus::Bus as _;
use switchyard_bus::any::AnyBus;
use switchyard_bus::dlq::{Browse, DLQ_PREFIX, Letter};
use switchyard_core::config::Config;
use switchyard_core::contracts::{DeadLetter, ErrorClass, JobState};
use switchyard_core::{JobId, QueueName, TenantId, Tier};
use switchyard_ledger::store::{
    AnyStore, DlqAudit, LetterAction, LetterMark, StatusUpdate, Store as _,
};
use tokio_util::sync::CancellationToken;

/// How long a pass holds the SQS letters it has read; renewed while it runs.
const HOLD: Duration = Duration::from_secs(300);
/// Letters whose marks are looked up in one store query.
const CHUNK: usize = 200;

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Dead letters, in queue order: a table, or JSON lines.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Stop after this many.
        #[arg(long)]
        limit: Option<usize>,
        /// JSON lines (the whole dead letter) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Counts of dead letters by queue, error class and tenant.
    Stats {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long)]
        json: bool,
    },
    /// One dead letter in full: why, when, and the original payload decoded.
    Show {
        /// A dead letter id, or a job id (every letter of that job).
        id: String,
        /// Where to look (source queues); default: every queue this config knows.
        #[arg(long = "queue", value_name = "QUEUE")]
        queues: Vec<String>,
        /// Write the original bytes, exactly, to standard output and nothing else.
        #[arg(long)]
        raw: bool,
    },
    /// Send letters back to their source queue (or `--to`), with a fresh attempt count.
    Replay {
        #[command(flatten)]
        filter: FilterArgs,
        /// Send every copy here instead of each letter's source queue.
        #[arg(long, value_name = "QUEUE")]
        to: Option<String>,
        /// Copies per second, `N` or `N/s` or `N/m`; `0` for no limit.
        #[arg(long, default_value = "100/s", value_parser = parse_rate)]
        rate: Rate,
        /// Replay at most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// Print what would be sent, send nothing.
        #[arg(long)]
        dry_run: bool,
        /// Leave the letters in the queue (and listed) after sending their copies.
        #[arg(long)]
        keep: bool,
    },
    /// Delete letters (on Kafka: hide them for good; the bytes go with the topic's retention).
    Purge {
        #[command(flatten)]
        filter: FilterArgs,
        /// Purge every letter of the chosen queues; required when no filter is given.
        #[arg(long)]
        all: bool,
        /// Do not ask; required when standard input is not a terminal.
        #[arg(long)]
        yes: bool,
        /// Print what would be purged, purge nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// The audit trail of replays and purges, newest first.
    Audit {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

/// Which letters a command works on. All given filters must match.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct FilterArgs {
    /// A source queue whose dead letters to read (repeatable); default: every queue this
    /// config knows (the tier queues and the backends' queues).
    #[arg(long = "queue", value_name = "QUEUE")]
    queues: Vec<String>,
    #[arg(long)]
    tenant: Option<String>,
    /// decode | schema_invalid | oversized | no_route | budget_exceeded | invalid_input |
    /// provider_rejected | retries_exhausted | deadline_exceeded | internal
    #[arg(long, value_name = "CLASS")]
    error_class: Option<String>,
    /// Dead-lettered at or after: RFC 3339, a date (2026-12-01), or an age (30m, 2h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Dead-lettered before; same forms as `--since`.
    #[arg(long)]
    until: Option<String>,
    #[arg(long)]
    job_id: Option<String>,
    /// Also letters already replayed or purged.
    #[arg(long)]
    include_removed: bool,
}

impl FilterArgs {
    /// Whether anything narrows the letters down.
    fn narrows(&self) -> bool {
        !self.queues.is_empty()
            || self.tenant.is_some()
            || self.error_class.is_some()
            || self.since.is_some()
            || self.until.is_some()
            || self.job_id.is_some()
    }

    /// The flags as given, for the audit record.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        for queue in &self.queues {
            parts.push(format!("--queue {queue}"));
        }
        let mut push = |flag: &str, value: &Option<String>| {
            if let Some(value) = value {
                parts.push(format!("--{flag} {value}"));
            }
        };
        push("tenant", &self.tenant);
        push("error-class", &self.error_class);
        push("since", &self.since);
        push("until", &self.until);
        push("job-id", &self.job_id);
        if self.include_removed {
            parts.push("--include-removed".into());
        }
        if parts.is_empty() {
            "(none)".into()
        } else {
            parts.join(" ")
        }
    }

    fn parse(&self, now: DateTime<Utc>) -> anyhow::Result<Filter> {
        Ok(Filter {
            tenant: self
                .tenant
                .as_deref()
                .map(TenantId::new)
                .transpose()
                .context("--tenant")?,
            class: self.error_class.as_deref().map(parse_class).transpose()?,
            since: self
                .since
                .as_deref()
                .map(|t| parse_time(t, now))
                .transpose()
                .context("--since")?,
            until: self
                .until
                .as_deref()
                .map(|t| parse_time(t, now))
                .transpose()
                .context("--until")?,
            job_id: self
                .job_id
                .as_deref()
                .map(|id| {
                    id.parse::<JobId>()
                        .map_err(|_| anyhow::anyhow!("--job-id {id}: not a job id (a ULID)"))
                })
                .transpose()?,
            include_removed: self.include_removed,
        })
    }
}

/// The parsed filters.
#[derive(Clone, Debug, Default, PartialEq)]
struct Filter {
    tenant: Option<TenantId>,
    class: Option<ErrorClass>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    job_id: Option<JobId>,
    include_removed: bool,
}

impl Filter {
    fn matches(&self, letter: &DeadLetter) -> bool {
        self.tenant
            .as_ref()
            .is_none_or(|t| letter.tenant_id.as_ref() == Some(t))
            && self.class.is_none_or(|c| letter.error_class == c)
            && self.since.is_none_or(|t| letter.dead_lettered_at >= t)
            && self.until.is_none_or(|t| letter.dead_lettered_at < t)
            && self.job_id.is_none_or(|j| letter.job_id == Some(j))
    }

    /// Whether a letter with this mark is still to be listed and worked on.
    fn shows(&self, mark: Option<&LetterMark>) -> bool {
        self.include_removed || !mark.is_some_and(|m| m.removed)
    }
}

fn parse_class(text: &str) -> anyhow::Result<ErrorClass> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|_| {
        anyhow::anyhow!(
            "--error-class {text}: expected one of decode, schema_invalid, oversized, no_route, \
             budget_exceeded, invalid_input, provider_rejected, retries_exhausted, \
             deadline_exceeded, internal"
        )
    })
}

/// RFC 3339, a date (midnight UTC), or an age before `now` (`90s`, `30m`, `2h`, `7d`).
fn parse_time(text: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    let split = text.len().saturating_sub(1);
    let (number, unit) = text.split_at(split);
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    match number.parse::<i64>() {
        Ok(n) if seconds > 0 && n >= 0 => Ok(now - chrono::Duration::seconds(n * seconds)),
        _ => bail!("`{text}`: expected RFC 3339, a date (2026-12-01) or an age (30m, 2h, 7d)"),
    }
}

/// Copies per second; `None` for no limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate(Option<f64>);

fn parse_rate(text: &str) -> Result<Rate, String> {
    let (number, per) = match text.split_once('/') {
        Some((number, "s")) => (number, 1.0),
        Some((number, "m")) => (number, 60.0),
        Some(_) => return Err(format!("`{text}`: expected N, N/s or N/m")),
        None => (text, 1.0),
    };
    let count: f64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected N, N/s or N/m"))?;
    if !count.is_finite() || count < 0.0 {
        return Err(format!("`{text}`: the rate must be zero or more"));
    }
    Ok(Rate((count > 0.0).then_some(count / per)))
}

/// What every subcommand works with.
struct Context {
    bus: AnyBus,
    store: AnyStore,
    /// Every queue the config knows: where copies may go, and the default scope.
    known: Vec<QueueName>,
    max_bytes: usize,
}

pub fn run(config: &Config, command: DlqCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let (bus, store) = crate::bus_and_store(config).await?;
        let mut known: Vec<QueueName> = Tier::ALL.iter().map(|t| t.queue()).collect();
        known.extend(config.backends.iter().map(|b| b.queue.clone()));
        known.sort();
        known.dedup();
        let context = Context {
            bus,
            store,
            known,
            // The letter holds the original base64-encoded, with room for its envelope.
            max_bytes: (config.max_message_bytes / 3 * 4 + (64 << 10)).max(4 << 20),
        };
        match command {
            DlqCommand::List {
                filter,
                limit,
                json,
            } => list(&context, &filter, limit, json).await,
            DlqCommand::Stats { filter, json } => stats(&context, &filter, json).await,
            DlqCommand::Show { id, queues, raw } => show(&context, &id, &queues, raw).await,
            DlqCommand::Replay {
                filter,
                to,
                rate,
                limit,
                dry_run,
                keep,
            } => {
                let plan = Plan::Replay { to, rate, keep };
                Ok(act(&context, &filter, plan, limit, dry_run)
                    .await?
                    .exit_code())
            }
            DlqCommand::Purge {
                filter,
                all,
                yes,
                dry_run,
                limit,
            } => purge(&context, &filter, all, yes, dry_run, limit).await,
            DlqCommand::Audit { limit, json } => audit(&context.store, limit, json).await,
        }
    })
}

async fn purge(
    context: &Context,
    filter: &FilterArgs,
    all: bool,
    yes: bool,
    dry_run: bool,
    limit: Option<usize>,
) -> anyhow::Result<ExitCode> {
    if !filter.narrows() && !all {
        bail!(
            "refusing to purge every dead letter: name what to purge (--queue, --tenant, \
             --error-class, --since, --until, --job-id) or pass --all"
        );
    }
    if !dry_run && !yes {
        if !std::io::stdin().is_terminal() {
            bail!("refusing to purge without --yes when standard input is not a terminal");
        }
        let counted = act(context, filter, Plan::Count, limit, true).await?;
        if counted.matched == 0 {
            writeln!(std::io::stdout(), "nothing to purge")?;
            return Ok(ExitCode::SUCCESS);
        }
        if !confirm(counted.matched)? {
            writeln!(std::io::stderr(), "not purged")?;
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(act(context, filter, Plan::Purge, limit, dry_run)
        .await?
        .exit_code())
}

fn confirm(count: u64) -> anyhow::Result<bool> {
    let mut stderr = std::io::stderr().lock();
    write!(
        stderr,
        "Purge {count} dead letter{}? They cannot be replayed afterwards. Type `purge` to confirm: ",
        if count == 1 { "" } else { "s" }
    )?;
    stderr.flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(answer.trim() == "purge")
}

/// The dead-letter queues to read: those of `--queue` (a source queue or a DLQ's own name),
/// else those of every known queue.
fn dead_letter_queues(context: &Context, queues: &[String]) -> anyhow::Result<Vec<QueueName>> {
    if queues.is_empty() {
        return Ok(context.known.iter().map(QueueName::dead_letter).collect());
    }
    queues
        .iter()
        .map(|name| {
            let queue = QueueName::new(name.as_str())
                .map_err(|error| anyhow::anyhow!("--queue {name}: {error}"))?;
            Ok(if name.starts_with(DLQ_PREFIX) {
                queue
            } else {
                queue.dead_letter()
            })
        })
        .collect()
}

/// A letter and what the tools did to it before.
struct Seen {
    letter: Letter,
    mark: Option<LetterMark>,
}

/// Up to `CHUNK` letters of a pass, with their marks (one store query).
async fn next_chunk(browse: &mut Browse, store: &AnyStore) -> anyhow::Result<Vec<Seen>> {
    let mut letters = Vec::with_capacity(CHUNK);
    while letters.len() < CHUNK {
        match browse.next().await? {
            Some(letter) => letters.push(letter),
            None => break,
        }
    }
    if letters.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<ulid::Ulid> = letters.iter().map(|l| l.letter.dead_letter_id).collect();
    let mut marks: HashMap<ulid::Ulid, LetterMark> = store
        .letter_marks(&ids)
        .await
        .context("cannot read what was replayed before")?
        .into_iter()
        .map(|mark| (mark.dead_letter_id, mark))
        .collect();
    Ok(letters
        .into_iter()
        .map(|letter| {
            let mark = marks.remove(&letter.letter.dead_letter_id);
            Seen { letter, mark }
        })
        .collect())
}

/// Reads every matching letter of every chosen queue, handing each to `visit` until it says
/// stop; each pass is finished (SQS letters released) whatever happens.
async fn each_letter(
    context: &Context,
    queues: &[String],
    filter: &Filter,
    mut visit: impl FnMut(Seen) -> bool,
) -> anyhow::Result<()> {
    for dlq in dead_letter_queues(context, queues)? {
        let mut browse = context
            .bus
            .browse_dead_letters(&dlq, HOLD, context.max_bytes)
            .await
            .with_context(|| format!("cannot read {dlq}"))?;
        let mut more = true;
        let result: anyhow::Result<()> = async {
            while more {
                let chunk = next_chunk(&mut browse, &context.store).await?;
                if chunk.is_empty() {
                    break;
                }
                for seen in chunk {
                    if filter.matches(&seen.letter.letter)
                        && filter.shows(seen.mark.as_ref())
                        && !visit(seen)
                    {
                        more = false;
                        break;
                    }
                }
            }
            Ok(())
        }
        .await;
        browse.finish().await;
        result.with_context(|| format!("while reading {dlq}"))?;
        if !more {
            break;
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct LetterView<'a> {
    dlq: &'a QueueName,
    position: &'a str,
    #[serde(flatten)]
    letter: &'a DeadLetter,
    #[serde(skip_serializing_if = "Option::is_none")]
    foreign: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mark: Option<&'a LetterMark>,
}

impl<'a> LetterView<'a> {
    fn of(seen: &'a Seen) -> LetterView<'a> {
        LetterView {
            dlq: &seen.letter.dlq,
            position: &seen.letter.position,
            letter: &seen.letter.letter,
            foreign: seen.letter.foreign.as_deref(),
            mark: seen.mark.as_ref(),
        }
    }
}

async fn list(
    context: &Context,
    args: &FilterArgs,
    limit: Option<usize>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let filter = args.parse(Utc::now())?;
    let mut out = std::io::stdout().lock();
    if !json {
        writeln!(
            out,
            "{:<19}  {:<26}  {:<26}  {:<14}  {:<28}  {:<17}  {:>3}  REASON",
            "DEAD-LETTERED (UTC)", "LETTER", "JOB", "TENANT", "QUEUE", "CLASS", "ATT"
        )?;
    }
    let mut shown = 0usize;
    let mut failure = None;
    each_letter(context, &args.queues, &filter, |seen| {
        let written = if json {
            serde_json::to_string(&LetterView::of(&seen))
                .map_err(anyhow::Error::from)
                .and_then(|line| writeln!(out, "{line}").map_err(anyhow::Error::from))
        } else {
            writeln!(out, "{}", row(&seen)).map_err(anyhow::Error::from)
        };
        if let Err(error) = written {
            failure = Some(error);
            return false;
        }
        shown += 1;
        limit.is_none_or(|limit| shown < limit)
    })
    .await?;
    if let Some(error) = failure {
        return Err(error);
    }
    if shown == 0 && !json {
        writeln!(std::io::stderr(), "no dead letters match")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn row(seen: &Seen) -> String {
    let letter = &seen.letter.letter;
    let mut reason = String::new();
    if let Some(mark) = &seen.mark {
        reason.push_str(&format!(
            "[{} {}×] ",
            action_name(mark.last_action),
            mark.copies
        ));
    }
    reason.push_str(&letter.reason);
    format!(
        "{:<19}  {:<26}  {:<26}  {:<14}  {:<28}  {:<17}  {:>3}  {}",
        letter.dead_lettered_at.format("%Y-%m-%d %H:%M:%S"),
        letter.dead_letter_id,
        letter.job_id.map_or("-".to_owned(), |j| j.to_string()),
        clip(letter.tenant_id.as_ref().map_or("-", TenantId::as_str), 14),
        clip(letter.source_queue.as_str(), 28),
        letter.error_class.as_str(),
        letter.attempts,
        clip(&reason.replace('\n', " "), 80),
    )
}

fn action_name(action: LetterAction) -> &'static str {
    match action {
        LetterAction::Replayed => "replayed",
        LetterAction::Copied => "copied",
        LetterAction::Purged => "purged",
    }
}

/// At most `width` characters, with an ellipsis when cut.
fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(width.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

#[derive(Serialize)]
struct StatsRow {
    queue: String,
    error_class: &'static str,
    tenant: String,
    count: u64,
}

async fn stats(context: &Context, args: &FilterArgs, json: bool) -> anyhow::Result<ExitCode> {
    let filter = args.parse(Utc::now())?;
    let mut groups: BTreeMap<(String, &'static str, String), u64> = BTreeMap::new();
    let mut per_queue: BTreeMap<String, u64> = BTreeMap::new();
    each_letter(context, &args.queues, &filter, |seen| {
        let letter = &seen.letter.letter;
        let queue = letter.source_queue.to_string();
        *per_queue.entry(queue.clone()).or_default() += 1;
        let tenant = letter
            .tenant_id
            .as_ref()
            .map_or("-".to_owned(), ToString::to_string);
        *groups
            .entry((queue, letter.error_class.as_str(), tenant))
            .or_default() += 1;
        true
    })
    .await?;
    let mut rows: Vec<StatsRow> = groups
        .into_iter()
        .map(|((queue, error_class, tenant), count)| StatsRow {
            queue,
            error_class,
            tenant,
            count,
        })
        .collect();
    // Biggest first: what the incident is about comes at the top.
    rows.sort_by_key(|row| std::cmp::Reverse(row.count));
    let mut out = std::io::stdout().lock();
    if json {
        for row in &rows {
            writeln!(out, "{}", serde_json::to_string(row)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:>7}  {:<32}  {:<17}  TENANT",
        "COUNT", "QUEUE", "CLASS"
    )?;
    for row in &rows {
        writeln!(
            out,
            "{:>7}  {:<32}  {:<17}  {}",
            row.count,
            clip(&row.queue, 32),
            row.error_class,
            row.tenant
        )?;
    }
    let total: u64 = per_queue.values().sum();
    writeln!(out)?;
    for (queue, count) in &per_queue {
        writeln!(out, "{count:>7}  {queue}")?;
    }
    writeln!(out, "{total:>7}  in all")?;
    Ok(ExitCode::SUCCESS)
}

async fn show(
    context: &Context,
    id: &str,
    queues: &[String],
    raw: bool,
) -> anyhow::Result<ExitCode> {
    let wanted: ulid::Ulid = id
        .parse()
        .map_err(|_| anyhow::anyhow!("`{id}` is not a dead letter id or a job id (a ULID)"))?;
    let wanted_job: Option<JobId> = id.parse().ok();
    let filter = Filter {
        include_removed: true,
        ..Filter::default()
    };
    let mut found = Vec::new();
    each_letter(context, queues, &filter, |seen| {
        let letter = &seen.letter.letter;
        let by_job = letter.job_id.is_some_and(|j| Some(j) == wanted_job);
        if letter.dead_letter_id == wanted || by_job {
            found.push(seen);
            // A letter id is unique; a job may have failed more than once.
            return by_job;
        }
        true
    })
    .await?;
    if found.is_empty() {
        writeln!(
            std::io::stderr(),
            "no dead letter or job {id} in {} queue(s)",
            dead_letter_queues(context, queues)?.len()
        )?;
        return Ok(ExitCode::FAILURE);
    }
    let mut out = std::io::stdout().lock();
    if raw {
        if found.len() > 1 {
            bail!(
                "{id} names {} letters; --raw needs one: pass a letter id",
                found.len()
            );
        }
        out.write_all(&found[0].letter.original_body()?)?;
        return Ok(ExitCode::SUCCESS);
    }
    for (index, seen) in found.iter().enumerate() {
        if index > 0 {
            writeln!(out)?;
        }
        describe(&mut out, seen)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(out: &mut impl Write, seen: &Seen) -> anyhow::Result<()> {
    let letter = &seen.letter.letter;
    let time = |at: DateTime<Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    writeln!(out, "dead letter    {}", letter.dead_letter_id)?;
    writeln!(
        out,
        "on             {} at {}",
        seen.letter.dlq, seen.letter.position
    )?;
    writeln!(out, "source queue   {}", letter.source_queue)?;
    if let Some(job_id) = letter.job_id {
        writeln!(out, "job            {job_id}")?;
    }
    if let Some(tenant) = &letter.tenant_id {
        writeln!(out, "tenant         {tenant}")?;
    }
    writeln!(out, "error class    {}", letter.error_class)?;
    writeln!(out, "reason         {}", letter.reason)?;
    if let Some(foreign) = &seen.letter.foreign {
        writeln!(out, "note           {foreign}")?;
    }
    writeln!(out, "attempts       {}", letter.attempts)?;
    writeln!(out, "replays before {}", letter.replays)?;
    writeln!(out, "first failed   {}", time(letter.first_failed_at))?;
    writeln!(out, "last failed    {}", time(letter.last_failed_at))?;
    writeln!(out, "dead-lettered  {}", time(letter.dead_lettered_at))?;
    match &seen.mark {
        Some(mark) => writeln!(
            out,
            "state          {} at {} ({} cop{} sent; audit {})",
            action_name(mark.last_action),
            time(mark.last_at),
            mark.copies,
            if mark.copies == 1 { "y" } else { "ies" },
            mark.audit_id
        )?,
        None => writeln!(out, "state          waiting (never replayed)")?,
    }
    if let Some(key) = &letter.original.key {
        writeln!(out, "key            {key}")?;
    }
    for (name, value) in &letter.original.headers {
        writeln!(out, "header         {name}: {value}")?;
    }
    let body = seen.letter.original_body()?;
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(value) => {
            writeln!(out, "payload        {} bytes of JSON:", body.len())?;
            writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        }
        Err(_) => match std::str::from_utf8(&body) {
            Ok(text) => {
                writeln!(
                    out,
                    "payload        {} bytes of text (not JSON):",
                    body.len()
                )?;
                writeln!(out, "{text}")?;
            }
            Err(_) => {
                let head: Vec<String> = body.iter().take(64).map(|b| format!("{b:02x}")).collect();
                writeln!(
                    out,
                    "payload        {} bytes, not UTF-8 (`--raw` writes them out); first {}: {}",
                    body.len(),
                    head.len(),
                    head.join(" ")
                )?;
            }
        },
    }
    Ok(())
}

/// What `act` does with each matching letter.
#[derive(Clone, Debug)]
enum Plan {
    Count,
    Replay {
        to: Option<String>,
        rate: Rate,
        keep: bool,
    },
    Purge,
}

impl Plan {
    fn name(&self) -> &'static str {
        match self {
            Plan::Count => "count",
            Plan::Replay { .. } => "replay",
            Plan::Purge => "purge",
        }
    }
}

/// How a replay or purge went.
#[derive(Clone, Debug, Default)]
struct Summary {
    scanned: u64,
    matched: u64,
    done: u64,
    skipped: u64,
    failed: u64,
    interrupted: bool,
}

impl Summary {
    fn exit_code(&self) -> ExitCode {
        if self.failed == 0 && !self.interrupted {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// Who is at the keyboard, for the audit trail.
fn operator() -> String {
    let who = std::env::var("SWITCHYARD_OPERATOR")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{who}@{host}")
}

/// Replays, purges or counts every matching letter; see the module documentation for the
/// order of the steps. Streams: a letter is done before the next is read.
async fn act(
    context: &Context,
    args: &FilterArgs,
    plan: Plan,
    limit: Option<usize>,
    dry_run: bool,
) -> anyhow::Result<Summary> {
    let started = Utc::now();
    let filter = args.parse(started)?;
    let destination = match &plan {
        Plan::Replay { to: Some(to), .. } => {
            Some(known_queue(context, to).with_context(|| format!("--to {to}"))?)
        }
        _ => None,
    };
    let audited = !dry_run && !matches!(plan, Plan::Count);
    let mut audit = DlqAudit {
        audit_id: ulid::Ulid::new(),
        action: plan.name().to_owned(),
        operator: operator(),
        transport: context.bus.kind().to_owned(),
        filters: {
            let mut described = args.describe();
            if let Some(limit) = limit {
                described.push_str(&format!(" --limit {limit}"));
            }
            if let Plan::Replay { keep: true, .. } = plan {
                described.push_str(" --keep");
            }
            described
        },
        destination: match &plan {
            Plan::Replay { .. } => Some(
                destination
                    .as_ref()
                    .map_or("source queues".to_owned(), ToString::to_string),
            ),
            _ => None,
        },
        started_at: started,
        finished_at: None,
        outcome: "running".into(),
        scanned: 0,
        matched: 0,
        done: 0,
        skipped: 0,
        failed: 0,
    };
    if audited {
        context
            .store
            .put_dlq_audit(&audit)
            .await
            .context("cannot write the audit record; nothing was done")?;
    }
    let stop = switchyard_bus::runtime::shutdown_on_signals();
    let progress = Progress::new(&plan, dry_run);
    let clock = Instant::now();
    let mut summary = Summary::default();
    let result = run_plan(
        context,
        args,
        &filter,
        &plan,
        destination.as_ref(),
        limit,
        dry_run,
        &audit,
        &stop,
        &progress,
        &mut summary,
    )
    .await;
    progress.finish();
    if audited {
        audit.finished_at = Some(Utc::now());
        audit.outcome = match &result {
            Ok(()) if summary.interrupted => "interrupted".into(),
            Ok(()) => "completed".into(),
            Err(error) => format!("failed: {error:#}"),
        };
        audit.scanned = summary.scanned;
        audit.matched = summary.matched;
        audit.done = summary.done;
        audit.skipped = summary.skipped;
        audit.failed = summary.failed;
        if let Err(error) = context.store.put_dlq_audit(&audit).await {
            writeln!(
                std::io::stderr(),
                "warning: cannot complete audit record {}: {error}",
                audit.audit_id
            )?;
        }
    }
    result?;
    if !matches!(plan, Plan::Count) {
        report(
            &plan,
            &summary,
            dry_run,
            clock.elapsed(),
            audited.then_some(&audit),
            context,
        )?;
    }
    Ok(summary)
}

/// The letters of one run, acted on one by one.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct for it would only rename the arguments"
)]
async fn run_plan(
    context: &Context,
    args: &FilterArgs,
    filter: &Filter,
    plan: &Plan,
    destination: Option<&QueueName>,
    limit: Option<usize>,
    dry_run: bool,
    audit: &DlqAudit,
    stop: &CancellationToken,
    progress: &Progress,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let mut pacer = match plan {
        Plan::Replay {
            rate: Rate(Some(rate)),
            ..
        } if !dry_run => {
            let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            Some(interval)
        }
        _ => None,
    };
    let mut out = std::io::stdout().lock();
    if dry_run && !matches!(plan, Plan::Count) {
        writeln!(
            out,
            "{:<26}  {:<26}  {:<14}  {:<17}  {:<28}  TO",
            "LETTER", "JOB", "TENANT", "CLASS", "FROM"
        )?;
    }
    'queues: for dlq in dead_letter_queues(context, &args.queues)? {
        let mut browse = context
            .bus
            .browse_dead_letters(&dlq, HOLD, context.max_bytes)
            .await
            .with_context(|| format!("cannot read {dlq}"))?;
        let result: anyhow::Result<bool> = async {
            loop {
                let chunk = next_chunk(&mut browse, &context.store).await?;
                if chunk.is_empty() {
                    return Ok(true);
                }
                // The chunk's letters to act on, and whether to read on afterwards.
                let mut work: Vec<(Seen, Option<QueueName>)> = Vec::new();
                let mut more = true;
                for seen in chunk {
                    summary.scanned += 1;
                    if stop.is_cancelled() {
                        summary.interrupted = true;
                        more = false;
                        break;
                    }
                    if !filter.matches(&seen.letter.letter) {
                        continue;
                    }
                    if !filter.shows(seen.mark.as_ref()) {
                        // Removed by an earlier run that was killed before it could delete
                        // the letter (SQS): finish that, send nothing.
                        if !dry_run && browse.can_remove() {
                            browse.remove(&seen.letter).await?;
                        }
                        summary.skipped += 1;
                        continue;
                    }
                    if limit.is_some_and(|limit| summary.matched >= limit as u64) {
                        more = false;
                        break;
                    }
                    summary.matched += 1;
                    let to = match plan {
                        Plan::Replay { .. } => match destination {
                            Some(to) => Some(to.clone()),
                            None => {
                                match known_queue(context, seen.letter.letter.source_queue.as_str())
                                {
                                    Ok(to) => Some(to),
                                    Err(error) if !dry_run => {
                                        summary.failed += 1;
                                        progress.suspend(|| {
                                            let _ = writeln!(
                                                std::io::stderr(),
                                                "letter {}: {error:#}",
                                                seen.letter.letter.dead_letter_id
                                            );
                                        });
                                        continue;
                                    }
                                    Err(_) => None,
                                }
                            }
                        },
                        Plan::Count | Plan::Purge => None,
                    };
                    if dry_run {
                        if !matches!(plan, Plan::Count) {
                            let to = match (&to, plan) {
                                (Some(to), _) => to.to_string(),
                                (None, Plan::Replay { .. }) => {
                                    "(cannot: not a queue this config knows; use --to)".into()
                                }
                                (None, _) => "(purge)".into(),
                            };
                            let letter = &seen.letter.letter;
                            writeln!(
                                out,
                                "{:<26}  {:<26}  {:<14}  {:<17}  {:<28}  {to}",
                                letter.dead_letter_id,
                                letter.job_id.map_or("-".to_owned(), |j| j.to_string()),
                                clip(letter.tenant_id.as_ref().map_or("-", TenantId::as_str), 14),
                                letter.error_class.as_str(),
                                clip(letter.source_queue.as_str(), 28),
                            )?;
                        }
                        continue;
                    }
                    work.push((seen, to));
                }
                let settled = settle(context, plan, &work, pacer.as_mut(), audit).await;
                for ((seen, _), result) in work.iter().zip(settled) {
                    // Removal comes last, after the copy or the purge is recorded.
                    let result = match result {
                        Ok(true) if browse.can_remove() => browse
                            .remove(&seen.letter)
                            .await
                            .context("done, but the letter could not be deleted"),
                        Ok(_) => Ok(()),
                        Err(error) => Err(error),
                    };
                    match result {
                        Ok(()) => summary.done += 1,
                        Err(error) => {
                            summary.failed += 1;
                            progress.suspend(|| {
                                let _ = writeln!(
                                    std::io::stderr(),
                                    "letter {}: {error:#}",
                                    seen.letter.letter.dead_letter_id
                                );
                            });
                        }
                    }
                }
                progress.update(summary);
                if !more {
                    return Ok(false);
                }
            }
        }
        .await;
        browse.finish().await;
        if !result.with_context(|| format!("while working on {dlq}"))? {
            break 'queues;
        }
    }
    Ok(())
}

/// `name` as a queue this config knows, or why not: a broker that creates topics on first use
/// would turn a typo into a queue nobody reads.
fn known_queue(context: &Context, name: &str) -> anyhow::Result<QueueName> {
    let queue = QueueName::new(name).map_err(|error| anyhow::anyhow!("{error}"))?;
    if context.known.contains(&queue) {
        return Ok(queue);
    }
    bail!(
        "queue {queue} is not one this config knows (tier queues and backends' queues); \
         replay to one of them with --to"
    )
}

/// Letters acted on at once: each one's steps stay in order, the letters overlap.
const IN_FLIGHT: usize = 32;

/// Acts on a chunk's letters, `IN_FLIGHT` at a time and paced: replays send their copies and
/// record them, purges record the purge. Each result says whether the letter is now to be
/// removed from its queue, which the caller does, one by one, after.
async fn settle(
    context: &Context,
    plan: &Plan,
    work: &[(Seen, Option<QueueName>)],
    mut pacer: Option<&mut tokio::time::Interval>,
    audit: &DlqAudit,
) -> Vec<anyhow::Result<bool>> {
    use futures_util::StreamExt as _;
    let mut results: Vec<Option<anyhow::Result<bool>>> = work.iter().map(|_| None).collect();
    let mut running = futures_util::stream::FuturesUnordered::new();
    for (index, (seen, to)) in work.iter().enumerate() {
        if running.len() >= IN_FLIGHT
            && let Some((done, result)) = running.next().await
        {
            results[done] = Some(result);
        }
        if let Some(pacer) = pacer.as_mut() {
            pacer.tick().await;
        }
        running.push(async move {
            let result = match (plan, to) {
                (Plan::Replay { keep, .. }, Some(to)) => send_copy(context, seen, to, *keep, audit)
                    .await
                    .map(|()| !keep),
                (Plan::Purge, _) => mark_purged(context, seen, audit).await.map(|()| true),
                (Plan::Replay { .. } | Plan::Count, _) => {
                    Err(anyhow::anyhow!("internal: nothing to do for this letter"))
                }
            };
            (index, result)
        });
    }
    while let Some((done, result)) = running.next().await {
        results[done] = Some(result);
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("internal: a letter was not settled"))))
        .collect()
}

/// Sends the copy, then remembers it: the letter's removal (unless kept) comes after, so a
/// kill at any point leaves the letter or its copy, never neither.
async fn send_copy(
    context: &Context,
    seen: &Seen,
    to: &QueueName,
    keep: bool,
    audit: &DlqAudit,
) -> anyhow::Result<()> {
    let letter = &seen.letter;
    let message = letter.replay_message()?;
    // The timeline shows when the copy left, which is before the worker can answer it.
    let sent_at = Utc::now();
    context
        .bus
        .publish(to, message)
        .await
        .with_context(|| format!("cannot send the copy to {to}; the letter stays"))?;
    let mark = LetterMark {
        dead_letter_id: letter.letter.dead_letter_id,
        dlq: letter.dlq.to_string(),
        job_id: letter.letter.job_id,
        copies: seen.mark.as_ref().map_or(0, |m| m.copies) + 1,
        removed: !keep,
        last_action: if keep {
            LetterAction::Copied
        } else {
            LetterAction::Replayed
        },
        last_at: Utc::now(),
        audit_id: audit.audit_id,
    };
    context.store.mark_letter(&mark).await.context(
        "the copy was sent but could not be recorded; the letter stays, and a later replay \
         may send another (harmless: the job id keeps one result and one charge)",
    )?;
    if let (Some(job_id), Some(tenant_id)) = (letter.letter.job_id, &letter.letter.tenant_id) {
        let update = StatusUpdate {
            job_id,
            tenant_id: tenant_id.clone(),
            // A tier queue is where jobs are submitted; any other queue is a backend's.
            state: if Tier::ALL.iter().any(|t| &t.queue() == to) {
                JobState::Submitted
            } else {
                JobState::Routed
            },
            at: sent_at,
            attempt: None,
            backend_id: None,
            detail: Some(format!(
                "replayed from {} (dead letter {}) to {to} by {}; audit {}",
                letter.dlq, letter.letter.dead_letter_id, audit.operator, audit.audit_id
            )),
        };
        // The timeline is for people; the replay itself has happened either way.
        if let Err(error) = context.store.record_status(&update).await {
            let _ = writeln!(
                std::io::stderr(),
                "warning: job {job_id}: cannot note the replay in its timeline: {error}"
            );
        }
    }
    Ok(())
}

/// Remembers the purge; the letter's deletion (SQS) comes after, and a kill in between is
/// finished by the next run.
async fn mark_purged(context: &Context, seen: &Seen, audit: &DlqAudit) -> anyhow::Result<()> {
    let letter = &seen.letter;
    let mark = LetterMark {
        dead_letter_id: letter.letter.dead_letter_id,
        dlq: letter.dlq.to_string(),
        job_id: letter.letter.job_id,
        copies: seen.mark.as_ref().map_or(0, |m| m.copies),
        removed: true,
        last_action: LetterAction::Purged,
        last_at: Utc::now(),
        audit_id: audit.audit_id,
    };
    context
        .store
        .mark_letter(&mark)
        .await
        .context("cannot record the purge; the letter stays")
}

fn report(
    plan: &Plan,
    summary: &Summary,
    dry_run: bool,
    elapsed: Duration,
    audit: Option<&DlqAudit>,
    context: &Context,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let verb = match plan {
        Plan::Replay { keep: true, .. } => "copied",
        Plan::Replay { .. } => "replayed",
        Plan::Purge => "purged",
        Plan::Count => "counted",
    };
    if dry_run {
        writeln!(
            out,
            "dry run: {} letter{} would be {verb} ({} read, {} already replayed or purged); nothing was changed",
            summary.matched,
            plural(summary.matched),
            summary.scanned,
            summary.skipped
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "{verb} {} of {} matching letter{} ({} read, {} skipped as already replayed or purged, {} failed) in {:.1} s{}{}",
        summary.done,
        summary.matched,
        plural(summary.matched),
        summary.scanned,
        summary.skipped,
        summary.failed,
        elapsed.as_secs_f64(),
        if summary.interrupted {
            "; interrupted"
        } else {
            ""
        },
        audit.map_or(String::new(), |a| format!("; audit {}", a.audit_id)),
    )?;
    if matches!(plan, Plan::Purge) && matches!(context.bus, AnyBus::Kafka(_)) && summary.done > 0 {
        writeln!(
            out,
            "note: a Kafka topic cannot delete single records: purged letters are hidden from \
             now on and their bytes go with the topic's retention"
        )?;
    }
    Ok(())
}

fn plural(count: u64) -> &'static str {
    if count == 1 { "" } else { "s" }
}

/// A progress line on a terminal (stderr); nothing otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    verb: &'static str,
}

impl Progress {
    fn new(plan: &Plan, dry_run: bool) -> Progress {
        let shown = std::io::stderr().is_terminal() && !matches!(plan, Plan::Count);
        let bar = shown.then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        let verb = match plan {
            _ if dry_run => "would act on",
            Plan::Replay { .. } => "replayed",
            Plan::Purge => "purged",
            Plan::Count => "counted",
        };
        Progress { bar, verb }
    }

    fn update(&self, summary: &Summary) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "read {} · matched {} · {} {} · skipped {} · failed {}",
                summary.scanned,
                summary.matched,
                self.verb,
                summary.done,
                summary.skipped,
                summary.failed
            ));
        }
    }

    fn suspend(&self, write: impl FnOnce()) {
        match &self.bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

async fn audit(store: &AnyStore, limit: usize, json: bool) -> anyhow::Result<ExitCode> {
    let audits = store.dlq_audits(limit).await?;
    let mut out = std::io::stdout().lock();
    if json {
        for audit in &audits {
            writeln!(out, "{}", serde_json::to_string(audit)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<19}  {:<6}  {:<22}  {:<11}  {:>7}  {:>7}  {:>7}  {:>6}  FILTERS",
        "STARTED (UTC)", "ACTION", "OPERATOR", "OUTCOME", "MATCHED", "DONE", "SKIPPED", "FAILED"
    )?;
    for audit in &audits {
        writeln!(
            out,
            "{:<19}  {:<6}  {:<22}  {:<11}  {:>7}  {:>7}  {:>7}  {:>6}  {}{}",
            audit.started_at.format("%Y-%m-%d %H:%M:%S"),
            audit.action,
            clip(&audit.operator, 22),
            clip(&audit.outcome, 11),
            audit.matched,
            audit.done,
            audit.skipped,
            audit.failed,
            audit.filters,
            audit
                .destination
                .as_ref()
                .map_or(String::new(), |d| format!(" → {d}")),
        )?;
    }
    if audits.is_empty() {
        writeln!(std::io::stderr(), "no replays or purges recorded")?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_bus::Headers;

    fn letter(tenant: &str, class: ErrorClass, at: DateTime<Utc>) -> DeadLetter {
        let queue = QueueName::new("switchyard.jobs.batch").unwrap();
        let mut letter = switchyard_bus::dead_letter_for(
            &queue,
            b"{}",
            &Headers::new(),
            None,
            3,
            None,
            &switchyard_bus::Rejection {
                class,
                reason: "why".into(),
            },
        );
        letter.tenant_id = Some(TenantId::new(tenant).unwrap());
        letter.dead_lettered_at = at;
        letter
    }

    #[test]
    fn filters_must_all_match() {
        let now = Utc::now();
        let old = letter(
            "acme",
            ErrorClass::NoRoute,
            now - chrono::Duration::hours(3),
        );
        let new = letter("acme", ErrorClass::ProviderRejected, now);
        let other = letter("globex", ErrorClass::NoRoute, now);
        let args = FilterArgs {
            tenant: Some("acme".into()),
            since: Some("2h".into()),
            ..FilterArgs::default()
        };
        let filter = args.parse(now).unwrap();
        assert!(!filter.matches(&old));
        assert!(filter.matches(&new));
        assert!(!filter.matches(&other));
        let by_class = FilterArgs {
            error_class: Some("no_route".into()),
            until: Some("1h".into()),
            ..FilterArgs::default()
        }
        .parse(now)
        .unwrap();
        assert!(by_class.matches(&old));
        assert!(!by_class.matches(&new));
        assert!(!by_class.matches(&other));
        assert!(FilterArgs::default().parse(now).unwrap().matches(&other));
    }

    #[test]
    fn removed_letters_are_hidden_unless_asked_for() {
        let mark = LetterMark {
            dead_letter_id: ulid::Ulid::new(),
            dlq: "switchyard.dlq.x".into(),
            job_id: None,
            copies: 1,
            removed: true,
            last_action: LetterAction::Replayed,
            last_at: Utc::now(),
            audit_id: ulid::Ulid::new(),
        };
        let filter = Filter::default();
        assert!(filter.shows(None));
        assert!(!filter.shows(Some(&mark)));
        let copied = LetterMark {
            removed: false,
            ..mark.clone()
        };
        assert!(filter.shows(Some(&copied)));
        let all = Filter {
            include_removed: true,
            ..Filter::default()
        };
        assert!(all.shows(Some(&mark)));
    }

    #[test]
    fn times_rates_and_classes_parse_or_say_why() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_time("30m", now).unwrap(),
            now - chrono::Duration::minutes(30)
        );
        assert_eq!(
            parse_time("2026-11-30", now).unwrap().to_rfc3339(),
            "2026-11-30T00:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-12-01T11:00:00+01:00", now).unwrap(),
            now - chrono::Duration::hours(2)
        );
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("5w", now).is_err());
        assert_eq!(parse_rate("50/s").unwrap(), Rate(Some(50.0)));
        assert_eq!(parse_rate("120/m").unwrap(), Rate(Some(2.0)));
        assert_eq!(parse_rate("7").unwrap(), Rate(Some(7.0)));
        assert_eq!(parse_rate("0").unwrap(), Rate(None));
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("5/h").is_err());
        assert_eq!(parse_class("no_route").unwrap(), ErrorClass::NoRoute);
        assert!(
            parse_class("noroute")
                .unwrap_err()
                .to_string()
                .contains("provider_rejected")
        );
    }

    #[test]
    fn purge_scope_and_audit_describe_the_flags() {
        assert!(!FilterArgs::default().narrows());
        let args = FilterArgs {
            queues: vec!["switchyard.jobs.batch".into()],
            job_id: Some("01JDQ3Z4W5X6Y7Z8A9B0C1D2E3".into()),
            ..FilterArgs::default()
        };
        assert!(args.narrows());
        assert_eq!(
            args.describe(),
            "--queue switchyard.jobs.batch --job-id 01JDQ3Z4W5X6Y7Z8A9B0C1D2E3"
        );
        assert_eq!(FilterArgs::default().describe(), "(none)");
    }

    #[test]
    fn clip_cuts_on_characters() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("ééééé", 3), "éé…");
    }
}
