//! The `callingest` command line. Logs go to stderr; stdout carries only a command's output,
//! so `callingest partner create ... | jq` works.

use std::path::PathBuf;

use anyhow::Context;
use callingest_domain::call::call_aggregate_id;
use callingest_domain::values::{CallId, PartnerId};
use clap::{Parser, Subcommand};

use crate::app::Application;
use callingest_privacy::Privacy;

use crate::config::{DatabaseConfig, ServeConfig};
use crate::partners::{self, DEFAULT_RATE_LIMIT_PER_MINUTE};
use crate::rebuild_progress;

#[derive(Debug, Parser)]
#[command(name = "callingest", version, about = "Batch call ingestion service")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub log: crate::config::LogConfig,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (applies pending migrations first).
    Serve(Box<ServeConfig>),
    /// Create the database if needed, apply pending migrations and exit.
    Migrate(DatabaseConfig),
    /// Print the OpenAPI document (or write it to a file).
    Openapi {
        /// Write to this file instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Manage partners.
    #[command(subcommand)]
    Partner(PartnerCommand),
    /// Manage projections (read models and work queues kept from the event log).
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Look at calls (support).
    #[command(subcommand)]
    Call(CallCommand),
    /// Data subjects' rights (support): a person's calls, and erasing their personal data.
    #[command(subcommand)]
    Privacy(PrivacyCommand),
    /// Serve the configured transcription engine (CALLINGEST_TRANSCRIBER=whisper) over the
    /// OpenAI-compatible API `POST /v1/audio/transcriptions`, for other instances' openai
    /// engine.
    TranscribeServer {
        /// Address to listen on.
        #[arg(
            long,
            env = "CALLINGEST_TRANSCRIBE_SERVER_LISTEN",
            default_value = "127.0.0.1:9000"
        )]
        listen: std::net::SocketAddr,
        /// Bearer token clients must send (CALLINGEST_TRANSCRIBE_API_KEY on their side).
        #[arg(
            long,
            env = "CALLINGEST_TRANSCRIBE_SERVER_API_KEY",
            hide_env_values = true
        )]
        api_key: Option<crate::config::Secret>,
        #[command(flatten)]
        transcription: crate::config::TranscriptionConfig,
    },
}

#[derive(Debug, Subcommand)]
pub enum CallCommand {
    /// Print a call's event history as a table (or, with --json, a JSON array of events with
    /// `event_type`, `sequence`, `recorded_at`, `payload` and `metadata`).
    History {
        #[arg(long)]
        partner: String,
        #[arg(long)]
        call: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        database: DatabaseConfig,
    },
}

/// A data subject: exactly one of the two.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct SubjectArgs {
    /// The customer's phone number.
    #[arg(long)]
    phone_number: Option<String>,
    /// A customer's or an agent's e-mail address.
    #[arg(long)]
    email: Option<String>,
}

impl SubjectArgs {
    /// The subject, checked as the HTTP endpoints check it.
    fn subject(&self) -> Result<crate::erasure::Subject, crate::erasure::ErasureError> {
        crate::erasure::Subject::from_request(self.phone_number.as_deref(), self.email.as_deref())
    }
}

#[derive(Debug, Subcommand)]
pub enum PrivacyCommand {
    /// Print the partner's calls that hold the subject's data, as JSON lines
    /// (`{"call_id", "role"}`).
    Calls {
        #[arg(long)]
        partner: String,
        #[command(flatten)]
        subject: SubjectArgs,
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Erase the subject's personal data from the partner's calls (as the partner's
    /// `POST /api/v1/partner/data-privacy/erase`); prints
    /// `{"calls_erased", "agent_calls_erased", "call_ids"}`.
    Erase {
        #[arg(long)]
        partner: String,
        #[command(flatten)]
        subject: SubjectArgs,
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Seal the personal fields of events written before sealing existed, in place: the one
    /// audited exception to the append-only log (recorded in `event_rewrite`). Resumable and
    /// idempotent; safe while the service runs. Progress on stderr; prints `{"run_id",
    /// "calls_rewritten", "events_rewritten", "calls_skipped", "first_position",
    /// "last_position", "seconds"}`.
    EncryptExisting {
        /// Calls sealed per transaction.
        #[arg(long, default_value_t = crate::encrypt_existing::DEFAULT_BATCH_CALLS,
              value_parser = clap::value_parser!(i64).range(1..=10_000))]
        batch_calls: i64,
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Re-wrap every call's data keys with the new master key (CALLINGEST_MASTER_KEY) and
    /// recompute the blind indexes under it, then retire the previous one
    /// (CALLINGEST_PREVIOUS_MASTER_KEY). Run it once every instance holds both keys (README,
    /// "Rotating the master key"). Resumable; a no-op once done. Progress on stderr; prints
    /// `{"rotated", "master_key_version", "previous_version", "calls_rewrapped",
    /// "orphan_rows", "seconds"}`.
    RotateMasterKey {
        #[command(flatten)]
        database: DatabaseConfig,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Empty a projection (all of them without NAME) and replay it from the events alone.
    /// Safe while the service runs: pages are serialised on the projection's checkpoint row.
    /// Prints one JSON line per projection with the events replayed and the rate; reports
    /// progress (events done, rate, time left) on stderr every second while it runs.
    Rebuild {
        /// `read_models`, `processing_jobs`, `callback_deliveries` or `transcripts`.
        name: Option<String>,
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// List the events projections parked because they could not decode or apply them, and
    /// those held behind them (later events of the same aggregate), in log order.
    Failures {
        /// Only this projection's.
        #[arg(long)]
        projection: Option<String>,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Apply a projection's parked events again (all projections' without NAME), each
    /// aggregate's in log order: rows of events that now apply are removed, the rest stay.
    /// Safe while the service runs. Prints one JSON line per projection with the events
    /// applied and those still parked.
    Retry {
        /// `read_models`, `processing_jobs`, `callback_deliveries` or `transcripts`.
        name: Option<String>,
        #[command(flatten)]
        database: DatabaseConfig,
    },
}

#[derive(Debug, Subcommand)]
pub enum PartnerCommand {
    /// Create a partner; prints `{"partner_id", "api_key", "signing_secret"}` as JSON. The API
    /// key is shown only this once.
    Create {
        /// Partner id: 1 to 64 of A-Z a-z 0-9 . _ -
        #[arg(long)]
        id: String,
        /// Display name (defaults to the id).
        #[arg(long)]
        name: Option<String>,
        /// Requests per minute allowed to the ingest endpoint.
        #[arg(long, default_value_t = DEFAULT_RATE_LIMIT_PER_MINUTE)]
        rate_limit_per_minute: u32,
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Give a partner a new API key (the old one stops working at once); prints the same JSON
    /// object as `create`, with the new key.
    RotateKey {
        #[arg(long)]
        id: String,
        #[command(flatten)]
        database: DatabaseConfig,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    crate::telemetry::init_logging(&cli.log)?;
    match cli.command {
        Command::Serve(config) => Application::build(&config).await?.run().await,
        Command::TranscribeServer {
            listen,
            api_key,
            transcription,
        } => {
            transcription.validate()?;
            let Some(engine) = crate::transcription::build_engine(&transcription)? else {
                anyhow::bail!("set CALLINGEST_TRANSCRIBER (whisper) for the server to run");
            };
            tracing::info!(%listen, engine = engine.engine(), model = engine.model(), "transcription server listening");
            poem::Server::new(poem::listener::TcpListener::bind(listen))
                .run(crate::transcription::server::routes(engine, api_key))
                .await
                .context("transcription server failed")
        }
        Command::Migrate(database) => {
            crate::db::prepare(&database).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Openapi { output } => {
            let spec = crate::http::openapi_json();
            match output {
                Some(path) => std::fs::write(&path, spec + "\n")
                    .with_context(|| format!("could not write {}", path.display())),
                None => {
                    println!("{spec}");
                    Ok(())
                }
            }
        }
        Command::Partner(PartnerCommand::Create {
            id,
            name,
            rate_limit_per_minute,
            database,
        }) => {
            let pool = crate::db::prepare(&database).await?;
            let credentials =
                partners::create_partner(&pool, &id, name.as_deref(), rate_limit_per_minute)
                    .await?;
            println!("{}", serde_json::to_string(&credentials)?);
            Ok(())
        }
        Command::Partner(PartnerCommand::RotateKey { id, database }) => {
            let pool = crate::db::prepare(&database).await?;
            let credentials = partners::rotate_api_key(&pool, &id, "cli").await?;
            println!("{}", serde_json::to_string(&credentials)?);
            Ok(())
        }
        Command::Call(CallCommand::History {
            partner,
            call,
            json,
            database,
        }) => {
            let (pool, privacy) = crate::db::prepare_with_keyring(&database).await?;
            print_history(&pool, &privacy, &partner, &call, json).await
        }
        Command::Privacy(PrivacyCommand::Calls {
            partner,
            subject,
            database,
        }) => {
            let (pool, privacy) = crate::db::prepare_with_keyring(&database).await?;
            let subject = subject.subject()?;
            for call in crate::erasure::calls_of(&pool, &privacy, &partner, &subject).await? {
                println!("{}", serde_json::to_string(&call)?);
            }
            Ok(())
        }
        Command::Privacy(PrivacyCommand::Erase {
            partner,
            subject,
            database,
        }) => {
            let (pool, privacy) = crate::db::prepare_with_keyring(&database).await?;
            let subject = subject.subject()?;
            let calls = crate::event_store::store(pool.clone(), &privacy);
            let erased = crate::erasure::erase(
                &pool,
                &privacy,
                &calls,
                &partner,
                &subject,
                callingest_domain::call::ErasureReason::Request,
            )
            .await?;
            tracing::info!(
                partner,
                calls = erased.calls.len(),
                agent_calls = erased.agent_calls.len(),
                "personal data erased (cli)"
            );
            println!(
                "{}",
                serde_json::json!({
                    "calls_erased": erased.calls.len(),
                    "agent_calls_erased": erased.agent_calls.len(),
                    "call_ids": erased.call_ids(),
                })
            );
            Ok(())
        }
        Command::Privacy(PrivacyCommand::EncryptExisting {
            batch_calls,
            database,
        }) => {
            let (pool, privacy) = crate::db::prepare_with_keyring(&database).await?;
            let summary =
                crate::encrypt_existing::encrypt_existing(&pool, &privacy, batch_calls).await?;
            tracing::info!(
                run_id = summary.run_id,
                calls = summary.calls_rewritten,
                events = summary.events_rewritten,
                "clear events sealed in place (encrypt-existing)"
            );
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
        Command::Privacy(PrivacyCommand::RotateMasterKey { database }) => {
            let (pool, privacy) = crate::db::prepare_with_keyring(&database).await?;
            let summary = crate::key_rotation::rotate(&pool, &privacy).await?;
            tracing::info!(
                rotated = summary.rotated,
                master_key_version = summary.master_key_version,
                calls = summary.calls_rewrapped,
                "master key rotated"
            );
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
        Command::Projections(ProjectionsCommand::Rebuild { name, database }) => {
            let (pool, privacy) = crate::db::prepare_with_keyring(&database).await?;
            rebuild_projections(&pool, &privacy, name.as_deref()).await
        }
        Command::Projections(ProjectionsCommand::Failures {
            projection,
            json,
            database,
        }) => {
            let pool = crate::db::prepare(&database).await?;
            print_failures(&pool, projection.as_deref(), json).await
        }
        Command::Projections(ProjectionsCommand::Retry { name, database }) => {
            let (pool, privacy) = crate::db::prepare_with_keyring(&database).await?;
            retry_projections(&pool, &privacy, name.as_deref()).await
        }
    }
}

/// The projection called `name`, or all of them without a name.
fn projections_named(
    privacy: &Privacy,
    name: Option<&str>,
) -> anyhow::Result<Vec<std::sync::Arc<dyn callingest_projections::Projection>>> {
    let projections: Vec<_> = callingest_projections::all(privacy)
        .into_iter()
        .filter(|p| name.is_none_or(|n| n == p.name()))
        .collect();
    if projections.is_empty() {
        anyhow::bail!("unknown projection {:?}", name.unwrap_or_default());
    }
    Ok(projections)
}

async fn rebuild_projections(
    pool: &sqlx::PgPool,
    privacy: &Privacy,
    name: Option<&str>,
) -> anyhow::Result<()> {
    for projection in projections_named(privacy, name)? {
        let name = projection.name();
        let projector = callingest_projections::Projector::new(pool.clone(), projection);
        let started = std::time::Instant::now();
        projector
            .reset()
            .await
            .with_context(|| format!("could not reset {name}"))?;
        // The log's size when the replay starts: the denominator of the progress lines.
        let (total,): (i64,) = sqlx::query_as("select count(*) from events")
            .fetch_one(pool)
            .await
            .context("could not count the events")?;
        let total = total as u64;
        let mut events = 0usize;
        let mut last_report = std::time::Instant::now();
        loop {
            let applied = projector
                .step()
                .await
                .with_context(|| format!("could not replay {name}"))?;
            if applied == 0 {
                break;
            }
            events += applied;
            if last_report.elapsed() >= rebuild_progress::REPORT_EVERY {
                last_report = std::time::Instant::now();
                eprintln!(
                    "{}",
                    rebuild_progress::progress_line(name, events as u64, total, started.elapsed())
                );
            }
        }
        eprintln!(
            "{}",
            rebuild_progress::progress_line(name, events as u64, total, started.elapsed())
        );
        let seconds = started.elapsed().as_secs_f64();
        let summary = serde_json::json!({
            "projection": name,
            "events": events,
            "seconds": seconds,
            "events_per_second": events as f64 / seconds.max(1e-9),
        });
        println!("{summary}");
    }
    Ok(())
}

async fn retry_projections(
    pool: &sqlx::PgPool,
    privacy: &Privacy,
    name: Option<&str>,
) -> anyhow::Result<()> {
    for projection in projections_named(privacy, name)? {
        let name = projection.name();
        let projector = callingest_projections::Projector::new(pool.clone(), projection);
        let outcome = projector
            .retry()
            .await
            .with_context(|| format!("could not retry the parked events of {name}"))?;
        let summary = serde_json::json!({
            "projection": name,
            "applied": outcome.applied,
            "still_parked": outcome.still_parked,
        });
        println!("{summary}");
    }
    Ok(())
}

async fn print_failures(
    pool: &sqlx::PgPool,
    projection: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    if let Some(name) = projection {
        if !callingest_projections::NAMES.contains(&name) {
            anyhow::bail!("unknown projection {name:?}");
        }
    }
    let parked = callingest_projections::parking::list(pool, projection, i64::MAX)
        .await
        .context("could not read the parked events")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&parked)?);
        return Ok(());
    }
    if parked.is_empty() {
        println!("no parked events");
        return Ok(());
    }
    println!(
        "{:<20}  {:>10}  {:<40}  {:<28}  {:<23}  why",
        "projection", "position", "aggregate", "event", "parked at (UTC)"
    );
    for event in parked {
        let why = match event.held_behind {
            // One line per event, whatever the error says.
            None => format!("failed: {}", event.error.replace(['\n', '\r'], " ")),
            Some(position) => format!("held behind {position}"),
        };
        println!(
            "{:<20}  {:>10}  {:<40}  {:<28}  {:<23}  {why}",
            event.projection,
            event.global_position,
            format!(
                "{} {}#{}",
                event.aggregate_type, event.aggregate_id, event.sequence
            ),
            event.event_type,
            event.failed_at.format("%Y-%m-%d %H:%M:%S%.3f"),
        );
    }
    Ok(())
}

async fn print_history(
    pool: &sqlx::PgPool,
    privacy: &Privacy,
    partner: &str,
    call: &str,
    json: bool,
) -> anyhow::Result<()> {
    // Ids no partner could have sent name no call.
    let aggregate_id = match (PartnerId::parse(partner), CallId::parse(call)) {
        (Ok(partner), Ok(call)) => call_aggregate_id(&partner, &call),
        _ => anyhow::bail!("no call {call} of partner {partner}"),
    };
    let events = crate::queries::history::call_history(pool, privacy, &aggregate_id, true).await?;
    if events.is_empty() {
        anyhow::bail!("no call {call} of partner {partner}");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&events)?);
        return Ok(());
    }
    println!(
        "{:>4}  {:<30}  {:<28}  details",
        "seq", "recorded at (UTC)", "event"
    );
    for event in events {
        let mut details = event.payload.to_string();
        if details.chars().count() > 100 {
            details = details.chars().take(99).collect::<String>() + "…";
        }
        println!(
            "{:>4}  {:<30}  {:<28}  {details}",
            event.sequence,
            event.recorded_at.format("%Y-%m-%d %H:%M:%S%.3f"),
            event.event_type
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks its declarations (unique argument ids across the flattened sections, ...)
    /// only when a command is built in a debug build: do it for every command here.
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
