//! The command bus: runs a command against an aggregate through cqrs-es with the event metadata
//! every event must carry, retrying lost optimistic-concurrency races.
//!
//! cqrs-es reports a concurrent write to the same aggregate as `AggregateConflict` and does not
//! retry; re-running the command re-loads the aggregate, so the command is decided against the
//! state that won. In-process cqrs `Query`s are deliberately not used: they are lost when a
//! process dies after commit; projections read the relayed stream instead.

use std::time::Duration;

use std::collections::HashMap;

use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use cqrs_es::{
    Aggregate, AggregateContext, AggregateError, CqrsFramework, EventEnvelope, EventStore,
};
use hubkeeper_domain::app::App;
use hubkeeper_domain::installation::Installation;
use hubkeeper_domain::metadata::EventMetadata;
use hubkeeper_domain::DomainServices;
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;

/// How often a command is re-run after losing a race on its aggregate.
const CONFLICT_RETRIES: usize = 8;

/// Events between aggregate snapshots: 1, a snapshot in every command's transaction.
///
/// Without snapshots every command (and every token-cache miss) replayed the aggregate's whole
/// history: `hubkeeper bench commands` spent most of its CPU deserializing old events. Why not
/// every N events: cqrs-es 0.5 folds only the events up to the N boundary into the snapshot but
/// postgres-es records the sequence of the command's last event, so a command whose events
/// straddle the boundary would leave its tail out of the state for good. With 1 every event of
/// a command is folded (see [`SnapshotStore`] for the other half of the fix), and a load is one
/// snapshot plus the (normally no) events after it.
pub const SNAPSHOT_EVERY: usize = 1;

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused the command (a business rule): the caller's fault, a 4xx.
    #[error(transparent)]
    Rejected(E),
    /// Still conflicting after every retry (pathological contention).
    #[error("the {0} was changed concurrently too many times; try again")]
    Conflict(&'static str),
    /// The event store failed.
    #[error("event store error: {0}")]
    Store(String),
}

type Store<A> = PersistedEventStore<PostgresEventRepository, A>;

fn store<A: Aggregate>(pool: &PgPool) -> Store<A> {
    PersistedEventStore::new_snapshot_store(
        PostgresEventRepository::new(pool.clone()),
        SNAPSHOT_EVERY,
    )
    .with_upcasters(hubkeeper_domain::upcasters::all())
}

/// A command framework over [`SnapshotStore`]: what every aggregate's commands run through.
pub type Framework<A> = CqrsFramework<A, SnapshotStore<A>>;

/// The postgres-es snapshot store with cqrs-es 0.5's double application fixed.
///
/// `EventSink::write` applies each new event to the loaded aggregate while the command is
/// handled, and the snapshot store's `commit` then folds the same events into that same
/// aggregate again to build the snapshot: every snapshot would hold its last command's events
/// twice (harmless only while every `apply` is idempotent). This store lets the framework work
/// on a copy and gives `commit` the state as it was loaded, so each event is folded once.
pub struct SnapshotStore<A: Aggregate> {
    inner: Store<A>,
}

impl<A: Aggregate> SnapshotStore<A> {
    pub fn new(pool: &PgPool) -> Self {
        Self { inner: store(pool) }
    }
}

/// The loaded state (for the snapshot) and the copy the command changes.
pub struct SnapshotContext<A: Aggregate> {
    loaded: EventStoreAggregateContext<A>,
    working: A,
}

impl<A: Aggregate> AggregateContext<A> for SnapshotContext<A> {
    fn aggregate(&mut self) -> &mut A {
        &mut self.working
    }
}

impl<A: Aggregate + Clone> EventStore<A> for SnapshotStore<A> {
    type AC = SnapshotContext<A>;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        self.inner.load_events(aggregate_id).await
    }

    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<SnapshotContext<A>, AggregateError<A::Error>> {
        let loaded = self.inner.load_aggregate(aggregate_id).await?;
        Ok(SnapshotContext {
            working: loaded.aggregate.clone(),
            loaded,
        })
    }

    async fn commit(
        &self,
        events: Vec<A::Event>,
        context: SnapshotContext<A>,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        self.inner.commit(events, context.loaded, metadata).await
    }
}

/// Runs commands for every aggregate type. Cheap to share behind an `Arc`.
pub struct CommandBus {
    apps: Framework<App>,
    installations: Framework<Installation>,
    app_store: Store<App>,
    installation_store: Store<Installation>,
}

impl CommandBus {
    pub fn new(pool: &PgPool, services: DomainServices) -> Self {
        Self {
            apps: CqrsFramework::new(SnapshotStore::new(pool), vec![], services.clone()),
            installations: CqrsFramework::new(SnapshotStore::new(pool), vec![], services),
            app_store: store(pool),
            installation_store: store(pool),
        }
    }

    pub async fn execute_app(
        &self,
        id: &str,
        command: <App as Aggregate>::Command,
        metadata: &EventMetadata,
    ) -> Result<(), CommandError<<App as Aggregate>::Error>>
    where
        <App as Aggregate>::Command: Clone,
    {
        execute(&self.apps, "app", id, command, metadata).await
    }

    pub async fn execute_installation(
        &self,
        id: &str,
        command: <Installation as Aggregate>::Command,
        metadata: &EventMetadata,
    ) -> Result<(), CommandError<<Installation as Aggregate>::Error>> {
        execute(&self.installations, "installation", id, command, metadata).await
    }

    /// Current state of an app (the default, empty state if it never existed).
    pub async fn load_app(&self, id: &str) -> Result<(App, usize), String> {
        load(&self.app_store, id).await
    }

    /// Current state of an installation and its sequence (0 if it never existed).
    pub async fn load_installation(&self, id: &str) -> Result<(Installation, usize), String> {
        load(&self.installation_store, id).await
    }
}

async fn load<A: Aggregate>(store: &Store<A>, id: &str) -> Result<(A, usize), String> {
    let context = store.load_aggregate(id).await.map_err(|e| e.to_string())?;
    Ok((context.aggregate, context.current_sequence))
}

async fn execute<A>(
    framework: &Framework<A>,
    kind: &'static str,
    id: &str,
    command: A::Command,
    metadata: &EventMetadata,
) -> Result<(), CommandError<A::Error>>
where
    A: Aggregate + Clone,
    A::Command: Clone,
{
    let mut attempt = 0;
    loop {
        match framework
            .execute_with_metadata(id, command.clone(), metadata.to_map())
            .await
        {
            Ok(()) => return Ok(()),
            Err(AggregateError::UserError(e)) => return Err(CommandError::Rejected(e)),
            Err(AggregateError::AggregateConflict) if attempt < CONFLICT_RETRIES => {
                attempt += 1;
                metrics::counter!("hk_command_conflicts_total", "aggregate" => kind).increment(1);
                // Spread the retries of racing writers a little.
                tokio::time::sleep(Duration::from_millis(2 * attempt as u64)).await;
            }
            Err(AggregateError::AggregateConflict) => return Err(CommandError::Conflict(kind)),
            Err(other) => return Err(CommandError::Store(other.to_string())),
        }
    }
}
