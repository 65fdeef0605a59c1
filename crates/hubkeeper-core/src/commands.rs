//! The command bus: runs a command against an aggregate through cqrs-es with the event metadata
//! every event must carry, retrying lost optimistic-concurrency races.
//!
//! cqrs-es reports a concurrent write to the same aggregate as `AggregateConflict` and does not
//! retry; re-running the command re-loads the aggregate, so the command is decided against the
//! state that won. In-process cqrs `Query`s are deliberately not used: they are lost when a
//! process dies after commit; projections read the relayed stream instead.
//!
//! Every aggregate goes through the same [`AggregateBus`]; what differs between aggregates is
//! only whether their state is snapshotted ([`Snapshots`], chosen per aggregate in
//! [`BusAggregate`] with the reason next to each choice).

use std::collections::HashMap;
use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{
    EventStoreAggregateContext, EventUpcaster, PersistedEventRepository, PersistedEventStore,
    PersistenceError, SerializedEvent,
};
use cqrs_es::{
    Aggregate, AggregateContext, AggregateError, CqrsFramework, EventEnvelope, EventStore,
};
use hubkeeper_domain::access::ApiKey;
use hubkeeper_domain::app::App;
use hubkeeper_domain::installation::Installation;
use hubkeeper_domain::metadata::EventMetadata;
use hubkeeper_domain::notification::AppEndpoints;
use hubkeeper_domain::operations::Operation;
use hubkeeper_domain::plan::Plan;
use hubkeeper_domain::settings::Settings;
use hubkeeper_domain::subscription::Subscription;
use hubkeeper_domain::DomainServices;
use hubkeeper_store::EventsWaker;
use sqlx::PgPool;

use crate::error::CoreError;
use crate::event_repository::EventRepository;

/// How often a command is re-run after losing a race on its aggregate.
const CONFLICT_RETRIES: usize = 8;

/// Events between aggregate snapshots: a command writes its aggregate's snapshot when its events
/// cross a multiple of this many (or when the aggregate has no usable snapshot yet), so a load
/// reads one snapshot and fewer than this many later events plus those of the command that will
/// write the next one.
///
/// Why not every command: the snapshot write was the largest statement of a command (an
/// `UPDATE` of the whole state, as JSON, on a row every command on that aggregate rewrote),
/// while with the states the bus keeps ([`HotStates`]) hot aggregates are rarely loaded at all.
/// Why not cqrs-es's own every-N policy: cqrs-es 0.5 folds only the events up to the boundary
/// into the snapshot but postgres-es records the sequence of the command's last event, so a
/// command straddling the boundary would leave its tail out of the state for good. Here the
/// snapshot is the state the command left, with all its events ([`SnapshotStore::write`]).
pub const SNAPSHOT_EVERY: usize = 8;

/// Whether an aggregate's state is kept in the `snapshots` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snapshots {
    /// A snapshot written in the transaction of every command that crosses a multiple of
    /// [`SNAPSHOT_EVERY`] events (and of the first command on an aggregate without one); a load
    /// reads it plus the events after it.
    Periodic,
    /// No snapshots; a load replays the whole history.
    Never,
}

/// An aggregate the bus runs commands for, with its snapshot policy.
pub trait BusAggregate: Aggregate<Services = DomainServices, Command: Clone> + Clone {
    /// Whether loads start from a snapshot. A snapshot costs a row write every
    /// [`SNAPSHOT_EVERY`] events and saves replaying the history on every load, so it pays for
    /// aggregates whose history grows without bound and that are loaded on hot paths.
    const SNAPSHOTS: Snapshots;
}

/// Loaded on every token-cache miss, every refresh and every hand-out near expiry, and its
/// history grows by a refresh every half hour for as long as the tenant stays: without a
/// snapshot, `hubkeeper bench commands` spent most of its CPU deserializing old events.
impl BusAggregate for Installation {
    const SNAPSHOTS: Snapshots = Snapshots::Periodic;
}

/// Loaded for its credentials by every refresh that misses the credentials cache and by every
/// app command; its history grows with every edit of the app, which operators and scripts may
/// repeat without bound (labels, scopes, rotated secrets).
impl BusAggregate for App {
    const SNAPSHOTS: Snapshots = Snapshots::Periodic;
}

/// Changed only by operators (create, a few edits and status changes): the history stays a
/// handful of events, cheaper to replay than to snapshot.
impl BusAggregate for Plan {
    const SNAPSHOTS: Snapshots = Snapshots::Never;
}

/// Grows by calendar time only (at most a renewal and a few limits reached per month, plus
/// plan changes), so a replay stays short for years; usage reports load it often, but most
/// of them write nothing to it, so a per-command snapshot would buy little.
impl BusAggregate for Subscription {
    const SNAPSHOTS: Snapshots = Snapshots::Never;
}

/// One aggregate for the whole deployment, changed by hand from the Settings page: its history
/// is short and it is loaded at start-up and on resyncs only.
impl BusAggregate for Settings {
    const SNAPSHOTS: Snapshots = Snapshots::Never;
}

/// Loaded by the notifier for every event that may interest an app, and by every endpoint
/// command; its history grows with every edit, rotation and re-send.
impl BusAggregate for AppEndpoints {
    const SNAPSHOTS: Snapshots = Snapshots::Periodic;
}

/// A key's history grows with its creation, its dashboard log-ins and log-outs (a few per
/// working day for a person's key, none for a service key) and its revocation: short enough to
/// replay on the log-in path for years.
impl BusAggregate for ApiKey {
    const SNAPSHOTS: Snapshots = Snapshots::Never;
}

/// One event per aggregate, ever (each operation has its own id): nothing to snapshot.
impl BusAggregate for Operation {
    const SNAPSHOTS: Snapshots = Snapshots::Never;
}

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

type Store<A> = PersistedEventStore<EventRepository, A>;

/// A command framework over [`SnapshotStore`]: what every aggregate's commands run through.
pub type Framework<A> = CqrsFramework<A, SnapshotStore<A>>;

/// The cqrs-es event store (snapshotting or not) over [`EventRepository`], writing snapshots by
/// its own policy ([`SNAPSHOT_EVERY`]) and waking the followers of the global order after every
/// commit that wrote events.
///
/// cqrs-es 0.5's snapshot store has two defects this store avoids: `EventSink::write` applies
/// each new event to the loaded aggregate while the command is handled, and its `commit` then
/// folds the same events into that same aggregate again to build the snapshot (every snapshot
/// would hold its last command's events twice); and with snapshots every N events it folds only
/// the events up to the boundary while recording the command's last sequence. Here the command
/// works on a copy of the loaded state, and the snapshot is that copy after the command: each
/// event folded once, all of them.
pub struct SnapshotStore<A: Aggregate> {
    inner: Store<A>,
    waker: EventsWaker,
    policy: Snapshots,
    /// For loads of snapshotted aggregates in one round trip (the others load through `inner`).
    repository: EventRepository,
    upcasters: Vec<Box<dyn EventUpcaster>>,
}

impl<A: Aggregate> SnapshotStore<A> {
    /// A store that snapshots periodically ([`Snapshots::Periodic`]).
    pub fn new(pool: &PgPool) -> Self {
        Self::with_policy(pool, Snapshots::Periodic)
    }

    /// A store following `policy`.
    pub fn with_policy(pool: &PgPool, policy: Snapshots) -> Self {
        Self::with_waker(pool, policy, EventsWaker::new(pool))
    }

    /// A store following `policy` that wakes the followers through `waker` (shared by every
    /// store of a process, so their wake-ups fold into one another).
    pub fn with_waker(pool: &PgPool, policy: Snapshots, waker: EventsWaker) -> Self {
        let repository = EventRepository::new(pool);
        // Only loads go through cqrs-es's store: commits are `write`'s. Its snapshot size is
        // then unused, but makes its loads start from the snapshot.
        let inner = match policy {
            Snapshots::Periodic => {
                PersistedEventStore::new_snapshot_store(repository, SNAPSHOT_EVERY)
            }
            Snapshots::Never => PersistedEventStore::new_event_store(repository),
        };
        Self {
            inner: inner.with_upcasters(hubkeeper_domain::upcasters::all()),
            waker,
            policy,
            repository: EventRepository::new(pool),
            upcasters: hubkeeper_domain::upcasters::all(),
        }
    }

    /// What cqrs-es's snapshot store loads (the snapshot, then the events after it, each
    /// upcast and applied), from one statement. `None` when the snapshot no longer
    /// deserializes: cqrs-es's own load then replays the whole history.
    async fn load_snapshotted(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<EventStoreAggregateContext<A>>, PersistenceError> {
        let (snapshot, events) = self
            .repository
            .snapshot_and_later_events::<A>(aggregate_id)
            .await?;
        let mut context = match snapshot {
            Some(snapshot) => match EventStoreAggregateContext::<A>::try_from(snapshot) {
                Ok(context) => context,
                Err(PersistenceError::DeserializationError(_)) => return Ok(None),
                Err(other) => return Err(other),
            },
            None => EventStoreAggregateContext {
                aggregate_id: aggregate_id.to_owned(),
                aggregate: A::default(),
                current_sequence: 0,
                current_snapshot: None,
            },
        };
        for event in events {
            let event = self.upcasters.iter().fold(event, |event, upcaster| {
                if upcaster.can_upcast(&event.event_type, &event.event_version) {
                    upcaster.upcast(event)
                } else {
                    event
                }
            });
            let envelope = EventEnvelope::<A>::try_from(event)?;
            context.current_sequence = envelope.sequence;
            context.aggregate.apply(envelope.payload);
        }
        Ok(Some(context))
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
        let snapshotted = match self.policy {
            Snapshots::Periodic => self.load_snapshotted(aggregate_id).await?,
            Snapshots::Never => None,
        };
        let loaded = match snapshotted {
            Some(loaded) => loaded,
            None => self.inner.load_aggregate(aggregate_id).await?,
        };
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
        Ok(self.write(events, context, metadata).await?.events)
    }
}

/// What a commit wrote.
pub struct Written<A: Aggregate> {
    pub events: Vec<EventEnvelope<A>>,
    /// The version of the snapshot the commit wrote, if it wrote one.
    pub snapshot: Option<usize>,
}

impl<A: Aggregate> SnapshotStore<A> {
    /// Whether a commit taking an aggregate from sequence `from` to `to` writes its snapshot:
    /// when the aggregate has no usable one (`current_snapshot` is `None`: never written, or
    /// no longer deserializing, which this replaces) or the events cross a multiple of
    /// [`SNAPSHOT_EVERY`].
    fn snapshots_at(&self, current_snapshot: Option<usize>, from: usize, to: usize) -> bool {
        match self.policy {
            Snapshots::Never => false,
            Snapshots::Periodic => {
                current_snapshot.is_none() || from / SNAPSHOT_EVERY != to / SNAPSHOT_EVERY
            }
        }
    }

    /// Commits a command's `events` (and, by the policy, the snapshot of the state they left,
    /// `context.working`) in one statement, then wakes the followers. A lost race writes nothing
    /// and is an `AggregateConflict`.
    pub async fn write(
        &self,
        events: Vec<A::Event>,
        context: SnapshotContext<A>,
        metadata: HashMap<String, String>,
    ) -> Result<Written<A>, AggregateError<A::Error>> {
        if events.is_empty() {
            // Nothing to write: no transaction, no snapshot (the state did not change).
            return Ok(Written {
                events: Vec::new(),
                snapshot: None,
            });
        }
        let SnapshotContext { loaded, working } = context;
        let from = loaded.current_sequence;
        let events: Vec<EventEnvelope<A>> = events
            .into_iter()
            .zip(from + 1..)
            .map(|(payload, sequence)| EventEnvelope {
                aggregate_id: loaded.aggregate_id.clone(),
                sequence,
                payload,
                metadata: metadata.clone(),
            })
            .collect();
        let serialized = events
            .iter()
            .map(SerializedEvent::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let snapshot = self
            .snapshots_at(loaded.current_snapshot, from, from + events.len())
            .then(|| loaded.current_snapshot.map_or(1, |v| v + 1));
        let update = match snapshot {
            // The state after the command: the sink applied each of its events once.
            Some(version) => Some((
                loaded.aggregate_id.clone(),
                serde_json::to_value(&working)?,
                version,
            )),
            None => None,
        };
        self.repository.persist::<A>(&serialized, update).await?;
        self.waker.wake();
        Ok(Written { events, snapshot })
    }
}

/// Runs the commands of one aggregate type and loads its state.
///
/// A command is what `CqrsFramework::execute_with_metadata` does (load, handle, commit; the
/// framework dispatches to no in-process queries here), written out so the caller gets the state
/// the command was decided on and the state it left without loading the aggregate again: one
/// load per attempt instead of one before, one inside and one after.
pub struct AggregateBus<A: BusAggregate> {
    store: SnapshotStore<A>,
    services: DomainServices,
    hot: HotStates<A>,
}

/// Most aggregates whose states this process keeps between commands (see [`HotStates`]).
const HOT_STATES: usize = 1024;

/// The state this process's last command left each recently commanded (snapshotted) aggregate
/// in, or that a load made for a command found ([`AggregateBus::load_for_command`]), so the
/// next command on it can skip its load: with 16 clients editing 16 apps, the load was one of a
/// command's two round trips, and Postgres's share of it was walking the dead versions of the
/// hot snapshot rows; a refresh loaded its installation under the lock and again to record.
///
/// Nothing is trusted that the store has not confirmed:
/// - a command decided on a kept state commits only if the store agrees it was current: the
///   snapshot update applies only to the snapshot version it was built on, and the events'
///   primary key refuses sequences another process (or a writer outside the bus) took. A lost
///   race writes nothing and the command is re-run on a fresh load;
/// - a command a kept state *rejects* is re-run on a fresh load, so a rejection is always
///   decided on the stored state;
/// - reads ([`AggregateBus::load`]) never use it.
///
/// A state is kept as a load would rebuild it (through its JSON form, as the snapshot stores
/// it), so a command decides the same on either. An entry is taken out while its command runs,
/// and the map holds at most [`HOT_STATES`] of them.
struct HotStates<A: Aggregate> {
    states: std::sync::Mutex<HashMap<String, EventStoreAggregateContext<A>>>,
}

impl<A: Aggregate> HotStates<A> {
    fn new() -> Self {
        Self {
            states: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, EventStoreAggregateContext<A>>> {
        // A panic elsewhere cannot leave a half-written entry: inserts and removals are whole.
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self, id: &str) -> Option<EventStoreAggregateContext<A>> {
        self.lock().remove(id)
    }

    fn contains(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    fn keep(&self, context: EventStoreAggregateContext<A>) {
        let mut states = self.lock();
        if states.len() >= HOT_STATES && !states.contains_key(&context.aggregate_id) {
            // Any entry will do: a state not kept costs one load, nothing else.
            if let Some(evicted) = states.keys().next().cloned() {
                states.remove(&evicted);
            }
        }
        states.insert(context.aggregate_id.clone(), context);
    }
}

/// `state` as a load would rebuild it from the snapshot that stores it.
fn as_loaded<A: Aggregate>(state: &A) -> Option<A> {
    serde_json::to_value(state)
        .and_then(serde_json::from_value)
        .ok()
}

/// The state a command was decided on and the state its events left.
#[derive(Debug, Clone)]
pub struct Executed<A> {
    pub before: A,
    pub after: A,
    /// The aggregate's sequence after the command (its last event's).
    pub sequence: usize,
}

impl<A: BusAggregate> AggregateBus<A> {
    /// A bus on `pool`, snapshotting as `A` chose; `services` is the aggregate's clock.
    pub fn new(pool: &PgPool, services: DomainServices) -> Self {
        Self::with_waker(pool, services, EventsWaker::new(pool))
    }

    /// As [`AggregateBus::new`], waking the followers of the global order through `waker`.
    pub fn with_waker(pool: &PgPool, services: DomainServices, waker: EventsWaker) -> Self {
        Self {
            store: SnapshotStore::with_waker(pool, A::SNAPSHOTS, waker),
            services,
            hot: HotStates::new(),
        }
    }

    /// Runs `command` on aggregate `id`, re-running it (against the state that won) after a
    /// lost optimistic-concurrency race.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<(), CommandError<A::Error>> {
        self.execute_returning(id, command, metadata)
            .await
            .map(drop)
    }

    /// As [`AggregateBus::execute`], returning the state the (winning) attempt was decided on
    /// and the state it left.
    pub async fn execute_returning(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        let metadata = metadata.to_map();
        let mut attempt = 0;
        // After a kept state turned out stale, every further attempt loads.
        let mut load = false;
        loop {
            let kept = if load { None } else { self.hot.take(id) };
            let from_kept = kept.is_some();
            match self
                .attempt(id, kept, command.clone(), metadata.clone())
                .await
            {
                Ok(Some(executed)) => return Ok(executed),
                // Nothing to write, decided on a kept state: no commit confirmed it.
                Ok(None) => load = true,
                // Decided on a kept state that was not current (a rejection, or a lost race):
                // decide again on the stored state, at once and without counting a conflict.
                Err(AggregateError::UserError(_) | AggregateError::AggregateConflict)
                    if from_kept =>
                {
                    metrics::counter!("hk_command_stale_states_total", "aggregate" => A::TYPE)
                        .increment(1);
                    load = true;
                }
                Err(AggregateError::UserError(e)) => return Err(CommandError::Rejected(e)),
                Err(AggregateError::AggregateConflict) if attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    metrics::counter!("hk_command_conflicts_total", "aggregate" => A::TYPE)
                        .increment(1);
                    // Spread the retries of racing writers a little.
                    tokio::time::sleep(Duration::from_millis(2 * attempt as u64)).await;
                }
                Err(AggregateError::AggregateConflict) => {
                    return Err(CommandError::Conflict(A::TYPE))
                }
                Err(other) => return Err(CommandError::Store(other.to_string())),
            }
        }
    }

    /// Load (or take the kept state), handle, commit: once. `None` when a kept state led to no
    /// events: a commit that writes nothing confirms nothing, so the caller decides again on a
    /// load.
    async fn attempt(
        &self,
        id: &str,
        kept: Option<EventStoreAggregateContext<A>>,
        command: A::Command,
        metadata: HashMap<String, String>,
    ) -> Result<Option<Executed<A>>, AggregateError<A::Error>> {
        let from_kept = kept.is_some();
        let mut context = match kept {
            Some(loaded) => SnapshotContext {
                working: loaded.aggregate.clone(),
                loaded,
            },
            None => self.store.load_aggregate(id).await?,
        };
        let before = context.loaded.aggregate.clone();
        let sink: EventSink<A> = EventSink::default();
        context
            .working
            .handle(command, &self.services, &sink)
            .await
            .map_err(AggregateError::UserError)?;
        let events = sink.collect().await;
        // The sink applied every event to the working copy: it is the state after the command.
        let after = context.working.clone();
        let sequence = context.loaded.current_sequence + events.len();
        let wrote = !events.is_empty();
        if from_kept && !wrote {
            return Ok(None);
        }
        let snapshot = context.loaded.current_snapshot;
        let aggregate_id = context.loaded.aggregate_id.clone();
        let written = self.store.write(events, context, metadata).await?;
        if self.store.policy == Snapshots::Periodic {
            // What the next load would find. With a snapshot written: that snapshot, i.e. the
            // state through its JSON form. Without: the state loaded (or kept, itself what a
            // load finds) with the command's events applied, which is `after` as it is; or the
            // state as loaded when nothing was written.
            let (state, snapshot) = match written.snapshot {
                Some(version) => (as_loaded(&after), Some(version)),
                None if wrote => (Some(after.clone()), snapshot),
                None => (Some(before.clone()), snapshot),
            };
            if let Some(aggregate) = state {
                self.hot.keep(EventStoreAggregateContext {
                    aggregate_id,
                    aggregate,
                    current_sequence: sequence,
                    current_snapshot: snapshot,
                });
            }
        }
        Ok(Some(Executed {
            before,
            after,
            sequence,
        }))
    }

    /// Whether this process keeps `id`'s state from its last command, so the next command on
    /// it skips the load (diagnostics and tests).
    pub fn keeps_state_of(&self, id: &str) -> bool {
        self.hot.contains(id)
    }

    /// The aggregate's current state and sequence (the default state and 0 if it never
    /// existed).
    pub async fn load(&self, id: &str) -> Result<(A, usize), CoreError> {
        let loaded = self.load_context(id).await?;
        Ok((loaded.aggregate, loaded.current_sequence))
    }

    /// As [`AggregateBus::load`], for a caller that loads in order to decide on a command (a
    /// refresh under its lock): the state is also kept, so that command skips a second load.
    /// It is checked like every kept state: a command the store would not accept on it is
    /// decided again on a fresh load.
    pub async fn load_for_command(&self, id: &str) -> Result<(A, usize), CoreError> {
        let loaded = self.load_context(id).await?;
        let state = (loaded.aggregate.clone(), loaded.current_sequence);
        if self.store.policy == Snapshots::Periodic {
            self.hot.keep(loaded);
        }
        Ok(state)
    }

    async fn load_context(&self, id: &str) -> Result<EventStoreAggregateContext<A>, CoreError> {
        self.store
            .load_aggregate(id)
            .await
            .map(|context| context.loaded)
            .map_err(|e| CoreError::Store(e.to_string()))
    }
}

/// Runs commands for every aggregate type. Cheap to share behind an `Arc`.
pub struct CommandBus {
    waker: EventsWaker,
    apps: AggregateBus<App>,
    installations: AggregateBus<Installation>,
    plans: AggregateBus<Plan>,
    subscriptions: AggregateBus<Subscription>,
    settings: AggregateBus<Settings>,
    endpoints: AggregateBus<AppEndpoints>,
    keys: AggregateBus<ApiKey>,
    operations: AggregateBus<Operation>,
}

impl CommandBus {
    /// A bus on `pool`; `services` is the aggregates' clock.
    pub fn new(pool: &PgPool, services: DomainServices) -> Self {
        // One waker for every aggregate's commits: their wake-ups fold into one another.
        let waker = EventsWaker::new(pool);
        Self {
            apps: AggregateBus::with_waker(pool, services.clone(), waker.clone()),
            installations: AggregateBus::with_waker(pool, services.clone(), waker.clone()),
            plans: AggregateBus::with_waker(pool, services.clone(), waker.clone()),
            subscriptions: AggregateBus::with_waker(pool, services.clone(), waker.clone()),
            settings: AggregateBus::with_waker(pool, services.clone(), waker.clone()),
            endpoints: AggregateBus::with_waker(pool, services.clone(), waker.clone()),
            keys: AggregateBus::with_waker(pool, services.clone(), waker.clone()),
            operations: AggregateBus::with_waker(pool, services, waker.clone()),
            waker,
        }
    }

    /// Wakes the followers of the global order: for writers that insert events outside the
    /// command path (call it after their commit).
    pub fn events_waker(&self) -> &EventsWaker {
        &self.waker
    }

    /// The bus of the `App` aggregate.
    pub fn apps(&self) -> &AggregateBus<App> {
        &self.apps
    }

    /// The bus of the `Installation` aggregate.
    pub fn installations(&self) -> &AggregateBus<Installation> {
        &self.installations
    }

    /// The bus of the `Plan` aggregate.
    pub fn plans(&self) -> &AggregateBus<Plan> {
        &self.plans
    }

    /// The bus of the `Subscription` aggregate.
    pub fn subscriptions(&self) -> &AggregateBus<Subscription> {
        &self.subscriptions
    }

    /// The bus of the `Settings` aggregate.
    pub fn settings(&self) -> &AggregateBus<Settings> {
        &self.settings
    }

    /// The bus of the `AppEndpoints` aggregate (an app's notification endpoints).
    pub fn endpoints(&self) -> &AggregateBus<AppEndpoints> {
        &self.endpoints
    }

    /// The bus of the `ApiKey` aggregate (a key's audited history).
    pub fn keys(&self) -> &AggregateBus<ApiKey> {
        &self.keys
    }

    /// The bus of the `Operation` aggregate (operator actions on nothing else).
    pub fn operations(&self) -> &AggregateBus<Operation> {
        &self.operations
    }
}
