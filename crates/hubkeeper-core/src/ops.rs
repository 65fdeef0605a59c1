//! Shared pieces of the pricing, billing, settings, backup and self-test services (issue 7):
//! their one error type and the command bus for the `Plan`, `Subscription` and `Settings`
//! aggregates.
//!
//! The bus follows [`crate::commands::CommandBus`]: every command carries its event metadata, and
//! a lost optimistic-concurrency race is retried against the state that won.

use std::time::Duration;

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework, EventStore};
use hubkeeper_domain::metadata::EventMetadata;
use hubkeeper_domain::plan::{Plan, PlanError};
use hubkeeper_domain::settings::{Settings, SettingsError};
use hubkeeper_domain::subscription::{Subscription, SubscriptionError};
use hubkeeper_domain::DomainServices;
use postgres_es::{PostgresCqrs, PostgresEventRepository};
use sqlx::PgPool;

/// How often a command is re-run after losing a race on its aggregate.
const CONFLICT_RETRIES: usize = 8;

/// Errors of the issue-7 services, grouped by what the caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The plan, installation or other resource does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// What kind of resource.
        what: &'static str,
        /// Which one.
        id: String,
    },
    /// Input the caller can fix.
    #[error("{0}")]
    Invalid(String),
    /// The resource's state does not allow this (a taken code, a changed idempotency key).
    #[error("{0}")]
    Conflict(String),
    /// The Plan aggregate refused the command.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The Subscription aggregate refused the command.
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
    /// The Settings aggregate refused the command.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// Lost optimistic-concurrency races too often.
    #[error("the {0} was changed concurrently too many times; try again")]
    Contention(&'static str),
    /// A dependency (pg_dump, NATS, HubSpot) is missing or failed.
    #[error("{0}")]
    Unavailable(String),
    /// The event store failed.
    #[error("event store: {0}")]
    Store(String),
    /// Postgres failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl OpsError {
    pub(crate) fn not_found(what: &'static str, id: impl ToString) -> Self {
        OpsError::NotFound {
            what,
            id: id.to_string(),
        }
    }
}

enum Failure<E> {
    Rejected(E),
    Conflict,
    Store(String),
}

type Store<A> = PersistedEventStore<PostgresEventRepository, A>;

fn store<A: Aggregate>(pool: &PgPool) -> Store<A> {
    PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone()))
        .with_upcasters(hubkeeper_domain::upcasters::all())
}

/// Runs commands against the plan, subscription and settings aggregates.
pub struct OpsBus {
    plans: PostgresCqrs<Plan>,
    subscriptions: PostgresCqrs<Subscription>,
    settings: PostgresCqrs<Settings>,
    plan_store: Store<Plan>,
    subscription_store: Store<Subscription>,
    settings_store: Store<Settings>,
}

impl OpsBus {
    /// A bus on `pool`; `services` is the aggregates' clock.
    pub fn new(pool: &PgPool, services: DomainServices) -> Self {
        Self {
            plans: CqrsFramework::new(store(pool), vec![], services.clone()),
            subscriptions: CqrsFramework::new(store(pool), vec![], services.clone()),
            settings: CqrsFramework::new(store(pool), vec![], services),
            plan_store: store(pool),
            subscription_store: store(pool),
            settings_store: store(pool),
        }
    }

    /// Runs a plan command.
    pub async fn execute_plan(
        &self,
        id: &str,
        command: <Plan as Aggregate>::Command,
        metadata: &EventMetadata,
    ) -> Result<(), OpsError> {
        map(execute(&self.plans, id, command, metadata).await, "plan")
    }

    /// Runs a subscription command.
    pub async fn execute_subscription(
        &self,
        id: &str,
        command: <Subscription as Aggregate>::Command,
        metadata: &EventMetadata,
    ) -> Result<(), OpsError> {
        map(
            execute(&self.subscriptions, id, command, metadata).await,
            "subscription",
        )
    }

    /// Runs a settings command.
    pub async fn execute_settings(
        &self,
        id: &str,
        command: <Settings as Aggregate>::Command,
        metadata: &EventMetadata,
    ) -> Result<(), OpsError> {
        map(
            execute(&self.settings, id, command, metadata).await,
            "settings",
        )
    }

    /// A plan's state and sequence (default state and 0 if it never existed).
    pub async fn load_plan(&self, id: &str) -> Result<(Plan, usize), OpsError> {
        load(&self.plan_store, id).await
    }

    /// A subscription's state and sequence.
    pub async fn load_subscription(&self, id: &str) -> Result<(Subscription, usize), OpsError> {
        load(&self.subscription_store, id).await
    }

    /// The settings' state and sequence.
    pub async fn load_settings(&self, id: &str) -> Result<(Settings, usize), OpsError> {
        load(&self.settings_store, id).await
    }
}

fn map<E>(result: Result<(), Failure<E>>, kind: &'static str) -> Result<(), OpsError>
where
    OpsError: From<E>,
{
    match result {
        Ok(()) => Ok(()),
        Err(Failure::Rejected(e)) => Err(OpsError::from(e)),
        Err(Failure::Conflict) => Err(OpsError::Contention(kind)),
        Err(Failure::Store(e)) => Err(OpsError::Store(e)),
    }
}

async fn load<A: Aggregate>(store: &Store<A>, id: &str) -> Result<(A, usize), OpsError> {
    let context = store
        .load_aggregate(id)
        .await
        .map_err(|e| OpsError::Store(e.to_string()))?;
    Ok((context.aggregate, context.current_sequence))
}

async fn execute<A>(
    framework: &PostgresCqrs<A>,
    id: &str,
    command: A::Command,
    metadata: &EventMetadata,
) -> Result<(), Failure<A::Error>>
where
    A: Aggregate,
    A::Command: Clone,
{
    let mut attempt = 0;
    loop {
        match framework
            .execute_with_metadata(id, command.clone(), metadata.to_map())
            .await
        {
            Ok(()) => return Ok(()),
            Err(AggregateError::UserError(e)) => return Err(Failure::Rejected(e)),
            Err(AggregateError::AggregateConflict) if attempt < CONFLICT_RETRIES => {
                attempt += 1;
                metrics::counter!("hk_command_conflicts_total", "aggregate" => A::TYPE)
                    .increment(1);
                tokio::time::sleep(Duration::from_millis(2 * attempt as u64)).await;
            }
            Err(AggregateError::AggregateConflict) => return Err(Failure::Conflict),
            Err(other) => return Err(Failure::Store(other.to_string())),
        }
    }
}
