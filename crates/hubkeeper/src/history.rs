//! Commands over the event history and the workers' leftovers: `hubkeeper replay`,
//! `hubkeeper events export`, `hubkeeper dlq list|show|redrive`.

use std::io::Write;
use std::time::Instant;

use anyhow::{anyhow, Context};
use clap::Subcommand;
use hubkeeper_projections::history::{list_events, AuditEvent, EventFilter, PositionCursor};
use hubkeeper_projections::{Projection, ReplayOptions};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;

/// `hubkeeper replay [--projection installations|apps|activity|all]`.
pub async fn replay(config: &Config, projection: &str, batch_size: i64) -> anyhow::Result<()> {
    let projections = if projection.trim() == "all" {
        Projection::ALL.to_vec()
    } else {
        projection
            .split(',')
            .map(|p| p.parse::<Projection>().map_err(|e| anyhow!(e)))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let pool = crate::roles::connect_store(config)?;
    hubkeeper_store::migrate(&pool).await?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} replay [{elapsed_precise}] [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta}) {msg}",
        )
        .map_err(|e| anyhow!("progress template: {e}"))?
        .progress_chars("=> "),
    );
    let names: Vec<&str> = projections.iter().map(|p| p.as_str()).collect();
    bar.set_message(names.join(","));
    let report = hubkeeper_projections::replay(
        &pool,
        &ReplayOptions {
            projections,
            batch_size: batch_size.max(1),
            ..ReplayOptions::default()
        },
        |p| {
            bar.set_length(p.total);
            bar.set_position(p.events);
        },
    )
    .await?;
    bar.finish_and_clear();
    println!(
        "replayed {} events into {} in {:.1}s ({:.0} events/s; {} applied during the swap); \
         rebuilt through position {}",
        report.events,
        names.join(", "),
        report.seconds,
        report.events_per_second(),
        report.caught_up,
        PositionCursor(report.through),
    );
    Ok(())
}

/// Filters of `hubkeeper events export`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    #[arg(long)]
    pub aggregate_type: Option<String>,
    #[arg(long)]
    pub aggregate_id: Option<String>,
    #[arg(long)]
    pub event_type: Option<String>,
    /// Recorded at or after (RFC 3339).
    #[arg(long)]
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// Recorded before (RFC 3339).
    #[arg(long)]
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    /// Start after this position (`<tx>-<position>`, as printed in `position`).
    #[arg(long)]
    pub after: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Writes the event history as NDJSON to stdout (progress on stderr), in global order.
    Export(ExportArgs),
}

pub async fn events(config: &Config, command: EventsCommand) -> anyhow::Result<()> {
    let EventsCommand::Export(args) = command;
    let pool = crate::roles::connect_store(config)?;
    let after = match &args.after {
        Some(raw) => raw.parse::<PositionCursor>().map_err(|e| anyhow!(e))?.0,
        None => Default::default(),
    };
    let mut filter = EventFilter {
        aggregate_type: args.aggregate_type,
        aggregate_id: args.aggregate_id,
        event_type: args.event_type,
        from: args.from,
        to: args.to,
        after,
    };
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} exported {pos} events ({per_sec}) [{elapsed_precise}]",
        )
        .map_err(|e| anyhow!("progress template: {e}"))?,
    );
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let started = Instant::now();
    let mut total = 0u64;
    loop {
        let events = list_events(&pool, &filter, 2000).await?;
        let Some(last) = events.last() else {
            break;
        };
        filter.after = last.position_cursor().0;
        let n = events.len();
        for event in events {
            serde_json::to_writer(&mut out, &AuditEvent::from(event))?;
            out.write_all(b"\n").context("writing the export")?;
        }
        total += n as u64;
        bar.set_position(total);
        if n < 2000 {
            break;
        }
    }
    out.flush().context("writing the export")?;
    bar.finish_and_clear();
    eprintln!(
        "exported {total} events in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Lists dead letters, newest first.
    List {
        /// Only this kind (`webhooks`, `refresh`, `projector`).
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Shows one dead letter with its payload and headers.
    Show { seq: u64 },
    /// Publishes a dead letter back to its source subject and removes it.
    Redrive { seq: u64 },
}

pub async fn dlq(config: &Config, command: DlqCommand) -> anyhow::Result<()> {
    let url = config
        .nats
        .nats_url
        .as_ref()
        .ok_or_else(|| anyhow!("NATS_URL is not set"))?;
    let client = hubkeeper_bus::connect_with(url, "hubkeeper-dlq", &config.nats.auth()).await?;
    let js = hubkeeper_bus::jetstream(client);
    match command {
        DlqCommand::List { kind, limit } => {
            let letters =
                hubkeeper_bus::dead_letter::list(&js, kind.as_deref(), limit, None).await?;
            if letters.is_empty() {
                println!("no dead letters");
            }
            for l in letters {
                println!(
                    "{:>8}  {:<10} {:<26} deliveries={:<3} {} <- {}",
                    l.seq,
                    l.kind,
                    l.dead_at.as_deref().unwrap_or("-"),
                    l.deliveries.map_or("-".into(), |d| d.to_string()),
                    l.reason.as_deref().unwrap_or("-"),
                    l.source_subject.as_deref().unwrap_or("-"),
                );
            }
        }
        DlqCommand::Show { seq } => {
            let letter = hubkeeper_bus::dead_letter::show(&js, seq).await?;
            println!("{}", serde_json::to_string_pretty(&letter)?);
        }
        DlqCommand::Redrive { seq } => {
            let subject = hubkeeper_bus::dead_letter::redrive(&js, seq).await?;
            println!("re-drove dead letter {seq} to {subject}");
        }
    }
    Ok(())
}
